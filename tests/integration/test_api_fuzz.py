"""schemathesis against the live reservation API: a worker serving it on a real broker, with the
demo catalog and some stock, answers every generated request (schema-valid and not) without a
5xx and with a status, content type and body that schemas/openapi.json documents."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from streams.runtime.broker import free_port
from streams.simulate import read_catalog
from tests.integration.live import LiveSystem

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

CATALOG = read_catalog(Path(__file__).parent.parent.parent / "deploy" / "catalog.yaml")
TOKENS = {c.id: f"tok-{c.id}" for c in CATALOG.channels}
AUTH = {"Authorization": f"Bearer {TOKENS['shopify-us']}"}  # the channel the examples name
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 50  # per operation, schema-valid and schema-invalid: ~500 requests, ~10 s


def stock(live: LiveSystem, path: Path) -> None:
    """Counts of both SKUs at wh-east, so reservations are held, split and refused for real."""
    counts = [
        {
            "type": "stock-adjusted",
            "event_id": f"count-{sku}",
            "occurred_at": "2026-01-01T00:00:00Z",
            "source": "wms",
            "sku": sku,
            "location": "wh-east",
            "mode": "count",
            "quantity": units,
        }
        for sku, units in (("TEE-RED-M", 40), ("MUG", 5))
    ]
    path.write_text("".join(json.dumps(c) + "\n" for c in counts))
    live.publish(path)


def wait_healthy(live: LiveSystem, base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert all(p.poll() is None for p in live.workers.values()), "the worker exited"
        assert time.monotonic() < deadline, "the worker's API did not come up"
        time.sleep(0.2)


def test_schemathesis_finds_no_5xx_and_no_response_outside_the_document(tmp_path: Path) -> None:
    with LiveSystem(CATALOG, tmp_path, clock="wall") as live:
        port = free_port()
        live.start_worker(0, "--api-port", str(port), env={"CHANNEL_TOKENS": json.dumps(TOKENS)})
        base = f"http://127.0.0.1:{port}"
        stock(live, tmp_path / "stock.jsonl")
        wait_healthy(live, base)
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=10)
        counts: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        session = requests.Session()

        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base, session=session, headers=AUTH, timeout=30)
            counts["cases"] += 1
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=AUTH)
            except Exception as failure:  # every failure is collected: one run shows them all
                failures.append(f"{case.operation.label}: {failure}")
            else:
                counts["passed"] += 1

        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            examples = schema.get_strategies_from_examples(operation)
            strategies = [(s, len(examples), True) for s in examples] + [
                (operation.as_strategy(generation_mode=mode), EXAMPLES_PER_MODE, mode.is_positive)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            ]
            for strategy, budget, positive in strategies:

                @given(case=strategy)
                @settings(
                    max_examples=budget,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: schemathesis.Case) -> None:
                    check(case)

                try:
                    run()
                except Unsatisfiable:
                    # nothing invalid can be sent to a route without parameters or a body
                    assert not positive and not operation.body and not operation.path_parameters
        summary = {"operations": len(operations), **counts, "statuses": sorted(statuses.items())}
        print(f"schemathesis: {summary}")
        assert not failures, "\n".join(failures[:10]) + f"\n({len(failures)} failures; {summary})"
        # every route but GET /openapi.json, which schemathesis leaves out as the document itself
        assert len(operations) == 7 and counts["cases"] >= 7 * EXAMPLES_PER_MODE, summary
        assert statuses[201] and statuses[200], summary  # holds were made, not only refusals
