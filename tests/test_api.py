"""The reservation API over HTTP, with the domain core standing in for the stream: auth, validation
like the events, 201/409 from the decision, idempotent retries, releases, errors as JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from streams.api import (
    ROUTED_HEADER,
    AvailabilityView,
    Decisions,
    LiveState,
    Route,
    TakeNow,
    api_of,
    make_app,
)
from streams.codec import make_codec
from streams.core.catalog import load_catalog
from streams.core.models import ReservationReleased, ReservationRequested, StockAdjusted
from streams.runners.local import Collector, Engine
from streams.runtime.http import GuardedRunner
from streams.runtime.producer import SourceProducer
from streams.runtime.topics import CALLER_WAITING, EVENTS
from streams.settings import Settings
from tests.connectors.sources.source_fakes import FakeKafka, FakeMessage

CODEC = make_codec()
TOKENS = {"web": "tok-web", "amazon": "tok-amazon", "pos": "tok-pos"}
CATALOG = load_catalog(
    {
        "locations": [{"id": "wh"}, {"id": "store"}],
        # web may also sell from the store, which holds nothing unless a test stocks it
        "channels": [
            {"id": ch, "locations": ["wh", "store"] if ch == "web" else ["wh"]} for ch in TOKENS
        ],
        "listings": [
            *(
                {"channel": ch, "channel_sku": "HOT", "components": [{"sku": "HOT", "quantity": 1}]}
                for ch in TOKENS
            ),
            {
                "channel": "web",
                "channel_sku": "HOT-2PK",
                "components": [{"sku": "HOT", "quantity": 2}],
            },
            {  # a bundle; MUG lives on another partition than HOT (4 partitions)
                "channel": "web",
                "channel_sku": "KIT",
                "components": [{"sku": "HOT", "quantity": 1}, {"sku": "MUG", "quantity": 1}],
            },
        ],
    }
)
WEB = {"Authorization": "Bearer tok-web"}
AMAZON = {"Authorization": "Bearer tok-amazon"}


class FakeStream(FakeKafka):
    """Acknowledges like the broker, then decides like the reservation stage (the real core)."""

    def __init__(self, decisions: Decisions, loop: asyncio.AbstractEventLoop, units: int) -> None:
        super().__init__()
        self.decisions = decisions
        self.loop = loop
        self.answer = True
        self.engine = Engine(CATALOG, Collector())
        self.engine.process(
            StockAdjusted(
                event_id="count",
                occurred_at=datetime.now(UTC),
                source="wms",
                sku="HOT",
                location="wh",
                mode="count",
                quantity=units,
            )
        )
        self.seen = 0

    def poll(self, timeout: float = 0.0) -> int:
        count = super().poll(timeout)
        for message in self.log[self.seen :]:
            self.seen += 1
            if self.answer and message.topic() == EVENTS:
                self._decide(message)
        return count

    def _decide(self, message: FakeMessage) -> None:
        event = CODEC.decode(message.value(), EVENTS)
        assert isinstance(event, ReservationRequested | ReservationReleased)
        known = self.engine.reservations.get(event.reservation_id)
        before = known.status if known else None
        self.engine.process(event)
        state = self.engine.reservations[event.reservation_id]
        repeat = isinstance(event, ReservationRequested) and known is not None
        # the topology publishes a decision on a repeat, and on a change of a requested one
        changed = state.status != before and bool(state.channel)
        if (repeat and state.status != "pending") or changed:
            self.loop.call_soon_threadsafe(self.decisions.offer, state.decision())

    def reserved(self, location: str = "wh") -> int:
        self.engine.flush()
        return self.engine.skus["HOT"].locations[location].reserved

    def stock(self, location: str, units: int) -> None:
        self.engine.process(
            StockAdjusted(
                event_id=f"count-{location}",
                occurred_at=datetime.now(UTC),
                source="wms",
                sku="HOT",
                location=location,
                mode="count",
                quantity=units,
            )
        )

    def events(self) -> list[Any]:
        return [CODEC.decode(m.value(), EVENTS) for m in self.log if m.topic() == EVENTS]


class GuardedServer(TestServer):
    """The app served as run_api serves it: GuardedRunner, with its client timeout."""

    def __init__(self, app: web.Application, client_timeout: float) -> None:
        super().__init__(app)
        self.client_timeout = client_timeout

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GuardedRunner(self.app, client_timeout=self.client_timeout, **kwargs)


@dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    stream: FakeStream
    decisions: Decisions
    availability: AvailabilityView

    async def post(self, body: Any, headers: dict[str, str] = WEB) -> tuple[int, dict[str, Any]]:
        response = await self.client.post("/reservations", json=body, headers=headers)
        return response.status, await response.json()

    async def delete(self, rid: str, headers: dict[str, str] = WEB) -> tuple[int, dict[str, Any]]:
        response = await self.client.delete(f"/reservations/{rid}", headers=headers)
        return response.status, await response.json()


async def make_rig(
    units: int = 10,
    timeout: float = 2.0,
    take_now: TakeNow | None = None,
    route: Route | None = None,
    live_state: LiveState | None = None,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """`settings` on top of the channel tokens (HTTP_CLIENT_TIMEOUT_SECONDS, ...)."""
    decisions, availability = Decisions(), AvailabilityView()
    decisions.caught_up = True
    stream = FakeStream(decisions, asyncio.get_running_loop(), units)
    producer = SourceProducer(client=stream, settings=Settings())
    served = Settings(channel_tokens=TOKENS, **settings)
    app = make_app(
        served,
        CATALOG,
        producer,
        decisions,
        availability,
        decision_timeout=timeout,
        take_now=take_now,
        route=route,
        url="http://127.0.0.1:9",
        live_state=live_state,
    )
    async with TestClient(GuardedServer(app, served.http_client_timeout_seconds)) as client:
        yield Rig(client, stream, decisions, availability)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for r in make_rig():
        yield r


def reservation(rid: str = "r1", quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "reservation_id": rid,
        "channel": "web",
        "lines": [{"sku": "HOT", "quantity": quantity}],
        **extra,
    }


# ---- authentication ----


async def test_health_needs_no_token(rig: Rig) -> None:
    response = await rig.client.get("/health")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "tok-web"}, {"Authorization": "Bearer "}, {"Authorization": "Basic x"}],
)
async def test_a_request_without_a_bearer_token_gets_401(rig: Rig, headers: dict[str, str]) -> None:
    response = await rig.client.post("/reservations", json=reservation(), headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "bearer token" in (await response.json())["error"]
    assert rig.stream.events() == []


async def test_an_unknown_token_gets_401_and_produces_nothing(rig: Rig) -> None:
    status, body = await rig.post(reservation(), {"Authorization": "Bearer tok-nope"})
    assert (status, body["error"]) == (401, "unknown bearer token")
    response = await rig.client.get("/availability/web/HOT", headers={"Authorization": "Bearer x"})
    assert response.status == 401
    assert rig.stream.events() == []


async def test_a_channel_can_only_reserve_for_itself(rig: Rig) -> None:
    status, body = await rig.post(reservation(), AMAZON)
    assert status == 403
    assert body["error"] == "this token is for channel amazon; it cannot reserve for 'web'"
    assert rig.stream.events() == []


# ---- validation: the events' own models, then the catalog ----


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"channel": "web", "lines": [{"sku": "HOT", "quantity": 1}]},
            "reservation_id: required field is missing",
        ),
        (reservation(quantity=0), "lines.0.quantity: Input should be greater than 0"),
        (reservation(quantity="2"), "lines.0.quantity: Input should be a valid integer"),
        (reservation(ttl_seconds=99_999), "ttl_seconds: Input should be less than or equal to"),
        # more than a record can carry (Avro long): refused, not a 503 that asks for a retry
        (reservation(quantity=2**63), "lines.0.quantity: Input should be less than or equal to"),
        ({**reservation(), "channel": 3}, "channel: must be a string"),
        ({**reservation(), "lines": []}, "lines: List should have at least 1 item"),
        (
            {**reservation(), "lines": [{"sku": "HOT", "channel_sku": "HOT", "quantity": 1}]},
            "lines.0: each line needs exactly one of sku or channel_sku",
        ),
        ({**reservation(), "colour": "red"}, "colour: unknown field"),
        ({**reservation(), "event_id": "mine"}, "event_id: set by the API, leave it out"),
        ({**reservation(), "type": "order-created"}, "type: must be reservation-requested"),
        ({**reservation(), "reservation_id": "x" * 201}, "reservation_id: at most 200 characters"),
        (
            {**reservation(), "lines": [{"channel_sku": "NOPE", "quantity": 1}]},
            "line 0: unknown channel_sku 'NOPE' on channel web",
        ),
        (
            {**reservation(), "lines": [{"sku": "HOT", "quantity": 1, "location": "mars"}]},
            "line 0: location 'mars' is not eligible for channel web",
        ),
        ([1, 2], "the body must be a JSON object, got list"),
    ],
)
async def test_bad_input_gets_400_with_the_reason(rig: Rig, body: Any, message: str) -> None:
    status, answer = await rig.post(body)
    assert status == 400, answer
    assert message in answer["error"]
    assert "api:" not in answer["error"]  # no event id the caller never sent
    assert rig.stream.events() == []


async def test_malformed_and_empty_bodies_get_400(rig: Rig) -> None:
    for data, message in ((b"{not json", "malformed JSON"), (b"", "empty body")):
        headers = {**WEB, "Content-Type": "application/json"}
        response = await rig.client.post("/reservations", data=data, headers=headers)
        assert response.status == 400
        assert message in (await response.json())["error"]


# ---- decisions ----


async def test_a_hold_is_201_with_the_held_lines_and_expiry(rig: Rig) -> None:
    status, body = await rig.post(reservation("r1", 3, ttl_seconds=60))
    assert status == 201, body
    assert body["status"] == "held"
    assert body["held"] == [{"sku": "HOT", "location": "wh", "quantity": 3}]
    expires = datetime.fromisoformat(body["expires_at"])
    assert 55 < (expires - datetime.now(UTC)).total_seconds() <= 60
    assert rig.stream.reserved() == 3
    [event] = rig.stream.events()
    assert (event.event_id, event.source, event.reservation_id) == ("api:r1", "api:web", "r1")
    assert rig.stream.log[0].key() == b"HOT"  # keyed by SKU (SPEC §5): decided where it lives


async def test_a_hold_no_location_covers_is_201_with_its_placement_per_sku_and_location(
    rig: Rig,
) -> None:
    rig.stream.stock("store", 4)  # wh 10, store 4: 12 fits neither alone
    status, body = await rig.post(reservation("r1", 12))
    assert status == 201, body
    assert body["placement"] == {"HOT": {"wh": 10, "store": 2}}
    assert body["held"] == [
        {"sku": "HOT", "location": "wh", "quantity": 10},
        {"sku": "HOT", "location": "store", "quantity": 2},
    ]
    assert (rig.stream.reserved("wh"), rig.stream.reserved("store")) == (10, 2)


async def test_a_hold_decided_by_a_worker_without_placement_still_gets_one(rig: Rig) -> None:
    """A decision published before split placement existed (a rolling upgrade, or the API's
    start-up lookback) has `held` only: the 201 gives the placement it implies."""
    offer = rig.decisions.offer

    def old_worker(decision: dict[str, Any]) -> None:
        offer({k: v for k, v in decision.items() if k not in ("placement", "shortfall_by_sku")})

    rig.decisions.offer = old_worker  # type: ignore[method-assign]
    status, body = await rig.post(reservation("r1", 3))
    assert status == 201, body
    assert body["placement"] == {"HOT": {"wh": 3}}


async def test_the_channel_defaults_to_the_tokens(rig: Rig) -> None:
    body = reservation("r1")
    del body["channel"]
    status, answer = await rig.post(body, AMAZON)
    assert (status, answer["channel"]) == (201, "amazon")


async def test_not_enough_is_409_with_the_shortfall_and_nothing_held(rig: Rig) -> None:
    status, body = await rig.post(
        {
            "reservation_id": "r1",
            "lines": [{"sku": "HOT", "quantity": 2}, {"channel_sku": "HOT-2PK", "quantity": 5}],
        }
    )
    assert status == 409
    assert body["status"] == "rejected"
    assert body["shortfall"] == [
        {"line": 1, "item": "HOT-2PK", "requested": 5, "available": 4, "shortfall": 1}
    ]
    # the lines add up to 2 + 5 x 2 = 12 HOT, checked once against the 10 there are
    assert body["shortfall_by_sku"] == [
        {"sku": "HOT", "requested": 12, "available": 10, "shortfall": 2}
    ]
    assert "line 1 (HOT-2PK): requested 5, available 4" in body["error"]
    assert "per SKU: HOT: requested 12, available 10" in body["error"]
    assert body["placement"] == {} and body["held"] == []
    assert rig.stream.reserved() == 0


async def test_a_retried_request_gets_the_same_answer_and_holds_once(rig: Rig) -> None:
    first = await rig.post(reservation("r1", 4))
    again = await asyncio.gather(*(rig.post(reservation("r1", 4)) for _ in range(5)))
    assert first[0] == 201
    assert all(answer == first for answer in again)
    assert rig.stream.reserved() == 4
    assert {e.event_id for e in rig.stream.events()} == {"api:r1"}


async def test_another_channel_cannot_take_over_a_reservation_id(rig: Rig) -> None:
    assert (await rig.post(reservation("r1")))[0] == 201
    body = {**reservation("r1"), "channel": "amazon"}
    status, answer = await rig.post(body, AMAZON)
    assert status == 409
    assert answer["error"] == "reservation_id r1 is already used by another channel"
    assert "held" not in answer


async def test_concurrent_requests_never_hold_more_than_there_is(rig: Rig) -> None:
    tokens = [WEB, AMAZON, {"Authorization": "Bearer tok-pos"}]
    channels = ["web", "amazon", "pos"]
    answers = await asyncio.gather(
        *(
            rig.post({**reservation(f"r{i}"), "channel": channels[i % 3]}, tokens[i % 3])
            for i in range(60)
        )
    )
    assert sorted(status for status, _ in answers) == [201] * 10 + [409] * 50
    assert rig.stream.reserved() == 10


async def test_a_release_frees_the_hold_and_is_idempotent(rig: Rig) -> None:
    await rig.post(reservation("r1", 2))
    status, body = await rig.delete("r1")
    assert (status, body["status"]) == (200, "released")
    assert body["released"] == [{"sku": "HOT", "location": "wh", "quantity": 2}]
    assert rig.stream.reserved() == 0
    again = await rig.delete("r1")
    assert again[0] == 200 and again[1]["status"] == "released"
    assert len(rig.stream.events()) == 2  # the second DELETE was answered from what is known
    status, body = await rig.post(reservation("r1", 2))
    assert status == 409 and body["status"] == "released"  # a closed id is never held again
    assert "use a new reservation_id" in body["error"]


async def test_unknown_and_foreign_reservations_are_404(rig: Rig) -> None:
    await rig.post(reservation("r1", 2))
    for rid, headers in (("nope", WEB), ("r1", AMAZON)):
        status, body = await rig.delete(rid, headers)
        assert status == 404
        assert body["error"].startswith(f"no open reservation {rid} for channel")
    assert rig.stream.reserved() == 2
    assert [type(e).__name__ for e in rig.stream.events()] == ["ReservationRequested"]


async def test_releasing_a_rejected_reservation_says_so(rig: Rig) -> None:
    await rig.post(reservation("big", 50))
    status, body = await rig.delete("big")
    assert (status, body["status"]) == (200, "rejected")


async def test_no_decision_in_time_is_503_and_the_retry_gets_it() -> None:
    async for rig in make_rig(timeout=0.3):
        rig.stream.answer = False
        status, body = await rig.post(reservation("r1"))
        assert status == 503
        assert "retry with the same reservation_id" in body["error"]
        assert body["reservation_id"] == "r1"
        rig.stream.answer = True
        assert (await rig.post(reservation("r1")))[0] == 201
        assert rig.stream.reserved() == 1


async def test_a_broker_refusal_is_503() -> None:
    async for rig in make_rig():
        rig.stream.fail = lambda _message: True
        response = await rig.client.post("/reservations", json=reservation(), headers=WEB)
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert "could not be stored" in (await response.json())["error"]


async def test_decision_latency_is_observed_per_decision_and_not_for_a_refusal(rig: Rig) -> None:
    registry = api_of(rig.client.app).metrics.registry
    name = "inventory_api_decision_seconds"

    def sample(suffix: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"{name}{suffix}", labels)

    assert sample("_count") == 0
    assert (await rig.post(reservation("fast", 1)))[0] == 201
    assert (await rig.post({"lines": []}))[0] == 400  # refused before the stream: no decision
    assert sample("_count") == 1
    real, loop = rig.stream.decisions, asyncio.get_running_loop()

    class Late:
        """The stream's decision, arriving 0.3 s after it was made."""

        def offer(self, decision: Any) -> None:
            loop.call_later(0.3, real.offer, decision)

    rig.stream.decisions = Late()  # type: ignore[assignment]
    assert (await rig.post(reservation("late", 99)))[0] == 409
    assert sample("_count") == 2
    total = sample("_sum")
    assert total is not None and total >= 0.3
    assert sample("_bucket", le="0.25") in (0, 1)  # the late one is not in it
    assert sample("_bucket", le="+Inf") == 2


