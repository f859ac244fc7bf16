"""How a failed attempt is retried, for every provider: which failures are retried, how long to wait (the server's
Retry-After, else our backoff), and when to stop (the attempt count; 429s are waited out by time instead).

The loop is tenacity's. It takes over only from a request's first failure: nearly every request is answered at
once, and tenacity's set-up on every call cost about 10% of a record's CPU when each request went through it.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState

from datagen.formats.records import RejectReason

T = TypeVar("T")


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None, throttled: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled  # a 429 (or a provider's other "slow down"): waited out by time, not counted against --max-retries
        self.status = status  # the HTTP status, None for a dropped connection or a timeout


class RequestRefused(Exception):
    """The server refused this one request (too long, too large...) after it had accepted the run's first one,
    or answered it with something no request of this size can produce; `reason` is the reject reason."""

    def __init__(self, message: str, reason: RejectReason = "request_refused", status: int | None = None) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason
        self.status = status


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # neither seconds nor a date: our own backoff decides
        return max(0.0, when.timestamp() - time.time())


def retry_delay(error: RetryableError, attempt: int) -> float:
    """How long to wait before another try of a request that failed `attempt` times (of this kind) so far."""
    if error.retry_after is not None:
        # The server said when; waiting less earns another 429, waiting much more wastes the window. A 5xx's
        # Retry-After is capped like the backoff, so a dead server is noticed within the watch's window.
        return min(error.retry_after, 120.0 if error.throttled else 20.0) + random.uniform(0, 0.25)
    # Full-jitter exponential backoff (1, 2, 4... s at most), the first retry almost at once.
    return random.uniform(0, 0.5 if attempt <= 1 else min(20.0, 2.0 ** (attempt - 2)))


class RetryBudget:
    """One request's retries, as tenacity's retry, wait and stop: failures (5xx, timeouts, dropped connections,
    broken bodies) count against `max_retries`; throttles are counted apart, each kind backing off on its own count.

    tenacity asks `retry` first after each failed attempt, then `wait`, then `stop`: only `retry` counts."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.failures = 0
        self.throttles = 0

    @staticmethod
    def _error(state: RetryCallState) -> BaseException | None:
        return state.outcome.exception() if state.outcome is not None and state.outcome.failed else None

    def retry(self, state: RetryCallState) -> bool:
        error = self._error(state)
        if not isinstance(error, RetryableError):
            return False  # an answer, a refusal, a fatal error, the watch's stop: tenacity hands it back as it is
        if error.throttled:
            self.throttles += 1
        else:
            self.failures += 1
        return True

    def wait(self, state: RetryCallState) -> float:
        error = self._error(state)
        assert isinstance(error, RetryableError)  # wait is asked only after retry said yes
        return retry_delay(error, self.throttles if error.throttled else self.failures)

    def stop(self, state: RetryCallState) -> bool:
        # --max-retries 0 means one attempt whatever came back; otherwise only failures spend the budget.
        return self.max_retries == 0 or self.failures > self.max_retries


async def retried(send: Callable[[], Awaitable[T]], first: RetryableError, max_retries: int, before_retry: Callable[[], None]) -> T:
    """`send` retried after its first attempt failed with `first`. That failure is handed to tenacity as its first
    attempt, so the counts and waits start from it; `before_retry` runs after each wait, before the next attempt
    (the dead-server watch's check: another request may have found the server dead meanwhile)."""
    seen: list[RetryableError] = [first]

    async def attempt() -> T:
        if seen:
            raise seen.pop()
        before_retry()
        return await send()

    budget = RetryBudget(max_retries)
    retrying = AsyncRetrying(retry=budget.retry, wait=budget.wait, stop=budget.stop, reraise=True)
    return await retrying(attempt)
