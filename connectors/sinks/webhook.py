"""Any other channel (POS, marketplaces without an adapter): signed POSTs of availability records
as JSON with their `version`, so a receiver can drop anything older than what it holds; paced by a
token bucket, and a 409 from the receiver ("I hold this or newer") counts as done.

By default a POST carries one record, the record itself as the body. With `records_per_post` above
1 a POST carries up to that many records of different SKUs as `{"records": [...]}`, for receivers
that take batches: a sale of 2,000 changed SKUs then costs 20 POSTs instead of 2,000, and a receiver
limited to 20 POSTs/s is current a second after the sale instead of 100 s. A receiver that answers
413 (it takes fewer records per POST than configured) gets the same records again in halves, and
no more than that from then on. A batch refused otherwise (a SKU the receiver does not carry) is
sent again in halves until the refused records are alone: only those are dead-lettered.

Signature: header X-Inventory-Signature = "sha256=" + hex HMAC-SHA256(secret, "<ts>.<body>") with
X-Inventory-Timestamp = <ts> (unix seconds); Idempotency-Key = "<channel>:<channel_sku>:<version>"
for one record, "<channel>:batch:<hash of every channel_sku and version>" for a batch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from connectors.sinks.base import Outcome, SettlingConfig, Sink
from connectors.sinks.http import HttpClient, connector_config, transient
from connectors.sinks.limits import TokenBucket
from connectors.sinks.metrics import SinkMetrics
from streams.codec import record_to_json
from streams.core.catalog import Channel
from streams.core.models import Availability

log = logging.getLogger(__name__)

MAX_RECORDS_PER_POST = 1000
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
    With `records_per_post` above 1 (a receiver that takes batches) a POST carries up to that many
    SKUs, and values do not settle unless `settle_seconds` is given.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=1)
    rate: float = Field(default=10.0, gt=0)  # requests per second the receiver accepts
    burst: float = Field(default=10.0, ge=1)
    rate_safety: float = Field(default=1.0, gt=0, le=1)  # below 1: pace under the stated rate
    timeout_seconds: float = Field(default=10.0, gt=0)
    coalesce_seconds: float = Field(default=1.0, ge=0)  # one send per SKU per window
    # records per POST: 1 = the record is the body; more = {"records": [...]}, for batch receivers
    records_per_post: int = Field(default=1, ge=1, le=MAX_RECORDS_PER_POST)
    # on for one record per POST (see SettlingConfig); off for batches, where a call carries many
    # SKUs and holding a value back saves no call
    settle_seconds: float = Field(default=1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _settle_by_mode(cls, data: Any) -> Any:
        per_post = data.get("records_per_post") if isinstance(data, dict) else None
        if isinstance(per_post, int) and per_post > 1 and "settle_seconds" not in data:
            return {**data, "settle_seconds": 0.0}
        return data


class _Refused(Exception):
    """A 4xx for a POST of several records: smaller POSTs find what the receiver refuses."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class WebhookSink(Sink):
    def __init__(self, channel: Channel, metrics: SinkMetrics) -> None:
        self.channel_id = channel.id
        self.config = config = connector_config(channel, WebhookConfig)
        self.max_batch = config.records_per_post
        self.batched = config.records_per_post > 1
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
        if self.batched:
            return await self._post_batch(batch) if batch else []
        outcomes: list[Outcome] = []
        for record in batch:
            outcomes.extend(await self._post([record]))
        return outcomes

    async def _post_batch(self, records: list[Availability]) -> list[Outcome]:
        """POSTs of at most `max_batch` records, split when the receiver refuses one.

        A 413 halves `max_batch` for the sink's life. Any other refusal (a 4xx that is not a rate
        limit or an auth problem, such as a SKU the receiver does not carry) sends the batch
        again in halves, so that only the records refused on their own are dead-lettered and
        the rest of the batch still arrives: log2(batch) more POSTs for each refused record, and
        2 * batch - 1 for a batch the receiver refuses whole. The records that a smaller POST
        acknowledged before a later one failed (429, 5xx) are sent again with the rest: at least
        once, and a receiver keeps a version only once.
        """
        try:
            return await self._post(records)
        except _Refused as error:
            if error.status == 413:
                self.max_batch = min(self.max_batch, max(1, len(records) // 2))
                log.warning(
                    "webhook %s: the receiver refused %d records in one POST (%s); sending at "
                    "most %d per POST from now on",
                    self.channel_id,
                    len(records),
                    error,
                    self.max_batch,
                )
                size = self.max_batch
            else:
                log.warning(
                    "webhook %s: the receiver refused a batch of %d (%s); sending it in halves "
                    "to find the records it refuses",
                    self.channel_id,
                    len(records),
                    error,
                )
                size = (len(records) + 1) // 2
        outcomes: list[Outcome] = []
        rest = records
        while rest:
            part, rest = rest[:size], rest[size:]
            outcomes.extend(await self._post_batch(part))
            size = min(size, self.max_batch)  # a 413 in the part lowered the limit
        return outcomes

    async def _post(self, records: list[Availability]) -> list[Outcome]:
        """One POST: a record (one per POST) or `{"records": [...]}` (batches); all or nothing."""
        skus = [record.channel_sku for record in records]
        if self.batched:
            payload: Any = {"records": [record_to_json(record) for record in records]}
            content = ",".join(f"{r.channel_sku}@{r.version}" for r in records).encode()
            key = f"{self.channel_id}:batch:{hashlib.sha256(content).hexdigest()[:32]}"
        else:
            (record,) = records
            payload = record_to_json(record)
            key = f"{self.channel_id}:{record.channel_sku}:{record.version}"
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.config.secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            "Idempotency-Key": key,
            "User-Agent": "inventory-streams/0.1",
        }
        await self._bucket.wait()
        try:
            reply = await self._http.request("POST", self.config.url, body=body, headers=headers)
        finally:
            self._bucket.take()  # when the answer is back: no margin needed for network jitter
        if 200 <= reply.status < 300 or reply.status == 409:
            return [Outcome.ack(sku) for sku in skus]
        if reply.status == 429:
            self._bucket.drain()
            raise transient(reply, "webhook", 1.0 / self.config.rate)
        if reply.status >= 500 or reply.status in (401, 403, 408):
            raise transient(reply, "webhook")
        reason = f"HTTP {reply.status}: {reply.text(300)}"
        if len(records) > 1:
            raise _Refused(reply.status, reason)
        return [Outcome.reject(sku, reason) for sku in skus]
