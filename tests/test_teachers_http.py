"""The openai teacher over real HTTP against the local mock server: retries, Retry-After, timeouts, a bad key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from datagen.errors import TeacherFatalError
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.teachers.teacher import ChatRequest, OpenAITeacher, RetryableError
from tests.synthetic import write_coco

SHOTS = [
    {"role": "system", "content": "Answer about the picture."},
    {"role": "user", "content": "A dog on grass."},
    {"role": "assistant", "content": "Question:\nWhat animal is there?\n===\nAnswer:\nA dog."},
    {"role": "user", "content": "A red bus parked by the road.\nA bus next to a curb."},
]


def request(seed: int = 1) -> ChatRequest:
    return ChatRequest(model="mock-teacher", messages=SHOTS, temperature=0.7, max_tokens=512, seed=seed)


def complete(server: MockServer, key: str = "k", **settings) -> tuple[object, OpenAITeacher]:
    async def go():
        teacher = OpenAITeacher(model="mock-teacher", api_key=key, base_url=server.base_url, **settings)
        try:
            return await teacher.complete(request()), teacher
        finally:
            await teacher.aclose()

    return asyncio.run(go())


def test_429_is_retried_after_the_servers_retry_after():
    with MockServer(MockServerConfig(fail_first=2, fail_status=429, retry_after=0.3)) as server:
        started = time.monotonic()
        reply, teacher = complete(server)
        elapsed = time.monotonic() - started
        assert server.stats()["total"] == 3
    assert reply.text.startswith("Question:")
    assert teacher.stats["retries"] == 2 and teacher.stats["http_429"] == 2
    assert elapsed >= 0.6  # both waits honoured the 0.3 s the server asked for


def test_5xx_dropped_and_malformed_answers_are_retried_with_exact_counts():
    with MockServer(MockServerConfig(fail_first=3, fail_status=500)) as server:
        _, teacher = complete(server)
        assert server.stats()["total"] == 4
    assert teacher.stats["retries"] == 3 and teacher.stats["requests"] == 4
    with MockServer(MockServerConfig(drop=1.0)) as server:
        with pytest.raises(RetryableError):
            complete(server, max_retries=2)
        assert server.stats()["drop"] == 3
    with MockServer(MockServerConfig(malformed=1.0)) as server:
        with pytest.raises(RetryableError, match="malformed"):
            complete(server, max_retries=1)
        assert server.stats()["malformed"] == 2


def test_slow_answers_time_out_and_are_retried():
    with MockServer(MockServerConfig(latency_ms=3000)) as server:
        started = time.monotonic()
        with pytest.raises(RetryableError, match="no answer within --timeout 0.3 s"):
            complete(server, timeout=0.3, max_retries=2)
        assert time.monotonic() - started < 3.0
        assert server.stats()["total"] == 3


def test_bad_key_is_fatal_names_the_fix_and_never_the_key():
    with MockServer(MockServerConfig(api_key="the-right-key")) as server:
        with pytest.raises(TeacherFatalError) as caught:
            complete(server, key="sk-wrong-SECRET-42")
        assert server.stats()["401"] == 1
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "SECRET" not in str(caught.value)


def test_unknown_model_is_fatal():
    with MockServer(MockServerConfig(accept_any_model=False, models=("other",))) as server:
        with pytest.raises(TeacherFatalError, match="--model"):
            complete(server)
        assert server.stats()["total"] == 1


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datagen.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_generate_over_http_writes_records(tmp_path, monkeypatch):
    captions, instances = write_coco(tmp_path, images=12)
    with MockServer(MockServerConfig(p429=0.2, p500=0.1, retry_after=0.01)) as server:
        env = {"PATH": "", "OPENAI_API_KEY": "sk-test-SECRET-7", "OPENAI_BASE_URL": server.base_url, "PYTHONPATH": "."}
        result = run_cli("generate", "--captions", str(captions), "--instances", str(instances), "--out", str(tmp_path / "out"),
                         "--model", "mock-teacher", "--concurrency", "4", env=env)
        stats = server.stats()
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["teacher"] == {"kind": "openai", "model": "mock-teacher", "mock": False}
    assert manifest["requests_sent"] == stats["total"]
    for counts in manifest["counts"].values():
        assert counts["requested"] == 12
        assert counts["written"] + sum(counts["rejected"].values()) + sum(counts["skipped"].values()) == 12
    written = sum(1 for task in ("conversation", "detail", "complex_reasoning") for _ in open(tmp_path / "out" / f"{task}.jsonl"))
    assert written == sum(c["written"] for c in manifest["counts"].values()) > 0
    everything = result.stderr + result.stdout + "".join(p.read_text() for p in (tmp_path / "out").glob("*.json*"))
    assert "SECRET" not in everything


def test_generate_stops_at_once_on_a_bad_key(tmp_path):
    captions, instances = write_coco(tmp_path, images=40)
    with MockServer(MockServerConfig(api_key="right")) as server:
        env = {"PATH": "", "OPENAI_API_KEY": "sk-wrong-SECRET", "PYTHONPATH": "."}
        result = run_cli("generate", "--captions", str(captions), "--instances", str(instances), "--out", str(tmp_path / "out"),
                         "--model", "m", "--base-url", server.base_url, "--concurrency", "32", env=env)
        requests = server.stats()["total"]
    assert result.returncode == 2
    assert requests == 1  # the probe: a wrong key costs one request, not one per concurrency slot
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0] and "Traceback" not in result.stderr
    assert "SECRET" not in result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
