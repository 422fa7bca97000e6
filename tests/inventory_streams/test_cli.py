"""CLI flags reach the process they configure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import inventory_streams.worker
from inventory_streams import cli
from streams.settings import get_settings


@pytest.fixture
def worker_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        inventory_streams.worker, "run_worker", lambda *args, **kwargs: calls.append(kwargs)
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    get_settings.cache_clear()
    yield calls
    get_settings.cache_clear()


def test_worker_metrics_listen_on_loopback_by_default(worker_calls: list[dict[str, Any]]) -> None:
    assert cli.main(["worker", "--metrics-port", "9101"]) == 0
    assert worker_calls[0]["metrics_port"] == 9101
    assert worker_calls[0]["metrics_host"] == "127.0.0.1"


def test_worker_metrics_host_for_a_scraper_elsewhere(worker_calls: list[dict[str, Any]]) -> None:
    assert cli.main(["worker", "--metrics-port", "9101", "--metrics-host", "0.0.0.0"]) == 0
    assert worker_calls[0]["metrics_host"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TOPIC_PARTITIONS", "four"), ("KAFKA_SECURITY_PROTOCOL", "TLS"), ("METRICS_PORT", "-")],
)
def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        assert cli.main(["topics"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert variable in err and "Traceback" not in err


def test_publish_exits_1_when_it_rejected_lines(
    worker_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import streams.tools

    counts = {"published": 3, "rejected": 1}
    monkeypatch.setattr(cli, "_bootstrap", lambda *_args, **_kwargs: "127.0.0.1:1")
    monkeypatch.setattr(streams.tools, "publish_file", lambda *_args: dict(counts))
    assert cli.main(["publish", "events.jsonl"]) == 1  # as import does
    assert '"rejected": 1' in capsys.readouterr().out
    counts["rejected"] = 0
    assert cli.main(["publish", "events.jsonl"]) == 0


def test_tail_into_a_closed_pipe_ends_quietly(
    worker_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import streams.tools

    def tail(*_args: Any, **_kwargs: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")  # `tail ... | head` once head has its lines

    monkeypatch.setattr(cli, "_bootstrap", lambda *_args, **_kwargs: "127.0.0.1:1")
    monkeypatch.setattr(streams.tools, "tail", tail)
    assert cli.main(["tail", "inventory.positions"]) == 0
    assert capsys.readouterr().err == ""
