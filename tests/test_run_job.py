"""The job core (datagen/run/job.py) and what runs through it: one item's handling without a server, SIGTERM and
kill -9 for `generate` and `judge`, a full disk under `judge`, `--samples-per-image`, one meaning per exit code
across live and batch runs, and a folder holding no record taking new settings."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import datagen.files.jsonl
from datagen.formats.records import Usage
from datagen.run.answer import answer_item
from datagen.run.batch import custom_id, item_of
from datagen.run.options import GenerateOptions
from datagen.run.plan import Plan
from datagen.tasks.registry import DEFAULT_TASKS, TASKS, ItemKey, ResponseFormat, TaskSpec, register, unregister
from datagen.teachers.teacher import ChatReply, ChatRequest, MockTeacher, RequestRefused, RetryableError, Teacher
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

REPO = Path(__file__).resolve().parent.parent
CAPTIONS, INSTANCES = REPO / "data" / "captions.json", REPO / "data" / "instances.json"
REAL_WRITE = os.write


# -- one item, no server ---------------------------------------------------------------------------------------------


class Scripted(Teacher):
    """Answers each request with the next of `replies` (a ChatReply, or an exception to raise)."""

    def __init__(self, *replies: ChatReply | Exception) -> None:
        self.replies = list(replies)
        self.info = MockTeacher().info
        self.stats: Counter[str] = Counter()
        self.asked: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatReply:
        self.asked.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def aclose(self) -> None:
        return None


def reply(text: str, finish: str = "stop", tokens: int = 5) -> ChatReply:
    return ChatReply(text=text, finish_reason=finish, usage=Usage(prompt_tokens=10, completion_tokens=tokens))


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Plan:
    out = tmp_path_factory.mktemp("plan")
    options = GenerateOptions(captions=CAPTIONS, instances=INSTANCES, out=out, tasks=list(TASKS), teacher="mock", length_retry_max_tokens=2048)
    planned = Plan(options, MockTeacher().info)
    planned.select()
    return planned


def handle(plan: Plan, teacher: Teacher, task: str = "detail", nth: int = 0):
    image = plan.source.image(plan.selected_ids[0])
    key = ItemKey(image.image_id, task, nth)
    request, picture = plan.request_for(image, key)
    return asyncio.run(answer_item(plan, teacher, image, key, request, picture))


DESCRIPTION = "A man rides a bicycle along a quiet street lined with trees.\n\nA dog trots beside him on a leash."


def test_an_answer_becomes_a_record_of_its_item(plan):
    outcome = handle(plan, Scripted(reply(DESCRIPTION)))
    assert outcome.reject is None and outcome.skip is None and outcome.record is not None
    assert outcome.record.id == f"{plan.selected_ids[0]:012d}" and outcome.record.conversations[1].value == DESCRIPTION
    assert [usage.completion_tokens for usage in outcome.paid] == [5] and outcome.record.meta.grounding is not None


def test_a_later_item_of_an_image_has_its_own_seed_and_id(plan):
    first, second = Scripted(reply(DESCRIPTION)), Scripted(reply(DESCRIPTION))
    one, two = handle(plan, first), handle(plan, second, nth=2)
    assert two.record.id == one.record.id + "-2"
    assert first.asked[0].seed != second.asked[0].seed and first.asked[0].key() != second.asked[0].key()


def test_a_bad_answer_is_a_reject_and_a_transient_failure_a_skip(plan):
    outcome = handle(plan, Scripted(reply("Question:\nWhat?\n===\nAnswer:\nA bus.")))
    assert outcome.record is None and outcome.reject.reason == "unparseable" and outcome.reject.raw.startswith("Question:")
    assert handle(plan, Scripted(RetryableError("HTTP 503"))).skip == "request_failed"
    refused = handle(plan, Scripted(RequestRefused("HTTP 400: too long")))
    assert refused.reject.reason == "request_refused" and refused.paid == []


def test_a_cut_answer_is_asked_once_more_and_both_are_paid_for(plan):
    teacher = Scripted(reply("A man rides a", finish="length", tokens=7), reply(DESCRIPTION, tokens=9))
    outcome = handle(plan, teacher)
    assert outcome.record is not None and [request.max_tokens for request in teacher.asked] == [1024, 2048]
    assert [usage.completion_tokens for usage in outcome.paid] == [7, 9]


# -- the items a task yields ------------------------------------------------------------------------------------------


def test_an_item_names_itself_in_a_custom_id_and_a_record_id():
    for key in (ItemKey(42, "detail"), ItemKey(42, "detail", 3)):
        assert item_of(custom_id(key, "abc123")) == key
    assert custom_id(ItemKey(42, "detail"), "k") == "42:detail:k"  # the first item's id is the one it always had
    assert ItemKey.of_record(42, "detail", "000000000042-3") == ItemKey(42, "detail", 3)
    assert ItemKey.of_record(42, "detail", "000000000042") == ItemKey(42, "detail")


def run_cli(*args: object, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datagen.cli", *map(str, args)], env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


def test_samples_per_image_gives_distinct_items_that_resume(generate_mock, tmp_path):
    one, three = tmp_path / "one", tmp_path / "three"
    generate_mock(one, "--limit", 4)
    generate_mock(three, "--limit", 4, "--samples-per-image", 2)
    grown = generate_mock(three, "--limit", 4, "--samples-per-image", 3)  # grows the set: only the third samples are asked
    manifest = json.loads((three / "manifest.json").read_text())
    assert manifest["settings"]["samples_per_image"] == 3 and "samples_per_image" not in json.loads((one / "manifest.json").read_text())["settings"]
    rejects = lines(three / "rejects.jsonl")
    for task in DEFAULT_TASKS:
        records = lines(three / f"{task}.jsonl")
        done = [row["id"] for row in records] + [row["id"] for row in rejects if row["task"] == task]
        assert len(done) == len(set(done)) == 12 and manifest["counts"][task]["requested"] == 12
        assert len({row["meta"]["request_key"] for row in records}) == len(records)  # distinct seeds, distinct requests
        # The first sample of each image is the record a run of one sample per image writes.
        firsts = {row["id"]: row for row in records if "-" not in row["id"]}
        assert all(firsts[row["id"]] == row for row in lines(one / f"{task}.jsonl") if row["id"] in firsts)
    assert "requests sent 0" not in grown.output
    again = generate_mock(three, "--limit", 4, "--samples-per-image", 3)
    assert "requests sent 0 | cache hits 0" in again.output  # nothing left to ask


# -- SIGTERM and kill -9 ----------------------------------------------------------------------------------------------


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while len(path.read_text().splitlines()) < count if path.exists() else True:
        assert process.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < end, f"{path} did not reach {count} lines"
        time.sleep(0.05)


def stop(process: subprocess.Popen, sig: int) -> tuple[int, str]:
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def start(*args: object, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "datagen.cli", *map(str, args)], env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_ends_generate_in_one_line_with_true_counts_and_a_rerun_resumes(tmp_path):
    captions, instances = write_coco(tmp_path, images=40)
    out = tmp_path / "out"
    command = ("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher", "--concurrency", "2")
    with MockServer(MockServerConfig(latency_ms=60)) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        process = start(*command, env=env)
        wait_for_lines(out / "conversation.jsonl", 3, process)
        code, stderr = stop(process, signal.SIGTERM)
        assert code == 143 and stderr.strip().splitlines() == ["error: terminated (SIGTERM); rerun the same command to resume where it stopped"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["finished_at"]
        for task, counts in manifest["counts"].items():
            assert counts["written"] == len(lines(out / f"{task}.jsonl")) and counts["skipped"]["not_reached"] > 0
        assert sum(counts["written"] for counts in manifest["counts"].values()) >= 3
        rerun = run_cli(*command, "--no-progress", env=env)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    rejects = lines(out / "rejects.jsonl")
    for task, counts in manifest["counts"].items():
        ids = [row["id"] for row in lines(out / f"{task}.jsonl")] + [row["id"] for row in rejects if row["task"] == task]
        assert len(ids) == len(set(ids)) == counts["written"] + sum(counts["rejected"].values()) == 40


JUDGE_DRIVER = """
import asyncio, sys
from datagen import cli
from datagen.judge import mock, run

