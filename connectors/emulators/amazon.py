"""An Amazon Selling Partner API emulator for availability: Listings Items `patchListingsItem`
(2021-08-01) on `fulfillment_availability`, its usage plan (token bucket, 429 with
x-amzn-RateLimit-Limit), and the Feeds API (2021-06-30) for JSON_LISTINGS_FEED with its limits."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from connectors.emulators.base import Bucket, Emulator

LISTINGS = "/listings/2021-08-01/items"
FEEDS = "/feeds/2021-06-30"
FEED_TYPE = "JSON_LISTINGS_FEED"
MAX_FEED_MESSAGES = 25_000
_CHANNEL_CODE = re.compile(r"^[A-Z0-9_]+$")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _errors(code: str, message: str, details: str = "") -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "details": details}]}


def _availability_issues(value: Any) -> list[str]:
    """Why a fulfillment_availability value would be INVALID (empty when it is fine)."""
    if not isinstance(value, list) or not value:
        return ["fulfillment_availability must be a non-empty array"]
    problems = []
    for entry in value:
        if not isinstance(entry, dict):
            problems.append("each fulfillment_availability entry must be an object")
            continue
        code = entry.get("fulfillment_channel_code")
        if not isinstance(code, str) or not _CHANNEL_CODE.match(code):
            problems.append("fulfillment_channel_code is required")
        quantity = entry.get("quantity")
        if quantity is not None and (
            not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0
        ):
            problems.append(f"quantity must be an integer >= 0, got {quantity!r}")
        restock = entry.get("restock_date")
        if restock is not None:
            try:
                date.fromisoformat(restock)
            except (TypeError, ValueError):
                problems.append(f"restock_date must be a date (YYYY-MM-DD), got {restock!r}")
        lead = entry.get("lead_time_to_ship_max_days")
        if lead is not None and (not isinstance(lead, int) or not 0 <= lead <= 30):
            problems.append(f"lead_time_to_ship_max_days must be 0..30, got {lead!r}")
        unknown = set(entry) - {
            "fulfillment_channel_code",
            "quantity",
            "restock_date",
            "lead_time_to_ship_max_days",
            "is_inventory_available",
            "marketplace_id",
        }
        if unknown:
            problems.append(f"unknown properties {sorted(unknown)} in fulfillment_availability")
    return problems


@dataclass
class AmazonEmulator(Emulator):
    seller_id: str = "A1SELLER"
    marketplace_id: str = "ATVPDKIKX0DER"
    access_token: str = "Atza|emulator"
    rate: float = 5.0  # patchListingsItem usage plan: requests per second ...
    burst: float = 5.0  # ... and burst
    feed_rate: float = 5 / 300  # JSON_LISTINGS_FEED submissions: 5 per 5 minutes
    feed_burst: float = 5.0
    get_feed_rate: float = 2.0  # getFeed usage plan
    get_feed_burst: float = 15.0
    feed_processing_seconds: float = 0.5
    listings: dict[str, dict[str, Any]] = field(default_factory=dict)  # sku -> attributes
    history: dict[str, list[int]] = field(default_factory=dict)  # sku -> quantities, in order
    patches: int = 0  # patch calls that reached the listing (not throttled, not failed)
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    _bucket: Bucket | None = None
    _feed_bucket: Bucket | None = None
    _get_feed_bucket: Bucket | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._bucket = Bucket(self.burst, self.rate)
        self._feed_bucket = Bucket(self.feed_burst, self.feed_rate)
        self._get_feed_bucket = Bucket(self.get_feed_burst, self.get_feed_rate)

    def add_listing(self, sku: str, quantity: int = 0) -> None:
        self.listings.setdefault(
            sku,
            {
                "fulfillment_availability": [
                    {"fulfillment_channel_code": "DEFAULT", "quantity": quantity}
                ]
            },
        )

    def quantity(self, sku: str) -> int | None:
        listing = self.listings.get(sku)
        if listing is None:
            return None
        return int(listing["fulfillment_availability"][0].get("quantity") or 0)

    def final_values(self) -> dict[str, int]:
        return {sku: self.quantity(sku) or 0 for sku in self.listings}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.patch(LISTINGS + "/{seller}/{sku}", self._patch),
            web.post(FEEDS + "/documents", self._create_document),
            web.get(FEEDS + "/documents/{document}", self._get_document),
            web.post(FEEDS + "/feeds", self._create_feed),
            web.get(FEEDS + "/feeds/{feed}", self._get_feed),
            web.put("/_documents/{document}", self._upload),
            web.get("/_documents/{document}", self._download),
        ]

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        if status == 429:
            return _errors("QuotaExceeded", "You exceeded your quota for the requested resource.")
        return _errors("InternalFailure", f"We encountered an internal error ({message}).")

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-amz-access-token") == self.access_token:
            return None
        return web.json_response(
            _errors(
                "Unauthorized",
                "Access to requested resource is denied.",
                "The access token you provided is revoked, malformed or invalid.",
            ),
            status=403,
        )

    def _limit(self, bucket: Bucket | None, rate: float) -> web.Response | None:
        assert bucket is not None
        if bucket.try_take():
            return None
        self.throttled += 1
        return web.json_response(
            self.error_body(429, ""), status=429, headers={"x-amzn-RateLimit-Limit": f"{rate:g}"}
        )

    # ---- Listings Items: PATCH /listings/2021-08-01/items/{sellerId}/{sku} ----

    async def _patch(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (limited := self._limit(self._bucket, self.rate)) is not None:
            return limited
        headers = {
            "x-amzn-RateLimit-Limit": f"{self.rate:g}",
            "x-amzn-RequestId": str(uuid.uuid4()),
        }
        seller, sku = request.match_info["seller"], request.match_info["sku"]
        marketplaces = request.query.get("marketplaceIds", "")
        if not marketplaces:
            return web.json_response(
                _errors("InvalidInput", "Missing required 'marketplaceIds' parameter."),
                status=400,
                headers=headers,
            )
        if seller != self.seller_id:
            return web.json_response(
                _errors("Unauthorized", "Access to requested resource is denied."), status=403
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(
                _errors("InvalidInput", "The request body is not valid JSON."),
                status=400,
                headers=headers,
            )
        problem = self._check_patch_request(body)
        if problem:
            return web.json_response(_errors("InvalidInput", problem), status=400, headers=headers)
        if self.marketplace_id not in marketplaces.split(","):
            return web.json_response(
                _errors("InvalidInput", f"Invalid marketplaceIds: {marketplaces}"),
                status=400,
                headers=headers,
            )
        result = self._apply(sku, body["patches"])
        return web.json_response(result, headers=headers)

    @staticmethod
    def _check_patch_request(body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("productType"), str):
            return "productType is required"
        patches = body.get("patches")
        if not isinstance(patches, list) or not patches:
            return "patches must contain at least one JSON Patch operation"
        for patch in patches:
            if not isinstance(patch, dict) or patch.get("op") not in {
                "add",
                "replace",
                "merge",
                "delete",
            }:
                return "each patch needs op: add, replace, merge or delete"
            path = patch.get("path")
            if not isinstance(path, str) or not path.startswith("/attributes/"):
                return "each patch needs a path of the form /attributes/{attribute}"
        return ""

    def _apply(self, sku: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
        submission = uuid.uuid4().hex
        if sku not in self.listings:
            issue = {
                "code": "4000001",
                "message": f"The SKU '{sku}' does not match any listing of this seller.",
                "severity": "ERROR",
            }
            return {"sku": sku, "status": "INVALID", "submissionId": submission, "issues": [issue]}
        issues = []
        updates: dict[str, Any] = {}
        for patch in patches:
            attribute = patch["path"].removeprefix("/attributes/")
            if attribute != "fulfillment_availability":
                continue  # the emulator keeps availability only
            if patch["op"] == "delete":
                updates[attribute] = [{"fulfillment_channel_code": "DEFAULT", "quantity": 0}]
                continue
            for problem in _availability_issues(patch.get("value")):
                issues.append(
                    {
                        "code": "90220",
                        "message": problem,
                        "severity": "ERROR",
                        "attributeNames": [attribute],
                    }
                )
            updates[attribute] = patch.get("value")
        if issues:
            return {"sku": sku, "status": "INVALID", "submissionId": submission, "issues": issues}
        self.patches += 1
        for attribute, value in updates.items():
            if value[0].get("quantity") is None:  # merge of other fields keeps the quantity
                value = [{**value[0], "quantity": self.quantity(sku) or 0}]
            self.listings[sku][attribute] = value
            self.history.setdefault(sku, []).append(int(value[0]["quantity"]))
        return {"sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": []}

    # ---- Feeds API ----

    async def _create_document(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = json.loads(await request.read())
            content_type = body["contentType"]
        except (ValueError, KeyError, TypeError):
            return web.json_response(_errors("InvalidInput", "contentType is required"), status=400)
        document = uuid.uuid4().hex
        self.documents[document] = {"contentType": content_type, "content": None}
        url = f"{self.url}/_documents/{document}"
        return web.json_response({"feedDocumentId": document, "url": url}, status=201)

    async def _upload(self, request: web.Request) -> web.Response:
        document = self.documents.get(request.match_info["document"])
        if document is None:
            return web.Response(status=404, text="NoSuchKey")
        if request.headers.get("Content-Type") != document["contentType"]:
            return web.Response(status=403, text="SignatureDoesNotMatch: content type differs")
        document["content"] = await request.read()
        return web.Response(status=200)

    async def _download(self, request: web.Request) -> web.Response:
        document = self.documents.get(request.match_info["document"])
        if document is None or document["content"] is None:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=document["content"], content_type="application/json")

    async def _get_document(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        document = request.match_info["document"]
        if document not in self.documents:
            return web.json_response(_errors("NotFound", "Document not found"), status=404)
        return web.json_response(
            {"feedDocumentId": document, "url": f"{self.url}/_documents/{document}"}
        )

    async def _create_feed(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = json.loads(await request.read())
            feed_type, document = body["feedType"], body["inputFeedDocumentId"]
            marketplaces = body["marketplaceIds"]
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                _errors(
                    "InvalidInput", "feedType, marketplaceIds and inputFeedDocumentId are required"
                ),
                status=400,
            )
        if feed_type != FEED_TYPE:
            return web.json_response(
                _errors("InvalidInput", f"the emulator accepts {FEED_TYPE} only"), status=400
            )
        if not isinstance(marketplaces, list) or self.marketplace_id not in marketplaces:
            return web.json_response(_errors("InvalidInput", "Invalid marketplaceIds"), status=400)
        if document not in self.documents:
            return web.json_response(
                _errors("InvalidInput", f"Unknown inputFeedDocumentId {document}"), status=400
            )
        if (limited := self._limit(self._feed_bucket, self.feed_rate)) is not None:
            return limited
        feed = uuid.uuid4().hex[:12]
        self.feeds[feed] = {
            "feedId": feed,
            "feedType": feed_type,
            "marketplaceIds": marketplaces,
            "createdTime": _now(),
            "processingStatus": "IN_QUEUE",
        }
        task = asyncio.create_task(self._process(feed, document))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"feedId": feed}, status=202)

    async def _get_feed(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if (limited := self._limit(self._get_feed_bucket, self.get_feed_rate)) is not None:
            return limited
        feed = self.feeds.get(request.match_info["feed"])
        if feed is None:
            return web.json_response(_errors("NotFound", "Feed not found"), status=404)
        return web.json_response(feed)

    async def _process(self, feed_id: str, document_id: str) -> None:
        feed = self.feeds[feed_id]
        feed["processingStatus"] = "IN_PROGRESS"
        feed["processingStartTime"] = _now()
        await asyncio.sleep(self.feed_processing_seconds)
        content = self.documents[document_id]["content"]
        try:
            parsed = json.loads(content)
            header, messages = parsed["header"], parsed["messages"]
            if header.get("sellerId") != self.seller_id or not isinstance(messages, list):
                raise ValueError("header.sellerId does not match this seller")
            if len(messages) > MAX_FEED_MESSAGES:
                raise ValueError(
                    f"{len(messages)} messages; a feed holds at most {MAX_FEED_MESSAGES}"
                )
        except (ValueError, KeyError, TypeError) as error:
            report = {
                "header": {"sellerId": self.seller_id, "version": "2.0", "feedId": feed_id},
                "issues": [
                    {
                        "messageId": 0,
                        "code": "100001",
                        "severity": "ERROR",
                        "message": f"Fatal: {error}",
                    }
                ],
                "summary": {
                    "errors": 1,
                    "warnings": 0,
                    "messagesProcessed": 0,
                    "messagesAccepted": 0,
                    "messagesInvalid": 0,
                },
            }
            feed["processingStatus"] = "FATAL"
        else:
            issues = []
            accepted = 0
            for message in messages:
                message_id = message.get("messageId")
                sku = message.get("sku")
                if message.get("operationType") not in {"PATCH", "PARTIAL_UPDATE", "UPDATE"}:
                    issues.append(
                        {
                            "messageId": message_id,
                            "code": "4000004",
                            "severity": "ERROR",
                            "message": "operationType must be PATCH, PARTIAL_UPDATE or UPDATE",
                        }
                    )
                    continue
                problem = self._check_patch_request(message)
                if problem:
                    issues.append(
                        {
                            "messageId": message_id,
                            "code": "4000003",
                            "severity": "ERROR",
                            "message": problem,
                        }
                    )
                    continue
                result = self._apply(str(sku), message["patches"])
                for issue in result["issues"]:
                    issues.append({"messageId": message_id, **issue})
                accepted += result["status"] == "ACCEPTED"
            report = {
                "header": {"sellerId": self.seller_id, "version": "2.0", "feedId": feed_id},
                "issues": issues,
                "summary": {
                    "errors": sum(i["severity"] == "ERROR" for i in issues),
                    "warnings": 0,
                    "messagesProcessed": len(messages),
                    "messagesAccepted": accepted,
                    "messagesInvalid": len(messages) - accepted,
                },
            }
            feed["processingStatus"] = "DONE"
        result_id = uuid.uuid4().hex
        self.documents[result_id] = {
            "contentType": "application/json",
            "content": json.dumps(report).encode(),
        }
        feed["resultFeedDocumentId"] = result_id
        feed["processingEndTime"] = _now()
