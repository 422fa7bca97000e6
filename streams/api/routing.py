"""Routing for a worker serving the API: a request goes to the worker that owns its key.

The owner decides a reservation request in its own process; a request it cannot answer
(unreachable, no answer in time) is decided through the topics instead, so routing changes the
latency, never the outcome. An explain request is answered by the owner from its memory; one it
cannot answer is answered here from the committed changelog. A routed request carries
ROUTED_HEADER and is never passed on again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from prometheus_client import Counter
from yarl import URL

from streams.api.decisions import Decisions
from streams.core.catalog import Catalog
from streams.core.keys import event_key
from streams.core.models import ReservationRequested

log = logging.getLogger(__name__)

# a stream worker serving the API: the API URL of the worker that owns a key's partition
Route = Callable[[bytes], str | None]
ROUTED_HEADER = "X-Inventory-Routed"  # on a request one worker passed to another: not passed on

_PASSED_HEADERS = ("Retry-After", "WWW-Authenticate")


class OwnerRouting:
    """Passes a request to the worker that owns its key, over one session opened on first use."""

    def __init__(
        self,
        route: Route | None,
        url: str | None,
        decisions: Decisions,
        routed: Counter,
        *,
        timeout: float,
        keepalive_timeout: float,
        reads_routed: Counter | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self._route = route
        self._url = url.rstrip("/") if url else None
        self._session: ClientSession | None = None  # to other workers, opened on first use
        self._decisions = decisions
        self._routed = routed  # reservation requests by outcome: answered, unreachable
        self._reads_routed = reads_routed  # explain requests, likewise
        self._timeout = timeout  # for the owner's whole answer to a reservation request
        self._read_timeout = timeout if read_timeout is None else read_timeout  # to a GET
        self._keepalive_timeout = keepalive_timeout

    async def pass_to_owner(
        self, request: web.Request, event: ReservationRequested, catalog: Catalog
    ) -> web.Response | None:
        """Served by a worker: a request whose SKU another worker owns is passed to that worker,
        which decides it in its process; None when it is ours, unknown, or unreachable (then it
        is decided through the topics, as the API process does)."""
        owner = self._owner(request, event_key(event, catalog).encode())
        if owner is None:
            return None
        headers = {
            "Authorization": request.headers.get("Authorization", ""),
            "Content-Type": "application/json",
            ROUTED_HEADER: "1",
        }
        answer = await self._send(
            "POST", URL(f"{owner}/reservations"), headers, await request.read(), self._timeout
        )
        if answer is None:
            self._routed.labels("unreachable").inc()
            return None
        self._routed.labels("answered").inc()
        status, body, passed = answer
        if status == 201:
            self._decisions.offer(body)  # a DELETE sent here next knows it at once
        return web.json_response(body, status=status, headers=passed)

    async def pass_read(self, request: web.Request, key: bytes) -> web.Response | None:
        """Served by a worker: a GET about `key` (explain) passed as it came, with its token, to
        the worker that owns `key`, which answers from its memory; None when it is ours, unknown,
        or unreachable (then it is answered here)."""
        owner = self._owner(request, key)
        if owner is None:
            return None
        headers = {"Authorization": request.headers.get("Authorization", ""), ROUTED_HEADER: "1"}
        url = URL(owner + request.raw_path, encoded=True)  # the path and query exactly as sent
        answer = await self._send("GET", url, headers, None, self._read_timeout)
        if self._reads_routed is not None:
            self._reads_routed.labels("unreachable" if answer is None else "answered").inc()
        if answer is None:
            return None
        status, body, passed = answer
        return web.json_response(body, status=status, headers=passed)

    async def state_of(self, request: web.Request, sku: str) -> dict[str, Any] | None:
        """Served by a worker: the state of `sku` from the memory of the worker that owns it
        (`GET /states/{sku}` with the caller's token; never passed on further), for an
        explanation; None when it is ours, unknown, unreachable or not held there."""
        if self._route is None:
            return None
        owner = self._route(sku.encode())
        if owner is None or owner.rstrip("/") == self._url:
            return None
        headers = {"Authorization": request.headers.get("Authorization", ""), ROUTED_HEADER: "1"}
        url = URL(owner.rstrip("/")) / "states" / sku
        answer = await self._send("GET", url, headers, None, self._read_timeout)
        if self._reads_routed is not None:
            self._reads_routed.labels("unreachable" if answer is None else "answered").inc()
        if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
            return None
        state = answer[1].get("state")
        return state if isinstance(state, dict) else None

    def _owner(self, request: web.Request, key: bytes) -> str | None:
        """The API URL of the worker that owns `key`, when that is another worker and the request
        was not passed here by one."""
        if self._route is None or request.headers.get(ROUTED_HEADER):
            return None
        owner = self._route(key)
        if owner is None or owner.rstrip("/") == self._url:
            return None
        return owner.rstrip("/")

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Any, dict[str, str]] | None:
        """The owner's answer: its status, JSON body and the headers a client acts on; None when
        it cannot be reached, or gives no JSON answer within `timeout` seconds."""
        if self._session is None:
            self._session = ClientSession(
                # let go of an idle connection before the owner's server closes it under us
                connector=TCPConnector(keepalive_timeout=self._keepalive_timeout),
            )
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, timeout=ClientTimeout(total=timeout)
            ) as answer:
                content = await answer.json()
                passed = {k: v for k, v in answer.headers.items() if k in _PASSED_HEADERS}
                status = answer.status
        except (ClientError, TimeoutError, ValueError) as error:
            log.warning("reservation API: the owner at %s did not answer (%s)", url.origin(), error)
            return None
        return status, content, passed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
