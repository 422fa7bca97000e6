"""Shopify: absolute `available` quantities through Admin GraphQL `inventorySetQuantities`, up to
250 items per call, paced by the leaky-bucket cost the shop reports in every response.

Idempotent by construction: the idempotency key is derived from the exact input, the records'
versions and a nonce per sink instance, so a retried call is recognised by the shop, while a later
write of the same quantities (a value that came back, a resync after drift) gets a new key. Each
quantity carries `changeFromQuantity` (the compare-and-set field of 2026-04) set to the value we
last wrote; when someone else moved it (a storefront order, an admin edit) the shop answers
CHANGE_FROM_QUANTITY_STALE, we re-read and set ours again, since this system is the source of
truth for availability.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.sinks.base import ChannelUnavailable, Outcome, Sink
from connectors.sinks.http import HttpClient, Reply, connector_config, transient
from connectors.sinks.limits import CostBucket
from connectors.sinks.metrics import SinkMetrics
from streams.core.catalog import Channel
from streams.core.models import Availability

log = logging.getLogger(__name__)

_KEYS = uuid.UUID("6f1d8c52-2c55-4d1e-9c0f-0b6a3c1e2f10")  # namespace of idempotency keys
_STALE = {"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"}
_ROUNDS = 3  # re-read and resend at most this often within one flush

SET_QUANTITIES = """
mutation SetAvailable($input: InventorySetQuantitiesInput!, $key: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id }
    userErrors { code field message }
  }
}
"""

LOOKUP = """
query Lookup($first: Int!, $query: String!, $locationId: ID!) {
  inventoryItems(first: $first, query: $query) {
    nodes {
      id
      sku
      inventoryLevel(locationId: $locationId) { quantities(names: ["available"]) { name quantity } }
    }
  }
}
"""


class ShopifyConfig(BaseModel):
    """Extra fields of a `type: shopify` channel in the catalog."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    shop_domain: str | None = None  # e.g. my-store.myshopify.com
    endpoint: str | None = None  # base URL instead of https://<shop_domain> (emulators, proxies)
    access_token: str = Field(min_length=1)
    location_id: str = Field(pattern=r"^gid://shopify/Location/\d+$")
    api_version: str = Field(default="2026-04", pattern=r"^\d{4}-\d{2}$")
    max_batch: int = Field(default=250, ge=1, le=250)
    reason: str = "correction"
    inventory_item_ids: dict[str, str] = Field(default_factory=dict)  # channel_sku -> gid, optional
    coalesce_seconds: float = Field(default=1.0, ge=0)  # one send per SKU per window

    @model_validator(mode="after")
    def _where(self) -> ShopifyConfig:
        if not (self.shop_domain or self.endpoint):
            raise ValueError("give shop_domain (or endpoint)")
        return self

    @property
    def url(self) -> str:
        base = self.endpoint or f"https://{self.shop_domain}"
        return f"{base.rstrip('/')}/admin/api/{self.api_version}/graphql.json"

    @property
    def cas(self) -> bool:
        return self.api_version >= "2026-04"


