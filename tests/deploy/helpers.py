"""What the deployment tests share: the repository's paths, the metrics the processes serve, and
the metric names a PromQL expression reads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# the samples each metric type exposes (prometheus_client names a counter's family without _total)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
# what Prometheus itself adds to every scrape target
_SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


@cache
def served_metric_names() -> frozenset[str]:
    """Every sample name the project's processes can serve, from the classes that build them."""
    from connectors.sinks.metrics import SinkMetrics
    from connectors.sources.metrics import SourceMetrics
    from streams.api import ApiMetrics
    from streams.metrics import DriftMetrics, Metrics

    registries = [Metrics().registry, ApiMetrics().registry]
    for cls in (SinkMetrics, SourceMetrics, DriftMetrics):
        registry = CollectorRegistry()
        cls(registry)
        registries.append(registry)
    names: set[str] = set(_SCRAPE_SERIES)
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation
        if match.start() > 0 and (
            text[match.start() - 1].isdigit() or text[match.start() - 1] == "$"
        ):
            continue  # a unit of a number (5m) or a Grafana variable ($__rate_interval)
        names.add(match.group())
    return names


# where bin/fetch-prometheus (run by bin/bootstrap) unpacks Debian's prometheus package
PROMETHEUS_DIR = Path(sys.prefix) / "prometheus"


def tool(*names: str) -> str | None:
    """The first of these executables in PROMETHEUS_DIR/bin, else on PATH."""
    for name in names:
        found = shutil.which(name, path=str(PROMETHEUS_DIR / "bin")) or shutil.which(name)
        if found:
            return found
    return None


def missing(name: str) -> str:
    """Why a tool is not there, for a skip: what bin/fetch-prometheus said, if it gave up."""
    why = PROMETHEUS_DIR / "unavailable"
    reason = why.read_text().strip() if why.exists() else "run bin/fetch-prometheus"
    return f"{name} is not available: {reason}"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
