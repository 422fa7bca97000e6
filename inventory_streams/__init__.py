"""The composition root: the `inventory-streams` command line, `up` and the worker process.

The only package that wires `streams` (the core, the Kafka layer, the topology, the API and tools)
and `connectors` (sources, sinks, emulators) together into processes; nothing imports it.
"""
