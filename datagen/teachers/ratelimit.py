"""Requests- and tokens-per-minute limits, and a concurrency limit that backs off on 429s and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class SlotOutcome:
    throttled: bool = False
    ok: bool = False


DEFAULT_CONCURRENCY = 16  # requests in flight at most, unless the caller says otherwise


class RateLimiter:
    """AIMD concurrency (halve on a 429, +1 after a window of successes) under rpm/tpm pacing."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.max_concurrency = max(1, concurrency)
        self.limit = self.max_concurrency
        self.in_flight = 0
        self._rpm = rpm
        self._tpm = tpm
        self._next_start = 0.0
        self._tokens: float = (tpm or 0) / 6  # a 10-second burst
        self._tokens_at = time.monotonic()
        self._successes = 0
        self._last_cut = 0.0
        self._changed = asyncio.Condition()
        self._pace = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[SlotOutcome]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        outcome = SlotOutcome()
        try:
            await self._wait_for_budget(tokens)
            yield outcome
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._adapt(outcome)
                self._changed.notify_all()

    async def _wait_for_budget(self, tokens: float) -> None:
        if self._rpm is None and self._tpm is None:
            return
        async with self._pace:  # one waiter at a time keeps starts evenly spaced, first come first served
            now = time.monotonic()
            if self._rpm:
                start = max(now, self._next_start)
                self._next_start = start + 60.0 / self._rpm
                if start > now:
                    await asyncio.sleep(start - now)
            if self._tpm:
                rate = self._tpm / 60.0
                tokens = min(tokens, self._tpm / 6)  # a request larger than the bucket would wait forever
                while True:
                    now = time.monotonic()
                    self._tokens = min(self._tpm / 6, self._tokens + (now - self._tokens_at) * rate)
                    self._tokens_at = now
                    if self._tokens >= tokens:
                        self._tokens -= tokens
                        break
                    await asyncio.sleep((tokens - self._tokens) / rate)

    def _adapt(self, outcome: SlotOutcome) -> None:
        now = time.monotonic()
        if outcome.throttled:
            self._successes = 0
            # One cut per second: a burst of 429s from requests already in flight is one signal, not many.
            if now - self._last_cut >= 1.0:
                self.limit = max(1, self.limit // 2)
                self._last_cut = now
        elif outcome.ok:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.max_concurrency:
                self.limit += 1
                self._successes = 0
