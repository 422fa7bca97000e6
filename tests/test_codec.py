"""Every record round-trips through both wire formats; bad bytes and bad events are refused."""

from __future__ import annotations

import io
import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from streams import codec
from streams.codec import (
    BUILTIN_MODELS,
    Codec,
    ConfluentCodec,
    SingleObjectCodec,
    make_codec,
    record_to_json,
    record_type,
    register_model,
    register_writer_schema,
)
from streams.core import models
from streams.errors import BrokerError, EncodingError, InvalidEvent
from streams.settings import Settings

TOPIC = "inventory.events"
T0 = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


def envelope(n: int = 1) -> dict[str, Any]:
    return {"event_id": f"ev-{n}", "occurred_at": T0 + timedelta(seconds=n), "source": "wms-east"}


# Every record type, with its optional fields both set and unset.
REPRESENTATIVE: list[BaseModel] = [
    models.StockAdjusted(**envelope(1), sku="TEE", location="wh-east", mode="delta", quantity=-3),
    models.StockAdjusted(
        **envelope(2),
        sku="TEE",
        location="wh-east",
        mode="count",
        quantity=0,
        bucket="quarantine",
        reason="cycle-count",
        po_id="PO-7",
    ),
    models.OrderCreated(
        **envelope(3),
        order_id="o-1",
        channel="shopify-us",
        lines=[models.OrderLine(line_id="1", sku="TEE", quantity=2)],
    ),
    models.OrderCreated(
        **envelope(4),
        order_id="o-2",
        channel="amazon-de",
        reservation_id="r-9",
        lines=[
            models.OrderLine(line_id="1", sku="TEE", quantity=2, location="store-12"),
            models.OrderLine(line_id="2", sku="MUG", quantity=1),
        ],
    ),
    models.OrderCancelled(**envelope(5), order_id="o-1"),
    models.OrderCancelled(
        **envelope(6), order_id="o-2", lines=[models.CancelLine(line_id="1", quantity=1)]
    ),
    models.PickConfirmed(**envelope(7), sku="TEE", location="wh-east", quantity=1),
    models.PickConfirmed(
        **envelope(8), order_id="o-1", line_id="1", sku="TEE", location="wh-east", quantity=2
    ),
    models.ReturnReceived(
        **envelope(9), sku="TEE", location="wh-east", quantity=1, disposition="damaged"
    ),
    models.ReturnReceived(
        **envelope(10),
        order_id="o-1",
        sku="TEE",
        location="wh-east",
        quantity=1,
        disposition="resellable",
    ),
    models.InboundScheduled(
        **envelope(11),
        po_id="PO-7",
        sku="TEE",
        location="wh-east",
        quantity=40,
        eta=date(2026, 12, 1),
    ),
    models.ReservationRequested(
        **envelope(12),
        reservation_id="r-1",
        channel="shopify-us",
        lines=[models.ReservationLine(sku="TEE", quantity=1)],
    ),
    models.ReservationRequested(
        **envelope(13),
        reservation_id="r-2",
        channel="shopify-us",
        ttl_seconds=600,
        lines=[
            models.ReservationLine(channel_sku="TEE-6PK", quantity=1, location="wh-east"),
            models.ReservationLine(sku="MUG", quantity=2),
        ],
    ),
    models.ReservationReleased(**envelope(14), reservation_id="r-1"),
    models.ReservationExpired(
        **{**envelope(15), "source": models.SYSTEM_SOURCE}, reservation_id="r-2"
    ),
    models.Position(
        sku="TEE",
        location="wh-east",
        on_hand=10,
        reserved=1,
        committed=2,
        damaged=0,
        quarantine=0,
        incoming=40,
        safety_stock=3,
        location_ats=4,
        version=17,
        as_of=T0,
        cause_event_id="ev-1",
    ),
    models.Availability(
        channel="shopify-us",
        channel_sku="TEE-6PK",
        available=0,
        backorderable=6,
        restock_date=date(2026, 12, 1),
        version=3,
        as_of=T0,
        cause_event_id="ev-11",
    ),
    models.Availability(
        channel="shopify-us",
        channel_sku="TEE",
        available=4,
        backorderable=0,
        restock_date=None,
        version=4,
        as_of=T0,
        cause_event_id="ev-1",
    ),
    models.Alert(alert_id="a-1", type="drift", sku="TEE", message="counts differ", occurred_at=T0),
    models.Alert(
        alert_id="a-2",
        type="oversell",
        sku="TEE",
        location="wh-east",
        channel="shopify-us",
        quantity=-2,
        ids=["o-1", "ev-3"],
        message="order o-1 could not be covered",
        occurred_at=T0,
    ),
    models.DeadLetter(
        original=b'{"type": "bogus"}', source="wms-east", reason="unknown type", rejected_at=T0
    ),
    models.DeadLetter(
        original=b"\xc3\x01\xff\x00 not utf-8",
        source="shopify-us",
        reason="undecodable",
        topic=TOPIC,
        partition=3,
        offset=123456789012,
        key=b"\x00\xffTEE",
        rejected_at=T0,
    ),
]


