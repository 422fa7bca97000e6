"""Abuse of the reservation API, served as run_api serves it (GuardedRunner), the domain core
standing in for the stream: wrong, missing and other channels' tokens on every route, bodies
over the limit, clients that never finish a request, and malformed requests are all refused
with a JSON error, never a 5xx, and produce nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.http_helpers import answer
from tests.test_api import AMAZON, WEB, Rig, make_rig, reservation

ROUTES = [
    ("POST", "/reservations"),
    ("GET", "/reservations/r1"),
    ("DELETE", "/reservations/r1"),
    ("GET", "/availability/web/HOT"),
    ("GET", "/explain/web/HOT"),
]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for r in make_rig(http_client_timeout_seconds=0.5, api_max_body_bytes=4096):
        yield r


async def raw(rig: Rig, request: bytes, wait: float = 5.0) -> tuple[int, dict[str, str], Any]:
    return await answer(rig.client.port, request, wait)


def nothing_held(rig: Rig, events: int = 0) -> None:
    assert len(rig.stream.events()) == events
    assert rig.stream.reserved() == (1 if events else 0)


# ---- tokens ----


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "tok-web",  # no scheme
        "Basic dG9rLXdlYjo=",
        "Bearer",
        "Bearer    ",
        "bearer tok-nope",
        "Bearer tok-web-but-longer",
        "Bearer " + "x" * 8000,
        "Bearer tok-web\tx",
    ],
)
async def test_a_missing_or_wrong_token_is_a_json_401_on_every_route(
    rig: Rig, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await rig.client.request(method, path, json=reservation(), headers=headers)
    body = await response.json()
    assert (response.status, body["status"]) == (401, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    nothing_held(rig)


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_a_token_of_bytes_that_are_not_ascii_is_a_401_not_a_500(
    rig: Rig, method: str, path: str
) -> None:
    body = json.dumps(reservation()).encode()
    status, headers, answer = await raw(
        rig,
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Authorization: Bearer tok-\xc3\xa9\xff\r\n\r\n"
        + body,
    )
    assert (status, answer) == (401, {"error": "unknown bearer token", "status": 401})
    assert headers["Content-Type"].startswith("application/json")
    nothing_held(rig)


async def test_another_channels_token_reaches_nothing_of_this_channel(rig: Rig) -> None:
    assert (await rig.post(reservation("r1")))[0] == 201
    post = await rig.client.post("/reservations", json=reservation("r1"), headers=AMAZON)
    assert (post.status, (await post.json())["status"]) == (403, 403)
    for method, path, code in [
        ("GET", "/reservations/r1", 404),  # someone else's looks exactly like an unknown one
        ("DELETE", "/reservations/r1", 404),
        ("GET", "/availability/web/HOT", 403),
        ("GET", "/explain/web/HOT", 403),
    ]:
        response = await rig.client.request(method, path, headers=AMAZON)
        assert (response.status, (await response.json())["status"]) == (code, code), path
    nothing_held(rig, events=1)  # web's own hold, still there: nothing released, nothing added
    response = await rig.client.get("/reservations/r1", headers=WEB)
    assert (await response.json())["status"] == "held"


# ---- bodies over the limit ----


async def test_a_body_over_the_limit_is_a_json_413_before_it_is_read(rig: Rig) -> None:
    # a Content-Length over the limit is refused at once: the body is never sent here
    status, headers, body = await raw(
        rig,
        b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n"
        b"Content-Length: 100000000\r\n\r\n",
        wait=2.0,
    )
    assert (status, body) == (
        413,
        {"error": "request body too large (at most 4096 bytes)", "status": 413},
    )
    assert headers["Content-Type"].startswith("application/json")
    nothing_held(rig)


ASKING = b"POST /reservations HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"


@pytest.mark.parametrize(
    ("headers", "code", "message"),
    [
        (
            b"Authorization: Bearer tok-web\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n",
            413,
            "request body too large (at most 4096 bytes)",
        ),
        (
            b"Authorization: Bearer tok-web\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n",
            415,
            "Content-Type text/plain is not accepted",
        ),
        (b"Content-Length: 100\r\n", 401, "missing bearer token"),
    ],
)
async def test_a_client_that_asks_first_is_refused_instead_of_told_to_continue(
    rig: Rig, headers: bytes, code: int, message: str
) -> None:
    # `Expect: 100-continue`: the client sends its body only after a 100, so never sends it here
    status, answer_headers, body = await raw(rig, ASKING + headers + b"\r\n", wait=2.0)
    assert (status, body and body["status"]) == (code, code), body
    assert body["error"].startswith(message), body
    assert answer_headers["Content-Type"].startswith("application/json")
    assert answer_headers["Connection"] == "close"
    nothing_held(rig)


async def test_a_client_that_asks_first_is_told_to_continue_and_then_served(rig: Rig) -> None:
    body = json.dumps(reservation()).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.client.port)
    writer.write(
        ASKING + b"Authorization: Bearer tok-web\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(body)
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 201")
    writer.close()
    nothing_held(rig, events=1)


@pytest.mark.parametrize("how", ["length", "chunked", "gzip"])
async def test_a_body_over_the_limit_is_a_json_413_however_it_is_sent(rig: Rig, how: str) -> None:
    body = json.dumps({**reservation(), "padding": "x" * 8000}).encode()
    headers = {**WEB, "Content-Type": "application/json"}
    if how == "gzip":  # 8 kB once inflated, 100 bytes on the wire
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    data: Any = chunks() if how == "chunked" else body
    response = await rig.client.post("/reservations", data=data, headers=headers)
    assert (response.status, (await response.json())["status"]) == (413, 413)
    nothing_held(rig)


# ---- bodies of another type ----


def typed(content_type: bytes | None) -> bytes:
    """POST /reservations of a valid reservation, with that Content-Type line or none."""
    body = json.dumps(reservation()).encode()
    return (
        f"POST /reservations HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Authorization: Bearer tok-web\r\n"
        + (b"Content-Type: " + content_type + b"\r\n" if content_type is not None else b"")
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        (b"text/plain", "text/plain"),
        (b"application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),  # curl -d
        (b"multipart/form-data; boundary=x", "multipart/form-data"),
        (b"application/octet-stream", "application/octet-stream"),
        (b"application/xml; charset=utf-8", "application/xml"),
        (b"json", "malformed"),
        (b"", "malformed"),
    ],
)
async def test_a_body_of_another_type_is_a_json_415_and_holds_nothing(
    rig: Rig, content_type: bytes, named: str
) -> None:
    status, headers, body = await raw(rig, typed(content_type))
    assert (status, body["status"]) == (415, 415), body
    assert named in body["error"] and "application/json" in body["error"], body
    assert headers["Content-Type"].startswith("application/json")
    nothing_held(rig)


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"Application/JSON;charset=UTF-8",
        None,
    ],
)
async def test_a_json_body_with_a_charset_or_no_content_type_is_held(
    rig: Rig, content_type: bytes | None
) -> None:
    status, _, body = await raw(rig, typed(content_type))
    assert (status, body["status"]) == (201, "held"), body
    nothing_held(rig, events=1)


# ---- slow clients ----


async def test_a_body_that_never_completes_is_a_408_and_others_are_served_meanwhile(
    rig: Rig,
) -> None:
    started = time.monotonic()
    slow = asyncio.create_task(
        raw(
            rig,
            b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n"
            b'Content-Length: 500\r\n\r\n{"reservation_id": "slow", ',
        )
    )
    assert (await rig.post(reservation("fast")))[0] == 201  # not queued behind the slow one
    status, headers, body = await slow
    assert (status, body["status"]) == (408, 408) and "did not arrive within 0.5 s" in body["error"]
    assert headers["Connection"] == "close"
    assert 0.45 <= time.monotonic() - started < 3
    assert [e.reservation_id for e in rig.stream.events()] == ["fast"]


async def test_headers_that_never_end_are_cut_off_and_hold_nothing(rig: Rig) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.client.port)
    writer.write(b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, without an answer
    writer.close()
    assert 0.45 <= time.monotonic() - started < 3
    nothing_held(rig)


# ---- malformed requests ----


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (
            b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
            "the body cannot be read: Can not decode content-encoding: gzip",
        ),
        (
            b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n"
            b"Content-Length: 3000\r\n\r\n" + b"[" * 1500 + b"]" * 1500,
            "malformed JSON: nested too deeply",
        ),
        (
            b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-web\r\n"
            b"Content-Type: application/json\r\nContent-Length: 9\r\n\r\nhello \xff\xfe!",
            "malformed JSON",
        ),
        (b"GARBAGE\r\n\r\n", "malformed HTTP request (Invalid method encountered)"),
        (
            b"GET /availability/web/HOT HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
            "malformed HTTP request (Got more than 8190 bytes when reading)",
        ),
        (
            b"POST /reservations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "malformed HTTP request (Invalid character in chunk size)",
        ),
    ],
)
async def test_a_malformed_request_is_a_json_400_not_a_500(
    rig: Rig, request_bytes: bytes, message: str
) -> None:
    status, headers, body = await raw(rig, request_bytes)
    assert (status, body["status"]) == (400, 400)
    assert body["error"].startswith(message), body
    assert headers["Content-Type"].startswith("application/json")
    nothing_held(rig)
