"""Amazon: `fulfillment_availability` through SP-API Listings Items `patchListingsItem`, one SKU per
call at the account's usage plan (5 requests/s, burst 5 by default, paced on our side so the plan is
never exceeded), and a JSON_LISTINGS_FEED when the backlog is larger than patches can clear
quickly (up to 25,000 messages per feed, 5 feeds per 5 minutes).

A patch `replace`s the whole attribute with an absolute quantity, so resending is harmless.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import ConfigDict, Field

from connectors.sinks.base import BulkSink, ChannelUnavailable, Outcome, SettlingConfig
from connectors.sinks.http import HttpClient, Reply, connector_config, transient
from connectors.sinks.limits import TokenBucket
from connectors.sinks.metrics import SinkMetrics
from streams.core.catalog import Channel
from streams.core.models import Availability

LISTINGS = "/listings/2021-08-01/items"
FEEDS = "/feeds/2021-06-30"
FEED_CONTENT_TYPE = "application/json; charset=UTF-8"
MAX_LEAD_TIME_DAYS = 30


class AmazonConfig(SettlingConfig):
    """Extra fields of a `type: amazon` channel in the catalog.

    `settle_seconds` / `max_hold_seconds` hold patches of values still changing, as for webhooks
    (see WebhookConfig); off by default here, since a sale's backlog goes by feed.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    endpoint: str = "https://sellingpartnerapi-na.amazon.com"
    seller_id: str = Field(min_length=1)
    marketplace_ids: list[str] = Field(min_length=1)
    access_token: str = Field(min_length=1)  # an LWA access token
    product_type: str = "PRODUCT"
    fulfillment_channel_code: str = "DEFAULT"
    rate: float = Field(default=5.0, gt=0)  # patchListingsItem usage plan of the account
    burst: float = Field(default=5.0, ge=1)
    rate_safety: float = Field(default=1.0, gt=0, le=1)  # below 1: pace under the plan
    # Waiting SKUs that justify a feed until one has run (then: what patches clear in the time
    # the last feed took); 0 = never use feeds.
    feed_threshold: int = Field(default=500, ge=0)
    max_feed_messages: int = Field(default=25_000, ge=1, le=25_000)
    feed_rate: float = Field(default=5 / 300, gt=0)  # JSON_LISTINGS_FEED: 5 per 5 minutes
    feed_burst: float = Field(default=5.0, ge=1)
    feed_poll_seconds: float = Field(default=0.5, gt=0)  # getFeed allows 2/s
    feed_timeout_seconds: float = Field(default=3600.0, gt=0)
    # A feed waits for the updates to stop (or for its backlog to be this old): with 5 feeds per
    # 5 minutes, one sent mid-burst is spent on values that are already changing again.
    feed_settle_seconds: float = Field(default=5.0, ge=0)
    coalesce_seconds: float = Field(default=1.0, ge=0)  # one send per SKU per window


def fulfillment_availability(record: Availability, channel_code: str) -> dict[str, Any]:
    """Sellable now: the quantity. Sold out but backorderable: that quantity, with restock date
    and a lead time to ship (Amazon's way to sell what is on its way)."""
    entry: dict[str, Any] = {"fulfillment_channel_code": channel_code, "quantity": record.available}
    if record.available == 0 and record.backorderable > 0 and record.restock_date is not None:
        entry["quantity"] = record.backorderable
        entry["restock_date"] = record.restock_date.isoformat()
        days = (record.restock_date - record.as_of.date()).days
        entry["lead_time_to_ship_max_days"] = min(MAX_LEAD_TIME_DAYS, max(1, days))
    return entry


