"""bench/scale.py's verdicts and tables: what its printed goal lines say for given figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale import (
    CatalogPublish,
    CatalogRun,
    HotSeries,
    HotStep,
    PositionsRun,
    WideRun,
    catalog_table,
    catalog_verdicts,
    goal_verdicts,
    table,
    wide_stream,
    wide_verdicts,
    write_catalog,
)
from streams.simulate import read_catalog


def verdicts(runs: list[PositionsRun], hot: HotSeries | None, hot_max: int = 40_000) -> dict:
    return {goal: (verdict, why) for goal, verdict, why in goal_verdicts(runs, hot, hot_max)}


def run(positions: int, rate: float, rss: float, restart: float) -> PositionsRun:
    return PositionsRun(positions, load_rate=rate, rss_mb=rss, restart_s=restart)


def test_the_million_goals_are_not_measured_without_a_million_positions() -> None:
    seen = verdicts([run(50_000, 5_000, 165, 19.6), run(250_000, 4_000, 422, 47.9)], None)
    million = [v for goal, v in seen.items() if goal.startswith("1M")]
    assert [verdict for verdict, _ in million] == ["not measured"] * 3
    assert "250,000 positions, RSS 422 MB" in million[0][1]


def test_the_million_goals_are_judged_on_the_million_run() -> None:
    seen = verdicts([run(50_000, 5_000, 165, 19.6), run(1_000_000, 5_100, 480, 208.9)], None)
    assert seen["1M positions: RSS <= 500 MB"][0] == "met"
    assert seen["1M positions: restart <= 30 s"][0] == "not met"
    assert seen["1M positions: load no slower than 50k"][0] == "met"


def test_a_dead_worker_fails_the_hot_sku_whatever_the_steps_before() -> None:
    hot = HotSeries(
        steps=[HotStep(10_000, 40_000, 6_000.0, 100.0), HotStep(23_000, 1_000_500, None, None)],
        death="worker exited with 1",
        error_line="KafkaError{code=MSG_SIZE_TOO_LARGE}",
        orders_at_death=23_000,
    )
    seen = verdicts([run(50_000, 5_000, 165, 19.6)], hot)
    crash = seen["hot SKU, 200,000 open lines: no crash"]
    assert crash[0] == "not met" and "MSG_SIZE_TOO_LARGE" in crash[1]
    assert seen["hot SKU, 200,000 open lines: records < 64 KB"] == (
        "not met",
        "1,000,500 bytes after 23,000 orders",
    )
    # the last step died: its rate is unknown, the steps before are what is judged
    assert seen["hot SKU, 200,000 open lines: events/s >= normal mix"][0] == "not measured"


def test_a_hot_series_short_of_the_goal_proves_only_its_failures() -> None:
    hot = HotSeries(steps=[HotStep(10_000, 30_000, 4_000.0, 100.0)])
    seen = verdicts([run(50_000, 5_000, 165, 19.6)], hot, hot_max=10_000)
    assert seen["hot SKU, 200,000 open lines: no crash"][0] == "not measured"
    assert seen["hot SKU, 200,000 open lines: records < 64 KB"][0] == "not measured"
    assert seen["hot SKU, 200,000 open lines: events/s >= normal mix"][0] == "not met"


def test_table_columns_line_up_numbers_to_the_right_and_words_to_the_left() -> None:
    lines = table(["n", "name"], [["1,000", "a"], ["7", "long name"]]).splitlines()
    assert lines == [
        "n      name",
        "-----  ---------",
        "1,000  a",
        "    7  long name",
    ]


def test_the_million_load_is_never_compared_with_itself() -> None:
    seen = verdicts([run(1_000_000, 6_000, 1_500, 42.0)], None)
    assert seen["1M positions: load no slower than 50k"][0] == "not measured"
    seen = verdicts([run(50_000, 6_500, 190, 15.0), run(1_000_000, 6_000, 1_500, 42.0)], None)
    assert seen["1M positions: load no slower than 50k"] == (
        "not met",
        "6,000 against 6,500 events/s at 50,000",
    )


def wide(locations: int, rate: float, changelog_bytes: int) -> WideRun:
    return WideRun(locations, 2_000, events=20_000, rate=rate, changelog_bytes=changelog_bytes)


def test_the_wide_goals_judge_200_locations_against_5() -> None:
    runs = [wide(5, 4_000, 6_000_000), wide(200, 3_300, 5_000_000)]
    seen = {goal: (verdict, why) for goal, verdict, why in wide_verdicts(runs)}
    assert seen["200 locations per SKU: changelog <= 1,024 bytes per event"][0] == "met"
    assert seen["200 locations per SKU: events/s within 20 % of 5 locations"] == (
        "met",
        "3,300 against 4,000 events/s (-18%)",
    )
    runs = [wide(5, 4_000, 0), wide(200, 3_100, 30_000_000)]
    assert [verdict for _, verdict, _ in wide_verdicts(runs)] == ["not met", "not met"]


def test_the_wide_goals_are_not_measured_without_both_catalogs_or_a_stream() -> None:
    assert [v for _, v, _ in wide_verdicts(None)] == ["not measured"] * 2
    assert [v for _, v, _ in wide_verdicts([wide(200, 3_000, 1)])] == ["met", "not measured"]
    died = WideRun(200, 2_000, failure="worker exited with 1: boom")
    assert [w for _, _, w in wide_verdicts([wide(5, 4_000, 1), died])] == [
        "worker exited with 1: boom"
    ] * 2


def test_the_wide_stream_moves_each_sku_on_to_other_locations() -> None:
    events = wide_stream(skus=2_000, locations=200, count=20_000)
    by_sku: dict[str, set[str]] = {}
    for event in events:
        by_sku.setdefault(event.sku, set()).add(event.location)
    assert len(by_sku) == 2_000
    assert all(len(locations) == 10 for locations in by_sku.values())


def catalog(listings: int, seconds: float, applied: float | None) -> CatalogRun:
    update = CatalogPublish(seconds=seconds, cpu_s=seconds, peak_rss_mb=900.0, parts=210)
    return CatalogRun(
        listings, listings // 2, "yaml", 94.0, 10_000, update=update, applied_s=applied
    )


CATALOG_GOAL = "catalog of 1,000,000 listings published and applied in <= 30 s at the 1 MB limit"


def test_the_catalog_goal_is_judged_on_the_million_from_the_publish_to_the_last_record() -> None:
    seen = dict((g, (v, w)) for g, v, w in catalog_verdicts([catalog(1_000_000, 12.0, 25.0)]))
    assert seen[CATALOG_GOAL][0] == "met"
    assert seen[CATALOG_GOAL][1].startswith("25.0 s: published in 12.0 s (210 parts)")
    # applied while the CLI still exits: the later of the two counts
    assert catalog_verdicts([catalog(1_000_000, 31.0, 25.0)])[0][1:] == (
        "not met",
        "31.0 s: published in 31.0 s (210 parts), applied 25.0 s after the publish started; "
        "yaml file of 94 MB",
    )


def test_the_catalog_goal_is_not_measured_below_the_million_and_not_met_when_never_applied() -> (
    None
):
    assert catalog_verdicts(None)[0][1:] == ("not measured", "catalog series not run")
    below = catalog_verdicts([catalog(100_000, 3.0, 4.5)])[0]
    assert below[1:] == (
        "not measured",
        "1,000,000 not in --catalog-listings; largest measured: 100,000 listings, published "
        "and applied in 4.5 s",
    )
    died = catalog(1_000_000, 40.0, None)
    died.failure = "worker exited with 1: BrokerError"
    assert catalog_verdicts([died])[0][1:] == ("not met", "worker exited with 1: BrokerError")


def test_the_catalog_table_has_a_first_and_an_update_row_per_catalog() -> None:
    run = catalog(100_000, 3.0, 4.5)
    run.first = CatalogPublish(seconds=2.5, cpu_s=2.0, peak_rss_mb=300.0, error="exit 2: boom")
    lines = catalog_table([run]).splitlines()
    assert [line.split()[:2] for line in lines[2:]] == [["100,000", "first"], ["100,000", "update"]]
    assert lines[2].endswith("exit 2: boom") and " 4.5 " in lines[3]


@pytest.mark.parametrize("file_format", ["yaml", "json"])
def test_the_generated_catalog_is_one_the_cli_accepts(tmp_path: Path, file_format: str) -> None:
    path = tmp_path / f"catalog.{file_format}"
    assert write_catalog(path, 21, file_format, amz_buffer=1) == 11
    catalog = read_catalog(path)
    assert len(catalog.listings) == 21 and len(catalog.listings_by_sku) == 11
    assert [c.buffer_units for c in catalog.channels] == [0, 1]
    assert catalog.listing_by_key[("amz", "B000000003")].components[0].sku == "SKU-00003"
    assert catalog.safety == {("SKU-00000", "loc-0"): 2, ("SKU-00010", "loc-0"): 2}
