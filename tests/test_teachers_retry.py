"""The retry loop through tenacity, without a server: each kind of failure backs off on its own count (the first
wait is the first, never doubled), only failures spend --max-retries, 429s are waited out, --max-retries 0 is one
attempt, the watch's check runs before every retry and its stop ends the loop at once."""

from __future__ import annotations

import asyncio

import pytest

from datagen.errors import ServerUnavailable
from datagen.teachers.providers import retry
from datagen.teachers.providers.retry import RequestRefused, RetryableError, parse_retry_after, retried

FAIL = RetryableError("HTTP 500", status=500)
THROTTLE = RetryableError("HTTP 429", throttled=True, status=429)


def run(outcomes: list[object], max_retries: int, monkeypatch, check=lambda: None) -> tuple[object, list[tuple[str, int]], int]:
    """`retried` over attempts that raise or return `outcomes` in turn (the first already failed), with every wait
    slept recorded as (kind, attempt) and none taken; the result (or the error raised) and the number of retries."""
    # tenacity works a wait out before it asks whether to stop: only the waits slept count, each named by its number.
    computed: list[tuple[str, int]] = []
    slept: list[float] = []
    sleep = asyncio.sleep

    def delay(error: RetryableError, attempt: int) -> float:
        computed.append(("throttle" if error.throttled else "failure", attempt))
        return float(len(computed))

    def record(seconds: float):
        slept.append(seconds)
        return sleep(0)

    monkeypatch.setattr(retry, "retry_delay", delay)
    monkeypatch.setattr(asyncio, "sleep", record)
    pending = list(outcomes[1:])
    retries = [0]

    async def send():
        outcome = pending.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def before_retry():
        retries[0] += 1
        check()

    first = outcomes[0]
    assert isinstance(first, RetryableError)
    try:
        result: object = asyncio.run(retried(send, first, max_retries, before_retry))
    except Exception as error:  # the error is the result under test
        result = error
    return result, [computed[int(seconds) - 1] for seconds in slept], retries[0]


def test_each_kind_backs_off_on_its_own_count_and_the_first_wait_is_the_first(monkeypatch):
    result, waits, retries = run([FAIL, THROTTLE, FAIL, THROTTLE, THROTTLE, "answer"], max_retries=6, monkeypatch=monkeypatch)
    assert result == "answer" and retries == 5
    assert waits == [("failure", 1), ("throttle", 1), ("failure", 2), ("throttle", 2), ("throttle", 3)]


def test_only_failures_spend_max_retries(monkeypatch):
    result, waits, retries = run([FAIL, FAIL, FAIL], max_retries=2, monkeypatch=monkeypatch)
    assert result is FAIL and retries == 2 and len(waits) == 2  # the third failure is the last: no wait after it
    result, _, retries = run([THROTTLE] * 12 + ["answer"], max_retries=2, monkeypatch=monkeypatch)
    assert result == "answer" and retries == 12


def test_max_retries_0_is_one_attempt_whatever_came_back(monkeypatch):
    for first in (FAIL, THROTTLE):
        result, waits, retries = run([first, "never asked"], max_retries=0, monkeypatch=monkeypatch)
        assert result is first and waits == [] and retries == 0


def test_what_is_not_retryable_ends_the_loop_as_it_is(monkeypatch):
    refused = RequestRefused("HTTP 400: too long")
    result, _, retries = run([FAIL, refused, "never asked"], max_retries=6, monkeypatch=monkeypatch)
    assert result is refused and retries == 1


def test_the_watch_is_checked_before_every_retry_and_its_stop_ends_the_loop(monkeypatch):
    down = ServerUnavailable("the teacher at http://x/v1 gave no answer for 60 s")
    calls = [0]

    def check():
        calls[0] += 1
        if calls[0] == 2:
            raise down

    result, _, retries = run([FAIL, FAIL, "never asked"], max_retries=6, monkeypatch=monkeypatch, check=check)
    assert result is down and retries == 2


def test_the_real_waits_honour_retry_after_and_cap_a_5xx_one():
    assert 0.3 <= retry.retry_delay(RetryableError("x", retry_after=0.3, throttled=True), 1) <= 0.55
    assert 20.0 <= retry.retry_delay(RetryableError("x", retry_after=600), 1) <= 20.25  # a dead server is noticed in the watch's window
    assert 120.0 <= retry.retry_delay(RetryableError("x", retry_after=600, throttled=True), 1) <= 120.25
    assert all(retry.retry_delay(FAIL, 1) <= 0.5 for _ in range(200))  # the first retry almost at once


@pytest.mark.parametrize(("headers", "seconds"), [({"retry-after-ms": "250"}, 0.25), ({"retry-after": "3"}, 3.0), ({"retry-after": "soon"}, None), ({}, None)])
def test_retry_after_headers(headers, seconds):
    assert parse_retry_after(headers) == seconds