class AmazonSink(BulkSink):
    def __init__(self, channel: Channel, metrics: SinkMetrics) -> None:
        self.channel_id = channel.id
        self.config = config = connector_config(channel, AmazonConfig)
        self.max_batch = 1  # the Listings Items API takes one SKU per call
        self.linger = config.coalesce_seconds
        self.settle = config.settle_seconds
        self.max_hold = config.max_hold_seconds
        # Waiting SKUs that justify a feed: the configured guess until a feed's duration is known,
        # then as many as patches clear in that time (a feed is worth it when patches are slower).
        self.bulk_threshold = config.feed_threshold or 1 << 62
        self.max_bulk = config.max_feed_messages
        self.bulk_hold = config.feed_settle_seconds
        self._http = HttpClient(channel.id, metrics)
        # Empty at first: the other side's bucket may still hold the calls of a process of ours
        # that stopped a moment ago. Tokens are taken when an answer is back (see TokenBucket).
        self._bucket = TokenBucket(config.rate * config.rate_safety, config.burst, tokens=0.0)
        self._feeds = TokenBucket(config.feed_rate, config.feed_burst)
        self._staged: list[Availability] = []
        self._headers = {
            "x-amz-access-token": config.access_token,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "inventory-streams/0.1 (Language=Python)",
        }

    def add(self, record: Availability) -> None:
        self._staged.append(record)

    async def ready(self) -> None:
        await self._bucket.wait()

    async def close(self) -> None:
        await self._http.close()

    def patch_body(self, record: Availability) -> dict[str, Any]:
        value = fulfillment_availability(record, self.config.fulfillment_channel_code)
        return {
            "productType": self.config.product_type,
            "patches": [
                {"op": "replace", "path": "/attributes/fulfillment_availability", "value": [value]}
            ],
        }

    async def flush(self) -> list[Outcome]:
        batch, self._staged = self._staged, []
        return [await self._patch(record) for record in batch]

    async def _patch(self, record: Availability) -> Outcome:
        config, sku = self.config, record.channel_sku
        query = urlencode(
            {"marketplaceIds": ",".join(config.marketplace_ids), "issueLocale": "en_US"}
        )
        url = (
            f"{config.endpoint}{LISTINGS}/{quote(config.seller_id, safe='')}/{quote(sku, safe='')}"
        )
        body = json.dumps(self.patch_body(record)).encode()
        await self._bucket.wait()
        try:
            reply = await self._http.request(
                "PATCH", f"{url}?{query}", body=body, headers=self._headers
            )
        finally:
            self._bucket.take()  # when the answer is back: no margin needed for network jitter
        if reply.status == 200:
            answer = reply.json() or {}
            if answer.get("status") == "ACCEPTED":
                return Outcome.ack(sku)
            return Outcome.reject(sku, "INVALID: " + _issues(answer.get("issues")))
        self._raise_if_transient(reply, "patchListingsItem")
        return Outcome.reject(sku, f"HTTP {reply.status}: {_errors(reply)}")

    def _raise_if_transient(
        self, reply: Reply, what: str, bucket: TokenBucket | None = None
    ) -> None:
        if reply.status == 429:
            limit = bucket or self._bucket
            limit.drain()
            raise transient(reply, f"Amazon {what}", 1.0 / limit.rate)
        if reply.status >= 500 or reply.status in (401, 403, 408):
            raise transient(reply, f"Amazon {what}")

    # ---- the feed path ----

    async def bulk_ready(self) -> bool:
        return self._feeds.delay() == 0

    def feed_document(self, records: Sequence[Availability]) -> dict[str, Any]:
        messages = [
            {
                "messageId": i,
                "sku": record.channel_sku,
                "operationType": "PATCH",
                "productType": self.config.product_type,
                "patches": self.patch_body(record)["patches"],
            }
            for i, record in enumerate(records, start=1)
        ]
        header = {"sellerId": self.config.seller_id, "version": "2.0", "issueLocale": "en_US"}
        return {"header": header, "messages": messages}

    async def flush_bulk(self, records: Sequence[Availability]) -> list[Outcome]:
        """One JSON_LISTINGS_FEED: upload, submit, wait for DONE, read the processing report."""
        config = self.config
        started = time.monotonic()
        api = config.endpoint + FEEDS
        created = await self._json("POST", f"{api}/documents", {"contentType": FEED_CONTENT_TYPE})
        content = json.dumps(self.feed_document(records)).encode()
        upload = await self._http.request(
            "PUT", created["url"], body=content, headers={"Content-Type": FEED_CONTENT_TYPE}
        )
        if upload.status != 200:
            raise ChannelUnavailable(f"Amazon feed upload: HTTP {upload.status} {upload.text()}")
        self._feeds.take()
        submitted = await self._json(
            "POST",
            f"{api}/feeds",
            {
                "feedType": "JSON_LISTINGS_FEED",
                "marketplaceIds": config.marketplace_ids,
                "inputFeedDocumentId": created["feedDocumentId"],
            },
        )
        feed_id = submitted["feedId"]
        deadline = time.monotonic() + config.feed_timeout_seconds
        while True:
            await asyncio.sleep(config.feed_poll_seconds)
            feed = await self._json("GET", f"{api}/feeds/{feed_id}")
            status = feed.get("processingStatus")
            if status == "DONE":
                break
            if status in ("FATAL", "CANCELLED"):
                raise ChannelUnavailable(f"Amazon feed {feed_id} ended {status}")
            if time.monotonic() > deadline:
                raise ChannelUnavailable(f"Amazon feed {feed_id} still {status} at the timeout")
        located = await self._json("GET", f"{api}/documents/{feed['resultFeedDocumentId']}")
        report = await self._http.request("GET", located["url"])
        issues = (report.json() or {}).get("issues") if report.status == 200 else None
        if issues is None:
            raise ChannelUnavailable(f"Amazon feed {feed_id}: processing report unreadable")
        errors: dict[int, list[str]] = {}
        for issue in issues:
            if issue.get("severity") == "ERROR" and isinstance(issue.get("messageId"), int):
                errors.setdefault(issue["messageId"], []).append(
                    f"{issue.get('code')}: {issue.get('message')}"
                )
        if config.feed_threshold:
            took = time.monotonic() - started
            self.bulk_threshold = max(1, math.ceil(took * config.rate * config.rate_safety))
        return [
            Outcome.reject(r.channel_sku, f"feed {feed_id}: " + "; ".join(errors[i]))
            if i in errors
            else Outcome.ack(r.channel_sku)
            for i, r in enumerate(records, start=1)
        ]

    async def _json(self, method: str, url: str, payload: Any = None) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        reply = await self._http.request(method, url, body=body, headers=self._headers)
        if reply.status in (200, 201, 202):
            answer = reply.json()
            if isinstance(answer, dict):
                return answer
        bucket = self._feeds if url.endswith("/feeds") else TokenBucket(2.0, 15.0)
        self._raise_if_transient(reply, f"Feeds API {method} {url.split(FEEDS)[-1]}", bucket)
        raise ChannelUnavailable(f"Amazon {method} {url}: HTTP {reply.status} {_errors(reply)}")


def _issues(issues: Any) -> str:
    if not isinstance(issues, list) or not issues:
        return "no issues given"
    return "; ".join(f"{i.get('code')}: {i.get('message')}" for i in issues if isinstance(i, dict))


def _errors(reply: Reply) -> str:
    answer = reply.json()
    if isinstance(answer, dict) and isinstance(answer.get("errors"), list):
        return "; ".join(
            f"{e.get('code')}: {e.get('message')}" for e in answer["errors"] if isinstance(e, dict)
        )
    return reply.text(200)
