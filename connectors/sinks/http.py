"""The HTTP edge shared by every sink: one session per sink, every call counted and timed, and
transport failures turned into ChannelUnavailable so the engine retries them with backoff."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from connectors.sinks.base import ChannelUnavailable, InvalidSinkConfig
from connectors.sinks.metrics import SinkMetrics
from streams.core.catalog import Channel

C = TypeVar("C", bound=BaseModel)


def connector_config(channel: Channel, model: type[C]) -> C:
    """The connector settings riding on a catalog channel (its extra fields), validated."""
    try:
        return model.model_validate(channel.model_extra or {})
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise InvalidSinkConfig(
            f"channel {channel.id} (type {channel.type}): invalid connector settings: {details}"
        ) from None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", "replace")


class HttpClient:
    """A lazily opened aiohttp session with metrics; one per sink."""

    def __init__(self, channel_id: str, metrics: SinkMetrics, timeout: float = 15.0) -> None:
        self.channel_id = channel_id
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._metrics.calls.labels(self.channel_id).inc()
        started = time.monotonic()
        try:
            async with self._session.request(method, url, data=body, headers=headers) as response:
                data = await response.read()
                return Reply(response.status, dict(response.headers), data)
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ChannelUnavailable(
                f"{method} {url}: {type(error).__name__}: {error or 'timed out'}"
            ) from None
        finally:
            self._metrics.call_seconds.labels(self.channel_id).observe(time.monotonic() - started)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def transient(reply: Reply, what: str, default_wait: float | None = None) -> ChannelUnavailable:
    """The error for an answer that says "later": 408, 429, 5xx, auth that may be fixed."""
    wait = retry_after(reply.headers)
    return ChannelUnavailable(
        f"{what}: HTTP {reply.status} {reply.text(200)}", wait if wait is not None else default_wait
    )
