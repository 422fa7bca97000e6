"""A generic webhook receiver (POS, marketplaces without an adapter): verifies the HMAC signature,
validates the availability record (or, from a sink with `records_per_post` above 1, a batch
`{"records": [...]}` of at most `max_records_per_post`, taken whole or refused whole: 413 for a
body over `max_body_bytes` or a batch over the count, 422 for one naming a SKU it does not carry),
enforces a token-bucket rate limit per POST with 429 + Retry-After, and keeps what it received
per channel_sku."""

from __future__ import annotations

import hmac
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from connectors.emulators.base import Bucket, Emulator
from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from streams.core.models import Availability

MAX_CLOCK_SKEW_SECONDS = 300


@dataclass
class WebhookEmulator(Emulator):
    secret: str = "whsec_emulator"
    path: str = "/availability"
    rate: float = 20.0
    burst: float = 20.0
    max_records_per_post: int = 100  # a larger batch is refused with 413
    max_body_bytes: int = 1_000_000  # a larger body is refused with 413, as web servers do
    # channel_skus this receiver does not carry: a POST naming one is refused whole with 422
    unknown_skus: set[str] = field(default_factory=set)
    records: dict[str, Availability] = field(default_factory=dict)  # channel_sku -> last received
    history: dict[str, list[int]] = field(default_factory=dict)  # channel_sku -> versions received
    _bucket: Bucket | None = None

    def __post_init__(self) -> None:
        self._bucket = Bucket(self.burst, self.rate)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.path, self._receive)]

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": message, "status": status}

    def final_values(self) -> dict[str, int]:
        return {sku: record.available for sku, record in self.records.items()}

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return web.json_response(
                self.error_body(401, f"missing or stale {TIMESTAMP_HEADER}"), status=401
            )
        if not hmac.compare_digest(given, signature(self.secret, timestamp, body)):
            return web.json_response(self.error_body(401, "bad signature"), status=401)
        assert self._bucket is not None
        if not self._bucket.try_take():
            self.throttled += 1
            wait = max(0.001, (1 - self._bucket.level()) / self.rate)
            return web.json_response(
                self.error_body(429, "rate limit exceeded"),
                status=429,
                headers={"Retry-After": str(math.ceil(wait * 1000) / 1000)},
            )
        if len(body) > self.max_body_bytes:
            return web.json_response(
                self.error_body(413, f"body of {len(body)} bytes; at most {self.max_body_bytes}"),
                status=413,
            )
        try:
            payload = json.loads(body)
            batched = isinstance(payload, dict) and set(payload) == {"records"}
            items = payload["records"] if batched else [payload]
            if not isinstance(items, list) or not items:
                raise ValueError('"records" must be a non-empty list')
            if len(items) > self.max_records_per_post:
                return web.json_response(
                    self.error_body(
                        413,
                        f"{len(items)} records in one POST; at most {self.max_records_per_post}",
                    ),
                    status=413,
                )
            received = [Availability.model_validate(item) for item in items]
        except (ValueError, ValidationError) as error:
            return web.json_response(
                self.error_body(400, f"not an availability record: {error}"), status=400
            )
        if len({record.channel_sku for record in received}) < len(received):
            return web.json_response(
                self.error_body(400, "a channel_sku appears twice in one batch"), status=400
            )
        unknown = sorted({r.channel_sku for r in received} & self.unknown_skus)
        if unknown:
            return web.json_response(
                self.error_body(422, f"unknown channel_sku: {', '.join(unknown)}"), status=422
            )
        for record in received:
            self.records[record.channel_sku] = record
            self.history.setdefault(record.channel_sku, []).append(record.version)
        if not batched:
            return web.json_response(
                {"received": received[0].channel_sku, "version": received[0].version}
            )
        return web.json_response({"received": len(received)})
