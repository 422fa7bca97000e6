"""The webhook receiver: signed HTTP deliveries from WMS, POS and storefronts become events.

Guarantee: a delivery is answered 2xx only after the broker acknowledged (acks=all) everything it
produced, events and dead letters alike; a delivery that cannot be stored is answered 503 and the
sender retries. Unsigned or wrongly signed requests get 401 and produce nothing. A delivery id
seen before (Shopify's `X-Shopify-Webhook-Id`, our `X-Inventory-Delivery`) is answered from
memory without producing; past that memory, stable event ids make the replay a no-op downstream.

Routes: `POST /webhooks/{source}` (by the source's kind), `GET /health` (as the API names it).
Served through streams.runtime.http's GuardedRunner, every refusal is JSON and produces nothing:
an unknown route or method (404/405), a body over settings.webhook_max_body_bytes (413, before it
is read), one of another type than BODY_TYPES (415; one without a Content-Type is read), one not
complete within settings.http_client_timeout_seconds (408), a request aiohttp cannot parse (400).
To a client that sends `Expect: 100-continue`, the 404, 413 or 415 its headers earn is sent
instead of the 100.

- kind `events`: JSON Lines of SPEC §2 events (one object is one line), signed like our own
  outgoing webhooks (`X-Inventory-Timestamp`, `X-Inventory-Signature: sha256=<hex HMAC of
  "<timestamp>.<body>">`); each event's `source` must be the webhook's source. Answer 200 when
  every line was produced, 422 with the reason per line when some were dead-lettered.
- kind `pos`: JSON Lines of POS transactions (see connectors.sources.pos), signed the same way.
- kind `shopify`: Shopify order webhooks (see connectors.sources.shopify), `X-Shopify-Hmac-Sha256`.
  A payload that cannot be mapped is dead-lettered and answered 200: Shopify retries any other
  answer for hours and then drops the subscription, while the DLQ keeps it for a re-drive.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from connectors.sources import shopify
from connectors.sources.base import InvalidSourceConfig, Tally
from connectors.sources.mapping import load_mapping
from connectors.sources.metrics import SourceMetrics
from connectors.sources.pos import PosTranslator, collect
from streams.core.catalog import Catalog
from streams.core.models import parse_event_json
from streams.errors import Backpressure, DeliveryFailed, EncodingError, InvalidEvent
from streams.runtime.http import (
    HEALTH_PATH,
    JSON_TYPE,
    BodyTimeout,
    BodyUnreadable,
    GuardedRunner,
    json_refusal,
    read_body,
    refusing_before_continue,
    unsupported_type,
)
from streams.runtime.producer import Outgoing, SourceProducer
from streams.settings import Settings

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-Inventory-Delivery"
MAX_CLOCK_SKEW_SECONDS = 300
RETRY_AFTER_SECONDS = 5
# JSON, JSON Lines, or bytes a client library labels as nothing more (the signature covers them)
BODY_TYPES = (JSON_TYPE, "application/x-ndjson", "application/jsonl", "application/octet-stream")


# ---- configuration -------------------------------------------------------------------------


class _EventsEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    kind: Literal["events"]


class _PosEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    kind: Literal["pos"]
    mapping: Path


class _ShopifyEntry(shopify.ShopifySourceConfig):
    kind: Literal["shopify"] = "shopify"


_Entry = Annotated[_EventsEntry | _PosEntry | _ShopifyEntry, Field(discriminator="kind")]
_ENTRIES: TypeAdapter[list[_Entry]] = TypeAdapter(list[_Entry])


@dataclass(frozen=True)
class WebhookSource:
    """One configured sender: its name (the URL path), kind, secret and translator."""

    name: str
    kind: Literal["events", "pos", "shopify"]
    secret: str = field(repr=False)
    shopify: shopify.ShopifyAdapter | None = None
    pos: PosTranslator | None = None


def load_sources(
    path: Path | str, settings: Settings, catalog: Catalog | None = None
) -> dict[str, WebhookSource]:
    """The webhook sources of a YAML file (`webhooks: [...]`); secrets come from the settings."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InvalidSourceConfig(f"cannot read sources file {path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("webhooks"), list):
        raise InvalidSourceConfig(f"{path}: expected a mapping with a `webhooks` list")
    try:
        entries = _ENTRIES.validate_python(data["webhooks"])
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise InvalidSourceConfig(f"{path}: {details}") from None
    sources: dict[str, WebhookSource] = {}
    for entry in entries:
        if entry.source in sources:
            raise InvalidSourceConfig(f"{path}: source {entry.source} is configured twice")
        secret = _secret(settings, entry.source)
        if isinstance(entry, _ShopifyEntry):
            config = shopify.ShopifySourceConfig(**entry.model_dump(exclude={"kind"}))
            adapter = shopify.ShopifyAdapter.for_catalog(config, catalog)
            sources[entry.source] = WebhookSource(entry.source, "shopify", secret, shopify=adapter)
        elif isinstance(entry, _PosEntry):
            mapping = load_mapping(path.parent / entry.mapping)
            if mapping.source != entry.source:
                raise InvalidSourceConfig(
                    f"{path}: source {entry.source} uses a mapping for {mapping.source}"
                )
            sources[entry.source] = WebhookSource(
                entry.source, "pos", secret, pos=PosTranslator(mapping)
            )
        else:
            sources[entry.source] = WebhookSource(entry.source, "events", secret)
    return sources


