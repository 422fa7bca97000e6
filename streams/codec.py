"""Models to Avro bytes and back, in one place: a record is written with the schema registered for
its class and read back through the same validation as JSON input, or refused with EncodingError
(undecodable bytes) or InvalidEvent (decodable, but breaks the contract).

Two wire formats share one registry of record types:

- Avro single-object encoding (default): ``C3 01``, the 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema, then the binary datum. No registry service needed; the
  fingerprint says which record type follows, so one topic can carry many record types.
- Confluent wire format (when ``SCHEMA_REGISTRY_URL`` is set): ``00``, the 4-byte big-endian
  schema id, then the binary datum; subjects follow the TopicRecordNameStrategy
  (``<topic>-<record full name>``), so one topic can carry many record types there too.
"""

from __future__ import annotations

import base64
import io
import json
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import BaseModel, ValidationError

from streams.core import models
from streams.errors import BrokerError, EncodingError, InvalidEvent
from streams.settings import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "BUILTIN_MODELS",
    "CONFLUENT_MAGIC",
    "DEFAULT_SCHEMAS_DIR",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "ConfluentCodec",
    "RecordType",
    "SingleObjectCodec",
    "make_codec",
    "record_to_json",
    "record_type",
    "register_builtin_schemas",
    "register_model",
    "register_writer_schema",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MARKER) + 8
_CONFLUENT_HEADER = len(CONFLUENT_MAGIC) + 4
DEFAULT_SCHEMAS_DIR = REPO_ROOT / "schemas"

# The record types this project ships a contract for, each in schemas/<ClassName>.avsc.
BUILTIN_MODELS: tuple[type[BaseModel], ...] = (
    models.StockAdjusted,
    models.OrderCreated,
    models.OrderCancelled,
    models.PickConfirmed,
    models.ReturnReceived,
    models.InboundScheduled,
    models.ReservationRequested,
    models.ReservationReleased,
    models.ReservationExpired,
    models.Position,
    models.Availability,
    models.Alert,
    models.DeadLetter,
)


@runtime_checkable
class Codec(Protocol):
    """Bytes on a topic <-> typed models; the only serialization the stream agents use."""

    def encode(self, record: BaseModel, topic: str) -> bytes: ...

    def decode(self, data: bytes, topic: str) -> BaseModel: ...


# ---- the registry of record types ----------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class RecordType:
    """Everything needed per model class, computed once at registration."""

    model: type[BaseModel]
    name: str  # Avro full name, e.g. inventory.StockAdjusted
    schema_json: str  # the schema as given, for a schema registry
    parsed: dict[str, Any]  # fastavro-parsed schema: the writer for encode, the reader for decode
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, little-endian
    event_type: str | None  # the `type` value when the model is a SPEC §2 event
    to_avro: Callable[[BaseModel], Mapping[str, Any]]


@dataclass(frozen=True, slots=True, eq=False)
class _Writer:
    """A writer schema met on the wire (ours or an older one) and the record name it reads as."""

    parsed: dict[str, Any]
    name: str
    fingerprint: bytes


_BY_MODEL: dict[type[BaseModel], RecordType] = {}
_BY_NAME: dict[str, RecordType] = {}
# Every schema ever registered stays readable; older ones are resolved to the current reader.
_WRITERS: dict[bytes, _Writer] = {}


