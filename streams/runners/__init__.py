"""The runners: each runs the pure stages of streams.stages, and the SKU rules, against tables.

The local runner over in-memory tables is here (streams.runners.local: Engine, what simulate, the
property tests and bench/core.py run); the Faust runner is streams.topology; a batch runner for
rebuilds would be a third. A runner owns the tables, feeds each stage its records in each key's
order and performs the effects; the stages decide.
"""
