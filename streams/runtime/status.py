"""What `up`'s status view derives from what it reads: rates, latency quantiles, alerts by type.

Pure: counts, decoded alert records and the workers' /metrics text in, figures out; the reading
itself (end offsets, the alerts topic, HTTP) is `inventory_streams.up.StatusReader`'s. Alerts are
rolled up by type, so 40,000 alerts of one import are one line with a count, never 40,000 lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# the worker histograms the view shows as p50/p99 over its refresh window: label -> family
LATENCY_FAMILIES = {
    "event to availability latency": "inventory_event_to_availability_seconds",
    "batch latency (sku stage)": "inventory_batch_seconds",
    "reservation decision latency": "inventory_api_decision_seconds",
}
ALERT_TYPES_SHOWN = 6  # the busiest types get a line each; the rest share one


class RateMeter:
    """Per-second rates of growing counts, between one update and the next."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, int]] | None = None

    def update(self, now: float, counts: Mapping[str, int]) -> dict[str, float]:
        """The rate of every count since the previous update (none at the first)."""
        last, self._last = self._last, (now, dict(counts))
        if last is None or now <= last[0]:
            return {}
        seconds = now - last[0]
        # a count that went down (a topic recreated by a rebuild) starts again from 0
        return {
            name: max(0, value - last[1].get(name, 0)) / seconds for name, value in counts.items()
        }


@dataclass
class AlertRun:
    """Every alert of one type so far: how many, and the latest one."""

    count: int
    sku: str
    message: str


class AlertTally:
    """Alerts rolled up by type."""

    def __init__(self) -> None:
        self.by_type: dict[str, AlertRun] = {}

    def add(self, alert: Mapping[str, Any]) -> None:
        kind = str(alert.get("type") or "unknown")
        run = self.by_type.get(kind)
        sku, message = str(alert.get("sku") or ""), str(alert.get("message") or "")
        if run is None:
            self.by_type[kind] = AlertRun(1, sku, message)
        else:
            run.count, run.sku, run.message = run.count + 1, sku, message

    def lines(self, shown: int = ALERT_TYPES_SHOWN) -> list[tuple[str, str]]:
        """(name, value) rows: one per type, busiest first; the rest of the types as one."""
        ranked = sorted(self.by_type.items(), key=lambda item: (-item[1].count, item[0]))
        rows = [
            (f"  {kind}", f"{run.count:,} (latest: {_short(run.message or run.sku)})")
            for kind, run in ranked[:shown]
        ]
        rest = ranked[shown:]
        if rest:
            rows.append((f"  {len(rest)} other types", f"{sum(run.count for _, run in rest):,}"))
        return rows


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class Quantiles:
    p50: float  # seconds
    p99: float
    count: int  # observations in the window


def histogram_buckets(texts: Iterable[str], family: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> observations) of `family`, summed over every
    label set and every exposition in `texts` (one per worker)."""
    buckets: dict[float, float] = {}
    for text in texts:
        for metric in text_string_to_metric_families(text):
            if metric.name != family or metric.type != "histogram":
                continue
            for sample in metric.samples:
                if sample.name == f"{family}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the highest finite bucket: its bound is all we know
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


class LatencyWindow:
    """p50/p99 of each histogram over the observations made since the previous update."""

    def __init__(self, families: Mapping[str, str] = LATENCY_FAMILIES) -> None:
        self.families = dict(families)
        self._last: dict[str, dict[float, float]] = {}

    def update(self, texts: Iterable[str]) -> dict[str, Quantiles | None]:
        """Per label: the window's quantiles, None when nothing was observed in it (idle), and
        no entry while no worker exposes that histogram."""
        texts = list(texts)
        out: dict[str, Quantiles | None] = {}
        for label, family in self.families.items():
            now = histogram_buckets(texts, family)
            if not now:
                continue
            before = self._last.get(label, {})
            self._last[label] = now
            # a restarted worker's counters start again from 0: its window is what it has
            window = {b: v - before.get(b, 0.0) for b, v in now.items()}
            if any(v < 0 for v in window.values()):
                window = now
            count = int(window.get(math.inf, 0.0))
            out[label] = (
                Quantiles(quantile(0.5, window), quantile(0.99, window), count) if count else None
            )
        return out


def format_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def format_rate(per_second: float | None) -> str:
    if per_second is None:
        return ""
    return f"  ({per_second:,.0f}/s)" if per_second >= 10 else f"  ({per_second:,.1f}/s)"
