"""A Faust table as a stage's table (streams.stages.effects.Table): records read as the stage
left them, writes reaching the changelog at the next commit (DeferredWrites)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from streams.runtime.tables import DeferredWrites

V = TypeVar("V")


class StageTable(Generic[V]):
    """Keys are the stage's (an id) or a record's own key bytes; `written` sees every record put
    (the reservation stage's expiry queue)."""

    def __init__(
        self,
        table: Any,
        from_dict: Callable[[Any], V],
        writes: DeferredWrites,
        written: Callable[[V], None] | None = None,
    ) -> None:
        self.table = table
        self.from_dict = from_dict
        self.writes = writes
        self.written = written

    def get(self, key: str | bytes) -> V | None:
        # recovery hands back the decoded JSON, not the object
        value = self.table.get(key.encode() if isinstance(key, str) else key)
        return self.from_dict(value) if isinstance(value, dict) else cast("V | None", value)

    def put(self, key: str | bytes, value: V) -> None:
        self.writes.put(self.table, key.encode() if isinstance(key, str) else key, value)
        if self.written is not None:
            self.written(value)

    def delete(self, key: str | bytes) -> None:
        self.writes.delete(self.table, key.encode() if isinstance(key, str) else key)
