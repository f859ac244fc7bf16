"""`datagen ray` and `generate --engine ray`: a requests file answered through Ray Data into a Batch-format results
file, resumed after a kill, with the key kept out of Ray's logs; and the vLLM path up to the engine (no GPU here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from datagen.run.batch import parse_custom_id, read_results
from datagen.run.options import RayEngine
from datagen.run.ray_engine import (
    answer_line,
    engine_error_row,
    error_line,
    load_results,
    read_requests,
    vllm_config,
    vllm_postprocess,
    vllm_preprocess,
    vllm_row,
)
from datagen.tasks.registry import DEFAULT_TASKS
from datagen.teachers.teacher import parse_completion
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

KEY = "sk-ray-test-SECRET-7f3a9c"
OUTPUTS = (*(f"{task}.jsonl" for task in DEFAULT_TASKS), "rejects.jsonl")
REPO = Path(__file__).resolve().parent.parent
# Every fault a live run survives by retrying: throttling, server errors, dropped connections.
FAULTS = MockServerConfig(p429=0.08, p500=0.08, drop=0.04, retry_after=0.05, quirks={"content_filter": 0.2})


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, images=8)


def generate(cli, server, coco, out, *extra):
    captions, instances = coco
    environment = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
    return cli("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher", "--no-progress", *extra, env=environment)


def outputs(out: Path) -> dict[str, list[str]]:
    return {name: sorted((out / name).read_text().splitlines()) for name in OUTPUTS if (out / name).exists()}


def result_ids(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]


def request_ids(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]


def worker_pid(line: str) -> int | None:
    """The pid of the actor that wrote a results line (ids are ray-PID-N; the driver's probe is ray-driver)."""
    name = json.loads(line)["id"].split("-")
    return int(name[1]) if len(name) == 3 and name[1].isdigit() else None


def assert_key_nowhere(*folders: Path) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert KEY.encode() not in path.read_bytes(), path


# -- through Ray against the mock server -----------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_ray_round_trip_and_engine_ray_equal_a_live_run(cli, coco, tmp_path, ray_cluster):
    _, session = ray_cluster
    with MockServer(FAULTS) as server:
        live = generate(cli, server, coco, tmp_path / "live", "--max-retries", "8")
        assert live.exit_code == 0, live.output
        handed = generate(cli, server, coco, tmp_path / "handed", "--requests-out", tmp_path / "requests.jsonl")
        assert handed.exit_code == 0, handed.output
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
        answered = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl", "--workers", "2", "--max-retries", "8", "--no-progress", env=env)
        assert answered.exit_code == 0, answered.output
        assert "24 answered, 0 refused per item, 0 failed of 24 pending" in answered.output
        assert sorted(result_ids(tmp_path / "results.jsonl")) == sorted(request_ids(tmp_path / "requests.jsonl"))
        ingested = generate(cli, server, coco, tmp_path / "handed", "--results-in", tmp_path / "results.jsonl")
        assert ingested.exit_code == 0, ingested.output
        # The one-command form: the same records, and the work files gone once their answers are in the cache.
        one = generate(cli, server, coco, tmp_path / "one", "--engine", "ray", "--workers", "2", "--max-retries", "8")
        assert one.exit_code == 0, one.output
        faults = server.stats()
    assert faults["429"] and faults["500"] and faults["drop"]  # the faults did happen, and were survived
    reasons = {json.loads(line)["reason"] for line in (tmp_path / "live" / "rejects.jsonl").read_text().splitlines()}
    assert "content_filter" in reasons
    assert outputs(tmp_path / "handed") == outputs(tmp_path / "live")
    assert outputs(tmp_path / "one") == outputs(tmp_path / "live")
    assert not (tmp_path / "one" / "ray" / "results.jsonl").exists()
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["status"] == "completed"
    assert_key_nowhere(tmp_path, session / "logs")


@pytest.mark.ray
@pytest.mark.slow
def test_kill_9_of_the_driver_then_rerun_completes_with_every_row_once(cli, tmp_path, ray_cluster):
    address, session = ray_cluster
    coco = write_coco(tmp_path, images=40)
    with MockServer(MockServerConfig(latency_ms=150, p500=0.05, drop=0.03)) as server:
        assert generate(cli, server, coco, tmp_path / "out", "--requests-out", tmp_path / "requests.jsonl").exit_code == 0
        wanted = request_ids(tmp_path / "requests.jsonl")
        results = tmp_path / "results.jsonl"
        command = [sys.executable, "-m", "datagen.cli", "ray", str(tmp_path / "requests.jsonl"), "--out", str(results),
                   "--address", address, "--workers", "2", "--concurrency", "4", "--no-progress"]
        env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
        first = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and first.poll() is None:
            if results.exists() and len(results.read_bytes().splitlines()) >= 20:
                break
            time.sleep(0.1)
        assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        first.stdout.close()
        before = len(results.read_bytes().splitlines())
        assert 0 < before < len(wanted)  # killed midway
        sent_before = server.stats()["ok"]
        # The rerun loses a worker too: kill -9 of the first actor seen answering (its pid is in its lines' ids).
        old_workers = {worker_pid(line) for line in results.read_text().splitlines()[:before]}
        second = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed = None
        while second.poll() is None and time.monotonic() < deadline + 120:
            if killed is None:
                fresh = {worker_pid(line) for line in results.read_text().splitlines()[before:] if line.endswith("}")} - old_workers - {None}
                for pid in fresh:
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.05)
        output = second.communicate(timeout=120)[0]
        assert second.returncode == 0, output
        assert killed is not None  # a worker did die midway, and the run still completed
        resent = server.stats()["ok"] - sent_before
    ids = result_ids(results)
    assert len(ids) == len(set(ids)) == len(wanted) and set(ids) == set(wanted)
    assert all(json.loads(line)["response"]["status_code"] == 200 for line in results.read_text().splitlines())
    # Only what was missing went out again, plus the batches in flight at each kill (4 per actor, 8 rows each).
    assert resent < len(wanted) - before + 48
    assert "already in" in output
    assert_key_nowhere(tmp_path, session / "logs")


