"""A hot SKU's changelog record in parts: bounded in size, joined back to the same state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.core.state import (
    PART_ENTRIES,
    Commitment,
    Hold,
    SkuState,
    join_record,
    part_count,
    part_key,
    split_record,
)

AT = datetime(2026, 11, 1, tzinfo=UTC)


def hot_sku(lines: int, holds: int = 0) -> SkuState:
    """A SKU at a launch: `lines` open order lines of one unit, and `holds` holds."""
    state = SkuState("LAUNCH-1", time=AT)
    state.location("wh-east").sellable.qty = 1_000_000
    for i in range(lines):
        order = f"order-{i:06d}"
        state.commitments[f"{order}/1"] = Commitment(
            parts={"wh-east": 1}, touched_at=AT + timedelta(seconds=i), order_len=len(order)
        )
    for i in range(holds):
        state.holds[f"cart-{i}"] = Hold("web", {"wh-east": 1}, AT + timedelta(minutes=15))
    return state


def test_a_sku_with_little_open_business_is_one_record_as_before() -> None:
    state = hot_sku(PART_ENTRIES)
    record, parts = split_record(state)
    assert parts == []
    assert record == state.to_dict()
    assert part_count(record) == 0
    assert join_record(record, []).to_dict() == state.to_dict()


def test_a_hot_sku_is_split_into_records_of_bounded_size_and_joined_back() -> None:
    state = hot_sku(200_000, holds=5_000)
    record, parts = split_record(state)
    assert len(parts) == part_count(record) == 512  # 205,000 entries, at most ~512 per part
    sizes = [len(orjson.dumps(part)) for part in parts]
    assert len(orjson.dumps(record)) < 64_000
    assert max(sizes) < 64_000, max(sizes)  # the whole would be ~10 MB: 10 x Kafka's limit
    joined = join_record(record, parts)
    assert joined.to_dict() == state.to_dict()
    assert joined.part_bits == state.part_bits == 9


def test_the_parts_never_become_fewer_so_every_part_written_is_read_back() -> None:
    state = hot_sku(3 * PART_ENTRIES)
    record, parts = split_record(state)
    assert len(parts) == 4
    state.commitments.clear()  # the lines picked and forgotten
    record, parts = split_record(state)
    assert len(parts) == 4 and all(part == {"c": {}, "h": {}, "x": {}} for part in parts)
    assert join_record(record, parts).to_dict() == state.to_dict()


def test_a_missing_part_is_an_error_naming_it_not_a_state_without_its_lines() -> None:
    record, parts = split_record(hot_sku(3 * PART_ENTRIES))
    with pytest.raises(
        ValueError, match=r"LAUNCH-1: its record has 4 parts, 4 given, missing \[2\]"
    ):
        join_record(record, [*parts[:2], None, parts[3]])


def test_the_api_view_joins_a_hot_skus_parts_as_they_arrive_off_the_changelogs() -> None:
    from streams.api import StateView

    state = hot_sku(3 * PART_ENTRIES)
    record, parts = split_record(state)
    view = StateView()
    view.offer("LAUNCH-1", orjson.dumps(record))
    for index, part in enumerate(parts[:-1]):
        view.offer_part(part_key(b"LAUNCH-1", index), orjson.dumps(part))
    with pytest.raises(ValueError, match=r"missing \[3\]"):  # not a state without those lines
        view.get("LAUNCH-1")
    view.offer_part(part_key(b"LAUNCH-1", 3), orjson.dumps(parts[3]))
    joined = view.get("LAUNCH-1")
    assert joined is not None and joined.to_dict() == state.to_dict()
