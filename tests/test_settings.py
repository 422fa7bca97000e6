"""Settings defaults: nothing a process writes lands inside the installed package."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import REPO_ROOT, Settings


def test_data_dir_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "var"
    assert REPO_ROOT not in settings.data_dir.parents


def test_data_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "state"))
    assert Settings().data_dir == tmp_path / "state"


def test_metrics_port_defaults_to_9100_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("METRICS_PORT", raising=False)
    assert Settings().metrics_port == 9100
    monkeypatch.setenv("METRICS_PORT", "19100")
    assert Settings().metrics_port == 19100