def default_sources(settings: Settings, catalog: Catalog | None = None) -> dict[str, WebhookSource]:
    """Without a sources file: one source per configured secret. A catalog channel of type
    `shopify` with that id is a Shopify source (its extra fields `shop_domain`,
    `webhook_locations` and `return_location` configure it); any other name takes SPEC events."""
    channels = catalog.channel_by_id if catalog is not None else {}
    sources: dict[str, WebhookSource] = {}
    for name in settings.webhook_secrets:
        secret = _secret(settings, name)
        channel = channels.get(name)
        if channel is not None and channel.type == "shopify":
            extra = channel.model_extra or {}
            try:
                config = shopify.ShopifySourceConfig(
                    source=name,
                    channel=channel.id,
                    shop_domain=extra.get("shop_domain"),
                    locations={
                        str(k): v for k, v in (extra.get("webhook_locations") or {}).items()
                    },
                    return_location=extra.get("return_location"),
                )
            except ValidationError as error:
                raise InvalidSourceConfig(f"channel {name}: {error}") from None
            adapter = shopify.ShopifyAdapter.for_catalog(config, catalog)
            sources[name] = WebhookSource(name, "shopify", secret, shopify=adapter)
        else:
            sources[name] = WebhookSource(name, "events", secret)
    return sources


def _secret(settings: Settings, source: str) -> str:
    secret = settings.webhook_secrets.get(source)
    if not secret:
        raise InvalidSourceConfig(
            f"webhook source {source} has no secret: set WEBHOOK_SECRETS to a JSON object "
            f'such as {{"{source}": "..."}} (a receiver never runs unauthenticated)'
        )
    return secret


# ---- replayed deliveries -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status)


class DeliveryLog:
    """Answers given per delivery id, for a while: a replay gets the first answer again.

    In memory and bounded: after a restart or past `max_entries`/`ttl_seconds`, a replay is
    processed again and its stable event ids make it a no-op in the stream core.
    """

    def __init__(self, max_entries: int = 100_000, ttl_seconds: float = 48 * 3600) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._done: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._running: dict[str, asyncio.Future[Answer | None]] = {}

    def answered(self, key: str) -> Answer | None:
        entry = self._done.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl_seconds:
            del self._done[key]
            return None
        return entry[1]

    def running(self, key: str) -> asyncio.Future[Answer | None] | None:
        return self._running.get(key)

    def start(self, key: str) -> None:
        self._running[key] = asyncio.get_running_loop().create_future()

    def finish(self, key: str, answer: Answer | None) -> None:
        """Remember `answer` (None: the delivery failed and may be processed again)."""
        future = self._running.pop(key, None)
        if future is not None and not future.done():
            future.set_result(answer)
        if answer is None:
            return
        self._done[key] = (time.monotonic(), answer)
        self._done.move_to_end(key)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)


# ---- the receiver --------------------------------------------------------------------------