# ---- availability ----


async def test_availability_is_the_latest_record_of_the_tokens_channel(rig: Rig) -> None:
    record = {
        "channel": "web",
        "channel_sku": "HOT",
        "available": 7,
        "backorderable": 0,
        "restock_date": None,
        "version": 2,
        "as_of": "2026-01-01T00:00:00Z",
        "cause_event_id": "e2",
    }
    rig.availability.offer(record)
    rig.availability.offer({**record, "available": 9, "version": 1})  # older: ignored
    response = await rig.client.get("/availability/web/HOT", headers=WEB)
    assert (response.status, await response.json()) == (200, record)
    response = await rig.client.get("/availability/web/HOT", headers=AMAZON)
    assert response.status == 403
    for path, message in (
        ("/availability/amazon/HOT", "no availability has been published"),
        ("/availability/amazon/NOPE", "channel amazon has no listing 'NOPE'"),
    ):
        response = await rig.client.get(path, headers=AMAZON)
        assert response.status == 404
        assert message in (await response.json())["error"]


# ---- errors are JSON, never a trace ----


async def test_framework_errors_are_json(rig: Rig) -> None:
    response = await rig.client.get("/nowhere", headers=WEB)
    assert (response.status, (await response.json())["error"]) == (
        404,
        "no such endpoint: GET /nowhere",
    )
    response = await rig.client.put("/reservations", headers=WEB)
    assert response.status == 405
    assert "not allowed" in (await response.json())["error"]
    response = await rig.client.post("/reservations", data=b"x" * 100_000, headers=WEB)
    assert response.status == 413
    assert "too large" in (await response.json())["error"]