def test_representative_records_cover_every_model() -> None:
    assert {type(record) for record in REPRESENTATIVE} == set(BUILTIN_MODELS)


# ---- the codecs under test -----------------------------------------------------------------


def _require_schema_registry() -> None:
    try:
        with warnings.catch_warnings(record=True):  # authlib's import-time httpx notice
            import confluent_kafka.schema_registry  # noqa: F401
    except ImportError as error:
        pytest.skip(f"confluent_kafka.schema_registry is not importable: {error}")


def _confluent() -> ConfluentCodec:
    _require_schema_registry()
    return ConfluentCodec.from_url(f"mock://test-codec-{uuid.uuid4().hex}")


@pytest.fixture(params=["single-object", "confluent"])
def any_codec(request: pytest.FixtureRequest) -> Codec:
    return SingleObjectCodec() if request.param == "single-object" else _confluent()


@pytest.fixture
def confluent() -> ConfluentCodec:
    return _confluent()


def raw_frame(codec_: Codec, model: type[BaseModel], datum: dict[str, Any]) -> bytes:
    """Bytes a foreign producer could write: the codec's framing around an arbitrary datum."""
    entry = record_type(model)
    header = codec_.encode(REPRESENTATIVE_BY_TYPE[model], TOPIC)[: _header_length(codec_)]
    out = io.BytesIO()
    out.write(header)
    schemaless_writer(out, entry.parsed, datum)
    return out.getvalue()


def _header_length(codec_: Codec) -> int:
    return 10 if isinstance(codec_, SingleObjectCodec) else 5


REPRESENTATIVE_BY_TYPE: dict[type[BaseModel], BaseModel] = {}
for _record in REPRESENTATIVE:
    REPRESENTATIVE_BY_TYPE.setdefault(type(_record), _record)


# ---- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("record", REPRESENTATIVE, ids=lambda r: type(r).__name__)
def test_round_trip(any_codec: Codec, record: BaseModel) -> None:
    decoded = any_codec.decode(any_codec.encode(record, TOPIC), TOPIC)
    assert type(decoded) is type(record)
    assert decoded == record


def test_decoded_timestamps_are_aware_utc_and_bytes_stay_bytes(any_codec: Codec) -> None:
    for record in REPRESENTATIVE:
        decoded = any_codec.decode(any_codec.encode(record, TOPIC), TOPIC)
        for name in type(decoded).model_fields:
            value = getattr(decoded, name)
            if isinstance(value, datetime):
                assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
            if isinstance(getattr(record, name), bytes):
                assert isinstance(value, bytes) and value == getattr(record, name)


def test_timestamps_in_other_offsets_decode_as_the_same_instant_in_utc(any_codec: Codec) -> None:
    plus_two = datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    position = REPRESENTATIVE_BY_TYPE[models.Position].model_copy(update={"as_of": plus_two})
    decoded = any_codec.decode(any_codec.encode(position, TOPIC), TOPIC)
    assert isinstance(decoded, models.Position)
    assert decoded.as_of == plus_two and decoded.as_of.tzinfo == UTC


# Hypothesis: arbitrary valid records of every type.

_texts = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)
_optional_texts = st.none() | _texts
_offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=_offsets
)
_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1))
_positive = st.integers(min_value=1, max_value=2**63 - 1)
_longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _envelope() -> dict[str, Any]:
    return {"event_id": _texts, "occurred_at": _times, "source": _texts}


