"""Client-side rate limits and retry delays: a sink waits here instead of being refused."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """`rate` calls per second, bursts of `burst`: the model of SP-API usage plans and webhooks.

    A caller that waits for a token before a request and takes it when the answer is back never
    exceeds the server's bucket of the same rate, however the network delays requests: the server
    counted the request earlier than that, and a token taken earlier leaves a bucket fuller later.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Clock = time.monotonic,
        tokens: float | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst if tokens is None else tokens  # full unless told otherwise
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def delay(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` are available (0 when they are now)."""
        return max(0.0, (tokens - self._refill()) / self.rate)

    def take(self, tokens: float = 1.0) -> None:
        self._refill()
        self._tokens -= tokens

    def drain(self) -> None:
        """The channel said we were too fast: assume the bucket is empty."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

    async def wait(self, tokens: float = 1.0) -> None:
        """Until `tokens` are available, without taking them."""
        while (wait := self.delay(tokens)) > 0:
            await asyncio.sleep(wait)

    async def acquire(self, tokens: float = 1.0) -> None:
        await self.wait(tokens)
        self.take(tokens)


class CostBucket:
    """Shopify's leaky bucket, driven by the `throttleStatus` each GraphQL response reports.

    Until the first response the bucket is assumed full; after each response it is reset to what
    the shop said, so drift between our estimate and the shop's accounting never accumulates.
    """

    def __init__(
        self, maximum: float = 1000.0, restore_rate: float = 50.0, clock: Clock = time.monotonic
    ) -> None:
        self.maximum = maximum
        self.restore_rate = restore_rate
        self._clock = clock
        self._available = maximum
        self._at = clock()

    def available(self) -> float:
        now = self._clock()
        return min(self.maximum, self._available + (now - self._at) * self.restore_rate)

    def delay(self, cost: float) -> float:
        return max(0.0, (min(cost, self.maximum) - self.available()) / self.restore_rate)

    def spend(self, cost: float) -> None:
        self._available = self.available() - cost
        self._at = self._clock()

    def observe(self, maximum: float, currently_available: float, restore_rate: float) -> None:
        self.maximum = maximum
        self.restore_rate = restore_rate
        self._available = currently_available
        self._at = self._clock()

    async def acquire(self, cost: float) -> None:
        while (wait := self.delay(cost)) > 0:
            await asyncio.sleep(wait)
        self.spend(cost)


class Backoff:
    """Exponential backoff with jitter; a channel's own Retry-After wins."""

    def __init__(
        self,
        base: float = 0.2,
        cap: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Delay after the `failures`-th consecutive failure (1 = the first).

        A channel that says when to come back (Retry-After, a throttle status) is taken at its
        word plus up to 10% jitter; otherwise the delay doubles per failure up to `cap`.
        """
        if retry_after is not None:
            return min(self.cap, retry_after) * (1.0 + 0.1 * self._rng())
        ceiling = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return ceiling * (0.5 + 0.5 * self._rng())  # half fixed, half jitter: no herd, no zero
