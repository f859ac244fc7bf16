"""Hostile servers, on 127.0.0.1 with scaled-down windows: dead, hanging and only-throttling servers stop a run in
one line (exit 1) and a rerun completes; a 429 burst is waited out; unanswered items end a run `incomplete`
(exit 3); oversized replies are named rejects; an HTML page is named with the flag to check; and no error path
lets out a 12-character piece of a 165-character key, wrapped, cut or base64-encoded."""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import time
from pathlib import Path

import pytest

from datagen.tasks.registry import DEFAULT_TASKS
from datagen.teachers import health
from datagen.teachers.health import ServerWatch
from datagen.teachers.teacher import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, RetryableError, _retry_delay
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.testing.mock_server_config import ECHO_FORMS
from datagen.errors import ServerUnavailable
from tests.synthetic import write_coco

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_RNG = random.Random(20)
KEY = "sk-proj-" + "".join(_RNG.choice(_ALPHABET) for _ in range(157))
assert len(KEY) == 165
SCALED = ("--give-up-after", "1", "--timeout", "0.5", "--max-retries", "2", "--concurrency", "2")


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, images=4)


def generate(cli, base_url: str, coco, out: Path, *extra: str, key: str = KEY):
    captions, instances = coco
    return cli("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher",
               "--no-progress", *extra, env={"OPENAI_API_KEY": key, "OPENAI_BASE_URL": base_url})


def error_line(result) -> str:
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def record_ids(out: Path) -> dict[str, list[str]]:
    return {task: sorted(json.loads(line)["id"] for line in (out / f"{task}.jsonl").read_text().splitlines()) for task in DEFAULT_TASKS}


def assert_exact_accounting(out: Path, images: int = 4) -> None:
    for counts in manifest(out)["counts"].values():
        assert counts["requested"] == images
        assert counts["written"] + sum(counts["rejected"].values()) + sum(counts["skipped"].values()) == images


def assert_rerun_completes(cli, coco, out: Path, images: int = 4) -> None:
    with MockServer() as healed:
        result = generate(cli, healed.base_url, coco, out)
    assert result.exit_code == 0, result.output
    assert manifest(out)["status"] == "completed"
    assert all(len(ids) == len(set(ids)) == images for ids in record_ids(out).values())  # each record exactly once


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- a server that never answers stops the run --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "hang", "refused"])
def test_a_server_dead_from_the_start_stops_at_the_first_request_and_a_rerun_completes(cli, coco, tmp_path, fault):
    """Dead before any answer (issue 17's rule): the run's first request and its retries, then exit 2 naming the URL."""
    out = tmp_path / "out"
    started = time.monotonic()
    if fault == "refused":
        result = generate(cli, f"http://127.0.0.1:{free_port()}/v1", coco, out, *SCALED)
    else:
        with MockServer(MockServerConfig(p500=1.0) if fault == "500" else MockServerConfig(hang=1.0)) as server:
            result = generate(cli, server.base_url, coco, out, *SCALED)
            assert server.stats()["total"] <= 3  # the first request and its --max-retries 2, no item beyond it
    assert time.monotonic() - started < 15
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "gave no answer to the run's first request" in line and "127.0.0.1" in line and "then rerun" in line
    assert {"500": "HTTP 50", "hang": "no answer within --timeout 0.5 s", "refused": "ClientConnectorError"}[fault] in line
    assert_exact_accounting(out)
    assert_rerun_completes(cli, coco, out)


