"""10,000 abusive requests against the reservation API of a live worker: every one is refused
with a JSON error and no 5xx, slow clients are cut off, nothing is held, and the worker's
reservation p99 afterwards stays near the one before."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streams.runtime.broker import free_port
from tests.integration.live import LiveSystem
from tests.integration.test_reservations import (
    CATALOG,
    CHANNELS,
    TOKENS,
    reserve,
    serving,
    stock,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

ABUSIVE = 10_000
MEASURED = 200  # reservations timed before and after
CLIENT_TIMEOUT = 2.0  # HTTP_CLIENT_TIMEOUT_SECONDS of the worker
SLOW_CLIENTS = 10
WEB = {"Authorization": f"Bearer {TOKENS['web']}"}
BODY = {"reservation_id": "x", "channel": "web", "lines": [{"channel_sku": "HOT", "quantity": 1}]}

Case = Callable[[aiohttp.ClientSession, str, int], Awaitable[tuple[int, Any]]]


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json", (response.status, response.content_type)
    return response.status, await response.json()


def _post(body: bytes | dict[str, Any], headers: dict[str, str]) -> Case:
    async def case(session: aiohttp.ClientSession, base: str, i: int) -> tuple[int, Any]:
        data = (
            json.dumps({**body, "reservation_id": f"abuse-{i}"}) if isinstance(body, dict) else body
        )
        sent = {"Content-Type": "application/json", **headers}
        async with session.post(f"{base}/reservations", data=data, headers=sent) as r:
            return await _answer(r)

    return case


def _request(method: str, path: str, headers: dict[str, str]) -> Case:
    async def case(session: aiohttp.ClientSession, base: str, _i: int) -> tuple[int, Any]:
        async with session.request(method, f"{base}{path}", headers=headers) as r:
            return await _answer(r)

    return case


def _raw(request: bytes) -> Case:
    """Bytes aiohttp's client would never send, on a connection of their own."""

    async def case(_session: aiohttp.ClientSession, base: str, _i: int) -> tuple[int, Any]:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"application/json" in head, head
        return int(head.split()[1]), json.loads(body)

    return case


def _line(**changes: Any) -> dict[str, Any]:
    return {**BODY, "lines": [{"channel_sku": "HOT", "quantity": 1, **changes}]}


# (name, case, the statuses it may get)
CASES: list[tuple[str, Case, set[int]]] = [
    ("bad JSON", _post(b'{"reservation_id": "x", "lines": [', WEB), {400}),
    ("not an object", _post(b"[1, 2, 3]", WEB), {400}),
    ("oversize body", _post(b'{"pad": "' + b"x" * 100_000 + b'"}', WEB), {413}),
    ("wrong token", _post(BODY, {"Authorization": "Bearer tok-nope"}), {401}),
    ("no token", _post(BODY, {}), {401}),
    ("basic auth", _post(BODY, {"Authorization": "Basic dG9rOng="}), {401}),
    ("form body", _post(BODY, {**WEB, "Content-Type": "application/x-www-form-urlencoded"}), {415}),
    ("other channel's token", _post(BODY, {"Authorization": f"Bearer {TOKENS['amazon']}"}), {403}),
    ("foreign availability", _request("GET", "/availability/amazon/HOT", WEB), {403}),
    ("unknown route", _request("GET", "/admin", WEB), {404}),
    ("wrong method", _request("PUT", "/reservations", WEB), {405}),
    ("zero quantity", _post(_line(quantity=0), WEB), {400}),
    ("text quantity", _post(_line(quantity="many"), WEB), {400}),
    ("huge quantity", _post(_line(quantity=2**70), WEB), {400}),
    ("unknown listing", _post(_line(channel_sku="NOPE"), WEB), {400}),
    ("unknown SKU", _post({**BODY, "lines": [{"sku": "NOPE", "quantity": 1}]}, WEB), {409}),
    ("set by the API", _post({**BODY, "event_id": "mine"}, WEB), {400}),
    (
        "huge header",
        _raw(b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n"),
        {400},
    ),
    ("not HTTP", _raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), {400}),
]


