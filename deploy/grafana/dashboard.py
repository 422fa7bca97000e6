"""The Grafana dashboard, typed with grafana-foundation-sdk: writes dashboards/*.json from code.

Run after a change, from the repository root: `.venv/bin/python deploy/grafana/dashboard.py`.
tests/deploy/test_grafana.py fails when the JSON differs from what this produces. Panels use only
metrics the processes serve (streams/metrics.py, streams/api/handlers.py, connectors/*/metrics.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "dashboards" / "inventory-streams.json"
# the data source of provisioning/datasources/prometheus.yml
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")

# the KPIs of issue 20 first: what a retailer watches
KPIS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Oversell rate by channel",
        "percentunit",
        [
            (
                "sum by (channel) (rate(inventory_oversold_order_lines_total[$__rate_interval]))"
                " / sum by (channel) (rate(inventory_order_lines_total[$__rate_interval]))",
                "{{channel}}",
            )
        ],
    ),
    (
        "Order lines and oversold lines by channel",
        "ops",
        [
            (
                "sum by (channel) (rate(inventory_order_lines_total[$__rate_interval]))",
                "{{channel}} lines",
            ),
            (
                "sum by (channel) (rate(inventory_oversold_order_lines_total[$__rate_interval]))",
                "{{channel}} oversold",
            ),
        ],
    ),
    (
        "Event to availability latency by channel",
        "s",
        [
            (
                f"histogram_quantile({q}, sum by (le, channel) "
                "(rate(inventory_event_to_availability_seconds_bucket[$__rate_interval])))",
                f"{{{{channel}}}} p{int(q * 100)}",
            )
            for q in (0.5, 0.99)
        ],
    ),
    (
        "Channel staleness (oldest value not acknowledged)",
        "s",
        [("max by (channel) (inventory_sink_staleness_seconds)", "{{channel}}")],
    ),
    (
        "Consumer lag by group and topic",
        "short",
        [
            (
                "sum by (group, topic) (inventory_consumer_lag_records)",
                "{{group}} {{topic}}",
            )
        ],
    ),
    (
        "Dead letters by reason class",
        "ops",
        [
            (
                "sum by (reason) (rate(inventory_dead_letters_total[$__rate_interval]))",
                "{{reason}}",
            )
        ],
    ),
    (
        "Drift found by reconcile, by system and kind",
        "short",
        [
            (
                "sum by (system, kind) (inventory_drift_findings_total)",
                "{{system}} {{kind}}",
            )
        ],
    ),
    (
        "Positions and listings held",
        "short",
        [
            ("sum(inventory_positions_held)", "positions"),
            ("sum(inventory_listings_held)", "multi-partition listings"),
        ],
    ),
]

# (title, unit, [(expr, legend)]): one time series panel each, two to a row
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    *KPIS,
    ("Workers up", "short", [('sum(up{job="inventory-workers"})', "workers up")]),
    ("Events in", "ops", [("sum(rate(inventory_events_in_total[$__rate_interval]))", "events/s")]),
    (
        "Records out by kind",
        "ops",
        [("sum by (kind) (rate(inventory_records_out_total[$__rate_interval]))", "{{kind}}")],
    ),
    (
        "Alerts by type",
        "short",
        [("sum by (type) (increase(inventory_alerts_total[$__rate_interval]))", "{{type}}")],
    ),
    (
        "Dead letters",
        "ops",
        [
            ("sum(rate(inventory_dead_letters_total[$__rate_interval]))", "workers (all reasons)"),
            (
                "sum by (source) (rate(inventory_source_dead_letters_total[$__rate_interval]))",
                "source {{source}}",
            ),
            (
                "sum by (channel) (rate(inventory_sink_dead_letters_total[$__rate_interval]))",
                "channel {{channel}}",
            ),
        ],
    ),
    (
        "Stage batch time p99",
        "s",
        [
            (
                "histogram_quantile(0.99, sum by (le, stage) "
                "(rate(inventory_batch_seconds_bucket[$__rate_interval])))",
                "{{stage}}",
            )
        ],
    ),
    (
        "Reservation decisions by outcome",
        "ops",
        [
            (
                "sum by (status) (rate(inventory_reservation_decisions_total[$__rate_interval]))",
                "{{status}}",
            )
        ],
    ),
    (
        "Reservation API decision latency",
        "s",
        [
            (
                "histogram_quantile(0.5, sum by (le) "
                "(rate(inventory_api_decision_seconds_bucket[$__rate_interval])))",
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(inventory_api_decision_seconds_bucket[$__rate_interval])))",
                "p99",
            ),
        ],
    ),
    (
        "Reservation API requests by code",
        "reqps",
        [("sum by (code) (rate(inventory_api_requests_total[$__rate_interval]))", "{{code}}")],
    ),
    (
        "Channel acknowledgement latency p99",
        "s",
        [
            (
                "histogram_quantile(0.99, sum by (le, channel) "
                "(rate(inventory_sink_ack_latency_seconds_bucket[$__rate_interval])))",
                "{{channel}}",
            )
        ],
    ),
    (
        "Records waiting per channel",
        "short",
        [("sum by (channel) (inventory_sink_pending_records)", "{{channel}}")],
    ),
    (
        "Channel calls and failures",
        "reqps",
        [
            (
                "sum by (channel) (rate(inventory_sink_calls_total[$__rate_interval]))",
                "{{channel}}",
            ),
            (
                "sum by (channel) (rate(inventory_sink_call_failures_total[$__rate_interval]))",
                "{{channel}} failed",
            ),
        ],
    ),
    (
        "Source events produced",
        "ops",
        [
            (
                "sum by (source) (rate(inventory_source_events_produced_total[$__rate_interval]))",
                "{{source}}",
            )
        ],
    ),
]


def build() -> dict[str, object]:
    board = (
        dashboard.Dashboard("inventory-streams")
        .uid("inventory-streams")
        .tags(["inventory-streams"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for number, (title, unit, queries) in enumerate(PANELS, start=1):
        panel = (
            timeseries.Panel()
            .id(number)
            .title(title)
            .datasource(DATASOURCE)
            .unit(unit)
            .min(0)
            .height(8)
            .span(12)
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(common_models.LegendDisplayMode.LIST)
                .placement(common_models.LegendPlacement.BOTTOM)
            )
            .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
        )
        for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
            panel = panel.with_target(
                prometheus.Dataquery()
                .ref_id(ref)
                .datasource(DATASOURCE)
                .expr(expr)
                .legend_format(legend)
            )
        board = board.with_panel(panel)
    data: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