async def test_a_failure_of_ours_is_a_500_without_a_trace(rig: Rig) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    api_of(rig.client.server.app).producer.encode_event = broken  # type: ignore[method-assign]
    response = await rig.client.post("/reservations", json=reservation(), headers=WEB)
    assert response.status == 500
    text = await response.text()
    assert "secret internals" not in text and "Traceback" not in text
    assert (await response.json())["error"] == "internal error; it has been logged"


# ---- the decisions view ----


async def test_waiters_take_only_what_they_accept_and_closed_ids_are_bounded() -> None:
    decisions = Decisions(remember=2)
    held = {
        "reservation_id": "a",
        "channel": "web",
        "status": "held",
        "expires_at": "2999-01-01T00:00:00Z",
        "held": [],
        "shortfall": [],
    }
    release = decisions.wait("a", lambda d: d["status"] != "held")
    anything = decisions.wait("a")
    decisions.offer(held)
    assert anything.result() == held and not release.done()
    decisions.offer({**held, "status": "released"})
    assert release.result()["status"] == "released"
    for rid in "bcd":
        decisions.offer({**held, "reservation_id": rid, "status": "rejected"})
    assert decisions.known("a") is None and decisions.known("d") is not None
    decisions.offer({**held, "reservation_id": "e"})
    assert decisions.known("e") == {**held, "reservation_id": "e"}  # open holds are all kept


