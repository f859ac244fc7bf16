import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import AsyncOpenAI

from datagen.testing.mock_openai_server import REFUSAL_TEXT, MockServer, MockServerConfig

MESSAGES = [
    {"role": "system", "content": "You are an AI visual assistant."},
    {"role": "user", "content": "A cat on a sofa."},
    {"role": "assistant", "content": "Question:\nWhat is on the sofa?\n===\nAnswer:\nA cat."},
    {"role": "user", "content": "Two dogs run on a beach.\n\ndog: [0.1, 0.5, 0.3, 0.9]\ndog: [0.6, 0.5, 0.9, 0.9]"},
]


def client(server: MockServer, **options) -> AsyncOpenAI:
    options.setdefault("api_key", "test-key")
    return AsyncOpenAI(base_url=server.base_url, max_retries=0, **options)


async def complete(server: MockServer, **options):
    async with client(server, **options) as sdk:
        return await sdk.chat.completions.create(model="mock-teacher", messages=MESSAGES)


def post_chat(base_url: str, body: dict, headers: dict | None = None):
    """(status, headers, body bytes) of one raw chat request, errors included."""
    request = urllib.request.Request(
        base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def plain_server():
    with MockServer() as server:
        yield server


def test_sdk_gets_a_completion(plain_server):
    plain_server.reset()
    completion = asyncio.run(complete(plain_server))
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    assert "two dogs" in completion.choices[0].message.content
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert plain_server.base_url.startswith("http://127.0.0.1:") and plain_server.base_url.endswith("/v1")


def test_models_are_listed(plain_server):
    async def models():
        async with client(plain_server) as sdk:
            return [model.id async for model in sdk.models.list()]

    assert asyncio.run(models()) == ["mock-teacher"]


def test_max_tokens_truncates_with_finish_reason_length(plain_server):
    status, _, raw = post_chat(plain_server.base_url, {"model": "m", "messages": MESSAGES, "max_tokens": 3})
    choice = json.loads(raw)["choices"][0]
    assert status == 200
    assert choice["finish_reason"] == "length"
    assert 0 < len(choice["message"]["content"]) <= 12


def test_stats_count_outcomes_and_unique_bodies_and_reset(plain_server):
    plain_server.reset()
    for _ in range(3):
        post_chat(plain_server.base_url, {"model": "m", "messages": MESSAGES})
    post_chat(plain_server.base_url, {"model": "m", "messages": MESSAGES, "seed": 1})
    with urllib.request.urlopen(plain_server.base_url.removesuffix("/v1") + "/_stats") as response:
        stats = json.load(response)
    assert stats["total"] == 4 and stats["ok"] == 4 and stats["unique_bodies"] == 2
    assert stats == plain_server.stats()
    reset = urllib.request.Request(plain_server.base_url.removesuffix("/v1") + "/_reset", method="POST")
    urllib.request.urlopen(reset).close()
    assert plain_server.stats()["total"] == 0 and plain_server.stats()["unique_bodies"] == 0


def test_wrong_api_key_gets_401_without_echo():
    with MockServer(MockServerConfig(api_key="right-key")) as server:
        status, _, raw = post_chat(server.base_url, {"model": "m", "messages": MESSAGES}, {"Authorization": "Bearer sk-wrong-secret"})
        assert status == 401
        assert json.loads(raw)["error"]["code"] == "invalid_api_key"
        assert b"sk-wrong-secret" not in raw
        with pytest.raises(openai.AuthenticationError):
            asyncio.run(complete(server, api_key="also-wrong"))
        assert asyncio.run(complete(server, api_key="right-key")).choices[0].message.content
        assert server.stats()["401"] == 2 and server.stats()["ok"] == 1


def test_fail_first_fails_exactly_n_then_succeeds_with_retry_after():
    with MockServer(MockServerConfig(fail_first=3, fail_status=429, retry_after=2)) as server:
        results = [post_chat(server.base_url, {"model": "m", "messages": MESSAGES}) for _ in range(5)]
        assert [status for status, _, _ in results] == [429, 429, 429, 200, 200]
        assert all(headers["Retry-After"] == "2" for status, headers, _ in results if status == 429)
        assert json.loads(results[0][2])["error"]["code"] == "rate_limit_exceeded"
        assert server.stats()["429"] == 3 and server.stats()["ok"] == 2


def test_fail_first_with_server_errors():
    with MockServer(MockServerConfig(fail_first=2, fail_status=503)) as server:
        statuses = [post_chat(server.base_url, {"model": "m", "messages": MESSAGES})[0] for _ in range(3)]
        assert statuses == [503, 503, 200]
        assert server.stats()["500"] == 2


def test_hang_times_out_the_client_and_shutdown_is_prompt():
    server = MockServer(MockServerConfig(hang=1.0)).start()
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(complete(server, timeout=0.3))
    assert server.stats()["hang"] == 1
    # A hung request whose client is still waiting must not hold up shutdown.
    with socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1].split("/")[0]))) as raw:
        body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        time.sleep(0.1)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0


def test_drop_closes_the_connection():
    with MockServer(MockServerConfig(drop=1.0)) as server:
        with pytest.raises(openai.APIConnectionError):
            asyncio.run(complete(server))
        assert server.stats()["drop"] >= 1