async def _stalled(base: str, request: bytes) -> tuple[float, bytes]:
    """Send `request`, never the rest: seconds until the server answers and closes, and what."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 5 * CLIENT_TIMEOUT)
    writer.close()
    return time.monotonic() - started, data


async def _p99(session: aiohttp.ClientSession, base: str, prefix: str) -> tuple[float, float]:
    """MEASURED reservations one after another: p50 and p99 in ms; each must be held."""
    seconds = []
    for i in range(MEASURED):
        started = time.perf_counter()
        status, body = await reserve(session, base, f"{prefix}-{i}", CHANNELS[i % 3])
        seconds.append(time.perf_counter() - started)
        assert status == 201, body
    cuts = statistics.quantiles(seconds, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def test_ten_thousand_abusive_requests_are_refused_in_json_and_hold_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    with LiveSystem(CATALOG, tmp_path, clock="wall") as live:
        live.start_worker(
            0,
            "--api-port",
            str(port),
            env={
                "CHANNEL_TOKENS": json.dumps(TOKENS),
                "HTTP_CLIENT_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT),
            },
        )
        await stock(live, tmp_path, 1000)
        # pooled connections go idle for less than the server's timeout: none closes under us
        connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=CLIENT_TIMEOUT / 4)
        async with serving(live, port) as base, aiohttp.ClientSession(connector=connector) as s:
            await _p99(s, base, "warm")  # first requests pay for connections and caches
            before = await _p99(s, base, "before")
            held = 2 * MEASURED
            assert (await until(lambda p: p["reserved"] == held, live, 30))["reserved"] == held

            slow = [
                asyncio.create_task(_stalled(base, request))
                for request in (
                    b"POST /reservations HTTP/1.1\r\nHost: x\r\n",  # headers never end
                    b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n"
                    b'Content-Length: 900\r\n\r\n{"reservation_id": "slow", ',  # nor the body
                )
                for _ in range(SLOW_CLIENTS // 2)
            ]
            statuses: Counter[tuple[str, int]] = Counter()
            wrong: list[str] = []
            gate = asyncio.Semaphore(32)
            started = time.monotonic()

            async def one(i: int) -> None:
                name, case, expected = CASES[i % len(CASES)]
                async with gate:
                    status, body = await case(s, base, i)
                statuses[(name, status)] += 1
                # a 409 is a decision: its `status` is the reservation's, "rejected"
                if status not in expected or body.get("status") not in (status, "rejected"):
                    wrong.append(f"{name}: {status} {body}")
                elif not body.get("error"):
                    wrong.append(f"{name}: no error message: {body}")

            await asyncio.gather(*(one(i) for i in range(ABUSIVE)))
            storm = time.monotonic() - started
            cut = await asyncio.gather(*slow)

            after = await _p99(s, base, "after")
            held += MEASURED
            final = await until(lambda p: p["reserved"] == held, live, 30)
            await asyncio.sleep(1)  # anything the storm left on its way would land by now
            final = await until(lambda p: p["reserved"] == held, live, 30)

        print(
            f"\nabuse: {ABUSIVE} requests in {storm:.1f} s ({ABUSIVE / storm:.0f}/s); "
            f"reservation p50/p99 before {before[0]:.1f}/{before[1]:.1f} ms, "
            f"after {after[0]:.1f}/{after[1]:.1f} ms; slow clients cut after "
            f"{min(t for t, _ in cut):.1f}-{max(t for t, _ in cut):.1f} s; "
            f"statuses {sorted(Counter(status for _, status in statuses.elements()).items())}"
        )
        assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"
        assert sum(statuses.values()) == ABUSIVE
        assert not any(status >= 500 for _, status in statuses)
        for seconds, data in cut:  # headers never ended: closed; body never ended: a 408
            assert seconds < 3 * CLIENT_TIMEOUT, seconds
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
        assert sum(data.startswith(b"HTTP/1.1 408") for _, data in cut) == SLOW_CLIENTS // 2
        assert (final["reserved"], final["on_hand"]) == (held, 1000)  # nothing held by abuse
        assert after[1] <= 3 * before[1] + 50, (before, after)
