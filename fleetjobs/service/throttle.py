"""Per-thing request rate limits for the device APIs (``RequestThrottled`` / ``ThrottlingException``).

A misbehaving device in a retry loop must not starve the fleet.  Buckets are per process: with
several instances a thing's requests spread over them, so the effective limit is per instance.
Throttling protects the machine, not the domain, so it runs on the monotonic clock, not the
injected one (a test's frozen clock must not freeze every bucket).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fleetjobs.domain.errors import Throttling


class ThingThrottle:
    def __init__(self, rate: float, burst: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # thing -> (tokens, at)
        self._sweep_at = monotonic()

    def check(self, thing: str) -> None:
        """Take one token for ``thing`` or raise Throttling (rate 0: unlimited)."""
        if self.rate <= 0:
            return
        now = self._monotonic()
        tokens, at = self._buckets.get(thing, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[thing] = (tokens, now)
            raise Throttling(f"Rate exceeded for thing {thing}: at most {self.rate:g} device requests per second.")
        self._buckets[thing] = (tokens - 1.0, now)
        if now - self._sweep_at > 60:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled: an idle fleet of a million things costs nothing."""
        full_after = self.burst / self.rate
        self._buckets = {t: v for t, v in self._buckets.items() if now - v[1] < full_after}
        self._sweep_at = now