# -- resume: what a rerun keeps -------------------------------------------------------------------


def body(text: str = "A bus.") -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


def test_a_rerun_keeps_answers_and_item_refusals_and_asks_again_for_the_rest(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [
        answer_line("1:detail:a", body(), "r1"),
        error_line("2:detail:b", 400, "too long", "r2"),  # refused per item: settled
        error_line("3:detail:c", 503, "overloaded", "r3"),  # failed after retries: asked again
        error_line("4:detail:d", None, "ServerDisconnectedError", "r4"),  # no response: asked again
        error_line("5:detail:e", 401, "bad key", "r5"),  # about the run, not the item: asked again
        answer_line("1:detail:a", body("a second copy"), "r6"),  # never twice: the first stands
        answer_line("6:detail:f", {"error": {"message": "busy"}}, "r7"),  # 200 with an error body: asked again
    ]
    torn = answer_line("7:detail:g", body(), "r8")[:40]
    path.write_text("".join(line + "\n" for line in lines) + torn)  # torn by a kill
    resumed = load_results(path)
    assert resumed.done == {"1:detail:a", "2:detail:b"} and resumed.answers == 1
    assert path.read_text() == lines[0] + "\n" + lines[1] + "\n"
    # Nothing dropped: every line a rerun does not keep is in the set-aside file, and counted by why.
    assert (tmp_path / "results.set-aside.jsonl").read_text() == "".join(line + "\n" for line in [*lines[2:], torn])
    assert resumed.aside == {"failed, asked again": 4, "repeating a custom_id, the first kept": 1, "torn by a kill, asked again": 1}
    again = load_results(path)
    assert again.done == {"1:detail:a", "2:detail:b"} and not again.aside  # nothing more to move: the file is left alone
    assert len((tmp_path / "results.set-aside.jsonl").read_text().splitlines()) == 6


def test_results_lines_read_back_as_answers_and_refusals(tmp_path):
    data = (answer_line("1:detail:a", body("A red bus."), "r1") + "\n" + error_line("2:detail:b", 400, "context length exceeded", "r2") + "\n").encode()
    results = read_results(data, {"1:detail:a": "a", "2:detail:b": "b"})
    assert results.answers["a"].text == "A red bus." and results.answers["a"].usage.completion_tokens == 2
    # As a live run words a refusal: the status once, then the server's message.
    assert results.refused == {"b": "HTTP 400: context length exceeded"}


# -- bad input ------------------------------------------------------------------------------------


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_a_requests_file_that_is_not_ours_is_named_with_its_line(cli, tmp_path):
    good = {"custom_id": "1:detail:" + "0" * 64, "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}}
    path = tmp_path / "requests.jsonl"
    for second, why in [
        ("not json", "not JSON"),
        (json.dumps({"id": 1}), "no custom_id"),
        (json.dumps({**good, "custom_id": "request-1"}), "is not image:task:key"),
        (json.dumps(good), "not the one its custom_id was made from"),
    ]:
        path.write_text(json.dumps({**good, "custom_id": "1:detail:" + parse_key(good)}) + "\n" + second + "\n")
        result = cli("ray", path, "--out", tmp_path / "results.jsonl", env={"OPENAI_API_KEY": KEY})
        assert result.exit_code == 2, result.output
        [line] = error_lines(result)
        assert f"{path} line 2: not a datagen request" in line and why in line, line
    assert not (tmp_path / "results.jsonl").exists()


def parse_key(line: dict) -> str:
    from datagen.teachers.teacher import request_from_body

    return request_from_body(line["body"]).key()


def test_without_ray_installed_the_extra_is_named(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when the extra is missing
    (tmp_path / "requests.jsonl").write_text("")
    result = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "pip install 'datagen[ray]'" in line


def test_an_unreachable_cluster_is_one_line(cli, tmp_path):
    pytest.importorskip("ray")
    captions_line = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    from datagen.teachers.teacher import request_from_body

    key = request_from_body(captions_line).key()
    (tmp_path / "requests.jsonl").write_text(json.dumps({"custom_id": f"1:detail:{key}", "body": captions_line}) + "\n")
    started = time.monotonic()
    result = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl", "--address", "127.0.0.1:1", env={"OPENAI_API_KEY": KEY})
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "--address 127.0.0.1:1" in line and "nothing answers" in line
    assert time.monotonic() - started < 30  # ray.init alone would wait minutes


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--vllm", "Qwen/Qwen2.5-0.5B-Instruct", "--base-url", "http://127.0.0.1:9/v1"], "--vllm and --base-url"),
        (["--replicas", "2"], "--replicas sets up vLLM engines"),
        (["--vllm", "m", "--workers", "4"], "--workers counts the actors"),
        (["--rpm", "60", "--qps", "1"], "--rpm and --qps"),
        (["--engine-arg", "novalue", "--vllm", "m"], "--engine-arg 'novalue'"),
        (["--address", "auto", "--num-cpus", "2"], "--num-cpus sizes a local Ray"),
    ],
)
def test_flags_that_do_not_go_together_are_refused(cli, tmp_path, flags, named):
    result = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl", *flags)
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert named in line, line


def test_generate_refuses_ray_flags_without_engine_ray(cli, tmp_path):
    result = cli("generate", "--captions", tmp_path / "c.json", "--out", tmp_path / "out", "--teacher", "mock", "--workers", "3")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "--workers is a Ray flag; add --engine ray" in line


# -- the vLLM path, up to the engine ---------------------------------------------------------------


def our_requests(cli, tmp_path, *extra) -> list[dict]:
    captions, instances = write_coco(tmp_path, images=2)
    result = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "Qwen/Qwen2.5-0.5B-Instruct",
                 "--requests-out", tmp_path / "requests.jsonl", *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]


