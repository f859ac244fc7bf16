"""Real-server behaviour against the mock server's quirks: reply shapes, per-item refusals, exit codes,
request shaping, Azure, dry runs and the requests-out / results-in hand-off."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.tasks.token_estimate import estimate_tokens
from datagen.tasks.registry import DEFAULT_TASKS
from datagen.teachers.teacher import ChatRequest, OpenAITeacher, RequestRefused, RetryableError, parse_completion
from tests.synthetic import write_coco

KEY = "sk-quirk-test-SECRET"
OUTPUTS = (*(f"{task}.jsonl" for task in DEFAULT_TASKS), "rejects.jsonl")


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, images=8)


def generate(cli, server, coco, out, *extra, env=None):
    captions, instances = coco
    environment = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url, **(env or {})}
    return cli("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher",
               "--no-progress", "--max-retries", "1", *extra, env=environment)


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def outputs(out: Path) -> dict[str, list[str]]:
    return {name: sorted((out / name).read_text().splitlines()) for name in OUTPUTS if (out / name).exists()}


def records(out: Path) -> list[dict]:
    return [row for task in DEFAULT_TASKS for row in read(out / f"{task}.jsonl")]


def seen_requests(server: MockServer) -> list[dict]:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/_requests", timeout=5) as response:
        return json.loads(response.read())


# -- parsing replies ------------------------------------------------------------------------------


def completion(message: dict, finish_reason="stop", usage=None) -> dict:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}]}
    if usage is not None:
        body["usage"] = usage
    return body


def test_content_parts_are_joined_and_other_parts_ignored():
    parts = [{"type": "reasoning", "text": "thinking aloud"}, {"type": "text", "text": "A red bus "}, {"type": "text", "text": "waits."}]
    reply = parse_completion(completion({"content": parts}))
    assert reply.text == "A red bus waits." and reply.refusal is None


def test_structured_refusal_keeps_its_text():
    reply = parse_completion(completion({"content": None, "refusal": "I can't describe that."}))
    assert reply.text == "" and reply.refusal == "I can't describe that."


def test_error_body_on_200_is_transient_with_the_message_on_one_line():
    with pytest.raises(RetryableError) as caught:
        parse_completion({"error": {"message": "Overloaded.\nTry later.", "type": "server_error"}})
    assert "Overloaded. Try later." in str(caught.value) and "\n" not in str(caught.value)


def test_usage_unknown_stays_unknown_and_cached_tokens_are_read():
    assert parse_completion(completion({"content": "x"})).usage.model_dump() == {"prompt_tokens": None, "completion_tokens": None, "cached_tokens": None}
    usage = {"prompt_tokens": 900, "completion_tokens": 40, "prompt_tokens_details": {"cached_tokens": 768}}
    assert parse_completion(completion({"content": "x"}, usage=usage)).usage.model_dump() == {"prompt_tokens": 900, "completion_tokens": 40, "cached_tokens": 768}


def test_default_request_shape_keeps_the_cache_keys_of_before():
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], temperature=0.7, max_tokens=64, seed=3)
    before = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7, "max_tokens": 64, "seed": 3}
    encoded = json.dumps(before, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert request.key() == hashlib.sha256(encoded).hexdigest()


def test_bodies_are_canonical_json_whatever_their_messages_hold():
    """encoded() puts a body together from its messages' cached encodings: byte for byte what one json.dumps of the
    whole body with sorted keys gives, for text, image parts, extra fields, unicode and reused pack strings."""
    from datagen.run.items import SamplingSettings, build_request
    from datagen.source.coco import CocoSource
    from datagen.tasks.prompts import BUNDLED_PROMPTS
    from datagen.tasks.registry import TASKS, task_spec
    from datagen.teachers.request_shape import RequestShape
    from tests.conftest import CAPTIONS, INSTANCES

    source = CocoSource(CAPTIONS, INSTANCES)
    sampling = SamplingSettings(model="m", temperature=0.2, max_tokens=99, seed=1, contexts={task: TASKS[task].default_context for task in DEFAULT_TASKS})
    requests = [
        build_request(image, task, task_spec(task).load_pack(BUNDLED_PROMPTS), sampling)
        for image in list(source.images())[:3]
        for task in DEFAULT_TASKS
    ]
    shape = RequestShape(token_limit_field="max_completion_tokens", omit=("seed",), extra_body={"top_k": 5, "b": {"z": 1, "a": [2, "é"]}})
    odd_messages = [
        {"role": "system", "content": "Größe, 東京 and \u2028 \"quotes\" \\ </s>"},
        {"role": "user", "name": "x", "content": "a message with a third key"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"content": "keys in another order", "role": "assistant"},
    ]
    requests += [ChatRequest(model="m", messages=odd_messages, temperature=0.0, max_tokens=8, seed=0, shape=shape), *(r.model_copy(update={"shape": shape}) for r in requests[:2])]
    for request in requests:
        assert request.encoded() == json.dumps(request.body(), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


# -- quirks through whole runs --------------------------------------------------------------------


def test_content_parts_give_the_records_of_plain_answers(cli, coco, tmp_path):
    with MockServer() as server:
        assert generate(cli, server, coco, tmp_path / "plain").exit_code == 0
    with MockServer(MockServerConfig(quirks={"parts": 1.0})) as server:
        result = generate(cli, server, coco, tmp_path / "parts")
        assert server.stats()["parts"] == 24
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "parts") == outputs(tmp_path / "plain")


def test_structured_refusals_are_rejects_with_their_text(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"refusal": 0.5})) as server:
        result = generate(cli, server, coco, out)
        refused = server.stats()["refusal"]
    assert result.exit_code == 0, result.output
    rejects = [row for row in read(out / "rejects.jsonl") if row["reason"] == "refusal"]
    assert 0 < len(rejects) == refused < 24
    assert all(row["raw"] == "I'm sorry, I can't help with that request." for row in rejects)


def test_error_bodies_on_200_stop_the_run_at_its_first_request_with_the_message_on_one_line(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"error200": 1.0})) as server:
        result = generate(cli, server, coco, out)
        assert server.stats()["error200"] == 2  # the run's first request and its one retry; no other item is asked
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert server.base_url in line and "gave no answer to the run's first request" in line
    assert "The engine is currently overloaded. Please try again later." in line
    data = manifest(out)
    assert data["status"] == "failed" and data["failure"] == line.removeprefix("error: ")
    assert data["last_error"] == "HTTP 200 with an error body: The engine is currently overloaded. Please try again later."


def test_transient_error_bodies_are_retried_and_the_last_message_kept(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"error200": 0.3}, seed=2)) as server:
        result = generate(cli, server, coco, out, "--max-retries", "6")
        errors = server.stats()["error200"]
    assert result.exit_code == 0, result.output
    data = manifest(out)
    assert errors > 0 and data["status"] == "completed" and "overloaded" in data["last_error"]
    assert sum(counts["written"] + sum(counts["rejected"].values()) for counts in data["counts"].values()) == 24


def test_non_stop_finish_reasons_are_rejects_and_kept_in_meta(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"content_filter": 0.5})) as server:
        result = generate(cli, server, coco, out)
        filtered = server.stats()["content_filter"]
    assert result.exit_code == 0, result.output
    rejects = read(out / "rejects.jsonl")
    cut = [row for row in rejects if row["reason"] == "content_filter"]
    assert 0 < len(cut) == filtered
    assert all(row["finish_reason"] == row["meta"]["finish_reason"] == "content_filter" and row["raw"] for row in cut)
    assert all(row["meta"]["finish_reason"] == "stop" for row in records(out))


def test_a_null_finish_reason_is_a_natural_end(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"null_finish": 1.0})) as server:
        assert generate(cli, server, coco, out).exit_code == 0
    assert records(out) and all(row["meta"]["finish_reason"] is None for row in records(out))


def test_missing_usage_is_unknown_and_cached_tokens_are_summed(cli, coco, tmp_path):
    with MockServer(MockServerConfig(quirks={"no_usage": 0.5, "cached": 1.0})) as server:
        assert generate(cli, server, coco, tmp_path / "out").exit_code == 0
        missing = server.stats()["no_usage"]
    rows = records(tmp_path / "out") + read(tmp_path / "out" / "rejects.jsonl")
    unknown = [row for row in rows if row["meta"]["usage"]["prompt_tokens"] is None]
    assert 0 < len(unknown) == missing and all(row["meta"]["usage"]["completion_tokens"] is None for row in unknown)
    usage = manifest(tmp_path / "out")["usage"]
    assert usage["unreported"] == missing
    assert usage["cached_tokens"] == sum(row["meta"]["usage"]["cached_tokens"] or 0 for row in rows) > 0
    assert usage["prompt_tokens"] == sum(row["meta"]["usage"]["prompt_tokens"] or 0 for row in rows)


def test_an_over_long_item_is_refused_once_and_the_run_goes_on(cli, coco, tmp_path):
    with MockServer() as server:
        assert generate(cli, server, coco, tmp_path / "sizes", "--tasks", "detail").exit_code == 0
    prompts = sorted(row["meta"]["usage"]["prompt_tokens"] for row in records(tmp_path / "sizes"))
    window = prompts[len(prompts) // 2] + 1024  # the longer half of the items no longer fits
    too_long = sum(1 for tokens in prompts if tokens + 1024 > window)
    out = tmp_path / "out"
    with MockServer(MockServerConfig(quirks={"context_length": 1.0}, context_window=window)) as server:
        result = generate(cli, server, coco, out, "--tasks", "detail", "--concurrency", "4")
        assert result.exit_code == 0, result.output
        assert server.stats()["context_length"] == too_long > 0  # each refused item asked once: no retry
        again = generate(cli, server, coco, out, "--tasks", "detail")
        assert again.exit_code == 0 and server.stats()["total"] == 8  # the rerun asks nothing again
    refused = [row for row in read(out / "rejects.jsonl") if row["reason"] == "request_refused"]
    assert len(refused) == too_long and all("maximum context length" in row["detail"] for row in refused)
    assert manifest(out)["counts"]["detail"]["written"] == 8 - too_long


def test_a_payload_too_large_is_refused_per_item(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer() as server:
        generate(cli, server, coco, out, "--requests-out", tmp_path / "requests.jsonl")
    sizes = sorted(len(json.dumps(json.loads(line)["body"], separators=(",", ":"), ensure_ascii=False).encode()) for line in (tmp_path / "requests.jsonl").read_text().splitlines())
    with MockServer(MockServerConfig(quirks={"too_large": 1.0}, max_body_bytes=sizes[-1] - 1)) as server:
        result = generate(cli, server, coco, out)
        assert server.stats()["413"] >= 1
    assert result.exit_code == 0, result.output
    refused = [row for row in read(out / "rejects.jsonl") if row["reason"] == "request_refused"]
    assert refused and all(row["detail"].startswith("HTTP 413") for row in refused)


def test_the_probe_treats_a_too_long_first_item_as_that_items_fault():
    window = 600
    long_request = ChatRequest(model="m", messages=[{"role": "user", "content": "word " * 4000}], temperature=0.7, max_tokens=64, seed=1)
    short_request = ChatRequest(model="m", messages=[{"role": "user", "content": "A dog on grass."}], temperature=0.7, max_tokens=64, seed=1)

    async def go(server):
        teacher = OpenAITeacher(model="m", api_key="k", base_url=server.base_url, max_retries=0)
        try:
            with pytest.raises(RequestRefused, match="context length"):
                await teacher.complete(long_request)
            return await teacher.complete(short_request)
        finally:
            await teacher.aclose()

    with MockServer(MockServerConfig(quirks={"context_length": 1.0}, context_window=window)) as server:
        assert asyncio.run(go(server)).text


def test_everything_rejected_exits_1_naming_the_reasons(cli, coco, tmp_path):
    with MockServer(MockServerConfig(quirks={"content_filter": 1.0})) as server:
        result = generate(cli, server, coco, tmp_path / "out")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert "no answer passed the checks; no record could be written (content_filter 24)" in line
    assert manifest(tmp_path / "out")["status"] == "failed"


def test_a_teacher_that_never_follows_the_format_ends_with_every_item_rejected_and_exit_1(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(p_length=0.5, p_refusal=0.5, seed=1)) as server:
        result = generate(cli, server, coco, out)
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith("error: no answer passed the checks")
    data = manifest(out)
    rejects = read(out / "rejects.jsonl")
    assert len(rejects) == 24 and {row["reason"] for row in rejects} == {"truncated", "refusal"}
    for counts in data["counts"].values():
        assert counts["requested"] == 8 == sum(counts["rejected"].values()) and counts["written"] == 0 and not counts["skipped"]


# -- request shaping ------------------------------------------------------------------------------


def test_reasoning_models_name_the_flag_that_fixes_each_refusal(cli, coco, tmp_path):
    with MockServer(MockServerConfig(quirks={"reasoning": 1.0})) as server:
        first = generate(cli, server, coco, tmp_path / "a")
        second = generate(cli, server, coco, tmp_path / "b", "--max-completion-tokens", "700")
        server.reset()
        third = generate(cli, server, coco, tmp_path / "c", "--max-completion-tokens", "700", "--omit-params", "temperature")
        bodies = [seen["body"] for seen in seen_requests(server)]
    assert first.exit_code == 2 and "--max-completion-tokens" in error_lines(first)[0]
    assert second.exit_code == 2 and "--omit-params temperature" in error_lines(second)[0]
    assert third.exit_code == 0, third.output
    assert len(bodies) == 24
    assert all(body["max_completion_tokens"] == 700 and "max_tokens" not in body and "temperature" not in body for body in bodies)
    assert manifest(tmp_path / "c")["settings"]["sampling"]["shape"]["token_limit_field"] == "max_completion_tokens"


def test_a_server_refusing_seed_names_omit_params(cli, coco, tmp_path):
    with MockServer(MockServerConfig(quirks={"no_seed": 1.0})) as server:
        refused = generate(cli, server, coco, tmp_path / "a")
        fixed = generate(cli, server, coco, tmp_path / "b", "--omit-params", "seed")
        bodies = [seen["body"] for seen in seen_requests(server)][1:]
    [line] = error_lines(refused)
    assert refused.exit_code == 2 and "--omit-params seed" in line and KEY not in line
    assert fixed.exit_code == 0 and all("seed" not in body for body in bodies)


def test_extra_body_is_sent_and_changes_the_cache_key_and_fingerprint(cli, coco, tmp_path):
    extra = {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}
    with MockServer() as server:
        assert generate(cli, server, coco, tmp_path / "plain", "--limit", "2").exit_code == 0
        server.reset()
        assert generate(cli, server, coco, tmp_path / "extra", "--limit", "2", "--extra-body", json.dumps(extra)).exit_code == 0
        bodies = [seen["body"] for seen in seen_requests(server)]
        changed = generate(cli, server, coco, tmp_path / "extra", "--limit", "2")
    assert bodies and all(body["top_k"] == 20 and body["chat_template_kwargs"] == {"enable_thinking": False} for body in bodies)
    plain_keys = {row["meta"]["request_key"] for row in records(tmp_path / "plain")}
    assert plain_keys.isdisjoint(row["meta"]["request_key"] for row in records(tmp_path / "extra"))
    assert changed.exit_code == 2 and "request_shape" in error_lines(changed)[0]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--extra-body", "{nope"], "--extra-body"),
        (["--extra-body", "[1]"], "--extra-body"),
        (["--extra-body", '{"seed": 1}'], "--seed"),
        (["--omit-params", "model"], "--omit-params"),
        (["--dry-run", "--requests-out", "x.jsonl"], "--dry-run"),
    ],
)
def test_bad_shaping_flags_are_one_line(cli, coco, tmp_path, flags, named):
    with MockServer() as server:
        result = generate(cli, server, coco, tmp_path / "out", *flags)
        assert server.stats()["total"] == 0
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert named in line


# -- Azure and base URLs --------------------------------------------------------------------------


def azure_env(server: MockServer, **changes) -> dict:
    env = {"AZURE_OPENAI_ENDPOINT": server.base_url.removesuffix("/v1"), "AZURE_OPENAI_API_KEY": KEY, "OPENAI_API_VERSION": "2024-10-21",
           "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}
    return {**env, **changes}


def test_azure_deployment_path_query_and_api_key_header(cli, coco, tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(api_key=KEY, models=("my-deployment",), accept_any_model=False)) as server:
        captions, instances = coco
        result = cli("generate", "--teacher", "azure", "--model", "my-deployment", "--captions", captions, "--instances", instances,
                     "--out", out, "--no-progress", "--limit", "2", env=azure_env(server))
        seen = seen_requests(server)
    assert result.exit_code == 0, result.output
    assert {entry["path"] for entry in seen} == {"/openai/deployments/my-deployment/chat/completions"}
    assert all(entry["query"] == {"api-version": "2024-10-21"} and entry["auth"] == "api-key" for entry in seen)
    data = manifest(out)
    assert data["teacher"]["kind"] == "azure" and data["base_url"] == server.base_url.removesuffix("/v1") + "/openai/deployments/my-deployment"
    assert KEY not in (out / "manifest.json").read_text()


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"OPENAI_API_VERSION": None}, "OPENAI_API_VERSION"), ({"AZURE_OPENAI_ENDPOINT": None}, "AZURE_OPENAI_ENDPOINT"),
     ({"AZURE_OPENAI_API_KEY": "wrong"}, "AZURE_OPENAI_API_KEY")],
)
def test_azure_settings_missing_or_wrong_are_one_line(cli, coco, tmp_path, changes, named):
    with MockServer(MockServerConfig(api_key=KEY)) as server:
        captions, instances = coco
        result = cli("generate", "--teacher", "azure", "--model", "d", "--captions", captions, "--instances", instances,
                     "--out", tmp_path / "out", "--no-progress", env=azure_env(server, **changes))
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert named in line and "wrong" not in line


def test_a_base_urls_query_string_is_kept_and_the_cache_keeps_provenance(cli, coco, tmp_path):
    with MockServer() as server:
        result = generate(cli, server, coco, tmp_path / "out", "--limit", "1", "--base-url", server.base_url + "?tenant=lab")
        seen = seen_requests(server)
    assert result.exit_code == 0, result.output
    assert all(entry["path"] == "/v1/chat/completions" and entry["query"] == {"tenant": "lab"} for entry in seen)
    assert manifest(tmp_path / "out")["base_url"] == server.base_url  # the cache is on; the query is not kept in the manifest


# -- dry run and the batch hand-off ---------------------------------------------------------------


def test_dry_run_counts_and_estimates_without_a_key_or_a_request(cli, coco, tmp_path):
    captions, instances = coco
    common = ["--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "m", "--no-progress"]
    with MockServer() as server:
        env = {"OPENAI_BASE_URL": server.base_url}
        dry = cli("generate", *common, "--dry-run", "--price-in", "2.5", "--price-out", "10", env=env)
        written = cli("generate", *common, "--requests-out", tmp_path / "requests.jsonl", env=env)
        assert server.stats()["total"] == 0
    assert dry.exit_code == 0, dry.output
    assert written.exit_code == 0, written.output
    lines = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    prompt = sum(estimate_tokens(message["content"]) + 4 for line in lines for message in line["body"]["messages"])
    assert f"dry run: {len(lines)} requests would be sent" in dry.output and len(lines) == 24
    assert f"estimated tokens: {prompt:,} prompt" in dry.output
    assert f"(at most {24 * 1024:,} completion)" in dry.output
    completion = int(dry.output.split(" prompt + ")[1].split(" completion")[0].replace(",", ""))
    cost = float(dry.output.split("estimated cost: ")[1].split(" ")[0].replace(",", ""))
    assert cost == pytest.approx(prompt * 2.5 / 1e6 + completion * 10 / 1e6, abs=1e-4)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_dry_run_after_a_run_counts_only_what_is_left(cli, coco, tmp_path):
    with MockServer() as server:
        assert generate(cli, server, coco, tmp_path / "out", "--limit", "3").exit_code == 0
        result = generate(cli, server, coco, tmp_path / "out", "--dry-run")
    assert result.exit_code == 0 and "dry run: 15 requests would be sent" in result.output


def answer_like_an_engine(server: MockServer, requests_file: Path, results_file: Path) -> None:
    """What vLLM's run_batch does with a requests file: every body to the chat endpoint, one result line each."""
    lines = []
    for number, raw in enumerate(requests_file.read_text().splitlines()):
        item = json.loads(raw)
        request = urllib.request.Request(server.base_url + "/chat/completions", data=json.dumps(item["body"]).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, body = error.code, json.loads(error.read())
        lines.append({"id": f"vllm-{number}", "custom_id": item["custom_id"],
                      "response": {"status_code": status, "request_id": f"req-{number}", "body": body}, "error": None})
    results_file.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_requests_out_then_results_in_equals_a_live_run(cli, coco, tmp_path):
    with MockServer() as server:
        assert generate(cli, server, coco, tmp_path / "sizes").exit_code == 0
    prompts = sorted(row["meta"]["usage"]["prompt_tokens"] for row in records(tmp_path / "sizes"))
    quirks = MockServerConfig(quirks={"context_length": 1.0, "content_filter": 0.5}, context_window=prompts[len(prompts) // 2] + 1024)
    with MockServer(quirks) as server:
        live = generate(cli, server, coco, tmp_path / "live")
        live_bodies = sorted(json.dumps(seen["body"], sort_keys=True) for seen in seen_requests(server))
        assert live.exit_code == 0, live.output
        handed = generate(cli, server, coco, tmp_path / "handed", "--requests-out", tmp_path / "requests.jsonl")
        assert handed.exit_code == 0, handed.output
        lines = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
        assert sorted(json.dumps(line["body"], sort_keys=True) for line in lines) == live_bodies
        assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
        answer_like_an_engine(server, tmp_path / "requests.jsonl", tmp_path / "results.jsonl")
        sent = server.stats()["total"]
        ingested = generate(cli, server, coco, tmp_path / "handed", "--results-in", tmp_path / "results.jsonl")
        assert server.stats()["total"] == sent  # ingesting sends nothing
    assert ingested.exit_code == 0, ingested.output
    assert outputs(tmp_path / "handed") == outputs(tmp_path / "live")
    reasons = {row["reason"] for row in read(tmp_path / "live" / "rejects.jsonl")}
    assert {"request_refused", "content_filter"} <= reasons
    data = manifest(tmp_path / "handed")
    answered = sum(counts["written"] + sum(counts["rejected"].values()) for counts in data["counts"].values())
    refused = sum(counts["rejected"].get("request_refused", 0) for counts in data["counts"].values())
    assert data["status"] == "completed" and data["requests_sent"] == 0 and data["cache_hits"] == answered - refused == 24 - refused


def test_results_for_other_requests_are_refused_in_one_line(cli, coco, tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"custom_id": "1:detail:abc", "response": {"status_code": 200, "body": {}}}) + "\n")
    with MockServer() as server:
        result = generate(cli, server, coco, tmp_path / "out", "--results-in", tmp_path / "results.jsonl")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "--results-in" in line and "1 for other requests" in line


# -- the mock server speaks like a real one -------------------------------------------------------


def call(server: MockServer, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(server.base_url.removesuffix("/v1") + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mock_server_routes_answer_in_json():
    with MockServer(MockServerConfig(models=("a",), accept_any_model=False)) as server:
        assert call(server, "GET", "/v1/models/a") == (200, {"id": "a", "object": "model", "created": 0, "owned_by": "datagen"})
        assert call(server, "GET", "/v1/models/b")[0] == 404
        status, body = call(server, "GET", "/v1/nowhere")
        assert status == 404 and "Unknown request URL" in body["error"]["message"]
        status, body = call(server, "DELETE", "/v1/models")
        assert status == 405 and body["error"]["code"] == "method_not_allowed"
        assert call(server, "GET", "/v1/files") == (200, {"object": "list", "data": [], "has_more": False})
        assert call(server, "GET", "/v1/batches")[1]["data"] == []
        assert call(server, "DELETE", "/v1/files/file-none")[0] == 404
        status, body = call(server, "POST", "/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert status == 400 and body["error"]["param"] == "stream"


def test_mock_server_cli_refuses_an_unknown_quirk(cli):
    result = cli("mock-server", "--quirk", "sparkles")
    assert result.exit_code == 2
    assert "sparkles" in result.output and "parts" in result.output


def test_the_batch_path_turns_per_item_refusals_into_the_same_rejects(cli, coco, tmp_path):
    with MockServer() as server:
        assert generate(cli, server, coco, tmp_path / "sizes").exit_code == 0
    prompts = sorted(row["meta"]["usage"]["prompt_tokens"] for row in records(tmp_path / "sizes"))
    quirks = MockServerConfig(quirks={"context_length": 1.0}, context_window=prompts[len(prompts) // 2] + 1024, batch_delay_s=0.0)
    with MockServer(quirks) as server:
        assert generate(cli, server, coco, tmp_path / "live").exit_code == 0
        batched = generate(cli, server, coco, tmp_path / "batched", "--batch", "--poll-interval", "0.01")
        assert batched.exit_code == 0, batched.output
        again = generate(cli, server, coco, tmp_path / "batched", "--batch", "--poll-interval", "0.01")
        assert again.exit_code == 0 and len(server.backend._batches) == 1  # refused items are done: nothing resubmitted
    assert outputs(tmp_path / "batched") == outputs(tmp_path / "live")
    assert any(row["reason"] == "request_refused" for row in read(tmp_path / "batched" / "rejects.jsonl"))


def test_results_lines_in_vllm_and_openai_error_shapes():
    from datagen.run.batch import read_results

    expected = {"1:detail:a": "a", "2:detail:b": "b", "3:detail:c": "c", "4:detail:d": "d"}
    lines = [
        {"custom_id": "1:detail:a", "response": {"status_code": 400, "body": None},
         "error": {"error": {"message": "maximum context length is 4096 tokens", "code": 400}}},
        {"custom_id": "2:detail:b", "response": {"status_code": 400, "body": None}, "error": "prompt too long\nfor this model"},
        {"custom_id": "3:detail:c", "response": {"status_code": 500, "body": {"error": {"message": "engine died"}}}, "error": None},
        {"custom_id": "4:detail:d", "response": {"status_code": 200, "body": completion({"content": "A bus."}, usage={"prompt_tokens": 5, "completion_tokens": 2})}},
        {"custom_id": "9:detail:z", "response": {"status_code": 200, "body": {}}},
    ]
    results = read_results(("\n".join(json.dumps(line) for line in lines) + "\nnot json\n").encode(), expected)
    assert results.refused == {"a": "HTTP 400: maximum context length is 4096 tokens", "b": "HTTP 400: prompt too long for this model"}
    assert list(results.answers) == ["d"] and results.answers["d"].text == "A bus."
    assert results.first_error == "HTTP 400: maximum context length is 4096 tokens"
    assert (results.foreign, results.unreadable) == (1, 1)
