"""deploy/prometheus: promtool accepts the configuration and the rules, and the rules' unit tests
pass (promtool from Debian's `prometheus` package, unpacked by bin/fetch-prometheus; skipped with
its reason where that cannot be had); every expression reads metrics the processes serve, and
every long-running process is scraped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import (
    DEPLOY,
    ROOT,
    metric_names,
    missing,
    run,
    served_metric_names,
    tool,
)

CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
UP_CONFIG = DEPLOY / "prometheus" / "up.yml"  # for `up` on one machine
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((Path(__file__).parent / "prometheus").glob("*_test.yml"))
PROMTOOL = tool("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=missing("promtool"))


def rules() -> list[dict[str, object]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


@needs_promtool
@pytest.mark.parametrize("config", [CONFIG, UP_CONFIG], ids=lambda path: path.name)
def test_promtool_accepts_the_configuration(config: Path) -> None:
    assert PROMTOOL is not None
    result = run(PROMTOOL, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout  # rule_files resolve


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None and RULE_FILES
    result = run(PROMTOOL, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    assert PROMTOOL is not None and RULE_TESTS
    result = run(PROMTOOL, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested.update(check["alertname"] for check in case.get("alert_rule_test", []))
    assert {rule["alert"] for rule in rules()} <= tested


def test_every_rule_reads_metrics_the_processes_serve() -> None:
    for rule in rules():
        names = metric_names(str(rule["expr"]))
        assert names, rule
        assert names <= served_metric_names(), f"{rule['alert']}: {names - served_metric_names()}"


def test_every_long_running_process_of_the_compose_stack_is_scraped() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load(CONFIG.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    ours = {
        name: [str(word) for word in service.get("command", [])]
        for name, service in compose["services"].items()
        if service.get("image") == "inventory-streams:local" and service.get("command")
    }
    assert ours, "no long-running inventory-streams service in docker-compose.yml"
    for name, command in ours.items():
        port = command[command.index("--metrics-port") + 1]
        assert f"{name}:{port}" in targets, f"{name} serves metrics on {port}; not scraped"
