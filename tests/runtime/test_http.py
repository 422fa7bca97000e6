"""GuardedRunner on real sockets: what aiohttp refuses before routing is a JSON 400, a client that
never finishes its request line and headers is cut off after the timeout, and the others are
served meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from streams.runtime.http import GuardedRunner, read_body

TIMEOUT = 0.5


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"length": len(await read_body(request, TIMEOUT))})


async def _ok(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _boom(_request: web.Request) -> web.Response:
    raise RuntimeError("secret internals")


@asynccontextmanager
async def served(timeout: float = TIMEOUT) -> AsyncIterator[int]:
    """A small app behind GuardedRunner on a free loopback port; yields the port."""
    app = web.Application(client_max_size=1024)
    app.router.add_post("/echo", _echo)
    app.router.add_get("/ok", _ok)
    app.router.add_get("/boom", _boom)
    runner = GuardedRunner(app, client_timeout=timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exchange(port: int, raw: bytes, wait: float = 5.0) -> tuple[int, dict[str, str], Any]:
    """Send `raw`, read until the server closes; the status, headers and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), wait)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "Invalid method encountered"),
        (b"GET /ok HTTP/9.9\r\n\r\n", "Bad status line"),
        (
            b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
            "Got more than 8190 bytes",
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", "Got more than 8190 bytes"),
        (
            b"GET /ok HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            "Too many headers",
        ),
        (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "Invalid header value char"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "chunk size",
        ),
    ],
)
async def test_a_request_aiohttp_cannot_parse_is_a_json_400_without_the_clients_bytes(
    raw: bytes, reason: str
) -> None:
    async with served() as port:
        status, headers, body = await exchange(port, raw)
    assert (status, body["status"]) == (400, 400)
    assert headers["Content-Type"].startswith("application/json")
    assert reason in body["error"] and body["error"].startswith("malformed HTTP request")
    assert "aaaa" not in body["error"] and "\\x00" not in body["error"]  # nothing echoed back


async def test_an_exception_the_app_lets_out_is_a_json_500_without_a_trace() -> None:
    async with served() as port:
        status, headers, body = await exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (500, {"error": "internal error; it has been logged", "status": 500})
    assert headers["Content-Type"].startswith("application/json")


async def closed_after(port: int, raw: bytes) -> float:
    """Send `raw` and stall: seconds until the server closes the connection."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    await asyncio.wait_for(reader.read(), 10)  # b"" or an answer, then EOF
    writer.close()
    return time.monotonic() - started


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # connects and says nothing
        b"GET /ok HTTP/1.1\r\nHost: x\r\n",  # headers never ended
        b"GE",  # request line never ended
    ],
)
async def test_a_client_that_never_finishes_its_headers_is_cut_off_and_others_are_served(
    raw: bytes,
) -> None:
    async with served() as port:
        stalled = asyncio.create_task(closed_after(port, raw))
        await asyncio.sleep(0.1)
        status, _, body = await exchange(
            port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert (status, body) == (200, {"ok": True}) and not stalled.done()
        assert TIMEOUT * 0.9 <= await stalled < TIMEOUT + 1.5


async def test_a_client_that_trickles_its_headers_is_cut_off_all_the_same() -> None:
    async with served() as port:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok HTTP/1.1\r\n")
        closed = asyncio.create_task(reader.read())  # ends when the server closes
        line = 0
        while not closed.done() and time.monotonic() - started < 10:
            writer.write(b"X-%d: 1\r\n" % line)  # a header line every TIMEOUT / 5
            line += 1
            await asyncio.sleep(TIMEOUT / 5)
        await asyncio.gather(closed, return_exceptions=True)  # EOF, or a reset
        writer.close()
    assert closed.done() and time.monotonic() - started < TIMEOUT + 1.5 and line > 3


async def test_a_body_that_never_completes_is_cut_off() -> None:
    async with served() as port:
        raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
        seconds = await closed_after(port, raw)
    # read_body gives up at TIMEOUT (the test app lets BodyTimeout out: a 500), then at most
    # TIMEOUT of draining the rest
    assert TIMEOUT * 0.9 <= seconds < 2 * TIMEOUT + 1.5


async def test_an_idle_kept_alive_connection_is_closed_after_the_timeout() -> None:
    async with served() as port:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b'{"ok": true}'), 5)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed, idle
        writer.close()
    assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 1.5