def test_vllm_config_is_built_from_the_flags():
    pytest.importorskip("ray.data.llm")
    engine = RayEngine(vllm="Qwen/Qwen2.5-0.5B-Instruct", replicas=4, tensor_parallel_size=2, engine_args={"max_model_len": 8192, "enable_prefix_caching": True})
    config = vllm_config(engine, chat_template_kwargs={"enable_thinking": False})
    assert config.model_source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.concurrency == 4 and config.batch_size == 64
    assert config.engine_kwargs["tensor_parallel_size"] == 2 and config.engine_kwargs["max_model_len"] == 8192 and config.engine_kwargs["enable_prefix_caching"] is True
    assert config.should_continue_on_error is True  # a failed row is an error line, not a failed run
    assert config.chat_template_stage["chat_template_kwargs"] == {"enable_thinking": False}
    assert "vllm" not in sys.modules  # the config is built without vLLM; only the GPU nodes need it


def test_vllm_rows_carry_the_messages_and_sampling_params_the_requests_ask_for(cli, tmp_path):
    lines = our_requests(cli, tmp_path, "--extra-body", '{"top_k": 20}', "--temperature", "0.2", "--max-tokens", "300")
    line = lines[0]
    row = vllm_preprocess({"custom_id": line["custom_id"], "body": json.dumps(line["body"])})
    assert row["custom_id"] == line["custom_id"]
    assert row["messages"] == line["body"]["messages"]
    assert row["sampling_params"] == {"temperature": 0.2, "top_k": 20, "seed": line["body"]["seed"], "max_tokens": 300}
    assert "model" not in row  # a model column would make the engine ask for a LoRA adapter of that name


