"""A Shopify Admin GraphQL emulator for inventory: `inventorySetQuantities` and the `inventoryItems`
lookup, with the leaky-bucket cost model, THROTTLED errors, compare-and-set per quantity, the
`@idempotent` key of 2026-04, and all-or-nothing mutations, as a shop would answer them.

Not a GraphQL engine: operations are recognised by their root field and read their arguments from
`variables`; the response has the documented shape whatever the selection set.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from connectors.emulators.base import Bucket, Emulator

CAS_VERSION = "2026-04"  # from this version: changeFromQuantity per quantity + @idempotent required
REASONS = frozenset(
    {
        "correction",
        "cycle_count_available",
        "damaged",
        "movement_created",
        "movement_updated",
        "movement_received",
        "movement_canceled",
        "other",
        "promotion",
        "quality_control",
        "received",
        "reservation_created",
        "reservation_deleted",
        "reservation_updated",
        "restock",
        "safety_stock",
        "shrinkage",
    }
)
NAMES = frozenset({"available", "on_hand"})
_ITEM_GID = re.compile(r"^gid://shopify/InventoryItem/\d+$")
_LOCATION_GID = re.compile(r"^gid://shopify/Location/\d+$")
_IDEMPOTENT = re.compile(r"@idempotent\s*\(\s*key\s*:\s*(?:\"([^\"]*)\"|\$(\w+))\s*\)")
_SET_FIELD = re.compile(r"inventorySetQuantities\s*\(\s*input\s*:\s*\$(\w+)\s*\)")
_SKU_TERM = re.compile(r"sku:(?:'([^']*)'|\"([^\"]*)\"|([^\s()]+))")


def _arg(document: str, name: str, variables: dict[str, Any]) -> Any:
    """An argument given as a $variable or a literal int/string in the document."""
    match = re.search(rf"\b{name}\s*:\s*(\$\w+|-?\d+|\"(?:[^\"\\]|\\.)*\")", document)
    if match is None:
        return None
    token = match.group(1)
    if token.startswith("$"):
        return variables.get(token[1:])
    return json.loads(token)


class _GraphQLError(Exception):
    def __init__(self, message: str, code: str, status: int = 200) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass
class ShopifyEmulator(Emulator):
    access_token: str = "shpat_emulator"
    api_version: str = CAS_VERSION
    locations: tuple[str, ...] = ("gid://shopify/Location/1",)
    maximum_available: float = 2000.0  # cost points in the bucket
    restore_rate: float = 100.0  # points per second
    mutation_cost: int = 10
    max_input_size: int = 250
    items: dict[str, str] = field(default_factory=dict)  # sku -> InventoryItem gid
    levels: dict[tuple[str, str], int] = field(
        default_factory=dict
    )  # (item, location) -> available
    history: dict[str, list[int]] = field(default_factory=dict)  # sku -> values set, in order
    mutations: int = 0  # mutations that reached execution (not throttled, not failed on purpose)
    _bucket: Bucket | None = None
    _idempotency: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _groups: int = 0

    def __post_init__(self) -> None:
        self._bucket = Bucket(self.maximum_available, self.restore_rate)

    # ---- the shop's catalogue ----

    def add_item(
        self, sku: str, available: int = 0, locations: tuple[str, ...] | None = None
    ) -> str:
        gid = self.items.get(sku) or f"gid://shopify/InventoryItem/{4000 + len(self.items)}"
        self.items[sku] = gid
        for location in locations or self.locations:
            self.levels.setdefault((gid, location), available)
        return gid

    def available(self, sku: str, location: str | None = None) -> int | None:
        gid = self.items.get(sku)
        return None if gid is None else self.levels.get((gid, location or self.locations[0]))

    def sell(self, sku: str, units: int, location: str | None = None) -> None:
        """A storefront checkout: the shop decrements `available` itself (CAS will see it)."""
        key = (self.items[sku], location or self.locations[0])
        self.levels[key] -= units

    def final_values(self) -> dict[str, int]:
        return {sku: self.levels[(gid, self.locations[0])] for sku, gid in self.items.items()}

    def available_points(self) -> float:
        """What the cost bucket holds now (throttleStatus.currentlyAvailable)."""
        assert self._bucket is not None
        return self._bucket.level()

    # ---- HTTP ----

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/admin/api/{version}/graphql.json", self._graphql)]

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "errors": message if status != 429 else "Exceeded 2 calls per second for api client."
        }

    def _cost(self, requested: int, actual: int | None) -> dict[str, Any]:
        assert self._bucket is not None
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": self.maximum_available,
                "currentlyAvailable": int(self._bucket.level()),
                "restoreRate": self.restore_rate,
            },
        }

    async def _graphql(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Shopify-Access-Token") != self.access_token:
            return web.json_response(
                {
                    "errors": "[API] Invalid API key or access token (unrecognized login or wrong "
                    "password)"
                },
                status=401,
            )
        version = request.match_info["version"]
        try:
            payload = json.loads(await request.read())
            document, variables = payload["query"], payload.get("variables") or {}
            if not isinstance(document, str) or not isinstance(variables, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"errors": {"query": "Required parameter missing or invalid"}}, status=400
            )
        try:
            if _SET_FIELD.search(document):
                return self._set_quantities(document, variables, version)
            if "inventoryItems" in document:
                return self._lookup(document, variables)
            raise _GraphQLError(
                "the emulator knows inventorySetQuantities and inventoryItems only",
                "undefinedField",
            )
        except _GraphQLError as error:
            body = {"errors": [{"message": error.message, "extensions": {"code": error.code}}]}
            return web.json_response(body, status=error.status)

    def _throttled(self, requested: int) -> web.Response | None:
        assert self._bucket is not None
        if self._bucket.try_take(requested):
            return None
        self.throttled += 1
        body = {
            "errors": [
                {
                    "message": "Throttled",
                    "extensions": {
                        "code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits",
                    },
                }
            ],
            "extensions": {"cost": self._cost(requested, None)},
        }
        return web.json_response(body)

    # ---- inventoryItems(first:, query:) { nodes { id sku inventoryLevel(locationId:) } } ----

    def _lookup(self, document: str, variables: dict[str, Any]) -> web.Response:
        first = _arg(document, "first", variables)
        query = _arg(document, "query", variables) or ""
        location = _arg(document, "locationId", variables)
        if not isinstance(first, int) or not 0 < first <= 250:
            raise _GraphQLError("The 'first' argument must be between 1 and 250", "BAD_REQUEST")
        if location is not None and not _LOCATION_GID.match(str(location)):
            raise _GraphQLError(f"Invalid global id '{location}'", "argumentLiteralsIncompatible")
        requested = 2 + first
        throttled = self._throttled(requested)
        if throttled is not None:
            return throttled
        wanted = [next(g for g in m.groups() if g is not None) for m in _SKU_TERM.finditer(query)]
        nodes = []
        for sku in wanted[:first]:
            gid = self.items.get(sku)
            if gid is None:
                continue
            node: dict[str, Any] = {"id": gid, "sku": sku}
            if location is not None:
                level = self.levels.get((gid, location))
                node["inventoryLevel"] = (
                    None
                    if level is None
                    else {"quantities": [{"name": "available", "quantity": level}]}
                )
            nodes.append(node)
        actual = 2 + len(nodes)
        assert self._bucket is not None
        self._bucket.give_back(requested - actual)
        data = {"inventoryItems": {"nodes": nodes, "pageInfo": {"hasNextPage": False}}}
        return web.json_response(
            {"data": data, "extensions": {"cost": self._cost(requested, actual)}}
        )

    # ---- inventorySetQuantities(input:) @idempotent(key:) ----

    def _set_quantities(
        self, document: str, variables: dict[str, Any], version: str
    ) -> web.Response:
        match = _SET_FIELD.search(document)
        assert match is not None
        value = variables.get(match.group(1))
        cas = version >= CAS_VERSION
        key = self._idempotency_key(document, variables)
        if cas and key is None:
            raise _GraphQLError(
                "The @idempotent directive is required for this mutation.", "BAD_REQUEST"
            )
        self._check_input(value, cas)
        assert isinstance(value, dict)
        requested = self.mutation_cost
        throttled = self._throttled(requested)
        if throttled is not None:
            return throttled
        fingerprint = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        if key is not None and key in self._idempotency:
            seen, result = self._idempotency[key]
            if seen != fingerprint:
                raise _GraphQLError(
                    "The idempotency key was already used with different parameters.",
                    "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
                )
        else:
            self.mutations += 1
            result = self._apply(value, cas)
            if key is not None:
                self._idempotency[key] = (fingerprint, result)
        body = {
            "data": {"inventorySetQuantities": result},
            "extensions": {"cost": self._cost(requested, requested)},
        }
        return web.json_response(body)

    def _idempotency_key(self, document: str, variables: dict[str, Any]) -> str | None:
        match = _IDEMPOTENT.search(document)
        if match is None:
            return None
        literal, variable = match.groups()
        key = literal if literal is not None else variables.get(variable)
        if not isinstance(key, str) or not key:
            raise _GraphQLError("The idempotency key must be a non-empty string.", "BAD_REQUEST")
        return key

    def _check_input(self, value: Any, cas: bool) -> None:
        """GraphQL input coercion: wrong shapes are top-level INVALID_VARIABLE errors."""

        def invalid(problem: str) -> _GraphQLError:
            return _GraphQLError(
                "Variable $input of type InventorySetQuantitiesInput! was provided invalid value"
                f" for {problem}",
                "INVALID_VARIABLE",
            )

        if not isinstance(value, dict):
            raise invalid("input (Expected value to not be null)")
        allowed = {"name", "reason", "referenceDocumentUri", "quantities"}
        if not cas:
            allowed.add("ignoreCompareQuantity")
        for name in value:
            if name not in allowed:
                raise invalid(f"{name} (Field is not defined on InventorySetQuantitiesInput)")
        for name in ("name", "reason"):
            if not isinstance(value.get(name), str):
                raise invalid(f"{name} (Expected value to not be null)")
        quantities = value.get("quantities")
        if not isinstance(quantities, list):
            raise invalid("quantities (Expected value to not be null)")
        if len(quantities) > self.max_input_size:
            raise _GraphQLError(
                f"The input array size of {len(quantities)} is greater than the maximum allowed"
                f" of {self.max_input_size}.",
                "MAX_INPUT_SIZE_EXCEEDED",
            )
        fields = {"inventoryItemId", "locationId", "quantity"}
        fields.add("changeFromQuantity" if cas else "compareQuantity")
        for i, item in enumerate(quantities):
            if not isinstance(item, dict):
                raise invalid(f"quantities.{i} (Expected value to not be null)")
            for name in item:
                if name not in fields:
                    raise invalid(f"quantities.{i}.{name} (Field is not defined)")
            for name in ("inventoryItemId", "locationId"):
                if not isinstance(item.get(name), str):
                    raise invalid(f"quantities.{i}.{name} (Expected value to not be null)")
            for name in ("quantity", "changeFromQuantity", "compareQuantity"):
                got = item.get(name)
                if got is not None and (not isinstance(got, int) or isinstance(got, bool)):
                    raise invalid(f"quantities.{i}.{name} (Could not coerce value {got!r} to Int)")
            if item.get("quantity") is None:
                raise invalid(f"quantities.{i}.quantity (Expected value to not be null)")

    def _apply(self, value: dict[str, Any], cas: bool) -> dict[str, Any]:
        """All or nothing: any userError leaves every quantity as it was."""
        errors: list[dict[str, Any]] = []

        def error(code: str, message: str, *path: str) -> None:
            errors.append({"code": code, "field": ["input", *path], "message": message})

        if value["name"] not in NAMES:
            error(
                "INVALID_NAME", "The quantity name must be either 'available' or 'on_hand'.", "name"
            )
        if value["reason"] not in REASONS:
            error("INVALID_REASON", "The specified reason is invalid.", "reason")
        changes = []
        for i, item in enumerate(value["quantities"]):
            at = ("quantities", str(i))
            gid, location = item["inventoryItemId"], item["locationId"]
            if not _ITEM_GID.match(gid) or gid not in self.items.values():
                error(
                    "INVALID_INVENTORY_ITEM",
                    "The specified inventory item could not be found.",
                    *at,
                    "inventoryItemId",
                )
                continue
            if not _LOCATION_GID.match(location) or location not in self.locations:
                error(
                    "INVALID_LOCATION",
                    "The specified location could not be found.",
                    *at,
                    "locationId",
                )
                continue
            current = self.levels.get((gid, location))
            if current is None:
                error(
                    "ITEM_NOT_STOCKED_AT_LOCATION",
                    "The specified inventory item is not stocked at the location.",
                    *at,
                    "locationId",
                )
                continue
            if item["quantity"] > 1_000_000_000:
                error(
                    "INVALID_QUANTITY_TOO_HIGH",
                    "The quantity can't be higher than 1,000,000,000.",
                    *at,
                    "quantity",
                )
                continue
            if cas:
                if "changeFromQuantity" not in item:
                    error(
                        "CHANGE_FROM_QUANTITY_REQUIRED",
                        "changeFromQuantity is required; pass null to skip the check.",
                        *at,
                        "changeFromQuantity",
                    )
                    continue
                expected = item["changeFromQuantity"]
                if expected is not None and expected != current:
                    error(
                        "CHANGE_FROM_QUANTITY_STALE",
                        "The specified changeFromQuantity does not match the current quantity.",
                        *at,
                        "changeFromQuantity",
                    )
                    continue
            elif not value.get("ignoreCompareQuantity"):
                expected = item.get("compareQuantity")
                if expected is None:
                    error(
                        "COMPARE_QUANTITY_REQUIRED",
                        "The compareQuantity argument must be given"
                        " to each quantity or ignored using ignoreCompareQuantity.",
                        *at,
                        "compareQuantity",
                    )
                    continue
                if expected != current:
                    error(
                        "COMPARE_QUANTITY_STALE",
                        "The compareQuantity value does not match persisted value.",
                        *at,
                        "compareQuantity",
                    )
                    continue
            changes.append((gid, location, item["quantity"], current))
        if errors:
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        by_gid = {gid: sku for sku, gid in self.items.items()}
        for gid, location, quantity, _ in changes:
            self.levels[(gid, location)] = quantity
            self.history.setdefault(by_gid[gid], []).append(quantity)
        self._groups += 1
        group = {
            "id": f"gid://shopify/InventoryAdjustmentGroup/{self._groups}",
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": value["reason"],
            "referenceDocumentUri": value.get("referenceDocumentUri"),
            "changes": [
                {"name": value["name"], "delta": quantity - before, "quantityAfterChange": quantity}
                for _, _, quantity, before in changes
            ],
        }
        return {"inventoryAdjustmentGroup": group, "userErrors": []}