# ---- served by a stream worker ----


async def test_a_worker_serving_the_api_is_handed_each_stored_request_and_answers_it() -> None:
    """The worker gets the record the broker stored (where, and marked as waited on) and decides it
    in the process; the answer is that decision, with no decision from the stream."""
    handed: list[tuple[int, int, bytes, Any]] = []
    streams: list[FakeStream] = []

    def take_now(partition: int, offset: int, key: bytes, value: bytes, headers: Any) -> bool:
        handed.append((partition, offset, key, headers))
        streams[0]._decide(FakeMessage(EVENTS, key, value))  # the worker's own decision
        return True

    async for rig in make_rig(units=3, take_now=take_now):
        streams.append(rig.stream)
        rig.stream.answer = False  # nothing is decided by the stream's fetch
        status, body = await rig.post(reservation("a", 2))
        assert (status, body["placement"]) == (201, {"HOT": {"wh": 2}})
        status, body = await rig.post(reservation("b", 2))
        assert (status, body["status"]) == (409, "rejected")
        assert body["shortfall_by_sku"] == [
            {"sku": "HOT", "requested": 2, "available": 1, "shortfall": 1}
        ]
        stored = [(m.partition(), m.offset()) for m in rig.stream.log if m.topic() == EVENTS]
        assert [(p, o) for p, o, _, _ in handed] == stored
        assert all(key == b"HOT" and headers == [CALLER_WAITING] for _, _, key, headers in handed)