def register_model(
    model_cls: type[BaseModel], schema_file_or_dict: Path | str | Mapping[str, Any]
) -> RecordType:
    """Register (or evolve) the Avro record schema of a model class.

    The schema is a path to an ``.avsc`` file, its JSON text, or the parsed dict. Its top-level
    field names must be exactly the model's. Registering a new schema for a class makes it the
    writer schema; data written with the previous ones stays decodable through schema resolution.
    """
    schema = _load_schema(schema_file_or_dict)
    if schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        raise EncodingError(f"{model_cls.__name__}: the schema must be an Avro record")
    _check_field_names(model_cls, schema)
    try:
        parsed, fp = _parse_record(schema)
    except Exception as error:  # fastavro raises several exception types for bad schemas
        raise EncodingError(f"{model_cls.__name__}: invalid Avro schema: {error}") from None
    name = parsed["name"]
    taken = _BY_NAME.get(name)
    if taken is not None and taken.model is not model_cls:
        raise EncodingError(f"Avro record {name} is already registered for {taken.model.__name__}")
    event_type = None
    if model_cls in models.EVENT_TYPES.values():
        event_type = model_cls.model_fields["type"].default
    record = RecordType(
        model=model_cls,
        name=name,
        schema_json=json.dumps(schema, separators=(",", ":")),
        parsed=parsed,
        fingerprint=fp,
        event_type=event_type,
        to_avro=_avro_dict_builder(model_cls),
    )
    previous = _BY_MODEL.get(model_cls)
    if previous is not None and previous.fingerprint == record.fingerprint:
        return previous
    _BY_MODEL[model_cls] = record
    _BY_NAME[name] = record
    _WRITERS[record.fingerprint] = _Writer(parsed, name, record.fingerprint)
    return record


def register_writer_schema(schema_file_or_dict: Path | str | Mapping[str, Any]) -> bytes:
    """Make bytes written with an older schema of a registered record decodable.

    Only the single-object codec needs this: a schema registry keeps old versions by id itself.
    """
    schema = _load_schema(schema_file_or_dict)
    try:
        parsed, fp = _parse_record(schema)
    except Exception as error:  # fastavro raises several exception types for bad schemas
        raise EncodingError(f"invalid Avro schema: {error}") from None
    if parsed["name"] not in _BY_NAME:
        raise EncodingError(f"record {parsed['name']} has no registered model to read it as")
    _WRITERS.setdefault(fp, _Writer(parsed, parsed["name"], fp))
    return fp


def _parse_record(schema: Any) -> tuple[dict[str, Any], bytes]:
    """The fastavro-parsed record schema and its CRC-64-AVRO fingerprint (little-endian)."""
    parsed = parse_schema(schema)
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ValueError("not an Avro record schema")
    canonical = to_parsing_canonical_form(parsed)
    return parsed, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def record_type(model_cls: type[BaseModel]) -> RecordType:
    """The current record type of a registered model class."""
    try:
        return _BY_MODEL[model_cls]
    except KeyError:
        raise EncodingError(
            f"no Avro schema is registered for {model_cls.__name__} "
            "(streams.codec.register_model adds one)"
        ) from None