def test_a_server_that_dies_mid_run_stops_the_run_in_one_line_and_a_rerun_completes(cli, coco, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    with MockServer(MockServerConfig(die_after=1)) as server:
        result = generate(cli, server.base_url, coco, out, *SCALED)
    assert time.monotonic() - started < 15
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert "gave no answer for" in line and "rerun the same command to resume" in line and "HTTP 50" in line
    data = manifest(out)
    assert data["status"] == "failed" and data["failure"] == line.removeprefix("error: ")
    assert_exact_accounting(out)
    assert_rerun_completes(cli, coco, out)


def test_only_429s_stop_the_run_after_the_longer_patience(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(p429=1.0, retry_after=0.05)) as server:
        result = generate(cli, server.base_url, coco, out, "--give-up-after", "0.3", "--max-retries", "1")
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert "answered only with rate limits for" in line and "HTTP 429" in line and "--rpm" in line and "rerun" in line
    assert_exact_accounting(out)


def test_the_bound_at_default_settings(monkeypatch):
    """A dead server ends a run in under 2 minutes at the defaults: the watch stops it at the first failure
    after 60 s with 5 failures in a row, and no wait between attempts is longer than 20 s; a hang needs one
    --timeout (120 s) to show itself, so it stops after the first timed-out attempt."""
    clock = [0.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: clock[0])
    dead = simulated_trip_time_with(clock, DEFAULT_TIMEOUT, fails_at_once=True)
    hang = simulated_trip_time_with(clock, DEFAULT_TIMEOUT, fails_at_once=False)
    assert 60 <= dead < 80
    assert hang == DEFAULT_TIMEOUT


def simulated_trip_time_with(clock: list[float], timeout: float, fails_at_once: bool) -> float:
    clock[0] = 0.0
    watch = ServerWatch("http://server/v1")
    random.seed(0)
    longest_wait = [max(_retry_delay(RetryableError("x"), attempt) for _ in range(500)) for attempt in range(1, DEFAULT_MAX_RETRIES + 1)]
    assert max(longest_wait) <= 20
    try:
        while True:  # items one after another, each with its retries
            for attempt in range(DEFAULT_MAX_RETRIES + 1):
                started = clock[0]
                clock[0] += 0.0 if fails_at_once else timeout
                watch.failed(started, "failure", timed_out=not fails_at_once)
                if attempt < DEFAULT_MAX_RETRIES:
                    clock[0] += longest_wait[attempt]  # about the longest this wait can draw
    except ServerUnavailable:
        return clock[0]


# -- 429 bursts are waited out; what is still unanswered ends the run incomplete ----------------------------


def test_a_burst_of_429s_is_waited_out_by_time_not_by_count(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(throttle_after=3, throttle_seconds=1.5, retry_after=0.1)) as server:
        result = generate(cli, server.base_url, coco, out, "--max-retries", "1", "--concurrency", "4")
        throttled = server.stats()["429"]
    assert throttled > 4 * 3  # far more 429s than --max-retries allows per item
    assert result.exit_code == 0, result.output
    assert manifest(out)["status"] == "completed" and all(len(ids) == 4 for ids in record_ids(out).values())


def test_items_left_unanswered_end_the_run_incomplete_with_exit_3(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(p500=0.5, seed=20)) as server:
        result = generate(cli, server.base_url, coco, out, "--max-retries", "0")
    assert result.exit_code == 3, result.output
    data = manifest(out)
    failed = sum(counts["skipped"].get("request_failed", 0) for counts in data["counts"].values())
    assert data["status"] == "incomplete" and failed > 0
    line = error_line(result)
    assert f"{failed} items got no answer" in line and "rerun the same command" in line and data["failure"] in line
    assert_rerun_completes(cli, coco, out)


# -- replies no request of this size can produce --------------------------------------------------------------


@pytest.mark.parametrize(("reply_bytes", "flags", "detail"), [
    (3_000_000, ("--max-reply-bytes", "1000000"), "a reply body over 1000000 bytes (--max-reply-bytes)"),
    (200_000, ("--max-tokens", "64"), "far more than --max-tokens 64 can produce"),
])
def test_oversized_replies_are_named_rejects(cli, coco, tmp_path, reply_bytes, flags, detail):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(reply_bytes=reply_bytes)) as server:
        result = generate(cli, server.base_url, coco, out, "--limit", "1", "--max-retries", "0", *flags)
    assert result.exit_code == 1 and "no record could be written (oversized_reply 3)" in error_line(result)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [row["reason"] for row in rejects] == ["oversized_reply"] * 3
    assert all(detail in row["detail"] and row["raw"] == "" for row in rejects)
    assert sum(path.stat().st_size for path in out.iterdir() if path.is_file()) < 200_000  # nothing of the reply kept


def test_an_html_page_with_status_200_names_what_came_and_the_flag(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"html200": 1.0})) as server:
        result = generate(cli, server.base_url, coco, out)
        sent = server.stats()["total"]
    assert result.exit_code == 2 and sent == 1  # stopped at the first request, no item used up
    line = error_line(result)
    assert "text/html page: 'Sign in - Corporate Proxy'" in line and "check --base-url" in line


# -- no piece of the key in any output ------------------------------------------------------------------------


def key_pieces(text: str, key: str = KEY) -> list[str]:
    """Every 12-character piece of `key` in `text`, as it is or inside base64 text decoded at any alignment."""
    windows = {key[start : start + 12] for start in range(len(key) - 11)}
    decoded = [text]
    for run in re.findall(r"[A-Za-z0-9+/_-]{16,}", text):
        for shift in range(4):
            chunk = run[shift:]
            chunk = chunk[: len(chunk) // 4 * 4]
            for alphabet in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    decoded.append(alphabet(chunk.replace("-", "+").replace("_", "/") if alphabet is base64.b64decode else chunk).decode("latin-1"))
                except ValueError:
                    pass
    return sorted({piece for piece in windows for candidate in decoded if piece in candidate})


def test_the_piece_finder_finds_every_leak_it_is_meant_to():
    header = f"Authorization: Bearer {KEY}\n"
    assert key_pieces(f"x {KEY[30:42]} y")
    assert key_pieces(base64.b64encode(header.encode()).decode()[40:120])
    assert not key_pieces("sk-proj- is how project keys start")


@pytest.mark.parametrize("status", [500, 400, 200])
@pytest.mark.parametrize("form", ECHO_FORMS)
def test_no_twelve_character_piece_of_the_key_anywhere(cli, coco, tmp_path, form, status):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(echo_key=form, echo_status=status)) as server:
        result = generate(cli, server.base_url, coco, out, "--give-up-after", "0.3", "--max-retries", "1", "--limit", "2")
    assert result.exit_code in (1, 2), result.output
    assert error_line(result)
    assert key_pieces(result.output) == [], result.output
    for path in out.rglob("*"):
        if path.is_file():
            assert key_pieces(path.read_bytes().decode("latin-1")) == [], path
