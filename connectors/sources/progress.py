"""A progress bar over the bytes of a file being imported (stderr), or nothing at all."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from streams.runtime.progress import Bars


class FileProgress(Bars):
    """`update(position, rows)` every few thousand rows; silent when `enabled` is False."""

    def __init__(self, label: str, total_bytes: int, enabled: bool = True) -> None:
        super().__init__(
            (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[rows]:,} rows"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ),
            enabled,
        )
        self._task = self._add(label, total_bytes, rows=0)

    def update(self, position: int, rows: int) -> None:
        self._update(self._task, position, rows=rows)
