"""Routing for a worker serving the API: a reservation request goes to the worker that owns its key.

The owner decides the request in its own process; a request it cannot answer (unreachable, no
answer in time) is decided through the topics instead, so routing changes the latency, never the
outcome. A routed request carries ROUTED_HEADER and is never passed on again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from prometheus_client import Counter

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
    ) -> None:
        self._route = route
        self._url = url.rstrip("/") if url else None
        self._session: ClientSession | None = None  # to other workers, opened on first use
        self._decisions = decisions
        self._routed = routed  # by outcome: answered, unreachable
        self._timeout = timeout  # for the owner's whole answer
        self._keepalive_timeout = keepalive_timeout

    async def pass_to_owner(
        self, request: web.Request, event: ReservationRequested, catalog: Catalog
    ) -> web.Response | None:
        """Served by a worker: a request whose SKU another worker owns is passed to that worker,
        which decides it in its process; None when it is ours, unknown, or unreachable (then it
        is decided through the topics, as the API process does)."""
        if self._route is None or request.headers.get(ROUTED_HEADER):
            return None
        owner = self._route(event_key(event, catalog).encode())
        if owner is None or owner.rstrip("/") == self._url:
            return None
        if self._session is None:
            self._session = ClientSession(
                timeout=ClientTimeout(total=self._timeout),
                # let go of an idle connection before the owner's server closes it under us
                connector=TCPConnector(keepalive_timeout=self._keepalive_timeout),
            )
        headers = {
            "Authorization": request.headers.get("Authorization", ""),
            "Content-Type": "application/json",
            ROUTED_HEADER: "1",
        }
        try:
            async with self._session.post(
                f"{owner.rstrip('/')}/reservations", data=await request.read(), headers=headers
            ) as answer:
                body = await answer.json()
                passed = {k: v for k, v in answer.headers.items() if k in _PASSED_HEADERS}
                status = answer.status
        except (ClientError, TimeoutError, ValueError) as error:
            log.warning("reservation API: the owner at %s did not answer (%s)", owner, error)
            self._routed.labels("unreachable").inc()
            return None
        self._routed.labels("answered").inc()
        if status == 201:
            self._decisions.offer(body)  # a DELETE sent here next knows it at once
        return web.json_response(body, status=status, headers=passed)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
