"""Telling a dead, hanging or only-throttling server from one that merely struggles, so a run stops instead of
retrying item after item for hours.

Every attempt ends one of three ways: an answer (a completion, or any 4xx the server chose to send), a rate
limit (429: the server is alive and asks us to slow down, which the limiter and Retry-After handle), or a
failure (5xx, timeout, dropped connection, a body that is not a completion). The watch stops the run when

- failures alone have come back for `give_up_after` seconds, at least MIN_FAILURES of them, or one attempt
  that waited its whole --timeout (a hang cannot show more than one failure per timeout); or
- nothing but 429s (and failures) have come back for THROTTLE_PATIENCE x `give_up_after` seconds.

A window is counted from the start of its first failed attempt, and never from before the last answer: a slow
request that fails while others are answered is not a dead server.
"""

from __future__ import annotations

import time

from datagen.errors import ServerUnavailable

DEFAULT_GIVE_UP_AFTER = 60.0  # seconds without an answer before a run stops (--give-up-after)
MIN_FAILURES = 5  # a paced run (--rpm 1) makes few attempts a minute: one or two failures are not a dead server
THROTTLE_PATIENCE = 5  # a burst of 429s is waited out this many windows long before the run stops


class ServerWatch:
    def __init__(self, where: str, give_up_after: float = DEFAULT_GIVE_UP_AFTER) -> None:
        self.where = where
        self.give_up_after = give_up_after
        self._last_answer = time.monotonic()
        self._failing_since: float | None = None
        self._failures = 0
        self._timed_out = False
        self._throttled_since: float | None = None
        self.down: ServerUnavailable | None = None  # once set, every later request raises it at once

    def answered(self) -> None:
        self._last_answer = time.monotonic()
        self._failing_since = self._throttled_since = None
        self._failures = 0
        self._timed_out = False

    def failed(self, started: float, message: str, timed_out: bool = False) -> None:
        """Count a failed attempt begun at `started` (time.monotonic()); raise ServerUnavailable when the window is full."""
        begin = max(started, self._last_answer)
        self._failing_since = begin if self._failing_since is None else min(self._failing_since, begin)
        self._failures += 1
        self._timed_out = self._timed_out or timed_out
        silent = time.monotonic() - self._failing_since
        if silent >= self.give_up_after and (self._failures >= MIN_FAILURES or self._timed_out):
            self._stop(f"gave no answer for {silent:.0f} s ({self._failures} attempts in a row failed; the last: {message})", silent=True)

    def throttled(self, started: float, message: str) -> None:
        begin = max(started, self._last_answer)
        self._throttled_since = begin if self._throttled_since is None else min(self._throttled_since, begin)
        silent = time.monotonic() - self._throttled_since
        if silent >= THROTTLE_PATIENCE * self.give_up_after:
            self._stop(
                f"answered only with rate limits for {silent:.0f} s (the last: {message}); lower --concurrency or set --rpm/--tpm",
                silent=False,
            )

    def check(self) -> None:
        if self.down is not None:
            raise self.down

    def _stop(self, why: str, silent: bool) -> None:
        self.down = ServerUnavailable(f"the teacher at {self.where} {why}; the run stopped, rerun the same command to resume", silent)
        raise self.down
