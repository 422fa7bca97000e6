"""Channel emulators for tests and `up --demo`: small HTTP servers that speak each channel's real
API shapes, enforce its limits, and record what they received.

``async with start_emulators(catalog.channels, catalog.listings) as running:`` starts one emulator
per channel (by type: shopify, amazon, anything else a webhook receiver), seeded with the
channel's listings, and gives ``running.channels``: the same channels with connector settings that
point at their emulator, ready for ``connectors.sinks.run_sink``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from connectors.emulators.amazon import AmazonEmulator
from connectors.emulators.base import Emulator, Received
from connectors.emulators.shopify import ShopifyEmulator
from connectors.emulators.webhook import WebhookEmulator
from streams.core.catalog import Channel, Listing

__all__ = [
    "AmazonEmulator",
    "Emulator",
    "Received",
    "RunningEmulators",
    "ShopifyEmulator",
    "WebhookEmulator",
    "emulator_for",
    "pointed_at",
    "start_emulators",
]


@dataclass
class RunningEmulators:
    by_channel: dict[str, Emulator] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)  # pointed at their emulators

    def __getitem__(self, channel_id: str) -> Emulator:
        return self.by_channel[channel_id]


def emulator_for(channel: Channel, skus: Iterable[str], **limits: Any) -> Emulator:
    """An emulator (not started) for `channel`'s type, holding `skus` as its catalogue."""
    if channel.type == "shopify":
        shopify = ShopifyEmulator(**limits)
        for sku in skus:
            shopify.add_item(sku)
        return shopify
    if channel.type == "amazon":
        amazon = AmazonEmulator(**limits)
        for sku in skus:
            amazon.add_listing(sku)
        return amazon
    return WebhookEmulator(**limits)


def pointed_at(channel: Channel, emulator: Emulator) -> Channel:
    """`channel` with the connector settings that reach `emulator`."""
    extra: dict[str, Any]
    if isinstance(emulator, ShopifyEmulator):
        extra = {
            "endpoint": emulator.url,
            "access_token": emulator.access_token,
            "location_id": emulator.locations[0],
            "api_version": emulator.api_version,
        }
    elif isinstance(emulator, AmazonEmulator):
        extra = {
            "endpoint": emulator.url,
            "seller_id": emulator.seller_id,
            "marketplace_ids": [emulator.marketplace_id],
            "access_token": emulator.access_token,
            "rate": emulator.rate,
            "burst": emulator.burst,
        }
    elif isinstance(emulator, WebhookEmulator):
        extra = {
            "url": emulator.url + emulator.path,
            "secret": emulator.secret,
            "rate": emulator.rate,
            "burst": emulator.burst,
        }
    else:
        raise TypeError(f"no connector settings known for {type(emulator).__name__}")
    return Channel.model_validate({**channel.model_dump(), **extra})


@asynccontextmanager
async def start_emulators(
    channels: Sequence[Channel], listings: Iterable[Listing] = (), host: str = "127.0.0.1"
) -> AsyncIterator[RunningEmulators]:
    """Start one emulator per channel on `host` (free ports); stopped when the block ends."""
    skus: dict[str, list[str]] = {}
    for listing in listings:
        skus.setdefault(listing.channel, []).append(listing.channel_sku)
    running = RunningEmulators()
    try:
        for channel in channels:
            emulator = emulator_for(channel, skus.get(channel.id, ()), host=host)
            await emulator.start()
            running.by_channel[channel.id] = emulator
            running.channels.append(pointed_at(channel, emulator))
        yield running
    finally:
        for emulator in running.by_channel.values():
            await emulator.stop()