@st.composite
def _stock_adjusted(draw: st.DrawFn) -> models.StockAdjusted:
    mode = draw(st.sampled_from(["delta", "count"]))
    quantity = draw(
        _longs.filter(bool) if mode == "delta" else st.integers(min_value=0, max_value=2**63 - 1)
    )
    return draw(
        st.builds(
            models.StockAdjusted,
            **_envelope(),
            sku=_texts,
            location=_texts,
            mode=st.just(mode),
            quantity=st.just(quantity),
            bucket=st.sampled_from(["sellable", "damaged", "quarantine"]),
            reason=_optional_texts,
            po_id=_optional_texts,
        )
    )


def _order_lines(draw: st.DrawFn) -> list[models.OrderLine]:
    ids = draw(st.lists(_texts, min_size=1, max_size=4, unique_by=str.strip))
    return [
        draw(
            st.builds(
                models.OrderLine,
                line_id=st.just(line_id),
                sku=_texts,
                quantity=_positive,
                location=_optional_texts,
            )
        )
        for line_id in ids
    ]


@st.composite
def _order_created(draw: st.DrawFn) -> models.OrderCreated:
    return draw(
        st.builds(
            models.OrderCreated,
            **_envelope(),
            order_id=_texts,
            channel=_texts,
            reservation_id=_optional_texts,
            lines=st.just(_order_lines(draw)),
        )
    )


_reservation_lines = st.lists(
    st.one_of(
        st.builds(models.ReservationLine, sku=_texts, quantity=_positive, location=_optional_texts),
        st.builds(
            models.ReservationLine, channel_sku=_texts, quantity=_positive, location=_optional_texts
        ),
    ),
    min_size=1,
    max_size=4,
)

EVENT_STRATEGIES: dict[type[BaseModel], st.SearchStrategy[Any]] = {
    models.StockAdjusted: _stock_adjusted(),
    models.OrderCreated: _order_created(),
    models.OrderCancelled: st.builds(
        models.OrderCancelled,
        **_envelope(),
        order_id=_texts,
        lines=st.none()
        | st.lists(st.builds(models.CancelLine, line_id=_texts, quantity=_positive), max_size=3),
    ),
    models.PickConfirmed: st.builds(
        models.PickConfirmed,
        **_envelope(),
        order_id=_optional_texts,
        line_id=_optional_texts,
        sku=_texts,
        location=_texts,
        quantity=_positive,
    ),
    models.ReturnReceived: st.builds(
        models.ReturnReceived,
        **_envelope(),
        order_id=_optional_texts,
        sku=_texts,
        location=_texts,
        quantity=_positive,
        disposition=st.sampled_from(["resellable", "damaged", "quarantine"]),
    ),
    models.InboundScheduled: st.builds(
        models.InboundScheduled,
        **_envelope(),
        po_id=_texts,
        sku=_texts,
        location=_texts,
        quantity=_positive,
        eta=_dates,
    ),
    models.ReservationRequested: st.builds(
        models.ReservationRequested,
        **_envelope(),
        reservation_id=_texts,
        channel=_texts,
        ttl_seconds=st.none() | st.integers(min_value=1, max_value=models.MAX_TTL_SECONDS),
        lines=_reservation_lines,
    ),
    models.ReservationReleased: st.builds(
        models.ReservationReleased, **_envelope(), reservation_id=_texts
    ),
    models.ReservationExpired: st.builds(
        models.ReservationExpired, **_envelope(), reservation_id=_texts
    ),
}

