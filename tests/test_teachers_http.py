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
    # The run's first request with no answer after its retries stops the run (see the test below); the error names the last failure.
    with MockServer(MockServerConfig(drop=1.0)) as server:
        with pytest.raises(TeacherFatalError, match="ServerDisconnected|Connection"):
            complete(server, max_retries=2)
        assert server.stats()["drop"] == 3
    with MockServer(MockServerConfig(malformed=1.0)) as server:
        with pytest.raises(TeacherFatalError, match="malformed"):
            complete(server, max_retries=1)
        assert server.stats()["malformed"] == 2


def test_slow_answers_time_out_and_are_retried():
    with MockServer(MockServerConfig(latency_ms=3000)) as server:
        started = time.monotonic()
        with pytest.raises(TeacherFatalError, match="no answer within --timeout 0.3 s"):
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


def test_after_the_first_answer_a_request_without_answer_fails_only_its_item():
    async def go(server):
        teacher = OpenAITeacher(model="mock-teacher", api_key="k", base_url=server.base_url, max_retries=1)
        try:
            assert (await teacher.complete(request(1))).text
            server.config.fail_first, server.config.fail_status = 100, 503
            server.reset()
            with pytest.raises(RetryableError, match="HTTP 503"):
                await teacher.complete(request(2))
            with pytest.raises(RetryableError):  # the next item is asked too: the run goes on
                await teacher.complete(request(3))
        finally:
            await teacher.aclose()

    with MockServer(MockServerConfig()) as server:
        asyncio.run(go(server))
        assert server.stats()["total"] == 4


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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_stopped_before_any_item(result: subprocess.CompletedProcess, out, url: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and url in lines[0] and "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failure"] == lines[0].removeprefix("error: ")
    for counts in manifest["counts"].values():  # nothing consumed: a rerun once the server is up asks everything
        assert counts["written"] == 0 and counts["rejected"] == {} and set(counts["skipped"]) == {"not_reached"}
    assert not (out / "rejects.jsonl").read_text()
    return lines[0]


def test_a_server_that_is_down_stops_the_run_in_one_line_naming_the_url(tmp_path):
    captions, instances = write_coco(tmp_path, images=6)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out = tmp_path / "out"
    result = run_cli("generate", "--captions", str(captions), "--instances", str(instances), "--out", str(out), "--model", "m",
                     "--base-url", url, "--max-retries", "1", "--no-progress", env={"PATH": "", "OPENAI_API_KEY": "k", "PYTHONPATH": "."})
    line = assert_stopped_before_any_item(result, out, url)
    assert "Cannot connect" in line and "start the server" in line


def test_a_server_still_loading_its_model_stops_the_run_after_the_first_requests_retries(tmp_path):
    captions, instances = write_coco(tmp_path, images=6)
    out = tmp_path / "out"
    # llama.cpp's server answers 503 while it loads the model; vLLM and Ollama keep the port closed or the request waiting.
    with MockServer(MockServerConfig(fail_first=1000, fail_status=503, retry_after=0.01)) as server:
        result = run_cli("generate", "--captions", str(captions), "--instances", str(instances), "--out", str(out), "--model", "m",
                         "--base-url", server.base_url, "--max-retries", "2", "--concurrency", "8", "--no-progress",
                         env={"PATH": "", "OPENAI_API_KEY": "k", "PYTHONPATH": "."})
        assert server.stats()["total"] == 3  # the first request and its two retries, nothing else
    line = assert_stopped_before_any_item(result, out, server.base_url)
    assert "HTTP 503" in line and "loaded the model" in line