async def test_a_request_the_worker_does_not_take_is_answered_by_the_stream() -> None:
    refused: list[int] = []

    def take_now(partition: int, offset: int, key: bytes, value: bytes, headers: Any) -> bool:
        refused.append(offset)
        return False  # another worker's partition, or records before it not yet handled

    async for rig in make_rig(units=3, take_now=take_now):
        assert (await rig.post(reservation("a", 2)))[0] == 201
        assert refused == [0]


async def test_a_request_whose_owner_cannot_be_reached_is_decided_through_the_stream() -> None:
    asked: list[bytes] = []

    def route(key: bytes) -> str:
        asked.append(key)
        return "http://127.0.0.1:1"  # nothing listens there

    async for rig in make_rig(units=3, route=route):
        status, body = await rig.post(reservation("a", 2))
        assert (status, body["status"]) == (201, "held")
        assert asked == [b"HOT"]
        metrics = api_of(rig.client.server.app).metrics  # type: ignore[attr-defined]
        assert metrics.routed.labels("unreachable")._value.get() == 1


async def test_a_request_passed_on_by_another_worker_is_not_passed_on_again() -> None:
    asked: list[bytes] = []

    def route(key: bytes) -> str:
        asked.append(key)
        return "http://127.0.0.1:1"

    async for rig in make_rig(units=3, route=route):
        status, _ = await rig.post(reservation("a", 2), headers={**WEB, ROUTED_HEADER: "1"})
        assert status == 201
        assert asked == []


