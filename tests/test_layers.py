"""The layers of STYLE.md 3, as import-linter contracts in pyproject.toml: they hold on the tree,
and a planted back-edge (streams importing connectors) breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # cwd and PYTHONPATH first: the tree's packages are the ones analysed, not the installed ones
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_tree(to: Path) -> Path:
    for package in ("streams", "connectors", "inventory_streams"):
        shutil.copytree(ROOT / package, to / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")
    return to


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def with_planted(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the tree with `line` appended to `module` (a path in it)."""
    tree = copy_tree(tmp_path)
    planted = tree / module
    planted.write_text(planted.read_text() + f"\n{line}  # planted\n")
    return lint_imports(tree)


def test_a_back_edge_from_streams_to_connectors_breaks_them(tmp_path: Path) -> None:
    result = with_planted(tmp_path, "streams/tools.py", "from connectors.sinks import run_sink")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "streams.tools -> connectors.sinks" in result.stdout, result.stdout


def test_the_core_importing_kafka_breaks_them(tmp_path: Path) -> None:
    result = with_planted(tmp_path, "streams/core/sku.py", "import confluent_kafka")
    assert result.returncode != 0
    assert "streams.core.sku -> confluent_kafka" in result.stdout, result.stdout


def test_a_stage_importing_faust_breaks_them(tmp_path: Path) -> None:
    result = with_planted(tmp_path, "streams/stages/orders.py", "import faust")
    assert result.returncode != 0
    assert "streams.stages.orders -> faust" in result.stdout, result.stdout
