"""The reservation API's HTTP layer: the routes, their authentication, the aiohttp application
and `run_api`, which serves it over the decision and availability feeds.

Guarantee: a request is refused (401, 403, 400, 408, 413, 415) before anything is produced, and
every answer is JSON, counted by route and status code; a 201 or 409 is the stream's decision,
and the decision feed's start positions are fixed before the port opens.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from streams.api.decisions import Decision, DecisionFeed, Decisions
from streams.api.routing import OwnerRouting, Route
from streams.api.views import AvailabilityView, ChangelogReader, LiveState, StateView, ViewFeed
from streams.codec import make_codec
from streams.core.catalog import Catalog
from streams.core.check import check_event
from streams.core.explain import UnknownListing, explain
from streams.core.keys import event_key
from streams.core.models import ReservationReleased, ReservationRequested, parse_event
from streams.core.reservations import CONFIRMED, HELD, REJECTED, RELEASED
from streams.core.state import SkuState
from streams.errors import Backpressure, DeliveryFailed, EncodingError, InvalidEvent
from streams.metrics import serve as serve_metrics
from streams.runtime.http import (
    HEALTH_PATH,
    JSON_TYPE,
    BodyTimeout,
    BodyUnreadable,
    GuardedRunner,
    read_body,
    refusing_before_continue,
    unsupported_type,
)
from streams.runtime.producer import SourceProducer
from streams.runtime.topics import CALLER_WAITING, changelog_topic
from streams.settings import Settings

log = logging.getLogger(__name__)

# a stream worker serving the API: handle an acknowledged request now, in the process, if that is
# still its place in the log (partition, offset, key, value, headers -> handled?)
TakeNow = Callable[[int, int, bytes, bytes, Any], bool]

DECISION_TIMEOUT_SECONDS = 10.0
PRODUCE_DEADLINE_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
MAX_ID_LENGTH = 200
_SET_BY_API = ("event_id", "occurred_at", "source")


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
        self.explain_routed = Counter(
            f"{p}_api_explain_routed_total",
            "Explain requests passed to the worker that holds the listing's first SKU, by outcome "
            "(answered there, or unreachable and answered here from the changelog)",
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
        live_state: LiveState | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_body_bytes: int = 64 * 1024,
        client_timeout: float = 10.0,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.client_timeout = client_timeout  # for a whole body to arrive
        self.states = states if states is not None else StateView()
        self._live: LiveState = live_state or (lambda _sku: None)  # a worker's own SKUs
        self._clock = clock  # its date is the one backorders count from (wall time, live)
        self._tokens = [(token.encode(), channel) for channel, token in tokens.items() if token]
        self._take_now = take_now
        self.catalog = catalog
        self.producer = producer
        self.decisions = decisions
        self.availability = availability
        self.metrics = metrics or ApiMetrics()
        self.decision_timeout = decision_timeout
        self._health = health
        self._in_flight: dict[str, str] = {}  # reservation id -> channel, while its POST waits
        self._owners = OwnerRouting(
            route,
            url,
            decisions,
            self.metrics.routed,
            timeout=decision_timeout + PRODUCE_DEADLINE_SECONDS,
            keepalive_timeout=client_timeout / 2,
            reads_routed=self.metrics.explain_routed,
            read_timeout=decision_timeout,  # an answer from memory: no event to wait for
        )

    def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog  # one reference swap: safe from the feed thread

    # ---- routes ----

    async def reserve(self, request: web.Request) -> web.Response:
        channel = self._headers_acceptable(request)
        event = self._reservation(await self._json(request), channel)
        routed = await self._owners.pass_to_owner(request, event, self.catalog)
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
        listing = self.catalog.listing_by_key.get((channel, channel_sku))
        if listing is None:
            raise _Refused(404, f"channel {channel} has no listing {channel_sku!r}")
        first = listing.components[0].sku  # where a reservation of the listing is decided
        if self._live(first) is None:  # its worker's memory is ahead of the changelog: ask it
            routed = await self._owners.pass_read(request, first.encode())
            if routed is not None:
                return routed
        elsewhere = [c.sku for c in listing.components if self._live(c.sku) is None]
        owned: dict[str, SkuState] = {}
        for sku in elsewhere:  # a bundle's other SKU another worker holds: from its memory
            if sku == first:
                continue  # its owner was asked above, or cannot be
            found = await self._owners.state_of(request, sku)
            if found is not None:
                owned[sku] = SkuState.from_dict(found)
        unread = [sku for sku in elsewhere if sku not in owned]
        committed = await asyncio.to_thread(self._committed, unread) if unread else {}
        return web.json_response(self._explained(channel, channel_sku, owned, committed))

    async def sku_state(self, request: web.Request) -> web.Response:
        """A SKU's state in this worker's memory, for a worker explaining a listing of it: asked
        with a token of a channel that lists the SKU, answered only by the worker holding it."""
        channel = self._authenticate(request)
        sku = request.match_info["sku"]
        listed = any(
            component.sku == sku
            for listing in self.catalog.listings
            if listing.channel == channel
            for component in listing.components
        )
        if not listed:
            raise _Refused(404, f"no listing of channel {channel} has SKU {sku!r}")
        state = self._live(sku)
        if state is None:
            raise _Refused(404, f"SKU {sku!r} is not held by this worker")
        return web.json_response({"sku": sku, "state": state.to_dict()})

    def _committed(self, skus: list[str]) -> dict[str, SkuState]:
        """The SKUs' states as last committed (read from the changelog: blocking)."""
        found = {sku: self.states.get(sku) for sku in skus}
        return {sku: state for sku, state in found.items() if state is not None}

    def _explained(
        self,
        channel: str,
        channel_sku: str,
        owned: dict[str, SkuState],
        committed: dict[str, SkuState],
    ) -> dict[str, Any]:
        """The explanation from each SKU's state in the memory of the worker that holds it (this
        one's, or as its owner answered: `owned`), else as last committed to the changelog
        (`committed`), with where each came from (`state_source`). No await in between: the
        states read here are the states explained."""
        catalog = self.catalog
        listing = catalog.listing_by_key.get((channel, channel_sku))
        if listing is None:  # the catalog changed while the owner was asked
            raise _Refused(404, f"channel {channel} has no listing {channel_sku!r}")
        states, sources = {}, {}
        for component in listing.components:
            state = self._live(component.sku) or owned.get(component.sku)
            sources[component.sku] = "changelog" if state is None else "owner"
            if state is None:  # (read here only if the worker let go of it meanwhile)
                state = committed.get(component.sku) or self.states.get(component.sku)
            if state is not None:
                states[component.sku] = state
        try:
            found = explain(catalog, states, channel, channel_sku, self._clock().date())
        except UnknownListing as error:
            raise _Refused(404, str(error)) from None
        return {
            **found.to_json(),
            "published": self.availability.get(channel, channel_sku),
            "state_source": sources,
        }

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
        await self._owners.close()

    # ---- steps ----

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


