"""Progress of long work as bars on stderr (never stdout: scripted use and JSON output stay clean).

A bar is drawn only when asked: the commands turn it on when stderr is a terminal, or with
`--progress`. Off, nothing is drawn, but what was reported is still kept (`done`, `totals`), so a
caller or a test can read it back.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def wanted(flag: bool | None, console: Console | None = None) -> bool:
    """`--progress` (True) or `--no-progress` (False) decide; else whether stderr is a terminal."""
    if flag is not None:
        return flag
    return (console or Console(stderr=True)).is_terminal


class Bars:
    """A rich progress display on stderr with the given columns, or nothing when not enabled."""

    def __init__(
        self, columns: tuple[ProgressColumn, ...], enabled: bool, console: Console | None = None
    ) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                *columns, console=console or Console(stderr=True), transient=False
            )

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _add(self, label: str, total: int | None, **fields: Any) -> TaskID | None:
        if self._progress is None:
            return None
        return self._progress.add_task(label, total=total, **fields)

    def _update(self, task: TaskID | None, completed: int, **fields: Any) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, completed=completed, **fields)


class StageProgress(Bars):
    """One bar per stage of a command (`stage(label, total)`, then `advance`/`update`)."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        super().__init__(
            (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ),
            enabled,
            console,
        )
        self.done: dict[str, int] = {}
        self.totals: dict[str, int | None] = {}
        self._tasks: dict[str, TaskID | None] = {}
        self._current = ""

    def stage(self, label: str, total: int | None, unit: str = "records") -> None:
        """Start (or go back to) the stage `label` of `total` units (None: not known)."""
        self._current = label
        if label not in self._tasks:
            self.done[label], self.totals[label] = 0, total
            self._tasks[label] = self._add(label, total, unit=unit)

    def update(self, done: int) -> None:
        self.done[self._current] = done
        self._update(self._tasks.get(self._current), done)

    def advance(self, units: int = 1) -> None:
        self.update(self.done.get(self._current, 0) + units)
