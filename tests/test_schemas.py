"""The .avsc contracts and the pydantic models cannot drift apart silently."""

from __future__ import annotations

import copy
import json
import types
import typing
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from streams.codec import BUILTIN_MODELS, DEFAULT_SCHEMAS_DIR, record_type
from streams.core import models

SCHEMA_FILES = {
    model.__name__: DEFAULT_SCHEMAS_DIR / f"{model.__name__}.avsc" for model in BUILTIN_MODELS
}
TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
DATE = {"type": "int", "logicalType": "date"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# ---- the drift check: one recursive comparison of a model class with a record schema -------


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        assert len(args) == 1, f"unions of several non-null types are not mapped: {annotation}"
        return _strip_annotated(args[0]), nullable
    return annotation, False


def _type_mismatches(annotation: Any, avro: Any, where: str) -> list[str]:
    """Differences between a (non-null) Python annotation and an Avro type."""
    origin = typing.get_origin(annotation)
    if annotation is str or origin is typing.Literal:
        expected: Any = "string"
    elif annotation is bool:
        expected = "boolean"
    elif annotation is int:
        return [] if avro in ("int", "long") else [f"{where}: int field, Avro type {avro}"]
    elif annotation is datetime:
        expected = TIMESTAMP
    elif annotation is date:
        expected = DATE
    elif annotation is bytes:
        expected = "bytes"
    elif origin is list:
        if not (isinstance(avro, dict) and avro.get("type") == "array"):
            return [f"{where}: list field, Avro type {avro}"]
        (item,) = typing.get_args(annotation)
        return _type_mismatches(_strip_annotated(item), avro["items"], f"{where}[]")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not (isinstance(avro, dict) and avro.get("type") == "record"):
            return [f"{where}: {annotation.__name__} field, Avro type {avro}"]
        return record_mismatches(annotation, avro, where)
    else:
        return [f"{where}: no Avro mapping known for {annotation}"]
    if isinstance(expected, dict):
        extra = {k: v for k, v in avro.items() if k != "doc"} if isinstance(avro, dict) else avro
        return [] if extra == expected else [f"{where}: expected {expected}, Avro type {avro}"]
    return [] if avro == expected else [f"{where}: expected {expected}, Avro type {avro}"]


def _field_mismatches(
    name: str, info: FieldInfo, avro_field: dict[str, Any], where: str
) -> list[str]:
    problems = []
    annotation, nullable = _split_optional(info.annotation)
    avro_type = avro_field["type"]
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if "null" not in avro_type or len(branches) != 1:
            return [f"{where}.{name}: Avro union {avro_type} is not [null, T]"]
        if not nullable:
            problems.append(f"{where}.{name}: nullable in Avro, required in the model")
        avro_type = branches[0]
    elif nullable:
        problems.append(f"{where}.{name}: nullable in the model, not in Avro")
    problems += _type_mismatches(annotation, avro_type, f"{where}.{name}")

    if info.is_required():
        if nullable:
            if avro_field.get("default", "absent") is not None:
                problems.append(f"{where}.{name}: nullable field should default to null in Avro")
        elif "default" in avro_field:
            problems.append(f"{where}.{name}: required in the model, has an Avro default")
    else:
        default = info.get_default(call_default_factory=True)
        if avro_field.get("default", "absent") != default:
            problems.append(
                f"{where}.{name}: model default {default!r}, "
                f"Avro default {avro_field.get('default', 'absent')!r}"
            )
        if (
            default is None
            and isinstance(avro_field["type"], list)
            and avro_field["type"][0] != "null"
        ):
            problems.append(f"{where}.{name}: a null default needs null first in the union")
    return problems


def record_mismatches(model: type[BaseModel], schema: dict[str, Any], where: str = "") -> list[str]:
    """Every difference in field names, optionality, defaults and types, nested records included."""
    where = where or model.__name__
    problems = []
    if schema.get("name") != model.__name__:
        problems.append(f"{where}: record named {schema.get('name')}, model is {model.__name__}")
    if not schema.get("doc"):
        problems.append(f"{where}: record has no doc")
    avro_fields = {field["name"]: field for field in schema["fields"]}
    for missing in sorted(set(model.model_fields) - set(avro_fields)):
        problems.append(f"{where}.{missing}: in the model, missing in the schema")
    for extra in sorted(set(avro_fields) - set(model.model_fields)):
        problems.append(f"{where}.{extra}: in the schema, not in the model")
    for name, info in model.model_fields.items():
        if name in avro_fields:
            problems += _field_mismatches(name, info, avro_fields[name], where)
    return problems


# ---- the contracts -------------------------------------------------------------------------


def test_every_builtin_model_has_a_schema_file() -> None:
    assert {p.stem for p in DEFAULT_SCHEMAS_DIR.glob("*.avsc")} >= set(SCHEMA_FILES)
    expected_events = {cls.__name__ for cls in models.EVENT_TYPES.values()}
    assert expected_events <= set(SCHEMA_FILES)


@pytest.mark.parametrize("path", sorted(DEFAULT_SCHEMAS_DIR.glob("*.avsc")), ids=lambda p: p.stem)
def test_every_schema_file_is_a_valid_avro_record(path: Path) -> None:
    schema = load(path)
    parsed = parse_schema(schema)
    assert isinstance(parsed, dict)
    assert parsed["type"] == "record"
    assert schema["namespace"] == "inventory"
    assert schema["name"] == path.stem


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.__name__)
def test_schema_matches_model(model: type[BaseModel]) -> None:
    assert record_mismatches(model, load(SCHEMA_FILES[model.__name__])) == []


