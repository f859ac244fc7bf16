"""`generate --batch` against the mock server's Batch API: same records as a live run, no live requests, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.run.batch import BatchJob, load_state
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.run.generate import generate
from datagen.run.options import GenerateOptions
from datagen.tasks.registry import DEFAULT_TASKS

from tests.conftest import CAPTIONS, INSTANCES

SECRET = "sk-batch-test-secret"


@pytest.fixture(scope="module")
def server():
    with MockServer(MockServerConfig(api_key=SECRET, batch_delay_s=0.0)) as server:
        yield server


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def options(out: Path, base_url: str, **changes) -> GenerateOptions:
    settings = dict(
        captions=CAPTIONS,
        instances=INSTANCES,
        out=out,
        tasks=list(DEFAULT_TASKS),
        teacher="openai",
        model="mock-teacher",
        base_url=base_url,
        batch=True,
        poll_interval=0.01,
        max_retries=0,
        progress=False,
    )
    return GenerateOptions(**{**settings, **changes})


def sorted_lines(path: Path) -> list[bytes]:
    return sorted(path.read_bytes().splitlines())


def outputs(out: Path) -> dict[str, list[bytes]]:
    return {name: sorted_lines(out / name) for name in [*(f"{task}.jsonl" for task in DEFAULT_TASKS), "rejects.jsonl"] if (out / name).exists()}


def batch_count(server: MockServer) -> int:
    return len(server.backend._batches)


def test_batch_run_writes_exactly_the_records_of_a_live_run(server, tmp_path):
    live = generate(options(tmp_path / "live", server.base_url, batch=False))
    server.reset()
    before = batch_count(server)
    batched = generate(options(tmp_path / "batch", server.base_url))

    assert server.stats()["total"] == 0  # not one live chat completion
    assert batch_count(server) == before + 1
    assert outputs(tmp_path / "batch") == outputs(tmp_path / "live")
    assert sum(len(lines) for lines in outputs(tmp_path / "batch").values()) == 66
    assert batched.counts == live.counts and batched.usage == live.usage
    assert batched.requests_sent == 0 and batched.cache_hits == 66
    state = load_state(tmp_path / "batch")
    assert [stored.status for stored in state.batches] == ["completed"] and state.batches[0].ingested
    for path in (tmp_path / "batch").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert SECRET not in path.read_text(encoding="utf-8"), path


def test_input_lines_carry_the_item_and_request_key(server, tmp_path):
    generate(options(tmp_path / "out", server.base_url, tasks=["conversation"], limit=2))
    lines = [json.loads(line) for line in (tmp_path / "out" / "batch" / "input-0001.jsonl").read_text().splitlines()]
    assert [line["custom_id"].split(":")[:2] for line in lines] == [["100013", "conversation"], ["100027", "conversation"]]
    for line in lines:
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert set(line["body"]) == {"model", "messages", "temperature", "max_tokens", "seed"}
    records = [json.loads(line) for line in (tmp_path / "out" / "conversation.jsonl").read_text().splitlines()]
    assert sorted(record["meta"]["request_key"] for record in records) == sorted(line["custom_id"].split(":")[2] for line in lines)


def test_rerun_after_a_kill_reattaches_to_the_submitted_batch(server, tmp_path):
    opts = options(tmp_path / "out", server.base_url)
    job = BatchJob(opts)  # the submit step alone, then "killed" before waiting
    job.submit(job.plan())
    job.close()
    stored = load_state(tmp_path / "out").batches
    assert len(stored) == 1 and stored[0].batch_id and not stored[0].ingested
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "running"
    submitted = batch_count(server)
    server.reset()

    manifest = generate(opts)
    assert batch_count(server) == submitted  # re-attached, nothing submitted again
    assert server.stats()["total"] == 0
    assert sum(counts.written + counts.rejected_total for counts in manifest.counts.values()) == 66

    generate(opts)  # nothing left: no batch at all
    assert batch_count(server) == submitted


def test_batch_size_splits_the_requests(server, tmp_path):
    before = batch_count(server)
    manifest = generate(options(tmp_path / "out", server.base_url, batch_size=25))
    state = load_state(tmp_path / "out")
    assert [len(stored.custom_ids) for stored in state.batches] == [25, 25, 16]
    assert batch_count(server) == before + 3
    assert all(counts.skipped == {} for counts in manifest.counts.values())


def test_failed_batch_lines_stay_pending_and_are_counted(tmp_path):
    out = tmp_path / "out"
    with MockServer(MockServerConfig(p500=0.3, seed=3, batch_delay_s=0.0)) as flaky:
        manifest = generate(options(out, flaky.base_url))
    failed = load_state(out).batches[0].request_counts["failed"]
    assert failed > 0
    assert sum(counts.skipped.get("batch_failed", 0) for counts in manifest.counts.values()) == failed
    assert sum(counts.written + counts.rejected_total for counts in manifest.counts.values()) == 66 - failed

    with MockServer(MockServerConfig(batch_delay_s=0.0)) as healthy:
        manifest = generate(options(out, healthy.base_url))
        assert healthy.stats()["total"] == 0
    state = load_state(out)
    assert len(state.batches) == 2 and len(state.batches[1].custom_ids) == failed  # only the failed ones again
    assert all(counts.skipped == {} for counts in manifest.counts.values())
    assert sum(counts.written + counts.rejected_total for counts in manifest.counts.values()) == 66


def test_batch_status_shows_each_stored_batch(server, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the cli fixture clears it
    generate(options(tmp_path / "out", server.base_url, batch_size=40))
    state = load_state(tmp_path / "out")
    result = cli("batch", "status", tmp_path / "out", env={"OPENAI_API_KEY": SECRET})
    assert result.exit_code == 0, result.output
    cells = [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in result.output.splitlines() if "│ batch_" in line]
    assert sorted(cells) == sorted(
        [stored.batch_id, "completed", str(len(stored.custom_ids)), str(len(stored.custom_ids)), "0", "yes"] for stored in state.batches
    )
    assert sorted(len(stored.custom_ids) for stored in state.batches) == [26, 40]


def test_batch_status_without_state_is_one_line(tmp_path, cli):
    result = cli("batch", "status", tmp_path)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "no batch state" in result.output


def test_batch_needs_the_openai_teacher(tmp_path, generate_mock):
    result = generate_mock(tmp_path / "out", "--batch", expect=2)
    assert len(result.output.strip().splitlines()) == 1 and "--batch needs --teacher openai" in result.output


def test_batch_through_the_cli(server, tmp_path, cli):
    out = tmp_path / "out"
    args = ["generate", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--model", "mock-teacher"]
    args += ["--base-url", server.base_url, "--batch", "--poll-interval", "0.01", "--tasks", "detail", "--no-progress"]
    result = cli(*args, env={"OPENAI_API_KEY": SECRET})
    assert result.exit_code == 0, result.output
    assert len((out / "detail.jsonl").read_text().splitlines()) + len((out / "rejects.jsonl").read_text().splitlines()) == 22
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and SECRET not in json.dumps(manifest)


def test_a_kill_between_upload_and_create_reuses_the_upload(server, tmp_path, monkeypatch):
    opts = options(tmp_path / "out", server.base_url, tasks=["conversation"])
    job = BatchJob(opts)
    monkeypatch.setattr(job, "create", lambda stored: None)  # killed right after the upload was recorded
    job.submit(job.plan())
    job.close()
    assert load_state(tmp_path / "out").batches[0].batch_id is None
    files, batches = len(server.backend._files), batch_count(server)

    manifest = generate(opts)
    assert batch_count(server) == batches + 1
    assert len(server.backend._files) == files + 1  # the output file only: the input was not uploaded again
    assert manifest.counts["conversation"].written == 22


def test_input_files_stay_under_the_size_cap(server, tmp_path):
    manifest = generate(options(tmp_path / "out", server.base_url, tasks=["detail"], batch_max_bytes=20_000))
    inputs = sorted((tmp_path / "out" / "batch").glob("input-*.jsonl"))
    assert len(inputs) > 1 and all(path.stat().st_size <= 20_000 for path in inputs)
    assert manifest.counts["detail"].written + manifest.counts["detail"].rejected_total == 22


def test_answers_cut_short_get_a_second_batch_with_retry_length(server, tmp_path):
    changes = dict(tasks=["detail"], max_tokens=40, length_retry_max_tokens=1024)
    live = generate(options(tmp_path / "live", server.base_url, batch=False, **changes))
    before = batch_count(server)
    batched = generate(options(tmp_path / "batch", server.base_url, **changes))
    assert batch_count(server) == before + 2  # the cut answers go again, with room to finish
    assert outputs(tmp_path / "batch") == outputs(tmp_path / "live")
    assert batched.counts == live.counts and batched.usage == live.usage


def test_a_wrong_key_is_one_line_without_the_key(server, tmp_path, cli):
    args = ["generate", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / "out", "--model", "mock-teacher"]
    result = cli(*args, "--base-url", server.base_url, "--batch", "--no-progress", env={"OPENAI_API_KEY": "sk-wrong-key"})
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "OPENAI_API_KEY" in error[0] and "sk-wrong-key" not in result.output


def test_a_failed_batch_leaves_its_items_pending(server, tmp_path, monkeypatch):
    whole = BatchJob.chunks

    def broken(self, needed):  # lines the server refuses, so it fails the whole batch
        for ids, data in whole(self, needed):
            yield ids, data.replace(b'"url": "/v1/chat/completions"', b'"url": "/v1/embeddings"')

    monkeypatch.setattr(BatchJob, "chunks", broken)
    manifest = generate(options(tmp_path / "out", server.base_url, tasks=["conversation"], limit=3))
    assert load_state(tmp_path / "out").batches[0].status == "failed"
    assert manifest.counts["conversation"].skipped == {"batch_failed": 3} and manifest.counts["conversation"].written == 0


def test_a_key_with_a_trailing_line_end_works_for_batches_as_for_live_requests(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "\n")  # as `export OPENAI_API_KEY=$(cat key.txt)` can leave it

    generate(options(tmp_path / "batch", server.base_url))

    assert sum(len(lines) for lines in outputs(tmp_path / "batch").values()) == 66
    assert [stored.status for stored in load_state(tmp_path / "batch").batches] == ["completed"]