class Receiver:
    """Handles deliveries: authenticate, dedupe, translate, produce, wait for the broker, answer."""

    def __init__(
        self,
        sources: Mapping[str, WebhookSource],
        producer: SourceProducer,
        metrics: SourceMetrics,
        deliveries: DeliveryLog,
        *,
        produce_deadline: float = 10.0,
        max_body_bytes: int = 4 * 1024 * 1024,
        client_timeout: float = 10.0,
    ) -> None:
        self.sources = dict(sources)
        self.max_body_bytes = max_body_bytes
        self.client_timeout = client_timeout  # for a whole body to arrive
        self.producer = producer
        self.metrics = metrics
        self.deliveries = deliveries
        self.produce_deadline = produce_deadline
        self.tally: dict[str, Tally] = {name: Tally() for name in self.sources}

    async def handle(self, request: web.Request) -> web.Response:
        refused = self.refusal_before_body(request)
        if refused is not None:
            return refused
        name = request.match_info["source"]
        source = self.sources[name]
        started = time.perf_counter()
        try:
            body = await read_body(request, self.client_timeout)
        except web.HTTPRequestEntityTooLarge:  # chunked or compressed, over the limit once read
            return self._too_large()
        except BodyTimeout as error:
            return json_refusal(408, f"{error}; send the whole request at once")
        except BodyUnreadable as error:
            return json_refusal(400, str(error))
        problem = self._authenticate(source, request, body)
        if problem is not None:
            self.metrics.unauthorized.labels(name).inc()
            return _error(401, problem)
        delivery = _delivery_id(source, request)
        key = f"{name}:{delivery}" if delivery else ""
        while key:
            earlier = self.deliveries.answered(key)
            if earlier is not None:
                self._count(name, Tally(received=1, duplicates=1))
                return web.json_response(
                    {**earlier.body, "duplicate_of_delivery": delivery}, status=earlier.status
                )
            running = self.deliveries.running(key)
            if running is None:
                self.deliveries.start(key)
                break
            await asyncio.shield(running)  # the same delivery, sent twice at once: wait for it
        answer: Answer | None = None
        try:
            answer = await self._process(source, request, body)
            return answer.response()
        except Backpressure as error:
            self.metrics.backpressure.labels(name).inc()
            return _error(503, f"{error}; retry later", retry_after=RETRY_AFTER_SECONDS)
        except DeliveryFailed as error:
            return _error(503, f"{error}; retry later", retry_after=RETRY_AFTER_SECONDS)
        finally:
            if key:
                self.deliveries.finish(key, answer)
            self.metrics.request_seconds.labels(name).observe(time.perf_counter() - started)

    def refusal_before_body(self, request: web.Request) -> web.Response | None:
        """The answer a delivery gets from its headers alone (404, 413, 415), or None: sent
        instead of 100 Continue to a client that asks before sending its body."""
        name = request.match_info["source"]
        if name not in self.sources:
            return _error(404, f"no webhook source {name!r} is configured here")
        if (request.content_length or 0) > self.max_body_bytes:  # refused before it is read
            return self._too_large()
        problem = unsupported_type(request, BODY_TYPES)
        if problem is not None:
            return json_refusal(415, problem)  # closed: its body is not read
        return None

    def _too_large(self) -> web.Response:
        limit = self.max_body_bytes
        return json_refusal(413, f"the body is larger than the {limit:,} bytes accepted")

    def _authenticate(self, source: WebhookSource, request: web.Request, body: bytes) -> str | None:
        if source.kind == "shopify":
            if not shopify.verify(source.secret, body, request.headers.get(shopify.HMAC_HEADER)):
                return f"missing or wrong {shopify.HMAC_HEADER} signature"
            assert source.shopify is not None
            expected = source.shopify.config.shop_domain
            shop = request.headers.get(shopify.SHOP_HEADER)
            if expected is not None and shop is not None and shop.lower() != expected.lower():
                return f"{shopify.SHOP_HEADER} {shop!r} is not the shop of source {source.name}"
            return None
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        # ASCII digits only: "²" is a digit to str.isdigit() and int() refuses it, and int()
        # refuses over 4,300 digits too
        digits = re.fullmatch(r"[0-9]{1,12}", timestamp) is not None
        if not digits or abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return f"missing or stale {TIMESTAMP_HEADER} (unix seconds, within 5 minutes)"
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"),  # the bytes as sent, any
            signature(source.secret, timestamp, body).encode(),
        ):
            return f"missing or wrong {SIGNATURE_HEADER} signature"
        return None

    async def _process(self, source: WebhookSource, request: web.Request, body: bytes) -> Answer:
        if source.kind == "shopify":
            records, tally, answer = self._shopify(source, request, body)
        elif source.kind == "pos":
            records, tally, answer = self._pos(source, body)
        else:
            records, tally, answer = self._events(source, body)
        await self.producer.send_async(records, deadline=self.produce_deadline)
        self._count(source.name, tally)
        return answer

    def _count(self, name: str, tally: Tally) -> None:
        self.tally[name].add(tally)
        self.metrics.record(name, tally)

    # ---- per kind: the records to produce, the tally and the answer, before producing ----

    def _shopify(
        self, source: WebhookSource, request: web.Request, body: bytes
    ) -> tuple[list[Outgoing], Tally, Answer]:
        assert source.shopify is not None
        topic = request.headers.get(shopify.TOPIC_HEADER)
        tally = Tally(received=1)
        try:
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as error:
                raise InvalidEvent(f"malformed JSON: {error}") from None
            except RecursionError:
                raise InvalidEvent("malformed JSON: nested too deeply") from None
            translation = source.shopify.translate(topic, payload)
            records = [self.producer.encode_event(event) for event in translation.events]
        except (InvalidEvent, EncodingError) as error:
            reason = f"{topic or 'no topic'}: {getattr(error, 'reason', None) or error}"
            delivery = request.headers.get(shopify.WEBHOOK_ID_HEADER)
            key = f"{source.name}:{delivery}".encode() if delivery else source.name.encode()
            tally.dead_lettered = 1
            tally.note(reason)
            letter = self.producer.encode_dead_letter(body, source.name, reason, key=key)
            return [letter], tally, Answer(200, {"status": "dead-lettered", "reason": reason})
        if translation.ignored is not None:
            tally.ignored = 1
            return [], tally, Answer(200, {"status": "ignored", "reason": translation.ignored})
        tally.produced, tally.events = 1, len(records)
        ids = [event.event_id for event in translation.events]
        return records, tally, Answer(200, {"status": "produced", "event_ids": ids})

    def _events(self, source: WebhookSource, body: bytes) -> tuple[list[Outgoing], Tally, Answer]:
        tally = Tally()
        records: list[Outgoing] = []
        errors: list[dict[str, Any]] = []
        lines = [line for line in body.splitlines(keepends=True) if line.strip()] or [body]
        for number, raw in enumerate(lines, start=1):
            tally.received += 1
            try:
                event = parse_event_json(raw)
                if event.source != source.name:
                    raise InvalidEvent(
                        f"source: {event.source!r} does not match the webhook source "
                        f"{source.name!r}"
                    )
                records.append(self.producer.encode_event(event))
            except (InvalidEvent, EncodingError) as error:
                reason = getattr(error, "reason", None) or str(error)
                if not raw.strip():
                    reason = "empty body: expected one SPEC event per line"
                text = f"line {number}: {reason}"
                records.append(
                    self.producer.encode_dead_letter(
                        raw, source.name, text, key=source.name.encode()
                    )
                )
                tally.dead_lettered += 1
                tally.note(text)
                errors.append({"line": number, "reason": reason})
            else:
                tally.produced += 1
                tally.events += 1
        body_out: dict[str, Any] = {
            "status": "produced" if not errors else "rejected",
            "produced": tally.produced,
            "dead_lettered": tally.dead_lettered,
        }
        if errors:
            body_out["errors"] = errors[:100]
        return records, tally, Answer(200 if not errors else 422, body_out)

    def _pos(self, source: WebhookSource, body: bytes) -> tuple[list[Outgoing], Tally, Answer]:
        assert source.pos is not None
        tally = Tally()
        records: list[Outgoing] = []
        lines = [line for line in body.splitlines(keepends=True) if line.strip()] or [body]
        for number, raw in enumerate(lines, start=1):
            results = source.pos.translate(raw)
            where = f"upload line {number}"
            records.extend(collect(results, raw, source.name, self.producer, tally, where))
        status = 200 if not tally.dead_lettered else 422
        body_out: dict[str, Any] = {
            "status": "produced" if status == 200 else "rejected",
            "produced": tally.produced,
            "dead_lettered": tally.dead_lettered,
            "duplicates": tally.duplicates,
            "ignored": tally.ignored,
        }
        if tally.reasons:
            body_out["errors"] = tally.reasons
        return records, tally, Answer(status, body_out)


