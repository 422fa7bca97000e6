"""Reading a catalog file: SPEC §4's YAML, or the same catalog as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.errors import InvalidCatalog
from streams.simulate import read_catalog

CATALOG = {
    "locations": [{"id": "wh-east"}],
    "channels": [
        # a connector setting rides along; json.dumps writes its emoji as a surrogate pair
        {"id": "shop", "type": "shopify", "locations": ["wh-east"], "title": "Shop \U0001f6cd"}
    ],
    "listings": [
        {"channel": "shop", "channel_sku": "TEE", "components": [{"sku": "TEE", "quantity": 1}]}
    ],
}


def test_a_json_catalog_is_read_as_json_escapes_and_all(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(CATALOG, indent=2), encoding="utf-8")
    assert "\\ud83d\\udecd" in path.read_text()  # YAML's parser refuses this escape
    catalog = read_catalog(path)
    assert catalog.channels[0].model_extra == {"title": "Shop \U0001f6cd"}
    assert catalog.listing_by_key[("shop", "TEE")].components[0].sku == "TEE"


def test_a_yaml_catalog_reads_as_the_same_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "locations: [{id: wh-east}]\n"
        "channels:\n"
        '  - {id: shop, type: shopify, locations: [wh-east], title: "Shop \\U0001f6cd"}\n'
        "listings:\n"
        "  - {channel: shop, channel_sku: TEE, components: [{sku: TEE, quantity: 1}]}\n",
        encoding="utf-8",
    )
    json_path = tmp_path / "catalog.json"
    json_path.write_text(json.dumps(CATALOG), encoding="utf-8")
    assert read_catalog(path) == read_catalog(json_path)


@pytest.mark.parametrize(
    ("name", "text"), [("catalog.json", '{"locations": ['), ("catalog.yaml", "locations: [")]
)
def test_a_broken_file_is_one_invalid_catalog_naming_it(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidCatalog, match=f"cannot read catalog {path}"):
        read_catalog(path)
