"""GET /reservations/{id} and GET /explain over HTTP, and the OpenAPI document kept true: every
route registered is documented and the documented schemas accept the API's real responses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.api import OPENAPI_FILE, ROUTED_HEADER, LiveState, Route, StateView, api_of
from streams.core.explain import explain
from streams.core.models import InboundScheduled, StockAdjusted
from streams.core.state import SkuState
from streams.runners.local import Collector, Engine
from tests.test_api import AMAZON, CATALOG, WEB, Rig, make_rig, reservation

DOC = json.loads(OPENAPI_FILE.read_text())


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for r in make_rig():
        yield r


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """The JSON Schema 2020-12 keywords the document uses (jsonschema is not a dependency)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        validate(value, DOC["components"]["schemas"][name], where)
        return
    for part in schema.get("allOf", ()):
        validate(value, part, where)
    if "oneOf" in schema:
        fits = 0
        for part in schema["oneOf"]:
            try:
                validate(value, part, where)
                fits += 1
            except AssertionError:
                pass
        assert fits == 1, f"{where}: {value!r} fits {fits} of oneOf"
    if "const" in schema:
        assert value == schema["const"], where
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        python = {
            "object": dict,
            "array": list,
            "string": str,
            "integer": int,
            "boolean": bool,
            "null": type(None),
        }
        ok = any(
            isinstance(value, python[k]) and not (k == "integer" and isinstance(value, bool))
            for k in kinds
        )
        assert ok, f"{where}: {value!r} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, int) and "minimum" in schema:
        assert value >= schema["minimum"], where
    if isinstance(value, str) and schema.get("format") == "date":
        datetime.strptime(value, "%Y-%m-%d")
    if isinstance(value, str) and schema.get("format") == "date-time":
        datetime.fromisoformat(value)
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            assert name in value, f"{where}: {name} is missing"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                validate(item, props[name], f"{where}.{name}")
            elif isinstance(extra, dict):
                validate(item, extra, f"{where}.{name}")
            else:
                assert extra is not False, f"{where}: {name} is not documented"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{i}]")


async def call(rig: Rig, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """One request, its body checked against what the document says of that route and status."""
    response = await rig.client.request(method, path, **kwargs)
    body = await response.json()
    template = next(
        t
        for t in DOC["paths"]
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path.split("?")[0])
    )
    operation = DOC["paths"][template][method.lower()]
    documented = operation["responses"].get(str(response.status))
    assert documented is not None, f"{method} {template}: {response.status} is not documented"
    validate(body, documented["content"]["application/json"]["schema"], f"{method} {path}")
    return response.status, body


def routes(rig: Rig) -> set[tuple[str, str]]:
    app = rig.client.app
    assert app is not None
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


