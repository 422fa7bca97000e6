"""The stages that decide: each handles one record against its own table and says what follows.

Pure code: no Kafka, Faust, HTTP, metrics or settings. A runner owns the tables, feeds the stages
their records in each key's order and performs their effects (streams.stages.effects): the Faust
topology (streams.topology) sends them through inventory.commands; Engine (streams.runners.local),
the local runner behind simulate, routes them by direct calls. The stages are keyed by SKU (its
rules in streams.core.sku), by order, by reservation and by listing.
"""