def test_malformed_body_is_not_json():
    with MockServer(MockServerConfig(malformed=1.0)) as server:
        status, _, raw = post_chat(server.base_url, {"model": "m", "messages": MESSAGES})
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        assert server.stats()["malformed"] == 1


def test_length_and_refusal_faults():
    with MockServer(MockServerConfig(p_length=1.0)) as server:
        cut = asyncio.run(complete(server))
        assert cut.choices[0].finish_reason == "length"
    with MockServer() as server:
        full = asyncio.run(complete(server))
    assert len(cut.choices[0].message.content) < len(full.choices[0].message.content)
    with MockServer(MockServerConfig(p_refusal=1.0)) as server:
        refusal = asyncio.run(complete(server))
        assert refusal.choices[0].message.content == REFUSAL_TEXT
        assert server.stats()["refusal"] == 1


def test_probabilistic_faults_follow_the_seed():
    def outcomes(seed):
        with MockServer(MockServerConfig(p429=0.3, p500=0.3, seed=seed)) as server:
            return [post_chat(server.base_url, {"model": "m", "messages": MESSAGES})[0] for _ in range(20)]

    first = outcomes(5)
    assert first == outcomes(5)
    assert {200, 429} <= set(first)


def test_config_rejects_impossible_rates():
    with pytest.raises(ValueError):
        MockServerConfig(p429=0.7, p500=0.7)


def test_batch_round_trip_through_the_sdk():
    lines = [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "mock-teacher", "messages": MESSAGES, "seed": i}}
        for i in range(5)
    ]
    payload = "".join(json.dumps(line) + "\n" for line in lines).encode()

    async def run_batch(server):
        async with client(server) as sdk:
            uploaded = await sdk.files.create(file=("requests.jsonl", payload), purpose="batch")
            assert uploaded.bytes == len(payload) and uploaded.purpose == "batch"
            assert (await sdk.files.retrieve(uploaded.id)).filename == "requests.jsonl"
            batch = await sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
            seen = {batch.status}
            while batch.status not in ("completed", "failed", "cancelled"):
                await asyncio.sleep(0.02)
                batch = await sdk.batches.retrieve(batch.id)
                seen.add(batch.status)
            output = (await sdk.files.content(batch.output_file_id)).content
            return batch, seen, output

    with MockServer(MockServerConfig(batch_delay_s=0.05)) as server:
        batch, seen, output = asyncio.run(run_batch(server))
    assert batch.status == "completed" and "in_progress" in seen
    assert batch.request_counts.total == 5 and batch.request_counts.completed == 5 and batch.error_file_id is None
    results = [json.loads(line) for line in output.decode().splitlines()]
    assert sorted(r["custom_id"] for r in results) == [line["custom_id"] for line in lines]
    for result in results:
        assert result["error"] is None and result["response"]["status_code"] == 200
        assert result["response"]["body"]["choices"][0]["message"]["content"]


def test_batch_server_errors_go_to_the_error_file():
    payload = json.dumps({"custom_id": "only", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": MESSAGES}}).encode()

    async def run_batch(server):
        async with client(server) as sdk:
            uploaded = await sdk.files.create(file=("requests.jsonl", payload), purpose="batch")
            batch = await sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
            while batch.status != "completed":
                await asyncio.sleep(0.01)
                batch = await sdk.batches.retrieve(batch.id)
            return batch, (await sdk.files.content(batch.error_file_id)).content

    with MockServer(MockServerConfig(p500=1.0, batch_delay_s=0.0)) as server:
        batch, errors = asyncio.run(run_batch(server))
    assert batch.output_file_id is None and batch.request_counts.failed == 1
    line = json.loads(errors)
    assert line["custom_id"] == "only" and line["response"]["status_code"] == 500


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serves_until_terminated():
    port = free_port()
    command = [sys.executable, "-m", "datagen.cli", "mock-server", "--port", str(port), "--fail-first", "1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout.readline().strip() == f"mock OpenAI-compatible server on http://127.0.0.1:{port}/v1"
            base_url = f"http://127.0.0.1:{port}/v1"
            assert [post_chat(base_url, {"model": "m", "messages": MESSAGES})[0] for _ in range(2)] == [429, 200]
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


def test_unlisted_model_is_refused_only_when_asked():
    with MockServer(MockServerConfig(models=("teacher-a",), accept_any_model=False)) as server:
        assert post_chat(server.base_url, {"model": "teacher-b", "messages": MESSAGES})[0] == 404
        assert post_chat(server.base_url, {"model": "teacher-a", "messages": MESSAGES})[0] == 200


def test_batch_can_be_cancelled():
    payload = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": MESSAGES}}).encode()

    async def cancel(server):
        async with client(server) as sdk:
            uploaded = await sdk.files.create(file=("requests.jsonl", payload), purpose="batch")
            batch = await sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
            assert (await sdk.batches.cancel(batch.id)).status == "cancelling"
            while batch.status != "cancelled":
                await asyncio.sleep(0.02)
                batch = await sdk.batches.retrieve(batch.id)
            return batch

    with MockServer(MockServerConfig(batch_delay_s=0.1)) as server:
        assert asyncio.run(cancel(server)).cancelled_at is not None
