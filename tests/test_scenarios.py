"""`inventory-streams simulate` on every scenario in tests/scenarios reproduces its expected output.

Each expected.json was checked by hand against the SPEC formulas when the scenario was written; the
figures are explained in tests/scenarios/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inventory_streams.cli import main

SCENARIOS = sorted(p for p in (Path(__file__).parent / "scenarios").iterdir() if p.is_dir())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_simulate_reproduces_expected(scenario: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "simulate",
            "--catalog",
            str(scenario / "catalog.yaml"),
            "--events",
            str(scenario / "events.jsonl"),
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        (scenario / "expected.json").read_text()
    )


def test_every_bad_input_kind_is_rejected_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = Path(__file__).parent / "scenarios" / "bad-input"
    main(
        [
            "simulate",
            "--catalog",
            str(scenario / "catalog.yaml"),
            "--events",
            str(scenario / "events.jsonl"),
        ]
    )
    rejected = {r["line"]: r["reason"] for r in json.loads(capsys.readouterr().out)["rejected"]}
    expectations = {
        2: "unknown event type 'stock-counted'",
        3: "sku: required field is missing",
        4: "quantity: Input should be a valid integer",
        5: "a count cannot be negative",
        6: "quantity must not be 0",
        7: "unknown channel_sku 'NOPE'",
        8: "unknown location 'wh-west'",
        9: "malformed JSON",
        10: "timestamp must carry a timezone",
        11: "an event must be a JSON object",
        12: "unknown channel 'ebay'",
        13: "quantity: Input should be greater than 0",
        15: "type: must be a string, got list",
    }
    assert set(rejected) == set(expectations)
    for line, fragment in expectations.items():
        assert fragment in rejected[line], (line, rejected[line])


def test_missing_files_give_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--catalog", str(tmp_path / "nope.yaml"), "--events", "x"]) == 2
    assert "cannot read catalog" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text(
        "locations: [{id: wh}]\nchannels: [{id: web, locations: [dc]}]\n"
    )
    assert main(["simulate", "--catalog", str(tmp_path / "c.yaml"), "--events", "x"]) == 2
    assert "unknown locations ['dc']" in capsys.readouterr().err