_SOURCES_KEY: web.AppKey[dict[str, WebhookSource]] = web.AppKey("sources", dict)
_RECEIVER_KEY: web.AppKey[Receiver] = web.AppKey("receiver", Receiver)


def _delivery_id(source: WebhookSource, request: web.Request) -> str | None:
    header = shopify.WEBHOOK_ID_HEADER if source.kind == "shopify" else DELIVERY_HEADER
    value = request.headers.get(header, "").strip()
    return value[:200] or None


def _error(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no route, wrong method) as JSON, like the receiver's."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        messages = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
        }
        return _error(exc.status, messages.get(exc.status, exc.reason))


async def _health(request: web.Request) -> web.Response:
    sources: dict[str, WebhookSource] = request.app[_SOURCES_KEY]
    return web.json_response({"status": "ok", "sources": sorted(sources)})


def make_app(
    settings: Settings,
    producer: SourceProducer,
    *,
    sources: Mapping[str, WebhookSource] | None = None,
    catalog: Catalog | None = None,
    metrics: SourceMetrics | None = None,
    deliveries: DeliveryLog | None = None,
) -> web.Application:
    """The receiver as an aiohttp application; `sources` default to default_sources(settings).

    The producer's delivery reports are served by its background poller while the app runs; the
    producer itself belongs to the caller (flush and close it after the app stops).
    """
    if sources is None:
        sources = default_sources(settings, catalog)
    metrics = metrics or SourceMetrics.for_registry(CollectorRegistry())
    receiver = Receiver(
        sources,
        producer,
        metrics,
        deliveries or DeliveryLog(),
        max_body_bytes=settings.webhook_max_body_bytes,
        client_timeout=settings.http_client_timeout_seconds,
    )
    app = web.Application(
        client_max_size=settings.webhook_max_body_bytes, middlewares=[_json_errors]
    )
    app[_SOURCES_KEY] = dict(sources)
    app[_RECEIVER_KEY] = receiver
    app.router.add_post(
        "/webhooks/{source}",
        receiver.handle,
        expect_handler=refusing_before_continue(receiver.refusal_before_body),
    )
    app.router.add_get(HEALTH_PATH, _health)

    app.cleanup_ctx.append(producer.polling_while_serving)
    return app


