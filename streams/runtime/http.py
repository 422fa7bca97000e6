"""Serving HTTP to clients that may misbehave: refusals are JSON, and slow clients are cut off.

Guarantee: what aiohttp refuses before a request reaches the application (a malformed request
line or header, a line or header over its limit) is answered `{"error": ..., "status": 400}` and
the connection closed; a connection that has not sent a whole request line and headers within
`client_timeout` seconds of opening (or of its last answer) is closed, and so is one whose body
is still unread `client_timeout` seconds after its answer. Reading a body within that time is the
application's part (`read_body`), and so is refusing a body of a type it does not read
(`unsupported_type`); a client that asks before sending its body (`Expect: 100-continue`) is
refused before it sends it when the headers alone earn a refusal (`refusing_before_continue`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_urldispatcher import _default_expect_handler

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
HEALTH_PATH = "/health"  # where every HTTP surface of ours (the API, the receiver) says its health
# a media type as RFC 9110 spells one: anything else is named "malformed", never echoed
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


class BodyTimeout(Exception):
    """The client did not send its whole body within the time allowed."""


class BodyUnreadable(Exception):
    """The body cannot be decoded as its headers say (Content-Encoding, chunks, length)."""


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The whole body, within `timeout` seconds; over client_max_size is aiohttp's 413."""
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout:g} s") from None
    except web.RequestPayloadError as error:
        cause = error.__cause__ if error.__cause__ is not None else error
        message = getattr(cause, "message", None) or str(cause)
        raise BodyUnreadable(f"the body cannot be read: {_first_line(message)}") from None


def unsupported_type(request: web.BaseRequest, accepted: Sequence[str]) -> str | None:
    """Why the request's Content-Type is refused (a 415), or None when it is one of `accepted`,
    whatever its parameters (a charset), or absent: a client that names no type is read as the
    endpoint's own format, but one that names another (curl -d's form encoding) sends that."""
    given = request.headers.get(hdrs.CONTENT_TYPE)
    if given is None:
        return None
    media = given.split(";", 1)[0].strip().lower()
    if media in accepted:
        return None
    named = f"Content-Type {media}" if _MEDIA_TYPE.fullmatch(media) else "a malformed Content-Type"
    return (
        f"{named} is not accepted: send the body as {' or '.join(accepted)} "
        f"(with curl: -H 'Content-Type: {accepted[0]}')"
    )


def refusing_before_continue(
    refusal: Callable[[web.Request], web.Response | None],
) -> Callable[[web.Request], Awaitable[web.Response | None]]:
    """A route's `expect_handler`: to `Expect: 100-continue`, the refusal its headers alone earn
    (`refusal`, None for none) instead of the 100 that would have the client send a body only to
    see it refused; without one, aiohttp's own answer (100 Continue)."""

    async def expect(request: web.Request) -> web.Response | None:
        refused = refusal(request)
        if refused is None:
            await _default_expect_handler(request)  # a private of aiohttp: 100 Continue, or 417
            return None
        refused.force_close()  # the body, if the client sends it anyway, is not read
        return refused

    return expect


def json_refusal(status: int, message: str) -> web.Response:
    response = web.json_response({"error": message, "status": status}, status=status)
    response.force_close()
    return response


def _first_line(message: str) -> str:
    """`Got more than 8190 bytes when reading: b'aaa…` -> `Got more than 8190 bytes when
    reading`: aiohttp's reason without the client's bytes it echoes."""
    line = message.strip().split("\n", 1)[0]
    for echo in (": b'", ': b"', ": bytearray("):
        line = line.split(echo, 1)[0]
    return line.rstrip(":. ")[:200] or "bad request"


class _JsonRefusals(RequestHandler):
    """aiohttp's connection handler, answering its own refusals as JSON instead of text."""

    __slots__ = ()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), web.RequestPayloadError):  # draining a broken body
            log.debug("HTTP: a body that cannot be read was dropped: %s", kw["exc_info"])
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: an answer has begun, close instead
            raise ConnectionError("the answer has begun; no error can follow it")
        if status >= 500:
            log.error("HTTP: a request from %s failed", request.remote, exc_info=exc)
            return json_refusal(status, "internal error; it has been logged")
        # a client's mistake, one per malformed request: not worth a traceback in the log
        log.debug("HTTP: refused a malformed request from %s: %s", request.remote, message)
        reason = _first_line(message or (str(exc) if exc else ""))
        return json_refusal(status, f"malformed HTTP request ({reason}); the connection is closed")


class _JsonRefusalsServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonRefusals(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections refuse in JSON and give clients `client_timeout` seconds.

    aiohttp has no separate timeout for the request line and headers: its keep-alive timer, which
    it also arms when a connection opens, closes a connection still waiting for a complete
    request that long after it opened or was last answered, so that timer is the header timeout.
    """

    def __init__(self, app: web.Application, *, client_timeout: float, **kwargs: Any) -> None:
        super().__init__(
            app,
            access_log=None,
            keepalive_timeout=client_timeout,
            lingering_time=client_timeout,  # a body left unread is drained that long, no longer
            **kwargs,
        )

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _JsonRefusalsServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
