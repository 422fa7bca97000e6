"""The reservation API of SPEC §7: HTTP request/reply in front of the reservation stage.

Guarantee: a 201 or 409 is the stream's own decision, read back from
`inventory.reservation-decisions` after the request event was acknowledged by the broker
(acks=all, idempotent producer). The hold itself is made by the worker that owns the SKU's
partition, serialized with that SKU's other events; this process keeps no inventory state, so any
number of API processes can run side by side. Requests are idempotent by `reservation_id`: a retry
is produced again with the same event id and answered with the decision the stream republishes.

Routes: `POST /reservations`, `GET /reservations/{reservation_id}`,
`DELETE /reservations/{reservation_id}`, `GET /availability/{channel}/{channel_sku}`,
`GET /explain/{channel}/{channel_sku}`, `GET /health`, `GET /openapi.json` (the contract,
schemas/openapi.json). Every request but /health carries
`Authorization: Bearer <token>` of a channel (settings.channel_tokens), and a channel acts only for
itself. Every error is a JSON object `{"error": <message>, "status": <code>}`; when the error is
about a reservation (409), the body is the reservation's decision and `status` is its status.
A 201 is the decision: `held` (one entry per SKU and location), `placement`
(`{sku: {location: units}}`, a hold split across locations in sourcing order) and `expires_at`.
A rejection's 409 carries `shortfall` (per request line) and `shortfall_by_sku` (the lines'
units added up per SKU, against what that SKU could hold). A body over settings.api_max_body_bytes
is a 413, a body whose Content-Type is not application/json a 415 (one sent without a
Content-Type is read as JSON), one not complete within settings.http_client_timeout_seconds a
408, and a request aiohttp cannot parse a JSON 400 (streams.runtime.http): no refusal produces
anything. A client that sends `Expect: 100-continue` gets the 401, 413 or 415 its headers earn
instead of the 100, before it sends the body.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram

from streams.client import kafka_config
from streams.codec import Codec, make_codec, record_to_json
from streams.core.catalog import Catalog
from streams.core.engine import check_event
from streams.core.explain import UnknownListing, explain
from streams.core.keys import event_key
from streams.core.models import (
    MAX_TTL_SECONDS,
    ReservationReleased,
    ReservationRequested,
    parse_event,
)
from streams.core.reservations import CONFIRMED, HELD, PENDING, REJECTED, RELEASED
from streams.core.state import SkuState
from streams.errors import Backpressure, DeliveryFailed, EncodingError, InvalidEvent, InventoryError
from streams.metrics import serve as serve_metrics
from streams.runtime.catalog_store import CatalogAssembler
from streams.runtime.http import (
    JSON_TYPE,
    BodyTimeout,
    BodyUnreadable,
    GuardedRunner,
    read_body,
    refusing_before_continue,
    unsupported_type,
)
from streams.runtime.offsets import true_end_offsets
from streams.runtime.producer import SourceProducer
from streams.runtime.topics import (
    CALLER_WAITING,
    CATALOG,
    RESERVATION_DECISIONS,
    availability_topic,
    changelog_topic,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

Decision = dict[str, Any]  # ReservationState.decision(): reservation_id, channel, status, ...
# a stream worker serving the API: handle an acknowledged request now, in the process, if that is
# still its place in the log (partition, offset, key, value, headers -> handled?)
TakeNow = Callable[[int, int, bytes, bytes, Any], bool]
# a stream worker serving the API: the API URL of the worker that owns a key's partition
Route = Callable[[bytes], str | None]
ROUTED_HEADER = "X-Inventory-Routed"  # on a request one worker passed to another: not passed on

DECISION_TIMEOUT_SECONDS = 10.0
PRODUCE_DEADLINE_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
MAX_ID_LENGTH = 200
# Decisions are read from this far back at start-up: every hold still open was decided within it.
LOOKBACK_SECONDS = MAX_TTL_SECONDS + 600
_SET_BY_API = ("event_id", "occurred_at", "source")


# ---- what the API knows about reservations ---------------------------------------------------


class Decisions:
    """Decisions as the stream publishes them: waiters by reservation id, open holds, recent ends.

    Lives on the event loop; the feed thread hands batches over with call_soon_threadsafe. Open
    holds are kept until their expiry (plus a grace period), so a DELETE can check the owner;
    closed reservations are remembered up to `remember` of them, for idempotent answers.
    """

    def __init__(self, remember: int = 200_000, grace_seconds: float = 300.0) -> None:
        self.remember = remember
        self.grace_seconds = grace_seconds
        self.caught_up = False  # the start-up read of recent decisions has reached the end
        self._waiters: dict[str, list[tuple[Callable[[Decision], bool], asyncio.Future[Decision]]]]
        self._waiters = {}
        self._held: dict[str, tuple[float, Decision]] = {}  # id -> (expires at, epoch s; decision)
        self._closed: OrderedDict[str, Decision] = OrderedDict()
        self._offers = 0

    def wait(
        self, reservation_id: str, accept: Callable[[Decision], bool] = lambda _d: True
    ) -> asyncio.Future[Decision]:
        """A future for the next decision on `reservation_id` that `accept` takes."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(reservation_id, []).append((accept, future))
        return future

    def forget(self, reservation_id: str, future: asyncio.Future[Decision]) -> None:
        waiting = self._waiters.get(reservation_id)
        if waiting is None:
            return
        waiting[:] = [(a, f) for a, f in waiting if f is not future]
        if not waiting:
            del self._waiters[reservation_id]

    def known(self, reservation_id: str) -> Decision | None:
        """The latest decision seen for `reservation_id`, if it is open or recently closed."""
        held = self._held.get(reservation_id)
        return held[1] if held is not None else self._closed.get(reservation_id)

    def offer_many(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self.offer(decision)

    def offer(self, decision: Decision) -> None:
        rid = decision["reservation_id"]
        if decision["status"] == HELD:
            self._held[rid] = (_epoch(decision.get("expires_at")), decision)
            self._closed.pop(rid, None)
        elif decision["status"] != PENDING:
            self._held.pop(rid, None)
            self._closed[rid] = decision
            self._closed.move_to_end(rid)
            while len(self._closed) > self.remember:
                self._closed.popitem(last=False)
        waiting = self._waiters.get(rid)
        if waiting:
            keep = []
            for accept, future in waiting:
                if future.done():
                    continue
                if accept(decision):
                    future.set_result(decision)
                else:
                    keep.append((accept, future))
            if keep:
                waiting[:] = keep
            else:
                del self._waiters[rid]
        self._offers += 1
        if self._offers % 10_000 == 0:
            self._drop_expired()

    def _drop_expired(self) -> None:
        horizon = time.time() - self.grace_seconds
        for rid in [rid for rid, (expires, _) in self._held.items() if expires < horizon]:
            del self._held[rid]


class StateView:
    """The latest committed SKU state per SKU (the workers' `skus` table changelog), for explain."""

    def __init__(self) -> None:
        self._states: dict[str, SkuState] = {}

    def offer(self, sku: str, value: bytes | None) -> None:
        if value is None:
            self._states.pop(sku, None)
            return
        self._states[sku] = SkuState.from_dict(json.loads(value))  # one dict store: thread-safe

    def get(self, sku: str) -> SkuState | None:
        return self._states.get(sku)


class AvailabilityView:
    """The latest availability record per (channel, channel_sku), as JSON; highest version wins."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], dict[str, Any]] = {}

    def offer(self, record: dict[str, Any]) -> None:
        key = (record["channel"], record["channel_sku"])
        current = self._records.get(key)
        if current is None or record["version"] >= current["version"]:
            self._records[key] = record  # one dict store: safe to do from the feed thread

    def get(self, channel: str, channel_sku: str) -> dict[str, Any] | None:
        return self._records.get((channel, channel_sku))


def _epoch(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


# ---- feeds: Kafka topics into the views, one consumer thread each ----------------------------


def _consumer(bootstrap: str, fetch_wait_ms: int) -> Consumer:
    """A consumer that joins no group (assign() only) and commits nothing."""
    return Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"reservation-api-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Tansu answers a fetch that finds nothing only after this wait, so it bounds the
            # latency a quiet moment adds; each empty fetch costs the broker CPU, though
            "fetch.wait.max.ms": fetch_wait_ms,
            "log_level": 0,
        }
    )


def _arrived(consumer: Consumer, timeout: float) -> list[Message]:
    """What has arrived, waiting for the first record only (consume(n, t) waits for n or t)."""
    first = consumer.poll(timeout)
    return [] if first is None else [first, *consumer.consume(500, 0)]


class _FeedThread:
    """A background reader thread: launched once, stopped by setting its halt flag."""

    def __init__(self) -> None:
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def _launch(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class DecisionFeed(_FeedThread):
    """Reads `inventory.reservation-decisions` on every partition into a Decisions view.

    Start positions are fixed in start(), before any request is produced, so no decision made
    after start() can be missed; they go back LOOKBACK_SECONDS so every open hold is known.
    """

    def __init__(
        self,
        bootstrap: str,
        partitions: int,
        decisions: Decisions,
        loop: asyncio.AbstractEventLoop,
        *,
        lookback_seconds: float = LOOKBACK_SECONDS,
        fetch_wait_ms: int = 10,
    ) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.decisions = decisions
        self.loop = loop
        self.lookback_seconds = lookback_seconds
        self.fetch_wait_ms = fetch_wait_ms
        super().__init__()

    def start(self) -> None:
        """Fix the start offsets and begin reading (blocking: call it from a thread)."""
        parts = list(range(self.partitions))
        ends = true_end_offsets(self.bootstrap, RESERVATION_DECISIONS, parts)
        consumer = _consumer(self.bootstrap, self.fetch_wait_ms)
        since = int((time.time() - self.lookback_seconds) * 1000)
        try:
            found = consumer.offsets_for_times(
                [TopicPartition(RESERVATION_DECISIONS, p, since) for p in parts], timeout=10
            )
            starts = {
                tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found
            }
        except KafkaException as error:
            log.warning("reservation API: offsets by time unavailable (%s); reading all", error)
            starts = dict.fromkeys(parts, 0)
        consumer.assign([TopicPartition(RESERVATION_DECISIONS, p, starts[p]) for p in parts])
        behind = {p for p in parts if starts[p] < ends[p]}
        if not behind:
            self.loop.call_soon_threadsafe(setattr, self.decisions, "caught_up", True)
        self._launch(self._run, (consumer, ends, behind), "api-decisions")

    def _run(self, consumer: Consumer, ends: dict[int, int], behind: set[int]) -> None:
        try:
            while not self._halt.is_set():
                batch: list[Decision] = []
                for message in _arrived(consumer, 0.05):
                    if message.error() is not None:
                        continue
                    value, partition, offset = (
                        message.value(),
                        message.partition(),
                        message.offset(),
                    )
                    if value is None or partition is None or offset is None:
                        continue
                    try:
                        batch.append(json.loads(value))
                    except (ValueError, TypeError):
                        log.warning("reservation API: undecodable decision at %s", offset)
                        continue
                    if partition in behind and offset + 1 >= ends[partition]:
                        behind.discard(partition)
                        if not behind:
                            self.loop.call_soon_threadsafe(
                                setattr, self.decisions, "caught_up", True
                            )
                if batch:
                    self.loop.call_soon_threadsafe(self.decisions.offer_many, batch)
        except Exception as error:  # reported by /health; never a silent stop
            self.error = f"decision feed stopped: {error}"
            log.exception("reservation API: decision feed stopped")
        finally:
            consumer.close()


class ViewFeed(_FeedThread):
    """Reads `inventory.catalog` and every `availability.<channel>` from the beginning."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        catalog: Catalog,
        view: AvailabilityView,
        on_catalog: Callable[[Catalog], None],
        *,
        partitions: int,
        fetch_wait_ms: int = 100,
        states: StateView | None = None,
        state_topic: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.view = view
        self.states = states
        self.state_topic = state_topic
        self.on_catalog = on_catalog
        self.partitions = partitions
        self.fetch_wait_ms = fetch_wait_ms
        self._channels = {c.id for c in catalog.channels}
        self._version = catalog.version
        self._catalogs = CatalogAssembler()
        super().__init__()

    def start(self) -> None:
        consumer = _consumer(self.bootstrap, self.fetch_wait_ms)
        states = (
            [TopicPartition(self.state_topic, p, 0) for p in range(self.partitions)]
            if self.states is not None and self.state_topic
            else []
        )
        consumer.assign(
            [
                TopicPartition(CATALOG, 0, 0),
                *self._availability_partitions(self._channels),
                *states,
            ]
        )
        self._launch(self._run, (consumer,), "api-views")

    def _availability_partitions(self, channels: Iterable[str]) -> list[TopicPartition]:
        return [
            TopicPartition(availability_topic(ch), p, 0)
            for ch in sorted(channels)
            for p in range(self.partitions)
        ]

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._halt.is_set():
                for message in _arrived(consumer, 0.1):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.debug("reservation API: %s", error.str())
                        continue
                    topic = message.topic() or ""
                    if topic == self.state_topic and self.states is not None:
                        key = message.key()
                        if key is not None and not key.startswith(b"\x00"):  # commit markers
                            self.states.offer(key.decode(), message.value())
                        continue
                    if topic == CATALOG:
                        self._take_catalog(consumer, message)
                        continue
                    self._take(topic, message.value())
        except Exception as error:
            self.error = f"availability feed stopped: {error}"
            log.exception("reservation API: availability feed stopped")
        finally:
            consumer.close()

    def _take_catalog(self, consumer: Consumer, message: Message) -> None:
        offset = message.offset()
        assert offset is not None  # set on every consumed record
        try:
            catalog = self._catalogs.offer(message.key(), message.value(), offset)
        except InventoryError as error:
            log.warning("reservation API: unreadable catalog record: %s", error)
            return
        if catalog is None or catalog.version < self._version:
            return
        self._version = catalog.version
        self.on_catalog(catalog)
        new = {c.id for c in catalog.channels} - self._channels
        if new:
            self._channels |= new
            consumer.incremental_assign(self._availability_partitions(new))

    def _take(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self.codec.decode(value, topic)
        except InventoryError as error:
            log.warning("reservation API: undecodable record on %s: %s", topic, error)
            return
        self.view.offer(record_to_json(record))


# ---- metrics ---------------------------------------------------------------------------------


class ApiMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, prefix: str = "inventory"
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r, p = self.registry, prefix
        self.requests = Counter(
            f"{p}_api_requests_total",
            "API requests answered, by route and status code",
            ["route", "code"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            f"{p}_api_decision_seconds",
            "From the request to the stream's decision",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.routed = Counter(
            f"{p}_api_routed_total",
            "Reservation requests passed to the worker that owns their SKU, by outcome "
            "(answered there, or unreachable and decided through the topics instead)",
            ["outcome"],
            registry=r,
        )


# ---- the HTTP layer --------------------------------------------------------------------------


class _Refused(Exception):
    """A request answered with an error before it reached the stream."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def _error(code: int, message: str, **extra: Any) -> web.Response:
    headers = {}
    if code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="inventory-streams"'
    if code == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    body = {"error": message, "status": code, **extra}  # a reservation's own status wins
    return web.json_response(body, status=code, headers=headers)


class ReservationApi:
    """The request handlers: authenticate, validate like the events, produce, await the decision."""

    def __init__(
        self,
        tokens: Mapping[str, str],
        catalog: Catalog,
        producer: SourceProducer,
        decisions: Decisions,
        availability: AvailabilityView,
        *,
        metrics: ApiMetrics | None = None,
        decision_timeout: float = DECISION_TIMEOUT_SECONDS,
        health: Callable[[], str | None] = lambda: None,
        take_now: TakeNow | None = None,
        route: Route | None = None,
        url: str | None = None,
        states: StateView | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_body_bytes: int = 64 * 1024,
        client_timeout: float = 10.0,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.client_timeout = client_timeout  # for a whole body to arrive
        self.states = states if states is not None else StateView()
        self._clock = clock  # its date is the one backorders count from (wall time, live)
        self._tokens = [(token.encode(), channel) for channel, token in tokens.items() if token]
        self._take_now = take_now
        self._route = route
        self._url = url.rstrip("/") if url else None
        self._session: ClientSession | None = None  # to other workers, opened on first use
        self.catalog = catalog
        self.producer = producer
        self.decisions = decisions
        self.availability = availability
        self.metrics = metrics or ApiMetrics()
        self.decision_timeout = decision_timeout
        self._health = health
        self._in_flight: dict[str, str] = {}  # reservation id -> channel, while its POST waits

    def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog  # one reference swap: safe from the feed thread

    # ---- routes ----

    async def reserve(self, request: web.Request) -> web.Response:
        channel = self._headers_acceptable(request)
        event = self._reservation(await self._json(request), channel)
        routed = await self._pass_to_owner(request, event)
        if routed is not None:
            return routed
        rid = event.reservation_id
        started = time.perf_counter()
        self._in_flight.setdefault(rid, channel)
        try:
            decision = await self._ask(rid, event, lambda _d: True)
        finally:
            if self._in_flight.get(rid) == channel:
                del self._in_flight[rid]
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        if decision["channel"] != channel:
            if not decision["channel"]:  # released before it was ever requested
                raise _Refused(
                    409,
                    f"reservation {rid} was already {decision['status']} before "
                    "it was requested; use a new reservation_id",
                    reservation_id=rid,
                    status=decision["status"],
                )
            raise _Refused(
                409, f"reservation_id {rid} is already used by another channel", reservation_id=rid
            )
        status = decision["status"]
        if status == HELD:
            return web.json_response(_with_placement(decision), status=201)
        if status == REJECTED:
            short = "; ".join(
                f"line {s['line']} ({s['item']}): requested {s['requested']}, "
                f"available {s['available']}"
                for s in decision["shortfall"]
            )
            by_sku = "; ".join(
                f"{s['sku']}: requested {s['requested']}, available {s['available']}"
                for s in decision.get("shortfall_by_sku", ())
            )
            if by_sku:
                short = f"{short} (per SKU: {by_sku})"
            return _error(409, f"not enough available, nothing was held: {short}", **decision)
        return _error(
            409,
            f"reservation {rid} is already {status}; use a new reservation_id to reserve again",
            **decision,
        )

    async def release(self, request: web.Request) -> web.Response:
        channel = self._authenticate(request)
        rid = request.match_info["reservation_id"]
        known = self.decisions.known(rid)
        owner = known["channel"] if known is not None else self._in_flight.get(rid)
        if owner is None and not self.decisions.caught_up:
            raise _Refused(503, "the API is still reading recent reservations; retry shortly")
        if owner != channel:  # someone else's reservation looks exactly like an unknown one
            raise _Refused(
                404,
                f"no open reservation {rid} for channel {channel} (unknown, or closed long ago)",
                reservation_id=rid,
            )
        if known is None or known["status"] == HELD:
            event = ReservationReleased(
                event_id=f"api:release:{rid}",
                occurred_at=datetime.now(UTC),
                source=f"api:{channel}",
                reservation_id=rid,
            )
            known = await self._ask(rid, event, lambda d: d["status"] != HELD)
        status = known["status"]
        body = {
            "reservation_id": rid,
            "channel": channel,
            "status": status,
            "released": known.get("held", []) if status == RELEASED else [],
        }
        if status == CONFIRMED:
            return _error(
                409, f"reservation {rid} is confirmed by an order; cancel the order instead", **body
            )
        return web.json_response(body, status=200)

    async def available(self, request: web.Request) -> web.Response:
        channel = self._authenticate(request)
        wanted, channel_sku = request.match_info["channel"], request.match_info["channel_sku"]
        if wanted != channel:
            raise _Refused(403, f"this token is for channel {channel}; it cannot read {wanted}")
        record = self.availability.get(channel, channel_sku)
        if record is not None:
            return web.json_response(record)
        if (channel, channel_sku) not in self.catalog.listing_by_key:
            raise _Refused(404, f"channel {channel} has no listing {channel_sku!r}")
        raise _Refused(
            404, f"no availability has been published for {channel_sku!r} on {channel} yet"
        )

    async def reservation(self, request: web.Request) -> web.Response:
        channel = self._authenticate(request)
        rid = request.match_info["reservation_id"]
        known = self.decisions.known(rid)
        if known is None and rid not in self._in_flight and not self.decisions.caught_up:
            raise _Refused(503, "the API is still reading recent reservations; retry shortly")
        if known is None or known["channel"] != channel:  # another's looks like an unknown one
            pending = self._in_flight.get(rid) == channel
            raise _Refused(
                404,
                f"reservation {rid} is being decided; retry shortly"
                if pending
                else f"no reservation {rid} for channel {channel} (unknown, or closed long ago)",
                reservation_id=rid,
            )
        decision = _with_placement(known)
        body = {
            k: decision.get(k)
            for k in ("reservation_id", "channel", "status", "expires_at", "held", "placement")
        }
        if decision["status"] == REJECTED:
            body["shortfall"] = decision.get("shortfall", [])
            body["shortfall_by_sku"] = decision.get("shortfall_by_sku", [])
        return web.json_response(body)

    async def explanation(self, request: web.Request) -> web.Response:
        channel = self._authenticate(request)
        wanted, channel_sku = request.match_info["channel"], request.match_info["channel_sku"]
        if wanted != channel:
            raise _Refused(403, f"this token is for channel {channel}; it cannot read {wanted}")
        catalog = self.catalog
        listing = catalog.listing_by_key.get((channel, channel_sku))
        if listing is None:
            raise _Refused(404, f"channel {channel} has no listing {channel_sku!r}")
        states = {}
        for component in listing.components:
            state = self.states.get(component.sku)
            if state is not None:
                states[component.sku] = state
        try:
            found = explain(catalog, states, channel, channel_sku, self._clock().date())
        except UnknownListing as error:  # the catalog changed under us
            raise _Refused(404, str(error)) from None
        return web.json_response(
            {**found.to_json(), "published": self.availability.get(channel, channel_sku)}
        )

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def health(self, _request: web.Request) -> web.Response:
        problem = self._health()
        body = {
            "status": "ok" if problem is None else "failing",
            "decisions": "live" if self.decisions.caught_up else "catching-up",
            "catalog_version": self.catalog.version,
        }
        if problem is not None:
            body["error"] = problem
        return web.json_response(body, status=200 if problem is None else 503)

    async def close(self, _app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()

    # ---- steps ----

    async def _pass_to_owner(
        self, request: web.Request, event: ReservationRequested
    ) -> web.Response | None:
        """Served by a worker: a request whose SKU another worker owns is passed to that worker,
        which decides it in its process; None when it is ours, unknown, or unreachable (then it
        is decided through the topics, as the API process does)."""
        if self._route is None or request.headers.get(ROUTED_HEADER):
            return None
        owner = self._route(event_key(event, self.catalog).encode())
        if owner is None or owner.rstrip("/") == self._url:
            return None
        if self._session is None:
            self._session = ClientSession(
                timeout=ClientTimeout(total=self.decision_timeout + PRODUCE_DEADLINE_SECONDS),
                # let go of an idle connection before the owner's server closes it under us
                connector=TCPConnector(keepalive_timeout=self.client_timeout / 2),
            )
        headers = {
            "Authorization": request.headers.get("Authorization", ""),
            "Content-Type": "application/json",
            ROUTED_HEADER: "1",
        }
        try:
            async with self._session.post(
                f"{owner.rstrip('/')}/reservations", data=await request.read(), headers=headers
            ) as answer:
                body = await answer.json()
                passed = {k: v for k, v in answer.headers.items() if k in _PASSED_HEADERS}
                status = answer.status
        except (ClientError, TimeoutError, ValueError) as error:
            log.warning("reservation API: the owner at %s did not answer (%s)", owner, error)
            self.metrics.routed.labels("unreachable").inc()
            return None
        self.metrics.routed.labels("answered").inc()
        if status == 201:
            self.decisions.offer(body)  # a DELETE sent here next knows it at once
        return web.json_response(body, status=status, headers=passed)

    def _authenticate(self, request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>' "
                "with your channel's token",
            )
        given = token.strip().encode("utf-8", "surrogateescape")  # the bytes as sent, any
        channel = None
        for expected, name in self._tokens:  # compare with every token: no early exit
            if hmac.compare_digest(expected, given):
                channel = name
        if channel is None:
            raise _Refused(401, "unknown bearer token")
        return channel

    def refusal_before_body(self, request: web.Request) -> web.Response | None:
        """The answer a POST /reservations gets from its headers alone (401, 413, 415), or None:
        sent instead of 100 Continue to a client that asks before sending its body."""
        try:
            self._headers_acceptable(request)
        except _Refused as refused:
            response = _error(refused.code, refused.message, **refused.extra)
            self.metrics.requests.labels(_route_of(request), str(response.status)).inc()
            return response
        return None

    def _headers_acceptable(self, request: web.Request) -> str:
        """The channel of a POST /reservations whose body may be read: authenticated, within the
        size limit (refused before the body is read) and of JSON's type; else _Refused."""
        channel = self._authenticate(request)
        if (request.content_length or 0) > self.max_body_bytes:
            raise _Refused(413, _too_large(self.max_body_bytes))
        problem = unsupported_type(request, (JSON_TYPE,))
        if problem is not None:
            raise _Refused(415, problem)
        return channel

    async def _json(self, request: web.Request) -> Any:
        try:
            body = await read_body(request, self.client_timeout)
        except BodyTimeout as error:
            raise _Refused(408, f"{error}; send the whole request at once") from None
        except BodyUnreadable as error:
            raise _Refused(400, str(error)) from None
        if not body.strip():
            raise _Refused(400, "empty body: send the reservation as a JSON object")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise _Refused(400, f"malformed JSON: {error}") from None
        except RecursionError:
            raise _Refused(400, "malformed JSON: nested too deeply") from None

    def _reservation(self, data: Any, channel: str) -> ReservationRequested:
        """The body as a reservation-requested event, validated by the events' own models."""
        if not isinstance(data, dict):
            raise _Refused(400, f"the body must be a JSON object, got {type(data).__name__}")
        if data.get("type", "reservation-requested") != "reservation-requested":
            raise _Refused(400, "type: must be reservation-requested (or left out)")
        for name in _SET_BY_API:
            if name in data:
                raise _Refused(400, f"{name}: set by the API, leave it out")
        rid = data.get("reservation_id")
        if isinstance(rid, str) and len(rid.strip()) > MAX_ID_LENGTH:
            raise _Refused(400, f"reservation_id: at most {MAX_ID_LENGTH} characters")
        data = {**data, "channel": data.get("channel", channel)}
        if not isinstance(data["channel"], str):
            raise _Refused(400, f"channel: must be a string, got {type(data['channel']).__name__}")
        if data["channel"] != channel:
            raise _Refused(
                403,
                f"this token is for channel {channel}; it cannot reserve for {data['channel']!r}",
            )
        try:
            event = parse_event(
                {
                    **data,
                    "type": "reservation-requested",
                    "event_id": f"api:{rid.strip() if isinstance(rid, str) else ''}",
                    "occurred_at": datetime.now(UTC),
                    "source": f"api:{channel}",
                }
            )
        except InvalidEvent as error:
            raise _Refused(400, _without_event_id(error.reason)) from None
        assert isinstance(event, ReservationRequested)
        reason = check_event(event, self.catalog)
        if reason is not None:
            raise _Refused(400, _without_event_id(reason))
        return event

    async def _ask(
        self,
        rid: str,
        event: ReservationRequested | ReservationReleased,
        accept: Callable[[Decision], bool],
    ) -> Decision:
        """Produce `event` (acknowledged by the broker) and await the decision `accept` takes."""
        future = self.decisions.wait(rid, accept)  # registered first: the answer can be quick
        try:
            try:
                key = event_key(event, self.catalog)
                out = self.producer.encode_event(event, key, headers=(CALLER_WAITING,))
                stored = await self.producer.send_async([out], deadline=PRODUCE_DEADLINE_SECONDS)
            except (Backpressure, DeliveryFailed, EncodingError) as error:
                raise _Refused(
                    503,
                    f"the request could not be stored ({error}); retry with the "
                    "same reservation_id",
                    reservation_id=rid,
                ) from None
            if self._take_now is not None and out.key is not None:
                (partition, offset), headers = stored[0], list(out.headers)
                self._take_now(partition, offset, out.key, out.value, headers)  # decided now?
            try:
                return await asyncio.wait_for(future, self.decision_timeout)
            except TimeoutError:
                raise _Refused(
                    503,
                    f"no decision within {self.decision_timeout:g} s; the "
                    "request is stored and will be decided: retry with the same "
                    "reservation_id for the answer",
                    reservation_id=rid,
                ) from None
        finally:
            self.decisions.forget(rid, future)


_PASSED_HEADERS = ("Retry-After", "WWW-Authenticate")
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "schemas" / "openapi.json"


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The API contract (OpenAPI 3.1), read once from the repository's schemas/openapi.json."""
    return dict(json.loads(OPENAPI_FILE.read_text(encoding="utf-8")))


def _with_placement(decision: Decision) -> Decision:
    """A held decision with `placement` (units per SKU and location), rebuilt from `held` when a
    worker from before split placement published it (a rolling upgrade, the start-up lookback)."""
    if "placement" in decision:
        return decision
    placement: dict[str, dict[str, int]] = {}
    for part in decision.get("held", ()):
        at = placement.setdefault(part["sku"], {})
        at[part["location"]] = at.get(part["location"], 0) + part["quantity"]
    return {**decision, "placement": placement}


def _without_event_id(reason: str) -> str:
    """`reservation-requested api:r1: lines.0: ...` -> `lines.0: ...`: callers send no event id."""
    head, sep, rest = reason.partition(": ")
    return rest if sep and head.startswith("reservation-requested") else reason


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON with a message; a failure of ours is logged, never shown as a trace."""
    api: ReservationApi = request.app[_API_KEY]
    route = _route_of(request)
    try:
        response = await handler(request)
    except _Refused as refused:
        response = _error(refused.code, refused.message, **refused.extra)
        if refused.code == 408:
            response.force_close()  # the rest of a late body is not waited for on this connection
    except web.HTTPException as exc:  # aiohttp's own: no route, wrong method, body too large
        if exc.status < 400:
            raise
        messages = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
            413: _too_large(api.max_body_bytes),
        }
        response = _error(exc.status, messages.get(exc.status, exc.reason))
    except Exception:
        log.exception("reservation API: %s %s failed", request.method, request.path)
        response = _error(500, "internal error; it has been logged")
    api.metrics.requests.labels(route, str(response.status)).inc()
    return response


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource else "unmatched"


def _too_large(limit: int) -> str:
    return f"request body too large (at most {limit} bytes)"


_API_KEY: web.AppKey[ReservationApi] = web.AppKey("reservation_api", ReservationApi)


def make_app(
    settings: Settings,
    catalog: Catalog,
    producer: SourceProducer,
    decisions: Decisions,
    availability: AvailabilityView,
    *,
    metrics: ApiMetrics | None = None,
    decision_timeout: float = DECISION_TIMEOUT_SECONDS,
    health: Callable[[], str | None] = lambda: None,
    take_now: TakeNow | None = None,
    route: Route | None = None,
    url: str | None = None,
    states: StateView | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The API as an aiohttp application over the given producer and views (tests pass fakes).

    The producer's delivery reports are served by its background poller while the app runs; the
    producer itself belongs to the caller.
    """
    api = ReservationApi(
        settings.channel_tokens,
        catalog,
        producer,
        decisions,
        availability,
        metrics=metrics,
        decision_timeout=decision_timeout,
        health=health,
        take_now=take_now,
        route=route,
        url=url,
        states=states,
        clock=clock,
        max_body_bytes=settings.api_max_body_bytes,
        client_timeout=settings.http_client_timeout_seconds,
    )
    app = web.Application(client_max_size=settings.api_max_body_bytes, middlewares=[_json_errors])
    app[_API_KEY] = api
    app.router.add_post(
        "/reservations",
        api.reserve,
        expect_handler=refusing_before_continue(api.refusal_before_body),
    )
    app.router.add_get("/reservations/{reservation_id}", api.reservation)
    app.router.add_delete("/reservations/{reservation_id}", api.release)
    app.router.add_get("/availability/{channel}/{channel_sku}", api.available)
    app.router.add_get("/explain/{channel}/{channel_sku}", api.explanation)
    app.router.add_get("/health", api.health)
    app.router.add_get("/openapi.json", api.openapi)

    app.cleanup_ctx.append(producer.polling_while_serving)
    app.on_cleanup.append(api.close)
    return app


def api_of(app: web.Application) -> ReservationApi:
    return app[_API_KEY]


async def run_api(
    settings: Settings,
    bootstrap: str,
    catalog: Catalog,
    stop: asyncio.Event,
    port: int | None = None,
    *,
    host: str = "0.0.0.0",
    registry: CollectorRegistry | None = None,
    decision_timeout: float = DECISION_TIMEOUT_SECONDS,
    started: asyncio.Event | None = None,
    attach: Callable[[Decisions], None] | None = None,
    take_now: TakeNow | None = None,
    route: Route | None = None,
    url: str | None = None,
) -> None:
    """Serve the API on `port` (settings.api_port) in the running loop until `stop` is set.

    The decision feed's start positions are fixed before the port opens; `started` is set once
    requests are accepted. A stream worker serving the API (inventory_streams.worker) passes
    `attach`, to hand the decisions it makes straight to the view, `take_now`, to decide a
    request as soon as the broker has stored it, and `route` with its own `url`, to pass a
    request to the worker that owns its SKU.
    """
    loop = asyncio.get_running_loop()
    decisions = Decisions()
    if attach is not None:
        attach(decisions)
    availability = AvailabilityView()
    states = StateView()
    producer = SourceProducer(bootstrap, settings=settings, linger_ms=settings.api_linger_ms)
    decision_feed = DecisionFeed(bootstrap, settings.topic_partitions, decisions, loop)
    holder: list[ReservationApi] = []
    view_feed = ViewFeed(
        bootstrap,
        make_codec(settings),
        catalog,
        availability,
        lambda c: holder[0].set_catalog(c) if holder else None,
        partitions=settings.topic_partitions,
        states=states,
        state_topic=changelog_topic(settings.app_id, "skus"),
    )

    def health() -> str | None:
        for feed in (decision_feed, view_feed):
            if not feed.alive():
                return feed.error or "a feed is not running"
        return None

    app = make_app(
        settings,
        catalog,
        producer,
        decisions,
        availability,
        metrics=ApiMetrics(registry),
        decision_timeout=decision_timeout,
        health=health,
        take_now=take_now,
        route=route,
        url=url,
        states=states,
    )
    holder.append(api_of(app))
    await asyncio.to_thread(decision_feed.start)
    await asyncio.to_thread(view_feed.start)
    runner = GuardedRunner(app, client_timeout=settings.http_client_timeout_seconds)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, settings.api_port if port is None else port).start()
        log.info("reservation API on %s:%s", host, settings.api_port if port is None else port)
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(decision_feed.stop)
        await asyncio.to_thread(view_feed.stop)
        await asyncio.to_thread(producer.close, 10.0)


def main(argv: list[str] | None = None) -> int:
    """`python -m streams.api`: the API as a process of its own (benchmarks, manual runs)."""
    from streams.runtime.catalog_store import read_latest
    from streams.settings import get_settings

    parser = argparse.ArgumentParser(description="the reservation API (SPEC §7)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--decision-timeout", type=float, default=DECISION_TIMEOUT_SECONDS)
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here")
    args = parser.parse_args(argv)
    settings = get_settings()
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS to the cluster the workers use")
    catalog = read_latest(bootstrap)
    if catalog is None:
        raise SystemExit("no catalog on inventory.catalog: run `inventory-streams catalog FILE`")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    registry = CollectorRegistry()
    if args.metrics_port:
        serve_metrics(
            registry,
            args.metrics_port,
            "0.0.0.0",
            client_timeout=settings.http_client_timeout_seconds,
        )

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run_api(
            settings,
            bootstrap,
            catalog,
            stop,
            args.port,
            decision_timeout=args.decision_timeout,
            registry=registry,
        )

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