def receiver_of(app: web.Application) -> Receiver:
    """The app's Receiver (its per-source tallies), for status views and tests."""
    return app[_RECEIVER_KEY]


async def start_webhook_receiver(
    settings: Settings,
    producer: SourceProducer,
    *,
    sources: Mapping[str, WebhookSource] | None = None,
    catalog: Catalog | None = None,
    metrics: SourceMetrics | None = None,
    host: str = "0.0.0.0",
    port: int | None = None,
) -> web.AppRunner:
    """Serve the receiver on `port` (settings.webhook_port; 0: a free one, see
    `runner.addresses`) in the running loop, through GuardedRunner; stop it with
    `await runner.cleanup()`, then `producer.close()`."""
    app = make_app(settings, producer, sources=sources, catalog=catalog, metrics=metrics)
    runner = GuardedRunner(app, client_timeout=settings.http_client_timeout_seconds)
    await runner.setup()
    site = web.TCPSite(runner, host, settings.webhook_port if port is None else port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()  # the producer's poller started with the app: stop it too
        raise
    names: dict[str, WebhookSource] = app[_SOURCES_KEY]
    log.info(
        "webhook receiver on %s:%s for %s",
        host,
        runner.addresses[0][1] if runner.addresses else port,
        ", ".join(sorted(names)) or "no sources",
    )
    return runner


def run_webhook_receiver(
    settings: Settings,
    *,
    sources_file: Path | str | None = None,
    catalog: Catalog | None = None,
    host: str = "0.0.0.0",
    port: int | None = None,
) -> None:
    """Run the receiver in the foreground until SIGINT or SIGTERM (a process of its own)."""
    sources = load_sources(sources_file, settings, catalog) if sources_file else None
    producer = SourceProducer(settings=settings)

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        runner = await start_webhook_receiver(
            settings, producer, sources=sources, catalog=catalog, host=host, port=port
        )
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    finally:
        producer.close()
