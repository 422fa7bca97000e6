"""deploy/grafana: the dashboard is what the grafana-foundation-sdk builder makes, it loads back
through the SDK's models, and every panel reads metrics the processes serve through the
provisioned data source."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import DEPLOY, metric_names, served_metric_names

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
GENERATOR = DEPLOY / "grafana" / "dashboard.py"


def datasource_uids() -> set[str]:
    folder = DEPLOY / "grafana" / "provisioning" / "datasources"
    return {
        source["uid"]
        for path in folder.glob("*.yml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    }


@pytest.fixture(params=DASHBOARDS, ids=lambda path: path.name)
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.param.read_text())
    return data


def test_the_committed_dashboard_is_what_the_sdk_builder_makes() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    spec = importlib.util.spec_from_file_location("deploy_grafana_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.OUT.read_text() == generator.render(), (
        "run .venv/bin/python deploy/grafana/dashboard.py"
    )


def test_the_dashboard_loads_through_the_sdk_models(board: dict[str, Any]) -> None:
    pytest.importorskip("grafana_foundation_sdk")
    from grafana_foundation_sdk.models.dashboard import Dashboard

    loaded = Dashboard.from_json(board)
    assert loaded.uid and loaded.title and loaded.panels
    assert json.loads(json.dumps(loaded.to_json(), default=lambda o: o.to_json()))["panels"]


def test_every_panel_has_an_id_a_datasource_and_queries(board: dict[str, Any]) -> None:
    uids = datasource_uids()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_every_query_reads_metrics_the_processes_serve(board: dict[str, Any]) -> None:
    for panel in board["panels"]:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= served_metric_names(), f"{panel['title']}: {names}"


def test_panels_do_not_overlap(board: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


# issue 20's KPIs, each of which a panel must show
KPI_SERIES = {
    "inventory_oversold_order_lines_total",
    "inventory_order_lines_total",
    "inventory_event_to_availability_seconds_bucket",
    "inventory_sink_ack_latency_seconds_bucket",
    "inventory_sink_staleness_seconds",
    "inventory_api_decision_seconds_bucket",
    "inventory_consumer_lag_records",
    "inventory_dead_letters_total",
    "inventory_drift_findings_total",
    "inventory_positions_held",
    "inventory_listings_held",
}


def test_every_kpi_has_a_panel(board: dict[str, Any]) -> None:
    shown = {
        name
        for panel in board["panels"]
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    assert KPI_SERIES - shown == set()