async def test_a_request_for_its_own_sku_is_not_routed() -> None:
    async for rig in make_rig(units=3, route=lambda _key: "http://127.0.0.1:9/"):
        assert (await rig.post(reservation("a", 2)))[0] == 201
        metrics = api_of(rig.client.server.app).metrics  # type: ignore[attr-defined]
        assert metrics.routed.labels("unreachable")._value.get() == 0


def route_to(url: str) -> Route:
    return lambda _key: url


async def test_a_request_passed_to_the_owner_gets_its_placement_and_shortfall_per_sku() -> None:
    """The owner's 201 and 409 come back whole through the worker the request was sent to."""
    async for owner in make_rig(units=3):
        owner_url = str(owner.client.make_url("/"))
        async for front in make_rig(units=3, route=route_to(owner_url)):
            front.stream.answer = False  # only the owner decides
            status, body = await front.post(reservation("a", 2))
            assert (status, body["placement"]) == (201, {"HOT": {"wh": 2}})
            status, body = await front.post(reservation("b", 2))
            assert status == 409
            assert body["shortfall_by_sku"] == [
                {"sku": "HOT", "requested": 2, "available": 1, "shortfall": 1}
            ]
            assert "per SKU: HOT: requested 2, available 1" in body["error"]
            assert (owner.stream.reserved(), front.stream.reserved()) == (2, 0)
            metrics = api_of(front.client.server.app).metrics  # type: ignore[attr-defined]
            assert metrics.routed.labels("answered")._value.get() == 2
