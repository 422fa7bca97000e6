"""Malformed input at every source: no crash, no 5xx, and every input accounted for (produced,
dead-lettered with its bytes, ignored or a counted duplicate) exactly once."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from connectors.sources.base import Tally
from connectors.sources.batch import import_csv
from connectors.sources.shopify import MAPPED_TOPICS, sign
from connectors.sources.webhook import load_sources, make_app, receiver_of
from streams.core.catalog import load_catalog
from streams.runtime.topics import DLQ, EVENTS
from streams.settings import Settings
from tests.connectors.sources.source_fakes import FakeKafka, fake_producer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
SECRETS = {"shopify-us": "shpss_test", "wms-east": "whsec_wms", "pos-store-12": "whsec_pos"}
SETTINGS = Settings(webhook_secrets=SECRETS)
CATALOG = load_catalog(
    {
        "locations": [{"id": "wh-east"}, {"id": "store-12"}],
        "channels": [{"id": "shopify-us", "type": "shopify", "locations": ["wh-east"]}],
        "listings": [
            {
                "channel": "shopify-us",
                "channel_sku": "TEE-6PK",
                "components": [{"sku": "TEE-RED-M", "quantity": 6}],
            },
        ],
    }
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---- payload strategies: garbage, JSON of any shape, and valid payloads with parts broken ----

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "TEE-RED-M",
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00",
            "return",
            "cancel",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from paths(inner, (*prefix, index))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> bytes:
    """`base` with a few of its parts replaced by arbitrary JSON or removed."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(doc))[1:] or [()]))
        if not where:
            doc = draw(json_values)
            continue
        parent = doc
        try:
            for step in where[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(where[-1], None)
            else:
                parent[where[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    return json.dumps(doc).encode()


def shopify_bodies() -> st.SearchStrategy[bytes]:
    bases = [
        json.loads((FIXTURES / f"shopify-{n}.json").read_text())
        for n in ("orders-create", "orders-cancelled", "refunds-create")
    ]
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        *(mutated(base) for base in bases),
        st.sampled_from([json.dumps(b).encode() for b in bases]),
    )


SPEC_EVENT = {
    "event_id": "e",
    "type": "stock-adjusted",
    "occurred_at": "2026-11-23T10:00:00Z",
    "source": "wms-east",
    "sku": "TEE-RED-M",
    "location": "wh-east",
    "mode": "delta",
    "quantity": 5,
}
POS_TXN = {
    "store": "12",
    "register": "3",
    "transaction_id": "T-1",
    "occurred_at": "2026-11-23T10:04:00-05:00",
    "lines": [
        {"line": 1, "type": "sale", "sku": "100100", "quantity": 2},
        {"line": 2, "type": "return", "sku": "100200", "quantity": 1},
    ],
}


def lines_of(single: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(single, min_size=1, max_size=4).map(lambda parts: b"\n".join(parts))


def no_newlines(body: bytes) -> bytes:
    return body.replace(b"\n", b" ").replace(b"\r", b" ")


# ---- the webhook -------------------------------------------------------------------------------


class Harness:
    """One receiver on one event loop for all examples (hypothesis drives plain functions)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.producer, self.kafka = fake_producer()
        self.app = make_app(
            SETTINGS,
            self.producer,
            sources=load_sources(FIXTURES / "sources.yaml", SETTINGS, CATALOG),
        )
        self.client = TestClient(TestServer(self.app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> int:
        async def call() -> int:
            response = await self.client.post(f"/webhooks/{source}", data=body, headers=headers)
            await response.read()
            return response.status

        return self.loop.run_until_complete(call())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def counts(kafka: FakeKafka) -> tuple[int, int]:
    return kafka.count(EVENTS), kafka.count(DLQ)


def check_accounted(
    h: Harness, source: str, before: Tally, log_before: tuple[int, int], status: int
) -> None:
    after = receiver_of(h.app).tally[source]
    received = after.received - before.received
    accounted = after.accounted - before.accounted
    assert received >= 1 and received == accounted, (received, accounted)
    events, letters = counts(h.kafka)
    assert events - log_before[0] == after.events - before.events
    assert letters - log_before[1] == after.dead_lettered - before.dead_lettered
    assert status in (200, 422), status


def snapshot(h: Harness, source: str) -> Tally:
    t = receiver_of(h.app).tally[source]
    return Tally(**{k: v for k, v in vars(t).items() if k != "reasons"})


@FUZZ
@given(topic=st.sampled_from([*MAPPED_TOPICS, "products/update", ""]), body=shopify_bodies())
def test_shopify_webhook_never_fails_and_accounts_for_every_delivery(
    harness: Harness, topic: str, body: bytes
) -> None:
    before, log_before = snapshot(harness, "shopify-us"), counts(harness.kafka)
    status = harness.post(
        "shopify-us",
        body,
        {
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sign(SECRETS["shopify-us"], body),
            "X-Shopify-Webhook-Id": uuid.uuid4().hex,
        },
    )
    assert status == 200  # Shopify is always acknowledged once the delivery is stored
    check_accounted(harness, "shopify-us", before, log_before, status)


def signed_headers(source: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRETS[source], stamp, body)}


@FUZZ
@given(
    body=lines_of(
        st.one_of(
            st.binary(max_size=120).map(no_newlines),
            mutated(SPEC_EVENT),
            st.just(json.dumps(SPEC_EVENT).encode()),
        )
    )
)
def test_event_webhook_never_fails_and_accounts_for_every_line(
    harness: Harness, body: bytes
) -> None:
    before, log_before = snapshot(harness, "wms-east"), counts(harness.kafka)
    status = harness.post("wms-east", body, signed_headers("wms-east", body))
    check_accounted(harness, "wms-east", before, log_before, status)


@FUZZ
@given(body=lines_of(st.one_of(st.binary(max_size=120).map(no_newlines), mutated(POS_TXN))))
def test_pos_upload_never_fails_and_accounts_for_every_line(harness: Harness, body: bytes) -> None:
    before, log_before = snapshot(harness, "pos-store-12"), counts(harness.kafka)
    status = harness.post("pos-store-12", body, signed_headers("pos-store-12", body))
    check_accounted(harness, "pos-store-12", before, log_before, status)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=300),
    secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=10),
)
def test_unsigned_garbage_is_refused_and_produces_nothing(
    harness: Harness, body: bytes, secret: str
) -> None:
    log_before = len(harness.kafka.log)
    status = harness.post("shopify-us", body, {"X-Shopify-Hmac-Sha256": sign(secret + "!", body)})
    assert status == 401
    status = harness.post("wms-east", body, {TIMESTAMP_HEADER: "0", SIGNATURE_HEADER: secret})
    assert status == 401
    assert len(harness.kafka.log) == log_before


# ---- the CSV importer ----------------------------------------------------------------------

GOOD_ROW = ["4900001", "1", "100100", "1000", "24", "ST", "23.11.2026 08:15:00", "311", ""]
field_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "100100",
            "999",
            "1000",
            "-5",
            "1,5",
            "KAR",
            "ST",
            "31.02.2026 08:00:00",
            '"',
            ";",
            "702",
            "551",
        ]
    ),
)


@st.composite
def csv_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # raw garbage, one physical line
        return no_newlines(draw(st.binary(max_size=80))) + b"\n"
    fields = list(GOOD_ROW)
    fields[0] = str(draw(st.integers(1, 40)))  # repeated document ids: duplicates and conflicts
    if kind >= 2:
        for _ in range(draw(st.integers(1, 3))):
            fields[draw(st.integers(0, len(fields) - 1))] = draw(field_text)
    if kind == 3 and draw(st.booleans()):
        fields = fields[: draw(st.integers(0, len(fields)))]
    text = ";".join(fields).replace("\n", " ").replace("\r", " ")
    return text.encode("utf-8", errors="replace") + draw(st.sampled_from([b"\n", b"\r\n"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(csv_lines(), max_size=30))
def test_importer_never_crashes_and_accounts_for_every_row(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "export.csv"
    header = b"MBLNR;ZEILE;MATNR;WERKS;MENGE;MEINS;BUDAT;BWART;INSMK\n"
    path.write_bytes(header + b"".join(lines))
    producer, kafka = fake_producer()
    report = import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=False)
    t = report.tally
    assert t.received == t.accounted
    assert len(kafka.events()) == t.produced == t.events
    letters = kafka.dead_letters()
    assert len(letters) == t.dead_lettered
    content = path.read_bytes()
    numbers = []
    for letter in letters:
        assert letter.original in content and letter.source == "erp"
        prefix, _, reason = letter.reason.partition(": ")
        assert prefix.startswith("export.csv line ") and reason
        numbers.append(int(prefix.rsplit(" ", 1)[1]))
    assert len(numbers) == len(set(numbers))  # no row dead-lettered twice
    # a line of only spaces or tabs is a one-field record to the CSV reader (dead-lettered), so
    # only empty lines are no records
    assert t.received <= sum(1 for line in lines if line.strip(b"\r\n"))
