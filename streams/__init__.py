"""The inventory domain and its Kafka topology. A reading guide, in order:

1. `streams.core.sku`: the rules for one SKU, `apply_sku(state, command, catalog)`, pure and
   idempotent; `streams.core.state` holds the record they change.
2. `streams.core.reservations`, `streams.core.orders`, `streams.core.derive`: holds and their
   decision, order routing, and the output records derived from state.
3. `streams.runners.local`: the local runner, every rule and the order and reservation stages
   (streams.stages) wired by direct calls. This is what `simulate` runs.
4. `streams.stages`: the order, reservation and listing stages, pure: one record against its
   table in, its effects (commands by key, alerts, decisions, dead letters) out.
5. `streams.topology`: the same rules on Kafka, running the stages. One agent, four stages and
   four tables; the module docstring draws where every record goes.
6. `streams.runtime`: the Kafka layer (brokers, the output producer, true end offsets, topics,
   the catalog on Kafka, every private Faust and aiokafka API in `faust_private`).
7. `streams.api`: the reservation API; `streams.tools`, `streams.replay`, `streams.reconcile`:
   the other commands.

This is a reading order, not the layer order: the layers (import-linter contracts in
pyproject.toml), the path of an event and the test that pins each mechanism are in
docs/architecture.md.
"""