class ShopifySink(Sink):
    def __init__(self, channel: Channel, metrics: SinkMetrics) -> None:
        self.channel_id = channel.id
        self.config = connector_config(channel, ShopifyConfig)
        self.max_batch = self.config.max_batch
        self.linger = self.config.coalesce_seconds
        self._http = HttpClient(channel.id, metrics)
        self._bucket = CostBucket()
        self._staged: list[Availability] = []
        self._items: dict[str, str] = dict(self.config.inventory_item_ids)  # sku -> item gid
        self._known: dict[str, int] = {}  # item gid -> quantity last written or read
        self._next_cost = 10.0  # requested cost of the last mutation: the estimate for the next
        # Keys name one write: the same input from another sink instance (a resync) is a new one.
        self._nonce = uuid.uuid4().hex

    def add(self, record: Availability) -> None:
        self._staged.append(record)

    async def ready(self) -> None:
        """Wait until the bucket holds what the last mutation cost (no spend: _call spends)."""
        while (wait := self._bucket.delay(self._next_cost)) > 0:
            await asyncio.sleep(wait)

    async def close(self) -> None:
        await self._http.close()

    async def flush(self) -> list[Outcome]:
        batch, self._staged = self._staged, []
        todo = {record.channel_sku: record for record in batch}
        outcomes: dict[str, Outcome] = {}
        reread: set[str] = set()
        for _ in range(_ROUNDS):
            await self._resolve([sku for sku in todo if sku not in self._items or sku in reread])
            for sku in list(todo):
                problem = self._unusable(sku)
                if problem:
                    outcomes[sku] = Outcome.reject(sku, problem)
                    del todo[sku]
            if not todo:
                break
            errors = await self._set(list(todo.values()))
            if not errors:
                for sku, record in todo.items():
                    self._known[self._items[sku]] = record.available
                    outcomes[sku] = Outcome.ack(sku)
                todo = {}
                break
            reread = set()
            for failed, error in errors.items():
                if failed is None:  # an error about the whole input: nothing can pass as it is
                    for each in todo:
                        outcomes[each] = Outcome.reject(each, error)
                    todo = {}
                    break
                if error.split(":", 1)[0] in _STALE:
                    reread.add(failed)  # someone else changed it: read, then set ours again
                else:
                    outcomes[failed] = Outcome.reject(failed, error)
                    todo.pop(failed, None)
        for sku in todo:
            outcomes[sku] = Outcome.retry(sku, "the quantity kept changing on the shop side")
        return [outcomes[record.channel_sku] for record in batch]

    def _unusable(self, sku: str) -> str:
        gid = self._items.get(sku)
        if gid is None:
            return f"no inventory item with SKU {sku!r} in the shop"
        if gid == "":
            return f"inventory item of {sku!r} is not stocked at {self.config.location_id}"
        return ""

    # ---- calls ----

    async def _call(self, query: str, variables: dict[str, Any], cost: float) -> dict[str, Any]:
        await self._bucket.acquire(cost)
        body = json.dumps({"query": query, "variables": variables}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Access-Token": self.config.access_token,
        }
        reply = await self._http.request("POST", self.config.url, body=body, headers=headers)
        return self._answer(reply)

    def _answer(self, reply: Reply) -> dict[str, Any]:
        if reply.status == 429 or reply.status >= 500 or reply.status in (401, 403, 408):
            raise transient(reply, "Shopify", 1.0 if reply.status == 429 else None)
        payload = reply.json()
        if reply.status != 200 or not isinstance(payload, dict):
            raise ChannelUnavailable(f"Shopify: HTTP {reply.status} {reply.text(200)}")
        cost = (payload.get("extensions") or {}).get("cost") or {}
        status = cost.get("throttleStatus")
        if status:
            self._bucket.observe(
                float(status["maximumAvailable"]),
                float(status["currentlyAvailable"]),
                float(status["restoreRate"]),
            )
        errors = payload.get("errors")
        if errors:
            codes = [((e.get("extensions") or {}).get("code")) for e in errors]
            if "THROTTLED" in codes:
                requested = float(cost.get("requestedQueryCost") or self._next_cost)
                raise ChannelUnavailable("Shopify: THROTTLED", self._bucket.delay(requested))
            messages = "; ".join(
                f"{e.get('message')} ({c})" for e, c in zip(errors, codes, strict=True)
            )
            raise _Rejected(f"Shopify refused the request: {messages}")
        return payload

    async def _resolve(self, skus: list[str]) -> None:
        """Inventory item ids and current quantities of `skus`, 250 per query."""
        for start in range(0, len(skus), 250):
            chunk = skus[start : start + 250]
            search = " OR ".join(f"sku:'{sku}'" for sku in chunk)
            variables = {
                "first": len(chunk),
                "query": search,
                "locationId": self.config.location_id,
            }
            try:
                payload = await self._call(LOOKUP, variables, 2 + len(chunk))
            except _Rejected as error:
                raise ChannelUnavailable(str(error)) from None
            found = set()
            for node in payload["data"]["inventoryItems"]["nodes"]:
                sku = node["sku"]
                if sku not in chunk:
                    continue
                found.add(sku)
                level = node.get("inventoryLevel")
                if level is None:
                    self._items[sku] = ""  # exists, but not stocked at our location
                    continue
                self._items[sku] = node["id"]
                for quantity in level["quantities"]:
                    if quantity["name"] == "available":
                        self._known[node["id"]] = int(quantity["quantity"])
            for sku in set(chunk) - found:
                self._items.pop(sku, None)

    async def _set(self, records: list[Availability]) -> dict[str | None, str]:
        """One mutation; {sku or None: "CODE: message"} for its userErrors (none applied then)."""
        config = self.config
        quantities = []
        for record in records:
            gid = self._items[record.channel_sku]
            item: dict[str, Any] = {
                "inventoryItemId": gid,
                "locationId": config.location_id,
                "quantity": record.available,
            }
            known = self._known.get(gid)
            if config.cas:
                item["changeFromQuantity"] = known  # null: first write of this process, no check
            else:
                item["compareQuantity"] = known
            quantities.append(item)
        payload: dict[str, Any] = {
            "name": "available",
            "reason": config.reason,
            "quantities": quantities,
        }
        if not config.cas and any(q["compareQuantity"] is None for q in quantities):
            payload["ignoreCompareQuantity"] = True
        # The versions keep a quantity that comes back (5, 3, 5 with the same compare values)
        # from reusing the first write's key, which the shop would answer without applying.
        versions = [(record.channel_sku, record.version) for record in records]
        identity = json.dumps([self._nonce, self.channel_id, payload, versions], sort_keys=True)
        key = str(uuid.uuid5(_KEYS, identity))
        payload["referenceDocumentUri"] = (
            f"inventory-streams://availability/{self.channel_id}/{key}"
        )
        try:
            answer = await self._call(
                SET_QUANTITIES, {"input": payload, "key": key}, self._next_cost
            )
        except _Rejected as error:
            return {None: str(error)}
        requested = ((answer.get("extensions") or {}).get("cost") or {}).get("requestedQueryCost")
        if requested:
            self._next_cost = float(requested)
        result = answer["data"]["inventorySetQuantities"]
        errors: dict[str | None, str] = {}
        for user_error in result.get("userErrors") or []:
            field = user_error.get("field") or []
            text = f"{user_error.get('code')}: {user_error.get('message')}"
            if len(field) >= 3 and field[1] == "quantities" and str(field[2]).isdigit():
                errors[records[int(field[2])].channel_sku] = text
            else:
                errors[None] = text
        return errors


class _Rejected(Exception):
    """A GraphQL answer refusing the request itself (not THROTTLED): retrying will not help."""