OUTPUT_STRATEGIES: dict[type[BaseModel], st.SearchStrategy[Any]] = {
    models.Position: st.builds(
        models.Position,
        sku=_texts,
        location=_texts,
        **{
            name: _longs
            for name in (
                "on_hand",
                "reserved",
                "committed",
                "damaged",
                "quarantine",
                "incoming",
                "safety_stock",
                "location_ats",
                "version",
            )
        },
        as_of=_times,
        cause_event_id=_texts,
    ),
    models.Availability: st.builds(
        models.Availability,
        channel=_texts,
        channel_sku=_texts,
        available=_longs,
        backorderable=_longs,
        restock_date=st.none() | _dates,
        version=_longs,
        as_of=_times,
        cause_event_id=_texts,
    ),
    models.Alert: st.builds(
        models.Alert,
        alert_id=_texts,
        type=_texts,
        sku=_texts,
        location=_optional_texts,
        channel=_optional_texts,
        quantity=st.none() | _longs,
        ids=st.lists(_texts, max_size=4),
        message=st.text(max_size=40),
        occurred_at=_times,
    ),
    models.DeadLetter: st.builds(
        models.DeadLetter,
        original=st.binary(max_size=64),
        source=_texts,
        reason=st.text(max_size=40),
        topic=_optional_texts,
        partition=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
        offset=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        key=st.none() | st.binary(max_size=16),
        rejected_at=_times,
    ),
}

ALL_RECORDS = st.one_of(*EVENT_STRATEGIES.values(), *OUTPUT_STRATEGIES.values())


def test_strategies_cover_every_model() -> None:
    assert set(EVENT_STRATEGIES) | set(OUTPUT_STRATEGIES) == set(BUILTIN_MODELS)


@cache
def _shared_codec(kind: str) -> Codec:
    """Hypothesis runs many examples per test: one codec each, not one per example."""
    return SingleObjectCodec() if kind == "single-object" else _confluent()


@pytest.mark.parametrize("kind", ["single-object", "confluent"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=ALL_RECORDS)
def test_any_valid_record_round_trips(kind: str, record: BaseModel) -> None:
    codec_ = _shared_codec(kind)
    decoded = codec_.decode(codec_.encode(record, TOPIC), TOPIC)
    assert type(decoded) is type(record)
    assert decoded == record


@settings(max_examples=100, deadline=None)
@given(event=st.one_of(*EVENT_STRATEGIES.values()))
def test_tail_json_of_an_event_parses_back_to_the_same_event(event: BaseModel) -> None:
    line = json.dumps(record_to_json(event))
    assert models.parse_event_json(line) == event


# ---- one topic, many record types ----------------------------------------------------------


def test_single_object_header_is_marker_then_little_endian_crc64_avro_of_canonical_form() -> None:
    record = REPRESENTATIVE_BY_TYPE[models.PickConfirmed]
    data = SingleObjectCodec().encode(record, TOPIC)
    canonical = to_parsing_canonical_form(record_type(models.PickConfirmed).parsed)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == _crc64_avro(canonical.encode()).to_bytes(8, "little")


def _crc64_avro(data: bytes) -> int:
    """The Avro specification's reference fingerprint64, written out independently."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_confluent_subjects_follow_topic_record_name_strategy(confluent: ConfluentCodec) -> None:
    for record in REPRESENTATIVE:
        confluent.encode(record, TOPIC)
    subjects = set(confluent.client.get_subjects())
    assert f"{TOPIC}-inventory.StockAdjusted" in subjects
    assert f"{TOPIC}-inventory.OrderCreated" in subjects
    assert len(subjects) == len(BUILTIN_MODELS)


def test_codecs_on_the_same_registry_url_share_schemas() -> None:
    _require_schema_registry()
    settings_ = Settings(schema_registry_url=f"mock://shared-{uuid.uuid4().hex}")
    producer_side, consumer_side = make_codec(settings_), make_codec(settings_)
    record = REPRESENTATIVE[0]
    assert consumer_side.decode(producer_side.encode(record, TOPIC), TOPIC) == record


def test_confluent_wire_format_interoperates_with_confluent_kafka_serdes(
    confluent: ConfluentCodec,
) -> None:
    from confluent_kafka.schema_registry import topic_record_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    record = REPRESENTATIVE_BY_TYPE[models.OrderCreated]
    theirs = AvroDeserializer(confluent.client)(confluent.encode(record, TOPIC), ctx)
    assert isinstance(theirs, dict)
    assert models.parse_event(theirs) == record

    serializer = AvroSerializer(
        confluent.client,
        record_type(models.InboundScheduled).schema_json,
        conf={"subject.name.strategy": topic_record_subject_name_strategy},
    )
    inbound = REPRESENTATIVE_BY_TYPE[models.InboundScheduled]
    data = serializer(inbound.model_dump(), ctx)
    assert data is not None
    assert confluent.decode(data, TOPIC) == inbound


def test_make_codec_picks_the_wire_format_from_settings() -> None:
    assert isinstance(make_codec(Settings(schema_registry_url=None)), SingleObjectCodec)
    _require_schema_registry()
    made = make_codec(Settings(schema_registry_url="mock://make-codec"))
    assert isinstance(made, ConfluentCodec)
    assert isinstance(made, Codec)


class _FailingRegistry:
    """A registry client whose every call fails the way a real one can."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_schema(self, schema_id: int) -> Any:
        raise self.error

    def register_schema(self, subject: str, schema: Any) -> int:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [ConnectionError("connection refused"), "401 Unauthorized", "503 Service Unavailable"],
    ids=["outage", "auth", "unavailable"],
)
def test_registry_trouble_is_a_broker_error_so_good_records_are_not_dead_lettered(
    error: Exception | str,
) -> None:
    _require_schema_registry()
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(error, str):
        status, _, message = error.partition(" ")
        error = SchemaRegistryError(int(status), int(status) * 100, message)
    failing = ConfluentCodec(_FailingRegistry(error))  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="schema registry unavailable while fetching schema id 1"):
        failing.decode(b"\x00\x00\x00\x00\x01\x02", TOPIC)
    with pytest.raises(BrokerError, match=r"registering inventory\.StockAdjusted"):
        failing.encode(REPRESENTATIVE[0], TOPIC)