def test_vllm_rows_refuse_what_the_engine_cannot_take(cli, tmp_path):
    from datagen.errors import InputError
    from datagen.teachers.teacher import request_from_body

    line = our_requests(cli, tmp_path, "--extra-body", '{"response_format": {"type": "json_object"}}')[0]
    with pytest.raises(InputError, match="response_format has no vLLM sampling parameter"):
        vllm_row(line["custom_id"], request_from_body(line["body"]))
    image = {**line["body"], "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]}]}
    with pytest.raises(InputError, match="shows the teacher an image"):
        vllm_row(line["custom_id"], request_from_body(image))


def test_engine_rows_become_batch_output_lines_that_results_in_reads(cli, tmp_path):
    lines = our_requests(cli, tmp_path, "--max-tokens", "50")
    expected = {line["custom_id"]: parse_custom_id(line["custom_id"])[2] for line in lines}
    written = []
    for n, line in enumerate(lines[:3]):
        row = vllm_preprocess({"custom_id": line["custom_id"], "body": json.dumps(line["body"])})
        # What ray.data.llm's engine stage adds to a row (vLLMOutputData, detokenized), the input columns kept.
        engine_row = {**row, "prompt": "<|im_start|>...", "generated_text": f"Answer {n}.", "num_input_tokens": 120 + n,
                      "num_generated_tokens": 50 if n == 2 else 7, "generated_tokens": [1] * 7, "request_id": n, "__inference_error__": ""}
        written.append(vllm_postprocess(engine_row)["line"])
    failed = {**vllm_preprocess({"custom_id": lines[3]["custom_id"], "body": json.dumps(lines[3]["body"])}), "__inference_error__": "ValueError: prompt too long"}
    written.append(engine_error_row(failed)["line"])
    results = read_results("\n".join(written).encode(), expected)
    replies = [results.answers[expected[line["custom_id"]]] for line in lines[:3]]
    assert [reply.text for reply in replies] == ["Answer 0.", "Answer 1.", "Answer 2."]
    assert [reply.finish_reason for reply in replies] == ["stop", "stop", "length"]  # the whole budget used: cut short
    assert replies[1].usage.prompt_tokens == 121 and replies[1].usage.completion_tokens == 7
    assert expected[lines[3]["custom_id"]] not in results.answers and results.first_error and "prompt too long" in results.first_error
    assert all(parse_completion(json.loads(line)["response"]["body"]) for line in written[:3])


def test_read_requests_skips_a_repeated_custom_id(cli, tmp_path):
    lines = our_requests(cli, tmp_path)
    path = tmp_path / "twice.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in [*lines, lines[0]]))
    ids = [cid for cid, _ in read_requests(path)]
    assert ids == [line["custom_id"] for line in lines] and Counter(ids).most_common(1)[0][1] == 1


@pytest.mark.ray
def test_a_wrong_key_stops_at_the_first_request_in_one_line(cli, coco, tmp_path, ray_cluster):
    with MockServer(MockServerConfig(api_key="sk-the-right-one")) as server:
        right = {"OPENAI_API_KEY": "sk-the-right-one", "OPENAI_BASE_URL": server.base_url}
        captions, instances = coco
        planned = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "m",
                      "--requests-out", tmp_path / "requests.jsonl", env=right)
        assert planned.exit_code == 0, planned.output
        result = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl", env={**right, "OPENAI_API_KEY": KEY})
        sent = server.stats()["total"]
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "rejected the API key (HTTP 401)" in line and KEY not in result.output
    assert sent == 1 and not (tmp_path / "results.jsonl").exists()  # no empty results file left behind