OPENAPI_FILE = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"


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
    live_state: LiveState | None = None,
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
        live_state=live_state,
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
    app.router.add_get("/states/{sku}", api.sku_state)
    app.router.add_get(HEALTH_PATH, api.health)
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
    live_state: LiveState | None = None,
) -> None:
    """Serve the API on `port` (settings.api_port) in the running loop until `stop` is set.

    The decision feed's start positions are fixed before the port opens; `started` is set once
    requests are accepted. A stream worker serving the API (inventory_streams.worker) passes
    `attach`, to hand the decisions it makes straight to the view, `take_now`, to decide a
    request as soon as the broker has stored it, `route` with its own `url`, to pass a request to
    the worker that owns its SKU, and `live_state`, to explain its own SKUs from its memory.
    """
    loop = asyncio.get_running_loop()
    decisions = Decisions()
    if attach is not None:
        attach(decisions)
    availability = AvailabilityView()
    reader = ChangelogReader(bootstrap, changelog_topic(settings.app_id, "skus"))
    parts = ChangelogReader(bootstrap, changelog_topic(settings.app_id, "sku_parts"))
    states = StateView(reader, parts.scan)
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
        parts_topic=changelog_topic(settings.app_id, "sku_parts"),
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
        live_state=live_state,
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
        await asyncio.to_thread(reader.close)
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
