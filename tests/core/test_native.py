"""The compiled core runs exactly when it was built from the current sources, never stale."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streams.core import NATIVE, native


def test_the_compiled_core_is_used_when_and_only_when_it_is_current() -> None:
    stamp = native.NATIVE_DIR / native.STAMP
    current = stamp.is_file() and stamp.read_text() == native.source_stamp()
    assert current == NATIVE
    import streams.core.derive
    import streams.core.orders
    import streams.core.reservations
    import streams.core.sku  # noqa: F401 (loaded: compiled_modules reports what is loaded)

    expected = list(native.COMPILED) if current else []
    assert native.compiled_modules() == expected


def test_a_stale_build_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path)
    (tmp_path / native.STAMP).write_text("built from other sources")
    path: list[str] = []
    with caplog.at_level(logging.WARNING, logger="streams.core"):
        assert native.activate(path) is False
    assert path == []
    assert "older than the sources" in caplog.text


def test_without_a_build_the_core_runs_as_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path / "missing")
    path: list[str] = []
    with caplog.at_level(logging.WARNING, logger="streams.core"):
        assert native.activate(path) is False
    assert path == []
    assert "running pure Python" in caplog.text


def test_a_current_build_goes_first_on_the_package_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path)
    (tmp_path / native.STAMP).write_text(native.source_stamp())
    path = ["/the/sources"]
    assert native.activate(path) is True
    assert path == [str(tmp_path / "streams" / "core"), "/the/sources"]