async def test_every_route_is_documented_and_every_documented_route_exists(rig: Rig) -> None:
    documented = {
        (method, path)
        for path, item in DOC["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    assert routes(rig) == documented
    assert DOC["openapi"].startswith("3.1")


async def test_the_document_is_served_at_openapi_json(rig: Rig) -> None:
    status, body = await call(rig, "GET", "/openapi.json")
    assert (status, body) == (200, DOC)


async def test_every_documented_reference_resolves() -> None:
    text = json.dumps(DOC)
    for name in re.findall(r'"#/components/schemas/([^"]+)"', text):
        assert name in DOC["components"]["schemas"], name


def test_the_document_is_valid_openapi_3_1_with_json_schema_2020_12_schemas() -> None:
    """Checked against the OAS 3.1 meta-schema (the copy schemathesis ships, offline), so a
    mistake in the document's structure fails here, not only in the live schemathesis run."""
    jsonschema = pytest.importorskip("jsonschema")
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    validator = jsonschema.Draft202012Validator(definitions.OPENAPI_31)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(DOC)]
    assert not errors, errors[:5]
    assert DOC["jsonSchemaDialect"] == "https://json-schema.org/draft/2020-12/schema"
    for name, schema in DOC["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise AssertionError(f"{name}: {error.message}") from None
    broken = {**DOC, "paths": {"/x": {"get": {"responses": {"200": {"description": 1}}}}}}
    assert any(validator.iter_errors(broken))  # the meta-schema does reject a bad document


async def test_a_reservation_is_read_back_with_its_status_placement_and_expiry(rig: Rig) -> None:
    status, held = await call(rig, "POST", "/reservations", json=reservation("r1", 3), headers=WEB)
    assert status == 201
    status, body = await call(rig, "GET", "/reservations/r1", headers=WEB)
    assert status == 200
    assert body["status"] == "held"
    assert body["placement"] == {"HOT": {"wh": 3}} == held["placement"]
    assert body["expires_at"] == held["expires_at"]
    await call(rig, "DELETE", "/reservations/r1", headers=WEB)
    status, body = await call(rig, "GET", "/reservations/r1", headers=WEB)
    assert (status, body["status"]) == (200, "released")


async def test_a_rejected_reservation_is_read_back_with_its_shortfall(rig: Rig) -> None:
    status, _ = await call(rig, "POST", "/reservations", json=reservation("big", 99), headers=WEB)
    assert status == 409
    status, body = await call(rig, "GET", "/reservations/big", headers=WEB)
    assert (status, body["status"]) == (200, "rejected")
    assert body["shortfall"][0]["requested"] == 99


async def test_an_unknown_or_foreign_reservation_is_a_404_json_error(rig: Rig) -> None:
    status, body = await call(rig, "GET", "/reservations/nope", headers=WEB)
    assert status == 404 and "no reservation nope" in body["error"]
    await call(rig, "POST", "/reservations", json=reservation("mine"), headers=WEB)
    status, body = await call(rig, "GET", "/reservations/mine", headers=AMAZON)
    assert status == 404 and body["status"] == 404
    status, body = await call(rig, "GET", "/reservations/mine")
    assert status == 401


async def test_explain_is_the_formula_from_the_committed_states(rig: Rig) -> None:
    await call(rig, "POST", "/reservations", json=reservation("r1", 2), headers=WEB)
    engine = rig.stream.engine
    engine.process(
        InboundScheduled(
            event_id="po",
            occurred_at=datetime.now(UTC),
            source="erp",
            po_id="PO-1",
            sku="HOT",
            location="wh",
            quantity=5,
            eta=datetime.now(UTC).date(),
        )
    )
    engine.flush()
    changelog = {  # the records the feed finds on the changelog, by partition and offset
        (0, offset): json.dumps(state.to_dict()).encode()
        for offset, state in enumerate(engine.skus.values())
    }
    states = StateView(lambda partition, offset: changelog.get((partition, offset)))
    for offset, sku in enumerate(engine.skus):
        states.offer(sku, 0, offset)
    api_of(rig.client.app).states = states
    today = datetime.now(UTC).date()
    for listing in ("HOT", "HOT-2PK"):
        status, body = await call(rig, "GET", f"/explain/web/{listing}", headers=WEB)
        assert status == 200
        want = explain(CATALOG, engine.skus, "web", listing, today).to_json()
        assert body == {**want, "published": None, "state_source": {"HOT": "changelog"}}
    hot = body["components"][0]
    assert [loc["location"] for loc in hot["locations"]] == ["wh"]
    assert hot["locations"][0]["reserved"] == 2
    assert hot["locations"][0]["holds"][0]["reservation_id"] == "r1"
    # the last changes come through the changelog's records too, in the documented shape
    assert {(c["type"], c["event_id"]) for c in body["changes"]} >= {
        ("inbound-scheduled", "po"),
        ("reservation-requested", None),
    }
    assert body["available"] == (10 - 2) // 2
    record = {
        "channel": "web",
        "channel_sku": "HOT",
        "available": 8,
        "backorderable": 0,
        "restock_date": None,
        "version": 3,
        "as_of": "2026-01-01T00:00:00Z",
        "cause_event_id": "e3",
    }
    rig.availability.offer(record)
    status, body = await call(rig, "GET", "/explain/web/HOT", headers=WEB)
    assert body["published"] == record and body["available"] == 8


async def test_explain_refuses_other_channels_and_unknown_listings(rig: Rig) -> None:
    status, _ = await call(rig, "GET", "/explain/web/HOT", headers=AMAZON)
    assert status == 403
    status, body = await call(rig, "GET", "/explain/web/NOPE", headers=WEB)
    assert status == 404 and "no listing 'NOPE'" in body["error"]
    status, body = await call(rig, "GET", "/explain/web/HOT")
    assert status == 401


# ---- explain served by a stream worker: the owner's memory, ahead of the changelog ----


COUNTED_AT = datetime.now(UTC)


def counted(sku: str, units: int) -> SkuState:
    """A state of `sku` counted at `units` at wh, as the core makes it (the same each time)."""
    engine = Engine(CATALOG, Collector())
    engine.process(
        StockAdjusted(
            event_id=f"count-{sku}-{units}",
            occurred_at=COUNTED_AT,
            source="wms",
            sku=sku,
            location="wh",
            mode="count",
            quantity=units,
        )
    )
    engine.flush()
    return engine.skus[sku]


def committed(rig: Rig, *states: SkuState) -> None:
    """The states as the API's view reads them off the changelog (its records by partition and
    offset, read when a SKU is explained)."""
    changelog = {(0, i): json.dumps(state.to_dict()).encode() for i, state in enumerate(states)}
    view = StateView(lambda partition, offset: changelog.get((partition, offset)))
    for i, state in enumerate(states):
        view.offer(state.sku, 0, i)
    api_of(rig.client.app).states = view


def held_here(*states: SkuState) -> LiveState:
    """A worker's memory holding `states` (SKUs of its partitions) and no other SKU."""
    return {state.sku: state for state in states}.get


def asking(asked: list[bytes], url: str) -> Route:
    """Routes every key to `url`, recording the keys asked about."""

    def route(key: bytes) -> str:
        asked.append(key)
        return url

    return route


def on_hand(body: dict[str, Any], sku: str) -> int:
    component = next(c for c in body["components"] if c["sku"] == sku)
    return sum(location["on_hand"] for location in component["locations"])


def explained(listing: str, *states: SkuState) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    return explain(CATALOG, {s.sku: s for s in states}, "web", listing, today).to_json()


async def test_a_worker_explains_a_sku_it_holds_from_its_memory_not_the_changelog() -> None:
    async for rig in make_rig(live_state=held_here(counted("HOT", 9))):
        committed(rig, counted("HOT", 4))  # the changelog, a commit behind the memory
        status, body = await call(rig, "GET", "/explain/web/HOT", headers=WEB)
        assert status == 200
        want = explained("HOT", counted("HOT", 9))
        assert body == {**want, "published": None, "state_source": {"HOT": "owner"}}
        assert on_hand(body, "HOT") == 9


async def test_a_sku_the_worker_does_not_hold_is_explained_from_the_changelog() -> None:
    async for rig in make_rig(live_state=held_here(counted("MUG", 9))):
        committed(rig, counted("HOT", 4))
        status, body = await call(rig, "GET", "/explain/web/HOT", headers=WEB)
        assert (status, body["state_source"], on_hand(body, "HOT")) == (
            200,
            {"HOT": "changelog"},
            4,
        )


async def test_a_bundle_takes_each_sku_from_the_memory_that_holds_it_else_the_changelog() -> None:
    """Answered where the first component lives; a component whose owner does not answer comes
    from the changelog."""
    asked: list[bytes] = []
    live = held_here(counted("HOT", 9))
    async for rig in make_rig(live_state=live, route=asking(asked, "http://127.0.0.1:1")):
        committed(rig, counted("HOT", 4), counted("MUG", 6))
        status, body = await call(rig, "GET", "/explain/web/KIT", headers=WEB)
        assert status == 200
        assert asked == [b"MUG"]  # its first SKU is held here; MUG's owner is out of reach
        want = explained("KIT", counted("HOT", 9), counted("MUG", 6))
        assert body == {
            **want,
            "published": None,
            "state_source": {"HOT": "owner", "MUG": "changelog"},
        }
        assert body["available"] == 6


async def test_an_explanation_is_passed_to_the_worker_that_holds_its_first_sku() -> None:
    """That worker answers from its memory (with the caller's token); the one asked passes the
    answer back whole."""
    asked: list[bytes] = []
    async for owner in make_rig(live_state=held_here(counted("HOT", 9))):
        committed(owner, counted("MUG", 6))
        owner_url = str(owner.client.make_url("/"))
        live = held_here(counted("MUG", 7))  # holds the bundle's other SKU, not its first
        async for front in make_rig(live_state=live, route=asking(asked, owner_url)):
            committed(front, counted("HOT", 4), counted("MUG", 5))
            status, body = await call(front, "GET", "/explain/web/KIT", headers=WEB)
            assert status == 200
            assert asked == [b"HOT"]
            assert body["state_source"] == {"HOT": "owner", "MUG": "changelog"}
            assert (on_hand(body, "HOT"), on_hand(body, "MUG")) == (9, 6)  # the owner's answer
            status, _ = await call(front, "GET", "/explain/web/KIT", headers=AMAZON)
            assert status == 403  # refused before anything is passed on
            metrics = api_of(front.client.app).metrics
            assert metrics.explain_routed.labels("answered")._value.get() == 1


async def test_a_bundle_takes_its_other_sku_from_the_memory_of_the_worker_holding_it() -> None:
    """The worker holding the bundle's first SKU asks the one holding the other for its state
    (`GET /states/{sku}`, with the caller's token): both from memory, neither from the
    changelog a commit behind. The state is given only to a channel listing the SKU, and only
    by the worker holding it."""
    asked: list[bytes] = []
    async for other in make_rig(live_state=held_here(counted("MUG", 7))):
        committed(other, counted("MUG", 5))
        other_url = str(other.client.make_url("/"))
        async for rig in make_rig(live_state=held_here(counted("HOT", 9)),
                                  route=asking(asked, other_url)):  # fmt: skip
            committed(rig, counted("HOT", 4), counted("MUG", 6))
            status, body = await call(rig, "GET", "/explain/web/KIT", headers=WEB)
            assert status == 200
            assert asked == [b"MUG"]
            want = explained("KIT", counted("HOT", 9), counted("MUG", 7))
            assert body == {
                **want,
                "published": None,
                "state_source": {"HOT": "owner", "MUG": "owner"},
            }
            assert (on_hand(body, "HOT"), on_hand(body, "MUG")) == (9, 7)
        status, body = await call(other, "GET", "/states/MUG", headers=WEB)
        assert (status, body) == (200, {"sku": "MUG", "state": counted("MUG", 7).to_dict()})
        status, body = await call(other, "GET", "/states/HOT", headers=WEB)
        assert (status, body["error"]) == (404, "SKU 'HOT' is not held by this worker")
        status, body = await call(other, "GET", "/states/MUG", headers=AMAZON)
        assert (status, body["error"]) == (404, "no listing of channel amazon has SKU 'MUG'")


async def test_an_owner_out_of_reach_leaves_the_explanation_to_the_changelog() -> None:
    asked: list[bytes] = []
    route = asking(asked, "http://127.0.0.1:1")  # nothing listens there
    async for rig in make_rig(live_state=held_here(), route=route):
        committed(rig, counted("HOT", 4))
        status, body = await call(rig, "GET", "/explain/web/HOT", headers=WEB)
        assert (status, body["state_source"], on_hand(body, "HOT")) == (
            200,
            {"HOT": "changelog"},
            4,
        )
        assert asked == [b"HOT"]
        metrics = api_of(rig.client.app).metrics
        assert metrics.explain_routed.labels("unreachable")._value.get() == 1


async def test_an_explanation_passed_on_by_another_worker_is_not_passed_on_again() -> None:
    asked: list[bytes] = []
    async for rig in make_rig(live_state=held_here(), route=asking(asked, "http://127.0.0.1:1")):
        committed(rig, counted("HOT", 4))
        headers = {**WEB, ROUTED_HEADER: "1"}
        status, body = await call(rig, "GET", "/explain/web/HOT", headers=headers)
        assert (status, body["state_source"]) == (200, {"HOT": "changelog"})
        assert asked == []


async def test_the_documented_error_and_health_bodies_fit(rig: Rig) -> None:
    assert (await call(rig, "GET", "/health"))[0] == 200
    assert (await call(rig, "POST", "/reservations", json={"lines": []}, headers=WEB))[0] == 400
    assert (await call(rig, "DELETE", "/reservations/none", headers=WEB))[0] == 404
    status, _ = await call(rig, "GET", "/availability/web/HOT", headers=WEB)
    assert status == 404


async def test_the_validator_rejects_what_the_document_does_not_allow() -> None:
    schema = {"$ref": "#/components/schemas/Availability"}
    with pytest.raises(AssertionError):
        validate({"channel": "web"}, schema)
    with pytest.raises(AssertionError):
        validate({"error": 3, "status": 400}, {"$ref": "#/components/schemas/Error"})
