"""Any other channel (POS, marketplaces without an adapter): one signed POST per availability
record, the record as JSON with its `version`, so a receiver can drop anything older than what it
holds; paced by a token bucket, and a 409 from the receiver ("I hold this or newer") counts as done.

Signature: header X-Inventory-Signature = "sha256=" + hex HMAC-SHA256(secret, "<ts>.<body>") with
X-Inventory-Timestamp = <ts> (unix seconds); Idempotency-Key = "<channel>:<channel_sku>:<version>".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from pydantic import ConfigDict, Field

from connectors.sinks.base import Outcome, SettlingConfig
from connectors.sinks.http import HttpClient, connector_config, transient
from connectors.sinks.limits import TokenBucket
from connectors.sinks.metrics import SinkMetrics
from streams.codec import record_to_json
from streams.core.catalog import Channel
from streams.core.models import Availability

SIGNATURE_HEADER = "X-Inventory-Signature"
TIMESTAMP_HEADER = "X-Inventory-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 over `<timestamp>.<body>`: the scheme both ends share."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookConfig(SettlingConfig):
    """Extra fields of a webhook channel (any `type` without its own adapter) in the catalog.

    Pacing during a sale (every POST costs one of `rate`): a SKU goes at most once per
    `coalesce_seconds`; a value still changing waits until the SKU was quiet for `settle_seconds`
    (0: no wait), but never more than `max_hold_seconds` after the receiver went out of date. A
    sell-out (`available` to 0 where the receiver holds stock) goes at once and before any other
    SKU; a value back from 0 does not wait to settle. Once the records stop, nothing waits.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=1)
    rate: float = Field(default=10.0, gt=0)  # requests per second the receiver accepts
    burst: float = Field(default=10.0, ge=1)
    rate_safety: float = Field(default=1.0, gt=0, le=1)  # below 1: pace under the stated rate
    timeout_seconds: float = Field(default=10.0, gt=0)
    coalesce_seconds: float = Field(default=1.0, ge=0)  # one send per SKU per window
    settle_seconds: float = Field(default=1.0, ge=0)  # on for webhooks (see SettlingConfig)


class WebhookSink:
    def __init__(self, channel: Channel, metrics: SinkMetrics) -> None:
        self.channel_id = channel.id
        self.config = config = connector_config(channel, WebhookConfig)
        self.max_batch = 1
        self.linger = config.coalesce_seconds
        self.settle = config.settle_seconds
        self.max_hold = config.max_hold_seconds
        self._http = HttpClient(channel.id, metrics, timeout=config.timeout_seconds)
        # Empty at first: the other side's bucket may still hold the calls of a process of ours
        # that stopped a moment ago. Tokens are taken when an answer is back (see TokenBucket).
        self._bucket = TokenBucket(config.rate * config.rate_safety, config.burst, tokens=0.0)
        self._staged: list[Availability] = []

    def add(self, record: Availability) -> None:
        self._staged.append(record)

    async def ready(self) -> None:
        await self._bucket.wait()

    async def close(self) -> None:
        await self._http.close()

    async def flush(self) -> list[Outcome]:
        batch, self._staged = self._staged, []
        return [await self._post(record) for record in batch]

    async def _post(self, record: Availability) -> Outcome:
        sku = record.channel_sku
        body = json.dumps(record_to_json(record), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.config.secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            "Idempotency-Key": f"{self.channel_id}:{sku}:{record.version}",
            "User-Agent": "inventory-streams/0.1",
        }
        await self._bucket.wait()
        try:
            reply = await self._http.request("POST", self.config.url, body=body, headers=headers)
        finally:
            self._bucket.take()  # when the answer is back: no margin needed for network jitter
        if 200 <= reply.status < 300 or reply.status == 409:
            return Outcome.ack(sku)
        if reply.status == 429:
            self._bucket.drain()
            raise transient(reply, "webhook", 1.0 / self.config.rate)
        if reply.status >= 500 or reply.status in (401, 403, 408):
            raise transient(reply, "webhook")
        return Outcome.reject(sku, f"HTTP {reply.status}: {reply.text(300)}")
