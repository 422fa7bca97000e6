"""What every channel emulator shares: an aiohttp server on loopback, a log of what it received,
and switchable outages, so a test can assert exactly what a channel would have seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the emulator saw it; `answered` is the HTTP status it returned."""

    at: float  # time.monotonic()
    method: str
    path: str
    body: bytes
    answered: int = 0


class Bucket:
    """The server side of a token bucket (or of Shopify's leaky bucket, with cost as tokens)."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self._level = capacity
        self._at = time.monotonic()

    def level(self) -> float:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level

    def try_take(self, tokens: float = 1.0) -> bool:
        # A hair of tolerance for float rounding between the client's bucket and ours.
        if self.level() + 1e-6 < tokens:
            return False
        self._level -= tokens
        return True

    def give_back(self, tokens: float) -> None:
        self._level = min(self.capacity, self.level() + tokens)


@dataclass
class _Outage:
    until: float
    statuses: tuple[int, ...]
    retry_after: float | None
    served: int = 0


@dataclass
class Emulator:
    """Base class: subclasses give `routes()` and the API's error shape in `error_body()`."""

    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    throttled: int = 0  # requests refused for exceeding the rate limit or cost budget
    injected: int = 0  # requests failed on purpose by outage() / fail_next()
    _outage: _Outage | None = None
    held: int = 0  # requests that were kept waiting by hold_next() (a call in flight)
    _fail_next: list[tuple[int, float | None]] = field(default_factory=list)
    _hold_next: float = 0.0
    _runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"errors": [{"code": str(status), "message": message}]}

    # ---- lifecycle ----

    async def start(self) -> Self:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and getattr(server, "sockets", None)
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self.url = f"http://{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- failure injection ----

    def outage(
        self, seconds: float, statuses: tuple[int, ...] = (500, 429, 503), retry_after: float = 0.2
    ) -> None:
        """For `seconds`, answer every request with these statuses in turn (state untouched)."""
        self._outage = _Outage(time.monotonic() + seconds, statuses, retry_after)

    def fail_next(
        self, count: int = 1, status: int = 500, retry_after: float | None = None
    ) -> None:
        self._fail_next.extend([(status, retry_after)] * count)

    def hold_next(self, seconds: float) -> None:
        """Keep the next request waiting `seconds` before it is handled: a call in flight that a
        test can kill its sender in the middle of (the channel still applies it)."""
        self._hold_next = seconds

    # ---- what was received ----

    def calls(self, path_contains: str = "") -> int:
        return sum(1 for r in self.requests if path_contains in r.path)

    def max_calls_in_window(self, window: float, path_contains: str = "") -> int:
        """The most requests reaching the API within any `window` seconds."""
        times = [r.at for r in self.requests if path_contains in r.path]
        best, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] > window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def _injected_failure(self) -> tuple[int, float | None] | None:
        if self._fail_next:
            return self._fail_next.pop(0)
        outage = self._outage
        if outage is None:
            return None
        if time.monotonic() >= outage.until:
            self._outage = None
            return None
        status = outage.statuses[outage.served % len(outage.statuses)]
        outage.served += 1
        return status, outage.retry_after

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        if self._hold_next:
            hold, self._hold_next = self._hold_next, 0.0
            self.held += 1
            await asyncio.sleep(hold)
        at = time.monotonic()
        failure = self._injected_failure()
        if failure is not None:
            status, retry_after = failure
            self.injected += 1
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            response: web.StreamResponse = web.json_response(
                self.error_body(status, "injected failure"), status=status, headers=headers
            )
        else:
            response = await handler(request)
        self.requests.append(Received(at, request.method, request.path_qs, body, response.status))
        return response
