"""Progress bars of long commands: on stderr, drawn on a terminal or when asked, never otherwise;
what was reported is kept either way. `import`'s file bar is drawn by the same renderer."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from connectors.sources.progress import FileProgress
from inventory_streams.cli import build_parser
from streams.runtime.progress import StageProgress, wanted


def test_a_flag_decides_else_whether_stderr_is_a_terminal() -> None:
    piped = Console(file=io.StringIO())
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert wanted(None, piped) is False
    assert wanted(None, terminal) is True
    assert wanted(True, piped) is True
    assert wanted(False, terminal) is False


def test_each_stage_is_a_bar_with_its_count_of_the_total() -> None:
    out = io.StringIO()
    with StageProgress(enabled=True, console=Console(file=out, width=100)) as progress:
        progress.stage("reading inventory.positions", 1_500)
        for _ in range(3):
            progress.advance(500)
        progress.stage("checking rows", 4, "rows")
        progress.update(4)
    text = out.getvalue()
    assert re.search(r"reading inventory.positions .* 1500/1500 records", text), text
    assert re.search(r"checking rows .* 4/4 +rows", text), text
    assert progress.done == {"reading inventory.positions": 1_500, "checking rows": 4}


def test_off_nothing_is_drawn_and_the_figures_are_still_kept() -> None:
    out = io.StringIO()
    with StageProgress(enabled=False, console=Console(file=out)) as progress:
        progress.stage("re-driving inventory.dlq", 2)
        progress.advance()
        progress.advance()
    assert out.getvalue() == ""
    assert progress.done == progress.totals == {"re-driving inventory.dlq": 2}


def test_the_import_bar_is_drawn_by_the_same_renderer(capsys: pytest.CaptureFixture[str]) -> None:
    with FileProgress("counts.csv", 2_048, enabled=True) as bar:
        bar.update(2_048, 10)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays the report's
    assert "counts.csv" in captured.err and "10 rows" in captured.err


@pytest.mark.parametrize(
    "command", [["replay", "--dlq"], ["reconcile", "x.csv"], ["resync", "web"]]
)
def test_the_long_commands_take_progress_and_no_progress(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(command).progress is None  # the default: a terminal decides
    assert parser.parse_args([*command, "--progress"]).progress is True
    assert parser.parse_args([*command, "--no-progress"]).progress is False