def test_unregistered_subject_without_auto_register_is_refused() -> None:
    _require_schema_registry()
    strict = ConfluentCodec.from_url(f"mock://strict-{uuid.uuid4().hex}", auto_register=False)
    with pytest.raises(EncodingError, match="schema registry refused looking up"):
        strict.encode(REPRESENTATIVE[0], TOPIC)


# ---- undecodable bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "starts with (empty)"),
        (b"garbage", "expected c3 01"),
        (b'{"type": "stock-adjusted"}', "looks like JSON"),
        (b"\xc3", "expected c3 01"),
        (b"\xc3\x02" + bytes(8) + b"\x02", "expected c3 01"),
        (b"\x00\x00\x00\x00\x01\x02", "Confluent wire format; SCHEMA_REGISTRY_URL is not set"),
        (b"\xc3\x01\x12\x34", "truncated Avro single-object header: 4 bytes"),
        (b"\xc3\x01" + bytes(8) + b"\x02x", "unknown Avro schema fingerprint 0000000000000000"),
    ],
)
def test_single_object_refuses_undecodable_bytes(data: bytes, says: str) -> None:
    with pytest.raises(EncodingError) as caught:
        SingleObjectCodec().decode(data, TOPIC)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "expected 00"),
        (b"\xc3\x01" + bytes(9), "single-object encoding; SCHEMA_REGISTRY_URL is set"),
        (b"\x01" + bytes(20), "expected 00"),
        (b"\x00\x00\x01", "truncated Confluent header: 3 bytes"),
        (b"\x00\x00\x00\x03\xe7\x02", "schema id 999"),
    ],
)
def test_confluent_refuses_undecodable_bytes(
    confluent: ConfluentCodec, data: bytes, says: str
) -> None:
    with pytest.raises(EncodingError) as caught:
        confluent.decode(data, TOPIC)
    assert says in str(caught.value)


@pytest.mark.parametrize("record", REPRESENTATIVE[:6], ids=lambda r: type(r).__name__)
def test_every_truncation_and_any_trailing_bytes_are_refused(
    any_codec: Codec, record: BaseModel
) -> None:
    data = any_codec.encode(record, TOPIC)
    for cut in range(len(data)):
        with pytest.raises(EncodingError):
            any_codec.decode(data[:cut], TOPIC)
    with pytest.raises(EncodingError, match="1 unexpected bytes after the Avro datum"):
        any_codec.decode(data + b"\x00", TOPIC)


def test_truncated_payload_names_the_record_type() -> None:
    data = SingleObjectCodec().encode(REPRESENTATIVE_BY_TYPE[models.InboundScheduled], TOPIC)
    with pytest.raises(
        EncodingError, match=r"inventory\.InboundScheduled: undecodable Avro payload"
    ):
        SingleObjectCodec().decode(data[:-3], TOPIC)


