"""Abuse of the webhook receiver, served as `up` and `connect` serve it (start_webhook_receiver,
on a real socket): unknown routes and methods, bodies over the limit, clients that never finish a
request, missing, wrong and malformed signatures, and malformed requests are all refused with a
JSON error, never a 5xx and never an echo of the client's bytes, and produce nothing."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientSession, web

from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from connectors.sources.shopify import sign
from connectors.sources.webhook import start_webhook_receiver
from streams.settings import Settings
from tests.connectors.sources.source_fakes import FakeKafka, fake_producer
from tests.connectors.sources.test_webhook import ORDER, SECRETS, SOURCES, spec_event
from tests.http_helpers import answer

TIMEOUT = 0.5
LIMIT = 4096
SETTINGS = Settings(
    webhook_secrets=SECRETS, http_client_timeout_seconds=TIMEOUT, webhook_max_body_bytes=LIMIT
)


@dataclass
class Rig:
    port: int
    kafka: FakeKafka
    runner: web.AppRunner

    async def raw(self, request: bytes, wait: float = 5.0) -> tuple[int, dict[str, str], Any]:
        return await answer(self.port, request, wait)

    def nothing_produced(self) -> None:
        assert self.kafka.log == []


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    producer, kafka = fake_producer()
    runner = await start_webhook_receiver(
        SETTINGS, producer, sources=SOURCES, host="127.0.0.1", port=0
    )
    try:
        yield Rig(runner.addresses[0][1], kafka, runner)
    finally:
        await runner.cleanup()


def signed(body: bytes, source: str = "wms-east", stamp: str | None = None) -> bytes:
    """The signature headers of one of our own deliveries, as raw header lines."""
    stamp = stamp or str(int(time.time()))
    return (
        f"{TIMESTAMP_HEADER}: {stamp}\r\n"
        f"{SIGNATURE_HEADER}: {signature(SECRETS[source], stamp, body)}\r\n"
    ).encode()


def post(body: bytes, headers: bytes = b"", path: str = "/webhooks/wms-east") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + headers
        + b"\r\n"
        + body
    )


def assert_json(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert (status, body["status"]) == (expected, expected), body
    assert headers["Content-Type"].startswith("application/json")


async def test_a_signed_delivery_is_produced_through_the_guarded_server(rig: Rig) -> None:
    body = spec_event("e1")
    status, _, answer = await rig.raw(post(body, signed(body)))
    assert (status, answer["produced"]) == (200, 1)
    assert len(rig.kafka.events()) == 1


# ---- routes and methods ----


@pytest.mark.parametrize(
    ("request_bytes", "code", "message"),
    [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint: GET /nope"),
        (post(b"{}", path="/webhooks"), 404, "no such endpoint: POST /webhooks"),
        (post(b"{}", path="/webhooks/nobody"), 404, "no webhook source 'nobody'"),
        (
            b"GET /webhooks/wms-east HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "method GET is not allowed on /webhooks/wms-east",
        ),
        (
            b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "method DELETE is not allowed on /health",
        ),
    ],
)
async def test_unknown_routes_and_methods_are_json(
    rig: Rig, request_bytes: bytes, code: int, message: str
) -> None:
    status, headers, body = await rig.raw(request_bytes)
    assert_json(status, headers, body, code)
    assert body["error"].startswith(message)
    rig.nothing_produced()


# ---- signatures ----


def _stamp() -> str:
    return str(int(time.time()))


@pytest.mark.parametrize(
    "headers",
    [
        b"",  # none at all
        f"{TIMESTAMP_HEADER}: {_stamp()}\r\n".encode(),  # a timestamp, no signature
        f"{TIMESTAMP_HEADER}: {_stamp()}\r\n{SIGNATURE_HEADER}: sha256=00\r\n".encode(),
        signed(spec_event("other")),  # a signature of another body
        signed(spec_event("e1"), source="pos-store-12"),  # another source's secret
        signed(spec_event("e1"), stamp=str(int(time.time()) - 3600)),  # stale
        # bytes that are not ASCII, or not UTF-8, in the signature or the timestamp
        f"{TIMESTAMP_HEADER}: {_stamp()}\r\n".encode()
        + SIGNATURE_HEADER.encode()
        + b": \xff\xfe\r\n",
        f"{TIMESTAMP_HEADER}: {_stamp()}\r\n".encode()
        + SIGNATURE_HEADER.encode()
        + b": sha256=\xc3\xa9\r\n",
        TIMESTAMP_HEADER.encode() + b": \xc2\xb2\r\n" + signed(spec_event("e1"))[-80:],
        f"{TIMESTAMP_HEADER}: {'9' * 5000}\r\n{SIGNATURE_HEADER}: sha256=00\r\n".encode(),
        f"{TIMESTAMP_HEADER}: \u0661\u0662\r\n{SIGNATURE_HEADER}: sha256=00\r\n".encode(),
    ],
)
async def test_a_missing_wrong_or_malformed_signature_is_a_json_401(
    rig: Rig, headers: bytes
) -> None:
    status, answer_headers, body = await rig.raw(post(spec_event("e1"), headers))
    assert_json(status, answer_headers, body, 401)
    rig.nothing_produced()


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"X-Shopify-Hmac-Sha256: " + sign("guess", ORDER).encode() + b"\r\n",
        b"X-Shopify-Hmac-Sha256: \xff\xfe\xfd\r\n",
        b"X-Shopify-Hmac-Sha256: \xc3\xa9t\xc3\xa9\r\n",
    ],
)
async def test_a_shopify_delivery_without_its_signature_is_a_json_401(
    rig: Rig, header: bytes
) -> None:
    status, headers, body = await rig.raw(
        post(ORDER, b"X-Shopify-Topic: orders/create\r\n" + header, path="/webhooks/shopify-us")
    )
    assert_json(status, headers, body, 401)
    rig.nothing_produced()


# ---- bodies of another type ----


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        (b"text/plain", "text/plain"),
        (b"application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),  # curl -d
        (b"multipart/form-data; boundary=x", "multipart/form-data"),
        (b"text/csv; charset=utf-8", "text/csv"),
        (b"json", "malformed"),
    ],
)
async def test_a_body_of_another_type_is_a_json_415_and_produces_nothing(
    rig: Rig, content_type: bytes, named: str
) -> None:
    body = spec_event("e1")
    sent = post(body, b"Content-Type: " + content_type + b"\r\n" + signed(body))
    status, headers, answer = await rig.raw(sent)
    assert_json(status, headers, answer, 415)
    assert named in answer["error"] and "application/json" in answer["error"], answer
    rig.nothing_produced()


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/x-ndjson",
        b"application/octet-stream",  # what a client library sends for bytes
        None,
    ],
)
async def test_json_json_lines_bytes_or_no_content_type_are_produced(
    rig: Rig, content_type: bytes | None
) -> None:
    body = spec_event("e1") + b"\n" + spec_event("e2")
    line = b"Content-Type: " + content_type + b"\r\n" if content_type is not None else b""
    status, _, answer = await rig.raw(post(body, line + signed(body)))
    assert (status, answer["produced"]) == (200, 2), answer
    assert len(rig.kafka.events()) == 2


# ---- bodies over the limit ----


async def test_a_body_over_the_limit_is_a_json_413_before_it_is_read(rig: Rig) -> None:
    # a Content-Length over the limit is refused at once: the body is never sent here
    started = time.monotonic()
    status, headers, body = await rig.raw(
        b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
    )
    assert time.monotonic() - started < TIMEOUT  # not a 408 after waiting for the body
    assert_json(status, headers, body, 413)
    assert body["error"] == "the body is larger than the 4,096 bytes accepted"
    assert headers["Connection"] == "close"
    rig.nothing_produced()


@pytest.mark.parametrize(
    ("request_bytes", "code", "message"),
    [
        (
            b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n",
            413,
            "the body is larger than the 4,096 bytes accepted",
        ),
        (
            b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n",
            415,
            "Content-Type application/x-www-form-urlencoded is not accepted",
        ),
        (
            b"POST /webhooks/nobody HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n",
            404,
            "no webhook source 'nobody'",
        ),
    ],
)
async def test_a_client_that_asks_first_is_refused_instead_of_told_to_continue(
    rig: Rig, request_bytes: bytes, code: int, message: str
) -> None:
    # `Expect: 100-continue`: the client sends its body only after a 100, so never sends it here
    asking = request_bytes + b"Expect: 100-continue\r\n\r\n"
    status, headers, body = await rig.raw(asking, wait=2.0)
    assert (status, body and body["status"]) == (code, code), body
    assert_json(status, headers, body, code)
    assert body["error"].startswith(message), body
    assert headers["Connection"] == "close"
    rig.nothing_produced()


async def test_a_client_that_asks_first_is_told_to_continue_and_then_served(rig: Rig) -> None:
    body = spec_event("e1")
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    asking = post(body, b"Expect: 100-continue\r\n" + signed(body))
    writer.write(asking[: -len(body)])
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(body)
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert len(rig.kafka.events()) == 1


@pytest.mark.parametrize("how", ["length", "chunked", "gzip"])
async def test_a_body_over_the_limit_is_a_json_413_however_it_is_sent(rig: Rig, how: str) -> None:
    body = b"\n".join(spec_event(f"e{i}") for i in range(40))  # ~8 kB of valid events
    stamp = _stamp()
    headers = {
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(SECRETS["wms-east"], stamp, body),
    }
    data: Any = body
    if how == "gzip":  # 8 kB once inflated, a few hundred bytes on the wire
        data, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    if how == "chunked":

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        data = chunks()
    async with ClientSession() as session:
        response = await session.post(
            f"http://127.0.0.1:{rig.port}/webhooks/wms-east", data=data, headers=headers
        )
        assert (response.status, (await response.json())["status"]) == (413, 413)
    rig.nothing_produced()


# ---- slow clients ----


async def test_a_body_that_never_completes_is_a_408_and_others_are_served_meanwhile(
    rig: Rig,
) -> None:
    started = time.monotonic()
    first = spec_event("slow")
    slow = asyncio.create_task(
        rig.raw(post(first + b"x" * 100, signed(first + b"x" * 100))[:-100])  # 100 bytes short
    )
    await asyncio.sleep(0.1)
    body = spec_event("fast")
    status, _, _ = await rig.raw(post(body, signed(body)))
    assert status == 200 and not slow.done()  # not queued behind the slow one
    status, headers, answer = await slow
    assert_json(status, headers, answer, 408)
    assert "did not arrive within 0.5 s" in answer["error"]
    assert headers["Connection"] == "close"
    assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 2.5
    assert [event.event_id for event in rig.kafka.events()] == ["fast"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"",  # connects and says nothing
        b"PO",  # a request line that never ends
        b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\n",  # headers that never end
    ],
)
async def test_a_request_that_never_ends_its_headers_is_cut_off(
    rig: Rig, request_bytes: bytes
) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    writer.write(request_bytes)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, without an answer
    writer.close()
    assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 2.5
    rig.nothing_produced()


# ---- malformed requests ----


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (
            post(b"hello", b"Content-Encoding: gzip\r\n" + signed(b"hello")),
            "the body cannot be read: Can not decode content-encoding: gzip",
        ),
        (b"GARBAGE\r\n\r\n", "malformed HTTP request (Invalid method encountered)"),
        (
            b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
            "malformed HTTP request (Got more than 8190 bytes when reading)",
        ),
        (
            b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            "malformed HTTP request",
        ),
        (
            b"POST /webhooks/wms-east HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n",
            "malformed HTTP request (Invalid character in chunk size)",
        ),
    ],
)
async def test_a_malformed_request_is_a_json_400_without_the_clients_bytes(
    rig: Rig, request_bytes: bytes, message: str
) -> None:
    status, headers, body = await rig.raw(request_bytes)
    assert_json(status, headers, body, 400)
    assert body["error"].startswith(message), body
    assert "aaaa" not in body["error"]
    rig.nothing_produced()


async def test_signed_json_nested_too_deeply_is_dead_lettered_not_a_500(rig: Rig) -> None:
    nested = b"[" * 1500 + b"]" * 1500
    status, _, answer = await rig.raw(post(nested, signed(nested)))
    assert status == 422 and "nested too deeply" in answer["errors"][0]["reason"]
    nested_shopify = b'{"id": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    status, _, answer = await rig.raw(
        post(
            nested_shopify,
            b"X-Shopify-Topic: orders/create\r\nX-Shopify-Hmac-Sha256: "
            + sign(SECRETS["shopify-us"], nested_shopify).encode()
            + b"\r\n",
            path="/webhooks/shopify-us",
        )
    )
    assert (status, answer["status"]) == (200, "dead-lettered")
    assert "nested too deeply" in answer["reason"]
    assert rig.kafka.events() == [] and len(rig.kafka.dead_letters()) == 2