@pytest.mark.parametrize("model", BUILTIN_MODELS, ids=lambda m: m.__name__)
def test_codec_uses_the_schema_file(model: type[BaseModel]) -> None:
    on_disk = to_parsing_canonical_form(load(SCHEMA_FILES[model.__name__]))
    assert to_parsing_canonical_form(record_type(model).parsed) == on_disk


@pytest.mark.parametrize("kind, model", models.EVENT_TYPES.items(), ids=list(models.EVENT_TYPES))
def test_event_type_field_defaults_to_the_event_type(kind: str, model: type[BaseModel]) -> None:
    fields = {field["name"]: field for field in load(SCHEMA_FILES[model.__name__])["fields"]}
    assert fields["type"] == {**fields["type"], "type": "string", "default": kind}
    assert [name for name in fields][:4] == ["event_id", "type", "occurred_at", "source"]


def test_nested_records_are_defined_once_inline_where_used() -> None:
    texts = {name: path.read_text() for name, path in SCHEMA_FILES.items()}
    for nested, owner in [
        ("OrderLine", "OrderCreated"),
        ("CancelLine", "OrderCancelled"),
        ("ReservationLine", "ReservationRequested"),
    ]:
        defining = [name for name, text in texts.items() if f'"name": "{nested}"' in text]
        assert defining == [owner]


def test_record_types_have_distinct_fingerprints() -> None:
    fingerprints = [record_type(model).fingerprint for model in BUILTIN_MODELS]
    assert len(set(fingerprints)) == len(fingerprints)


# ---- the drift check catches drift ---------------------------------------------------------


def _mutated(name: str, change: Any) -> dict[str, Any]:
    schema = copy.deepcopy(load(SCHEMA_FILES[name]))
    change(schema)
    return schema


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(field for field in schema["fields"] if field["name"] == name)


@pytest.mark.parametrize(
    "model, change, complaint",
    [
        (
            models.PickConfirmed,
            lambda s: s["fields"].remove(_field(s, "line_id")),
            "PickConfirmed.line_id: in the model, missing in the schema",
        ),
        (
            models.Position,
            lambda s: s["fields"].append({"name": "extra", "type": "long"}),
            "Position.extra: in the schema, not in the model",
        ),
        (
            models.PickConfirmed,
            lambda s: _field(s, "order_id").update(type="string", default=None),
            "PickConfirmed.order_id: nullable in the model, not in Avro",
        ),
        (
            models.PickConfirmed,
            lambda s: _field(s, "sku").update(type=["null", "string"], default=None),
            "PickConfirmed.sku: nullable in Avro, required in the model",
        ),
        (
            models.StockAdjusted,
            lambda s: _field(s, "bucket").update(default="damaged"),
            "StockAdjusted.bucket: model default 'sellable', Avro default 'damaged'",
        ),
        (
            models.StockAdjusted,
            lambda s: _field(s, "type").update(default="order-created"),
            "StockAdjusted.type: model default 'stock-adjusted'",
        ),
        (
            models.InboundScheduled,
            lambda s: _field(s, "eta").update(type="string"),
            "InboundScheduled.eta: expected",
        ),
        (
            models.Alert,
            lambda s: _field(s, "occurred_at").update(type="long"),
            "Alert.occurred_at: expected",
        ),
        (
            models.OrderCreated,
            lambda s: _field(s, "lines")["type"]["items"]["fields"].pop(),
            "OrderCreated.lines[].location: in the model, missing in the schema",
        ),
        (
            models.DeadLetter,
            lambda s: _field(s, "original").update(type="string"),
            "DeadLetter.original: expected bytes",
        ),
    ],
)
def test_drift_check_reports_each_kind_of_drift(
    model: type[BaseModel], change: Any, complaint: str
) -> None:
    problems = record_mismatches(model, _mutated(model.__name__, change))
    assert any(complaint in problem for problem in problems), problems