def register_builtin_schemas(schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> None:
    """Register schemas/<ClassName>.avsc for every built-in model; idempotent."""
    for model_cls in BUILTIN_MODELS:
        register_model(model_cls, schemas_dir / f"{model_cls.__name__}.avsc")


def _load_schema(source: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    try:
        if isinstance(source, str) and source.lstrip().startswith("{"):
            loaded = json.loads(source)
        else:
            loaded = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EncodingError(f"cannot read Avro schema {str(source)[:80]!r}: {error}") from None
    if not isinstance(loaded, dict):
        raise EncodingError(f"Avro schema {str(source)[:80]!r} is not a JSON object")
    return loaded


def _check_field_names(model_cls: type[BaseModel], schema: Mapping[str, Any]) -> None:
    in_schema = {field["name"] for field in schema["fields"]}
    in_model = set(model_cls.model_fields)
    if in_schema != in_model:
        missing = ", ".join(sorted(in_model - in_schema)) or "-"
        extra = ", ".join(sorted(in_schema - in_model)) or "-"
        raise EncodingError(
            f"schema {schema.get('name')} does not match model {model_cls.__name__}: "
            f"missing in schema: {missing}; not in model: {extra}"
        )


# ---- model -> Avro dict (fast path: the model's own __dict__) ------------------------------


class _Unsupported(Exception):
    """A field shape the fast converter does not handle; the class falls back to model_dump."""


def _model_shape(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """(model, is_list) when a field holds models, None when it holds plain values."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, UnionType):
        shapes = [_model_shape(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        found = [shape for shape in shapes if shape is not None]
        if found and len(shapes) > 1:
            raise _Unsupported(annotation)
        return found[0] if found else None
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
        if _model_shape(item) is not None:
            raise _Unsupported(annotation)
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if any(_model_shape(arg) is not None for arg in typing.get_args(annotation)):
        raise _Unsupported(annotation)
    return None


def _is_datetime(annotation: Any) -> bool:
    if annotation is datetime:
        return True
    is_union = typing.get_origin(annotation) in (typing.Union, UnionType)
    return is_union and datetime in typing.get_args(annotation)


def _avro_dict_builder(model_cls: type[BaseModel]) -> Callable[[BaseModel], Mapping[str, Any]]:
    """A converter precomputed per class; falls back to model_dump for shapes it does not know."""
    timestamps = tuple(
        name for name, field in model_cls.model_fields.items() if _is_datetime(field.annotation)
    )
    nested: list[tuple[str, Callable[[BaseModel], Mapping[str, Any]], bool]] = []
    try:
        for name, field in model_cls.model_fields.items():
            shape = _model_shape(field.annotation)
            if shape is not None:
                nested.append((name, _avro_dict_builder(shape[0]), shape[1]))
    except _Unsupported:
        return _checked(timestamps, lambda record: record.model_dump())
    if not nested:
        # fastavro only reads the mapping, so the frozen model's own __dict__ is enough.
        return _checked(timestamps, lambda record: record.__dict__)

    def convert(record: BaseModel) -> Mapping[str, Any]:
        datum = dict(record.__dict__)
        for name, inner, is_list in nested:
            value = datum[name]
            if value is not None:
                datum[name] = [inner(item) for item in value] if is_list else inner(value)
        return datum

    return _checked(timestamps, convert)


def _checked(
    timestamps: tuple[str, ...], convert: Callable[[BaseModel], Mapping[str, Any]]
) -> Callable[[BaseModel], Mapping[str, Any]]:
    if not timestamps:
        return convert

    def checked(record: BaseModel) -> Mapping[str, Any]:
        for name in timestamps:
            value = getattr(record, name)
            # fastavro would write a naive datetime as local time: refuse rather than guess.
            if value is not None and value.tzinfo is None:
                raise EncodingError(
                    f"{type(record).__name__}.{name}: naive datetime {value.isoformat()}; "
                    "timestamps must carry a timezone"
                )
        return convert(record)

    return checked


# ---- Avro dict -> model --------------------------------------------------------------------


def _to_model(entry: RecordType, datum: Any) -> BaseModel:
    if entry.event_type is not None:
        kind = datum.get("type") if isinstance(datum, dict) else None
        if kind != entry.event_type:
            raise InvalidEvent(
                f"type: {kind!r} does not match the Avro record {entry.name} "
                f"(expected {entry.event_type!r})"
            )
        return models.parse_event(datum)
    try:
        return entry.model.model_validate(datum)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise InvalidEvent(f"{entry.name}: {reasons}") from None


def _encode(record: BaseModel, header: bytes, entry: RecordType) -> bytes:
    out = io.BytesIO()
    out.write(header)
    try:
        schemaless_writer(out, entry.parsed, entry.to_avro(record))
    except EncodingError:
        raise
    except Exception as error:  # fastavro raises TypeError, ValueError, OverflowError, ...
        raise EncodingError(f"cannot encode {entry.name}: {error}") from None
    return out.getvalue()


def _decode(data: bytes, offset: int, writer: _Writer) -> BaseModel:
    reader = _BY_NAME.get(writer.name)
    if reader is None:
        raise EncodingError(f"record {writer.name} has no registered model")
    stream = io.BytesIO(data)
    stream.seek(offset)
    reader_schema = None if reader.fingerprint == writer.fingerprint else reader.parsed
    try:
        datum = schemaless_reader(stream, writer.parsed, reader_schema)
    except Exception as error:  # truncation, bad varints, bad UTF-8, bad union index, ...
        detail = str(error) or "unexpected end of data"
        raise EncodingError(
            f"{writer.name}: undecodable Avro payload ({type(error).__name__}: {detail})"
        ) from None
    left = len(data) - stream.tell()
    if left:
        raise EncodingError(f"{writer.name}: {left} unexpected bytes after the Avro datum")
    return _to_model(reader, datum)


def _describe_start(data: bytes) -> str:
    shown = data[:4].hex(" ") or "(empty)"
    if data[:2] == SINGLE_OBJECT_MARKER:
        return f"{shown} (Avro single-object encoding; SCHEMA_REGISTRY_URL is set here)"
    if data[:1] == CONFLUENT_MAGIC:
        return f"{shown} (Confluent wire format; SCHEMA_REGISTRY_URL is not set here)"
    if data[:1] in (b"{", b"["):
        return f"{shown} (looks like JSON, not Avro)"
    return shown


# ---- the codecs ----------------------------------------------------------------------------


class SingleObjectCodec:
    """Avro single-object encoding; the writer schema is found by its fingerprint."""

    def encode(self, record: BaseModel, topic: str) -> bytes:
        entry = record_type(type(record))
        return _encode(record, SINGLE_OBJECT_MARKER + entry.fingerprint, entry)

    def decode(self, data: bytes, topic: str) -> BaseModel:
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise EncodingError(
                f"not Avro single-object encoding: starts with {_describe_start(data)}, "
                "expected c3 01"
            )
        if len(data) < _SINGLE_OBJECT_HEADER:
            raise EncodingError(
                f"truncated Avro single-object header: {len(data)} bytes, "
                f"the header alone is {_SINGLE_OBJECT_HEADER}"
            )
        fp = bytes(data[2:_SINGLE_OBJECT_HEADER])
        writer = _WRITERS.get(fp)
        if writer is None:
            raise EncodingError(
                f"unknown Avro schema fingerprint {fp.hex()}: written with a schema "
                f"none of the {len(_BY_NAME)} registered record types has ever had"
            )
        return _decode(data, _SINGLE_OBJECT_HEADER, writer)


class ConfluentCodec:
    """Confluent wire format against a schema registry, TopicRecordNameStrategy subjects.

    Schema ids are looked up once per (topic, record type) and once per id read, then cached.
    Registry outages raise BrokerError (retry later), never EncodingError (dead-letter).
    """

    def __init__(self, client: SchemaRegistryClient, *, auto_register: bool = True) -> None:
        self._client = client
        self._auto_register = auto_register
        self._headers: dict[tuple[str, bytes], bytes] = {}
        self._writers: dict[int, _Writer] = {}

    @classmethod
    def from_url(cls, url: str, *, auto_register: bool = True) -> ConfluentCodec:
        return cls(_registry_client(url), auto_register=auto_register)

    @property
    def client(self) -> SchemaRegistryClient:
        return self._client

    def encode(self, record: BaseModel, topic: str) -> bytes:
        entry = record_type(type(record))
        header = self._headers.get((topic, entry.fingerprint))
        if header is None:
            header = self._register(topic, entry)
        return _encode(record, header, entry)

    def decode(self, data: bytes, topic: str) -> BaseModel:
        if data[:1] != CONFLUENT_MAGIC:
            raise EncodingError(
                f"not Confluent wire format: starts with {_describe_start(data)}, expected 00"
            )
        if len(data) < _CONFLUENT_HEADER:
            raise EncodingError(
                f"truncated Confluent header: {len(data)} bytes, "
                f"the header alone is {_CONFLUENT_HEADER}"
            )
        schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch(schema_id)
        return _decode(data, _CONFLUENT_HEADER, writer)

    def _register(self, topic: str, entry: RecordType) -> bytes:
        from confluent_kafka.schema_registry import Schema

        subject = f"{topic}-{entry.name}"
        schema = Schema(entry.schema_json, "AVRO")
        schema_id: int | None
        try:
            if self._auto_register:
                schema_id = self._client.register_schema(subject, schema)
            else:
                schema_id = self._client.lookup_schema(subject, schema).schema_id
        except Exception as error:
            doing = "registering" if self._auto_register else "looking up"
            raise _registry_error(error, f"{doing} {entry.name} under {subject}") from None
        if schema_id is None:
            raise BrokerError(f"schema registry returned no schema id for {subject}")
        header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
        self._headers[(topic, entry.fingerprint)] = header
        # Our own records then decode without a registry round trip.
        self._writers.setdefault(schema_id, _Writer(entry.parsed, entry.name, entry.fingerprint))
        return header

    def _fetch(self, schema_id: int) -> _Writer:
        try:
            schema = self._client.get_schema(schema_id)
        except Exception as error:
            raise _registry_error(error, f"fetching schema id {schema_id}") from None
        if (schema.schema_type or "AVRO") != "AVRO":
            raise EncodingError(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        try:
            parsed, fp = _parse_record(json.loads(schema.schema_str or "null"))
        except Exception as error:
            reason = f"schema id {schema_id} is not a usable Avro record schema: {error}"
            raise EncodingError(reason) from None
        name = parsed["name"]
        if name not in _BY_NAME:
            raise EncodingError(
                f"schema id {schema_id} is record {name}, which has no registered model here"
            )
        writer = _Writer(parsed, name, fp)
        self._writers[schema_id] = writer
        return writer


# Answers about the record itself (unknown id, incompatible or invalid schema); any other failure
# (auth, rate limit, outage) is the registry's state and must not dead-letter good records.
_RECORD_STATUSES = frozenset({404, 409, 422})


def _registry_error(error: Exception, doing: str) -> Exception:
    if getattr(error, "http_status_code", None) in _RECORD_STATUSES:
        return EncodingError(f"schema registry refused {doing}: {error}")
    return BrokerError(f"schema registry unavailable while {doing}: {error}")


@lru_cache(maxsize=8)
def _registry_client(url: str) -> SchemaRegistryClient:
    """One client per URL, so every codec of a process shares a mock:// registry's contents."""
    try:
        # authlib forces an "always" filter for its own httpx deprecation notice at import.
        with warnings.catch_warnings(record=True):
            from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as error:
        raise BrokerError(
            f"SCHEMA_REGISTRY_URL is set but confluent_kafka.schema_registry cannot be imported "
            f"({error}); it needs the authlib and cachetools packages"
        ) from None
    from streams.client import registry_config

    return SchemaRegistryClient.new_client(registry_config(url))


def make_codec(settings: Settings | None = None) -> Codec:
    """Confluent wire format when a schema registry URL is set, else single-object encoding.

    A settings.schemas_dir other than the default re-registers the built-in schemas from there,
    for the whole process.
    """
    settings = settings or get_settings()
    if settings.schemas_dir != DEFAULT_SCHEMAS_DIR:
        register_builtin_schemas(settings.schemas_dir)
    if settings.schema_registry_url:
        return ConfluentCodec.from_url(settings.schema_registry_url)
    return SingleObjectCodec()


# ---- JSON for people (tail) ----------------------------------------------------------------


def record_to_json(record: BaseModel) -> dict[str, Any]:
    """A JSON-ready dict: timestamps RFC 3339 with Z, dates ISO 8601, bytes base64."""
    return {name: _json_value(getattr(record, name)) for name in type(record).model_fields}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return models.format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, BaseModel):
        return record_to_json(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


register_builtin_schemas()