@pytest.mark.ray
@pytest.mark.slow
def test_the_vllm_path_through_ray_with_an_engine_stand_in(cli, tmp_path, monkeypatch, ray_cluster):
    """Everything of `--vllm` but the GPU: our rows through Ray Data into an engine-shaped stand-in (what
    ray.data.llm's stages add to a row), our postprocess, the driver's results file, and `--results-in`."""
    import ray.data.llm

    from datagen.teachers.mock import mock_answer

    lines = our_requests(cli, tmp_path)
    failing = lines[1]["custom_id"]
    built = {}

    def build_processor(config, preprocess, postprocess):
        built["config"] = config

        def engine(row):
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]]
            if row["custom_id"] == failing:
                return {**row, "generated_text": "", "num_input_tokens": 0, "num_generated_tokens": 0, "request_id": -1, "__inference_error__": "ValueError: prompt too long"}
            text = mock_answer(messages, int(row["sampling_params"]["seed"]))
            return {**row, "generated_text": text, "num_input_tokens": 300, "num_generated_tokens": len(text) // 4, "request_id": 7, "__inference_error__": ""}

        # As ray.data.llm's wrap_postprocess does: a failed row bypasses the user's postprocess, whole.
        return lambda dataset: dataset.map(preprocess).map(engine).map(lambda row: row if row["__inference_error__"] else postprocess(row))

    monkeypatch.setattr(ray.data.llm, "build_processor", build_processor)
    result = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl", "--vllm", "Qwen/Qwen2.5-0.5B-Instruct",
                 "--replicas", "2", "--engine-arg", "max_model_len=4096", "--no-progress")
    assert result.exit_code == 1 and "1 requests failed (first: ValueError: prompt too long)" in result.output, result.output
    assert built["config"].concurrency == 2 and built["config"].engine_kwargs["max_model_len"] == 4096
    written = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(line["custom_id"] for line in written) == sorted(line["custom_id"] for line in lines)
    [failed] = [line for line in written if line["custom_id"] == failing]
    assert failed["response"] is None and "prompt too long" in failed["error"]["message"]
    captions, instances = write_coco(tmp_path, images=2)
    ingested = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "Qwen/Qwen2.5-0.5B-Instruct",
                   "--results-in", tmp_path / "results.jsonl", "--no-progress")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "5 answers, 0 refused per item" in ingested.output, ingested.output
    assert sum(counts["written"] for counts in manifest["counts"].values()) >= 1