class Slow(mock.MockJudge):
    async def complete(self, request):
        await asyncio.sleep(0.03)
        return await super().complete(request)

run.make_judges = lambda options: [Slow("overlap")]
sys.argv = ["datagen", *sys.argv[1:]]
cli.main()
"""


def judge_files(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "questions": [{"question_id": i, "image": "a.jpg", "text": f"What is item {i}?", "category": "conv"} for i in range(count)],
        "reference": [{"question_id": i, "text": f"A red bus number {i}."} for i in range(count)],
        "candidate": [{"question_id": i, "text": f"A bus, {i}."} for i in range(count)],
        "context": [{"image": "a.jpg", "caption": "A red bus on a street."}],
    }
    args = []
    for name, items in rows.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
        args += [f"--{name}", str(folder / f"{name}.jsonl")]
    return args


def start_judge(tmp_path: Path, out: Path, count: int = 150) -> subprocess.Popen:
    args = ["judge", *judge_files(tmp_path / "files", count), "--out", str(out), "--concurrency", "2", "--bootstrap", "0"]
    return subprocess.Popen([sys.executable, "-c", JUDGE_DRIVER, *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def review_keys(out: Path) -> list[tuple]:
    return [(row["item_id"], row["order"]) for row in lines(out / "reviews.jsonl")]


def test_sigterm_ends_judge_in_one_line_with_true_counts_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "judged"
    process = start_judge(tmp_path, out)
    wait_for_lines(out / "reviews.jsonl", 5, process)
    code, stderr = stop(process, signal.SIGTERM)
    assert code == 143 and stderr.strip().splitlines() == ["error: terminated (SIGTERM); rerun the same command to resume where it stopped"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["counts"]["judged"] == len(review_keys(out)) and summary["counts"]["skipped"]["not_reached"] > 0
    rerun = start_judge(tmp_path, out)
    _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    keys = review_keys(out)
    assert len(keys) == len(set(keys)) == 300 and json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_judge_resumes_after_kill_9(tmp_path):
    out = tmp_path / "judged"
    process = start_judge(tmp_path, out)
    wait_for_lines(out / "reviews.jsonl", 5, process)
    code, _ = stop(process, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert 5 <= len((out / "reviews.jsonl").read_bytes().splitlines()) < 300
    rerun = start_judge(tmp_path, out)
    _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    keys = review_keys(out)
    assert len(keys) == len(set(keys)) == 300  # a torn last line is cut and redone, nothing twice


# -- a full disk and a fourth task under judge ------------------------------------------------------------------------


def test_a_full_disk_under_judge_ends_in_one_line_and_a_rerun_finishes(cli, tmp_path, monkeypatch):
    out = tmp_path / "judged"
    args = ["judge", *judge_files(tmp_path / "files", 6), "--out", out, "--judge", "mock", "--bootstrap", "0", "--concurrency", "1"]
    calls = []

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("reviews.jsonl"):
            calls.append(fd)
            if len(calls) > 4:
                REAL_WRITE(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return REAL_WRITE(fd, data)

    monkeypatch.setattr(datagen.files.jsonl.os, "write", write)
    result = cli(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert str(out / "reviews.jsonl") in line and "no space left" in line.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["counts"]["judged"] == 4
    monkeypatch.setattr(datagen.files.jsonl.os, "write", REAL_WRITE)
    assert cli(*args).exit_code == 0
    keys = review_keys(out)
    assert len(keys) == len(set(keys)) == 12


def test_a_cache_broken_during_judge_ends_in_one_line(cli, tmp_path, monkeypatch):
    from datagen.teachers import cache

    out = tmp_path / "judged"
    args = ["judge", *judge_files(tmp_path / "files", 6), "--out", out, "--judge", "mock", "--bootstrap", "0", "--concurrency", "1"]
    real, calls = cache.ResponseCache.put, []

    def put(self, key, reply):
        calls.append(key)
        if len(calls) > 3:
            self._db.close()  # as a file damaged while the run goes: every later statement fails
        return real(self, key, reply)

    monkeypatch.setattr(cache.ResponseCache, "put", put)
    result = cli(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "cache.sqlite" in line
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


FOURTH = "scene_note"


@pytest.fixture
def fourth_task(tmp_path):
    from tests.test_tasks_registry import toy_prompts

    register(TaskSpec(FOURTH, ("scene_summary",), "captions", ResponseFormat.PROSE, instructions="summary"))
    yield toy_prompts(tmp_path / "prompts")
    unregister(FOURTH)


def test_judge_compares_a_registered_fourth_task(cli, fourth_task, tmp_path):
    folders = []
    for teacher in ("mock", "mock-terse"):
        folder = tmp_path / teacher
        result = cli("generate", "--teacher", teacher, "--captions", CAPTIONS, "--out", folder, "--prompts", fourth_task, "--no-progress",
                     "--tasks", f"{FOURTH},conversation", "--limit", 5)
        assert result.exit_code == 0, result.output
        folders.append(folder)
    out = tmp_path / "judged"
    result = cli("judge", *folders, "--captions", CAPTIONS, "--out", out, "--judge", "mock", "--tasks", f"{FOURTH},conversation", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert FOURTH in summary["tables"]["mock-overlap"] and summary["counts"]["judged"] > 0
    asked = {row["task"] for row in lines(out / "reviews.jsonl")}
    assert asked == {FOURTH, "conversation"}
    assert "scene note" in TASKS[FOURTH].judge_question()


# -- one meaning per exit code; a folder holding no record --------------------------------------------------------------


def test_a_batch_whose_items_failed_is_incomplete_exit_3_as_a_live_run_is(tmp_path):
    captions, instances = write_coco(tmp_path, images=6)
    out = tmp_path / "out"
    with MockServer(MockServerConfig(p500=0.3, seed=3, batch_delay_s=0.0)) as server:  # fails some lines of the batch
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        result = run_cli("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher", "--batch",
                         "--poll-interval", "0.05", "--no-progress", "--tasks", "detail", env=env)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (result.returncode, manifest["status"]) == (3, "incomplete"), result.stderr
    assert manifest["counts"]["detail"]["skipped"].get("batch_failed", 0) > 0
    assert "rerun the same command" in result.stderr


def test_a_folder_holding_no_record_takes_new_settings(tmp_path):
    captions, instances = write_coco(tmp_path, images=3)
    out = tmp_path / "out"
    command = ("generate", "--captions", captions, "--instances", instances, "--out", out, "--no-progress")
    with MockServer(MockServerConfig(accept_any_model=False, models=("right-model",))) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        wrong = run_cli(*command, "--model", "wrong-model", env=env)
        assert wrong.returncode == 2 and (out / "manifest.json").exists()
        fixed = run_cli(*command, "--model", "right-model", env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads((out / "manifest.json").read_text())["teacher"]["model"] == "right-model"


def test_samples_per_image_through_a_requests_file_and_a_dry_run(tmp_path):
    captions, instances = write_coco(tmp_path, images=2)
    common = ("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "mock-teacher",
              "--no-progress", "--tasks", "detail", "--samples-per-image", "3")
    with MockServer() as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        dry = run_cli(*common, "--dry-run", env=env)
        handed = run_cli(*common, "--requests-out", tmp_path / "requests.jsonl", env=env)
    assert dry.returncode == 0 and "dry run: 6 requests would be sent" in dry.stdout, dry.stderr
    assert handed.returncode == 0, handed.stderr
    ids = [json.loads(line)["custom_id"] for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    items = sorted(item_of(cid) for cid in ids)
    assert [item.nth for item in items] == [0, 1, 2, 0, 1, 2] and len({cid.split(":")[2] for cid in ids}) == 6


def test_sigterm_while_batches_are_out_ends_in_one_line_and_says_interrupted(tmp_path):
    captions, instances = write_coco(tmp_path, images=3)
    out = tmp_path / "out"
    with MockServer(MockServerConfig(batch_delay_s=120)) as server:
        process = start("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher", "--batch",
                        "--poll-interval", "0.05", "--no-progress", env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url})
        wait_for_lines(out / "batch" / "state.json", 1, process)
        time.sleep(0.3)  # into the wait
        code, stderr = stop(process, signal.SIGTERM)
    assert code == 143 and stderr.strip().splitlines()[-1].startswith("error: terminated (SIGTERM)"), stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