def test_invalid_utf8_in_a_string_is_refused(any_codec: Codec) -> None:
    data = any_codec.encode(REPRESENTATIVE_BY_TYPE[models.ReservationReleased], TOPIC)
    broken = data.replace(b"r-1", b"r-\xff")
    with pytest.raises(EncodingError, match="undecodable Avro payload"):
        any_codec.decode(broken, TOPIC)


# ---- decodable but contract-breaking -------------------------------------------------------


def _avro_datum(record: BaseModel, **changes: Any) -> dict[str, Any]:
    datum = dict(record_type(type(record)).to_avro(record))
    datum.update(changes)
    return datum


@pytest.mark.parametrize(
    "model, changes, says",
    [
        (
            models.PickConfirmed,
            {"quantity": 0},
            "pick-confirmed ev-7: quantity: Input should be greater than 0",
        ),
        (
            models.StockAdjusted,
            {"mode": "count", "quantity": -4},
            "a count cannot be negative (got -4)",
        ),
        (models.StockAdjusted, {"mode": "delta", "quantity": 0}, "a delta of 0 changes nothing"),
        (models.StockAdjusted, {"mode": "replace"}, "mode: Input should be 'delta' or 'count'"),
        (
            models.StockAdjusted,
            {"bucket": "lost"},
            "bucket: Input should be 'sellable', 'damaged' or 'quarantine'",
        ),
        (models.ReturnReceived, {"disposition": "trash"}, "disposition: Input should be"),
        (
            models.StockAdjusted,
            {"event_id": ""},
            "event_id: String should have at least 1 character",
        ),
        (models.OrderCreated, {"lines": []}, "lines: List should have at least 1 item"),
        (
            models.ReservationRequested,
            {"lines": [{"sku": "A", "channel_sku": "B", "quantity": 1, "location": None}]},
            "each line needs exactly one of sku or channel_sku",
        ),
        (
            models.ReservationRequested,
            {"ttl_seconds": 99999},
            "ttl_seconds: Input should be less than or equal to 14400",
        ),
        (
            models.StockAdjusted,
            {"type": "order-created"},
            "type: 'order-created' does not match the Avro record inventory.StockAdjusted",
        ),
    ],
)
def test_contract_breaking_events_raise_invalid_event_with_a_readable_reason(
    any_codec: Codec, model: type[BaseModel], changes: dict[str, Any], says: str
) -> None:
    data = raw_frame(any_codec, model, _avro_datum(REPRESENTATIVE_BY_TYPE[model], **changes))
    with pytest.raises(InvalidEvent) as caught:
        any_codec.decode(data, TOPIC)
    assert says in caught.value.reason


# ---- encoding errors -----------------------------------------------------------------------


def test_naive_timestamps_are_refused_rather_than_written_as_local_time(any_codec: Codec) -> None:
    naive = REPRESENTATIVE_BY_TYPE[models.Position].model_copy(
        update={"as_of": datetime(2026, 1, 1)}
    )
    with pytest.raises(EncodingError, match=r"Position\.as_of: naive datetime"):
        any_codec.encode(naive, TOPIC)


def test_integers_beyond_avro_long_are_refused(any_codec: Codec) -> None:
    huge = REPRESENTATIVE_BY_TYPE[models.Position].model_copy(update={"on_hand": 2**64})
    with pytest.raises(EncodingError, match=r"cannot encode inventory\.Position"):
        any_codec.encode(huge, TOPIC)


class Unregistered(BaseModel):
    name: str


def test_unregistered_models_are_refused(any_codec: Codec) -> None:
    with pytest.raises(EncodingError, match="no Avro schema is registered for Unregistered"):
        any_codec.encode(Unregistered(name="x"), TOPIC)


# ---- registering more record types ---------------------------------------------------------


class Part(BaseModel):
    sku: str
    quantity: int


class SplitOrder(BaseModel):
    """An internal command record, as later code may add one."""

    command_id: str
    parts: list[Part]
    due: date | None = None
    issued_at: datetime
    tags: list[str] = Field(default_factory=list)


