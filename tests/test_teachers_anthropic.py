"""The native Anthropic Messages provider against a local mock of that API (127.0.0.1): the body it sends (system
top-level, max_tokens, no seed, image blocks), stop reasons and usage mapped to ours, 429 and 529 waited out
after retry-after, a wrong key in one line, and `generate` / `judge` runs whose cache resumes them."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from datagen.errors import TeacherFatalError
from datagen.teachers.interface import ChatRequest
from datagen.teachers.providers.anthropic import AnthropicTeacher, messages_body, parse_message, parse_usage
from datagen.teachers.providers.retry import RetryableError
from datagen.teachers.request_shape import RequestShape
from datagen.testing.mock_anthropic_server import MockAnthropicServer
from datagen.testing.mock_server_config import MockServerConfig
from tests.synthetic import write_coco

KEY = "sk-ant-api03-SECRET-test-key"
SHOTS = [
    {"role": "system", "content": "Answer about the picture."},
    {"role": "user", "content": "A dog on grass."},
    {"role": "assistant", "content": "Question:\nWhat animal is there?\n===\nAnswer:\nA dog."},
    {"role": "user", "content": "A red bus parked by the road.\nA bus next to a curb."},
]


def request(max_tokens: int = 512, **changes) -> ChatRequest:
    return ChatRequest(**{"model": "claude-test", "messages": SHOTS, "temperature": 0.7, "max_tokens": max_tokens, "seed": 3, **changes})


def complete(server: MockAnthropicServer, req: ChatRequest | None = None, key: str = KEY, **settings):
    async def go():
        teacher = AnthropicTeacher(**{"model": "claude-test", "api_key": key, "base_url": server.base_url, **settings})
        try:
            return await teacher.complete(req or request()), teacher
        finally:
            await teacher.aclose()

    return asyncio.run(go())


# -- the body and the reply, without a server ---------------------------------------------------------------


def test_the_body_puts_the_system_prompt_on_top_always_sends_max_tokens_and_never_a_seed():
    body = messages_body(request())
    assert body["system"] == "Answer about the picture."
    assert [message["role"] for message in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 512 and body["temperature"] == 0.7 and "seed" not in body
    # The reasoning models' field name is OpenAI's: this API always takes max_tokens.
    shaped = request(shape=RequestShape(token_limit_field="max_completion_tokens", omit=("temperature",), extra_body={"top_k": 5}))
    body = messages_body(shaped)
    assert body["max_tokens"] == 512 and "max_completion_tokens" not in body and "temperature" not in body and body["top_k"] == 5


def test_image_parts_become_image_blocks():
    content = [{"type": "text", "text": "What is here?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAAA"}},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    body = messages_body(request(messages=[{"role": "user", "content": content}]))
    assert "system" not in body
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is here?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


def test_the_cache_key_is_the_canonical_requests_whichever_provider_sends_it():
    # The key is made from our request, not from the Messages body: the same request has the same key.
    assert request().key() == ChatRequest(model="claude-test", messages=SHOTS, temperature=0.7, max_tokens=512, seed=3).key()
    assert request().key() != request(seed=4).key()  # the seed is in our request (hence the key) though not sent


@pytest.mark.parametrize(("stop_reason", "ours"), [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"), ("tool_use", "tool_use")])
def test_stop_reasons_map_to_finish_reasons(stop_reason, ours):
    reply = parse_message({"type": "message", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "stop_reason": stop_reason})
    assert reply.text == "ab" and reply.finish_reason == ours


def test_usage_maps_and_adds_the_prompt_cache_back():
    assert parse_usage({"input_tokens": 20, "output_tokens": 7}).model_dump() == {"prompt_tokens": 20, "completion_tokens": 7, "cached_tokens": None}
    cached = {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 10}
    assert parse_usage(cached).model_dump() == {"prompt_tokens": 330, "completion_tokens": 7, "cached_tokens": 300}
    assert parse_usage(None).model_dump() == {"prompt_tokens": None, "completion_tokens": None, "cached_tokens": None}


def test_an_error_object_or_a_broken_reply_is_retried_not_taken_as_an_answer():
    with pytest.raises(RetryableError, match="HTTP 200 with an error body: Overloaded"):
        parse_message({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    with pytest.raises(RetryableError, match="malformed"):
        parse_message({"type": "message"})


# -- over HTTP, against the mock Messages API -----------------------------------------------------------------


def test_an_answer_with_the_headers_the_api_requires_and_usage_mapped():
    with MockAnthropicServer(MockServerConfig(api_key=KEY)) as server:
        reply, teacher = complete(server)
        [seen] = list(server.backend.requests)
    assert seen["path"] == "/v1/messages" and seen["version"] == "2023-06-01"
    assert seen["body"]["system"] == "Answer about the picture." and "seed" not in seen["body"]
    assert reply.text.startswith("Question:") and reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens and reply.usage.completion_tokens > 0
    assert teacher.info.kind == "anthropic" and teacher.stats["requests"] == 1


def test_max_tokens_and_stop_sequences_end_the_answer_as_the_api_says():
    with MockAnthropicServer() as server:
        cut, _ = complete(server, request(max_tokens=5))
        stopped, _ = complete(server, request(shape=RequestShape(extra_body={"stop_sequences": ["==="]})))
    assert cut.finish_reason == "length" and len(cut.text) <= 20
    assert stopped.finish_reason == "stop" and "===" not in stopped.text and stopped.text.startswith("Question:")


@pytest.mark.parametrize("status", [429, 529])
def test_rate_limits_and_overloads_are_waited_out_after_retry_after(status):
    with MockAnthropicServer(MockServerConfig(fail_first=3, fail_status=status, retry_after=0.2)) as server:
        started = time.monotonic()
        reply, teacher = complete(server, max_retries=1)  # more of them than --max-retries: they are waited out by time
        elapsed = time.monotonic() - started
        assert server.stats()["total"] == 4 and server.stats()[str(status)] == 3
    assert reply.text and teacher.stats["retries"] == 3 and teacher.stats[f"http_{status}"] == 3
    assert elapsed >= 0.6  # each wait honoured the 0.2 s the server asked for


def test_a_server_error_is_retried_within_max_retries():
    with MockAnthropicServer(MockServerConfig(fail_first=2, fail_status=500)) as server:
        reply, teacher = complete(server, max_retries=2)
        assert server.stats()["total"] == 3
    assert reply.text and teacher.stats["retries"] == 2


def test_a_wrong_key_is_one_fatal_line_without_the_key():
    with MockAnthropicServer(MockServerConfig(api_key="the-right-key")) as server:
        with pytest.raises(TeacherFatalError) as caught:
            complete(server)
        assert server.stats()["total"] == 1
    message = str(caught.value)
    assert "HTTP 401" in message and "ANTHROPIC_API_KEY" in message and "SECRET" not in message and "\n" not in message


def test_an_unknown_model_and_a_base_url_ending_in_v1_are_named():
    with MockAnthropicServer(MockServerConfig(accept_any_model=False, models=("claude-other",))) as server:
        with pytest.raises(TeacherFatalError, match="answered 404 for model 'claude-test'.*check --model"):
            complete(server)
        with pytest.raises(TeacherFatalError) as caught:
            complete(server, request(model="claude-other"), base_url=server.base_url + "/v1")
    assert f"the base URL takes no /v1: try --base-url {server.base_url}" in str(caught.value)


# -- the commands -------------------------------------------------------------------------------------------


def generate(cli, coco, out, *extra, env):
    captions, instances = coco
    return cli("generate", "--teacher", "anthropic", "--model", "claude-test", "--captions", captions, "--instances", instances,
               "--out", out, "--no-progress", *extra, env=env)


def test_generate_with_anthropic_writes_records_and_a_second_folder_is_answered_from_the_cache(cli, tmp_path):
    coco = write_coco(tmp_path, images=3)
    out, again = tmp_path / "out", tmp_path / "again"
    with MockAnthropicServer(MockServerConfig(api_key=KEY, p429=0.2, retry_after=0.01, seed=1)) as server:
        env = {"ANTHROPIC_API_KEY": KEY + "\n", "ANTHROPIC_BASE_URL": server.base_url}  # the key as `echo` leaves it
        first = generate(cli, coco, out, env=env)
        asked = server.stats()["total"]
        second = generate(cli, coco, again, "--cache", out / "cache.sqlite", env=env)
        assert server.stats()["total"] == asked  # every answer came from the cache: its keys are the canonical requests'
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"] == {"kind": "anthropic", "model": "claude-test", "mock": False}
    assert manifest["base_url"] == server.base_url and manifest["requests_sent"] == asked
    written = sum(counts["written"] for counts in manifest["counts"].values())
    answered = written + sum(sum(counts["rejected"].values()) for counts in manifest["counts"].values())
    assert written > 0 and json.loads((again / "manifest.json").read_text())["cache_hits"] == answered
    for task in manifest["counts"]:  # the same records, in the order their answers came
        assert sorted((out / f"{task}.jsonl").read_text().splitlines()) == sorted((again / f"{task}.jsonl").read_text().splitlines())
    everything = first.output + second.output + "".join(path.read_text() for path in out.glob("*.json*"))
    assert "SECRET" not in everything


def test_generate_without_the_key_names_the_variable(cli, tmp_path):
    result = generate(cli, write_coco(tmp_path, images=1), tmp_path / "out", env={"ANTHROPIC_API_KEY": None})
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY is not set" in result.output and "Traceback" not in result.output


def test_judge_with_anthropic(cli, tmp_path):
    from tests.test_judge import bench_files

    files = bench_files(tmp_path)
    out = tmp_path / "judged"
    with MockAnthropicServer(MockServerConfig(api_key=KEY)) as server:
        result = cli("judge", "--reference", files["reference"], "--candidate", files["candidate"], "--questions", files["questions"],
                     "--context", files["context"], "--out", out, "--judge", "anthropic", "--judge-model", "claude-judge",
                     "--base-url", server.base_url, env={"ANTHROPIC_API_KEY": KEY})
        asked = server.stats()["total"]
    assert result.exit_code == 0, result.output
    counts = json.loads((out / "summary.json").read_text())["counts"]
    # The mock's answers hold no scores: each judgement is asked and counted, none lost.
    assert counts["requested"] == 8 and counts["judged"] + counts["failed"].get("no_scores", 0) == 6 and asked >= 6
