"""Production behaviour against the fault-injecting mock server: accounting, kill -9 and resume, cache, limits."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.files.jsonl import JsonlAppender, iter_jsonl, repair_torn_tail
from datagen.teachers.ratelimit import RateLimiter
from tests.synthetic import write_coco

class Row(BaseModel):
    value: str


TASK_FILES = ("conversation.jsonl", "detail.jsonl", "complex_reasoning.jsonl", "rejects.jsonl")


def generate_command(captions: Path, instances: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datagen.cli", "generate", "--captions", str(captions), "--instances", str(instances),
            "--out", str(out), "--model", "mock-teacher", *extra]


def environment(server: MockServer) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url, "PYTHONPATH": "."}


def sorted_lines(folder: Path) -> dict[str, list[str]]:
    return {name: sorted((folder / name).read_text().splitlines()) for name in TASK_FILES if (folder / name).exists()}


def test_a_faulty_server_still_gives_exact_accounting(tmp_path):
    captions, instances = write_coco(tmp_path, images=100)
    faults = MockServerConfig(p429=0.1, p500=0.1, drop=0.03, malformed=0.03, hang=0.02, p_length=0.05, p_refusal=0.05,
                              retry_after=0.01, seed=3)
    with MockServer(faults) as server:
        result = subprocess.run(generate_command(captions, instances, tmp_path / "out", "--concurrency", "16", "--timeout", "1",
                                                 "--max-retries", "3"), env=environment(server), capture_output=True, text=True, timeout=300)
        stats = server.stats()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    unanswered = sum(counts["skipped"].get("request_failed", 0) for counts in manifest["counts"].values())
    # An item whose every retry hit a fault (about 0.18**4 per item here, more on a loaded machine) leaves the run
    # incomplete, exit 3, with a line saying how many to rerun; anything else must complete.
    if unanswered:
        assert result.returncode == 3 and manifest["status"] == "incomplete", result.stderr
        assert f"{unanswered} items got no answer" in result.stderr
    else:
        assert result.returncode == 0 and manifest["status"] == "completed", result.stderr
    rejects = list(iter_jsonl(tmp_path / "out" / "rejects.jsonl"))
    for task, counts in manifest["counts"].items():
        assert counts["requested"] == 100
        assert counts["written"] + sum(counts["rejected"].values()) + sum(counts["skipped"].values()) == 100
        assert counts["written"] == sum(1 for _ in iter_jsonl(tmp_path / "out" / f"{task}.jsonl"))
        assert sum(counts["rejected"].values()) == sum(1 for reject in rejects if reject["task"] == task)
    reasons = {reject["reason"] for reject in rejects}
    assert {"truncated", "refusal"} <= reasons
    assert all(reject["raw"] is not None and reject["detail"] for reject in rejects)
    assert manifest["requests_sent"] == stats["total"]
    assert stats["429"] > 0 and stats["hang"] > 0 and stats["drop"] > 0


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_records(tmp_path):
    captions, instances = write_coco(tmp_path, images=150)
    settings = ("--concurrency", "8", "--seed", "5")
    with MockServer(MockServerConfig(latency_ms=40)) as server:
        reference = subprocess.run(generate_command(captions, instances, tmp_path / "reference", *settings),
                                   env=environment(server), capture_output=True, text=True, timeout=300)
        assert reference.returncode == 0, reference.stderr
        server.reset()
        rng = random.Random(11)
        kills = 0
        for _ in range(3):
            process = subprocess.Popen(generate_command(captions, instances, tmp_path / "killed", *settings),
                                       env=environment(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.9, 1.8))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        final = subprocess.run(generate_command(captions, instances, tmp_path / "killed", *settings),
                               env=environment(server), capture_output=True, text=True, timeout=300)
        requests = server.stats()["total"]
    assert final.returncode == 0, final.stderr
    assert kills >= 1
    assert sorted_lines(tmp_path / "killed") == sorted_lines(tmp_path / "reference")
    # Only answers in flight at a kill may be asked for twice.
    assert requests <= 450 + kills * 8
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert all(counts["written"] + sum(counts["rejected"].values()) == 150 for counts in manifest["counts"].values())


def test_the_cache_answers_a_rerun_that_revalidates_without_requests(tmp_path):
    captions, instances = write_coco(tmp_path, images=20)
    out = tmp_path / "out"
    with MockServer(MockServerConfig()) as server:
        first = subprocess.run(generate_command(captions, instances, out), env=environment(server), capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        assert server.stats()["total"] == 60
        before = sorted_lines(out)
        for name in TASK_FILES:  # as if the validation rules had changed and the records must be rebuilt
            (out / name).unlink()
        second = subprocess.run(generate_command(captions, instances, out), env=environment(server), capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
        assert server.stats()["total"] == 60
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["cache_hits"] == 60 and manifest["requests_sent"] == 0
        assert sorted_lines(out) == before
        third = subprocess.run(generate_command(captions, instances, out, "--no-cache", "--force", "--seed", "1"),
                               env=environment(server), capture_output=True, text=True)
        assert third.returncode == 0, third.stderr
        assert server.stats()["total"] == 120


def test_requests_do_not_depend_on_concurrency(tmp_path):
    captions, instances = write_coco(tmp_path, images=15)
    keys = []
    with MockServer(MockServerConfig(latency_ms=5)) as server:
        for concurrency in ("1", "12"):
            out = tmp_path / f"c{concurrency}"
            result = subprocess.run(generate_command(captions, instances, out, "--concurrency", concurrency),
                                    env=environment(server), capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            keys.append(sorted(json.loads(line)["meta"]["request_key"] for name in TASK_FILES[:3] for line in open(out / name)))
        assert server.stats()["unique_bodies"] == 45
    assert keys[0] == keys[1]


def test_rpm_limit_holds_within_ten_percent():
    async def starts() -> list[float]:
        limiter = RateLimiter(rpm=1200, concurrency=8)
        times: list[float] = []

        async def one() -> None:
            async with limiter.slot(100) as outcome:
                times.append(time.monotonic())
                await asyncio.sleep(0.01)
                outcome.ok = True

        await asyncio.gather(*(one() for _ in range(41)))
        return times

    times = sorted(asyncio.run(starts()))
    rate_per_minute = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert 1200 * 0.9 <= rate_per_minute <= 1200 * 1.1


def test_rpm_limit_end_to_end_at_the_server(tmp_path):
    captions, instances = write_coco(tmp_path, images=10)
    with MockServer(MockServerConfig()) as server:
        started = time.monotonic()
        result = subprocess.run(generate_command(captions, instances, tmp_path / "out", "--rpm", "900", "--concurrency", "16"),
                                env=environment(server), capture_output=True, text=True)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert server.stats()["total"] == 30
    assert elapsed >= 29 * 60 / 900 * 0.9  # 30 requests spaced at 900/min cannot go faster


def test_concurrency_halves_on_429s_and_recovers():
    async def scenario() -> list[int]:
        limiter = RateLimiter(concurrency=16)
        seen = []
        async with limiter.slot(1) as outcome:
            outcome.throttled = True
        seen.append(limiter.limit)
        limiter._last_cut = 0.0  # a second later
        async with limiter.slot(1) as outcome:
            outcome.throttled = True
        seen.append(limiter.limit)
        for _ in range(200):
            async with limiter.slot(1) as outcome:
                outcome.ok = True
        seen.append(limiter.limit)
        return seen

    assert asyncio.run(scenario()) == [8, 4, 16]


def test_a_burst_of_429s_is_one_signal():
    async def scenario() -> int:
        limiter = RateLimiter(concurrency=16)
        for _ in range(10):
            async with limiter.slot(1) as outcome:
                outcome.throttled = True
        return limiter.limit

    assert asyncio.run(scenario()) == 8


def test_a_torn_last_line_is_cut_and_appending_continues(tmp_path):
    path = tmp_path / "detail.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b": "half')
    assert repair_torn_tail(path)
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert not repair_torn_tail(path)
    path.write_bytes(b'{"torn": ')
    writer = JsonlAppender(path)
    writer.append(Row(value="x"))
    writer.close()
    assert path.read_text() == '{"value":"x"}\n'