SPLIT_ORDER_SCHEMA = {
    "type": "record",
    "name": "SplitOrder",
    "namespace": "inventory.internal",
    "doc": "Test-only internal command.",
    "fields": [
        {"name": "command_id", "type": "string"},
        {
            "name": "parts",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Part",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "quantity", "type": "long"},
                    ],
                },
            },
        },
        {"name": "due", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
        {"name": "issued_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}


@pytest.fixture(scope="module")
def split_order_registered() -> Iterator[None]:
    register_model(SplitOrder, SPLIT_ORDER_SCHEMA)
    yield


def test_registered_internal_records_round_trip(
    any_codec: Codec, split_order_registered: None
) -> None:
    for record in [
        SplitOrder(command_id="c-1", parts=[Part(sku="TEE", quantity=2)], issued_at=T0),
        SplitOrder(command_id="c-2", parts=[], due=date(2027, 1, 1), issued_at=T0, tags=["a"]),
    ]:
        decoded = any_codec.decode(
            any_codec.encode(record, "inventory.commands"), "inventory.commands"
        )
        assert decoded == record


def test_register_model_accepts_a_file_or_json_text(
    tmp_path: Any, split_order_registered: None
) -> None:
    path = tmp_path / "SplitOrder.avsc"
    path.write_text(json.dumps(SPLIT_ORDER_SCHEMA))
    assert register_model(SplitOrder, path) is register_model(
        SplitOrder, json.dumps(SPLIT_ORDER_SCHEMA)
    )


def test_register_model_refuses_a_schema_that_does_not_match_the_model() -> None:
    schema = {**SPLIT_ORDER_SCHEMA, "name": "Mismatch", "fields": SPLIT_ORDER_SCHEMA["fields"][:2]}

    class Mismatch(BaseModel):
        command_id: str
        parts: list[Part]
        note: str

    with pytest.raises(EncodingError, match="missing in schema: note; not in model: -"):
        register_model(Mismatch, schema)


def test_register_model_refuses_to_take_over_another_models_record_name() -> None:
    class Impostor(BaseModel):
        reservation_id: str
        event_id: str
        type: str
        occurred_at: datetime
        source: str

    schema = json.loads(codec.DEFAULT_SCHEMAS_DIR.joinpath("ReservationReleased.avsc").read_text())
    with pytest.raises(EncodingError, match="already registered for ReservationReleased"):
        register_model(Impostor, schema)


def test_data_written_with_an_older_schema_still_decodes() -> None:
    current = json.loads(codec.DEFAULT_SCHEMAS_DIR.joinpath("StockAdjusted.avsc").read_text())
    older = {
        **current,
        "fields": [f for f in current["fields"] if f["name"] not in ("reason", "po_id")],
    }
    fingerprint = register_writer_schema(older)
    datum = {
        "event_id": "old-1",
        "type": "stock-adjusted",
        "occurred_at": T0,
        "source": "erp",
        "sku": "TEE",
        "location": "wh-east",
        "mode": "delta",
        "quantity": 5,
        "bucket": "sellable",
    }
    out = io.BytesIO(b"\xc3\x01" + fingerprint)
    out.seek(0, io.SEEK_END)
    schemaless_writer(out, older, datum)
    decoded = SingleObjectCodec().decode(out.getvalue(), TOPIC)
    assert decoded == models.StockAdjusted(**datum)


# ---- JSON for tail -------------------------------------------------------------------------


def test_record_to_json_is_json_ready() -> None:
    dead = REPRESENTATIVE_BY_TYPE[models.DeadLetter]
    assert record_to_json(dead) == {
        "original": "eyJ0eXBlIjogImJvZ3VzIn0=",
        "source": "wms-east",
        "reason": "unknown type",
        "topic": None,
        "partition": None,
        "offset": None,
        "key": None,
        "rejected_at": "2026-11-23T10:00:00.123456Z",
    }
    availability = record_to_json(REPRESENTATIVE_BY_TYPE[models.Availability])
    assert availability["restock_date"] == "2026-12-01"
    order = record_to_json(REPRESENTATIVE_BY_TYPE[models.OrderCreated])
    assert order["lines"] == [{"line_id": "1", "sku": "TEE", "quantity": 2, "location": None}]
    for record in REPRESENTATIVE:
        json.dumps(record_to_json(record))
