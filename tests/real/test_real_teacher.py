"""A real open model as teacher and as judge: SmolLM2-135M-Instruct behind `transformers serve`.

A 135M model follows our formats badly (it loops to the token limit, copies examples, drifts off the image), so
these tests assert what a user checks after such a run, whatever the model wrote: every item accounted for, every
reject with a named reason and its raw text, every written record passing the answer checks, the teacher named
and not a mock, and an exit code and failure line that match the outcome.
"""

from __future__ import annotations

import json
import typing

import pytest

from real_helpers import DATA, IMAGES, TIMEOUT_S, datagen, error_lines, read_jsonl
from datagen.formats.records import RejectReason
from datagen.tasks.registry import DEFAULT_TASKS, task_spec

pytestmark = [pytest.mark.real, pytest.mark.slow]

REASONS = set(typing.get_args(RejectReason))


def test_generate_accounts_for_every_item(real_generate, smollm2):
    result, out = real_generate
    manifest = json.loads((out / "manifest.json").read_text())
    rejects = read_jsonl(out / "rejects.jsonl")
    assert manifest["teacher"] == {"kind": "openai", "model": str(smollm2), "mock": False}
    assert set(manifest["counts"]) == set(DEFAULT_TASKS)
    for task, counts in manifest["counts"].items():
        records = read_jsonl(out / task_spec(task).file_name)
        assert counts["requested"] == IMAGES
        assert counts["skipped"] == {}, counts  # the server was up: every item was answered
        assert counts["written"] == len(records)
        assert counts["rejected"] == dict(sorted(_count(row["reason"] for row in rejects if row["task"] == task).items()))
        assert counts["written"] + sum(counts["rejected"].values()) == IMAGES
        for record in records:
            assert record["meta"]["teacher"]["model"] == str(smollm2) and record["meta"]["teacher"]["mock"] is False
            assert record["meta"]["finish_reason"] == "stop"
    # The server reports what it read and wrote, and the manifest keeps it.
    assert manifest["usage"]["prompt_tokens"] > 1000 * IMAGES and manifest["usage"]["completion_tokens"] > 0


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def test_every_reject_names_its_reason_and_keeps_the_reply(real_generate):
    _, out = real_generate
    for row in read_jsonl(out / "rejects.jsonl"):
        assert row["reason"] in REASONS and row["detail"], row
        assert isinstance(row["raw"], str) and row["meta"]["teacher"]["mock"] is False
        if row["reason"] == "truncated":
            assert row["meta"]["finish_reason"] == "length"


def test_exit_code_failure_line_and_audit_match_the_outcome(real_generate, tmp_path):
    """Records written: exit 0 and each passes `datagen audit`'s checks. None (greedy SmolLM2 mostly loops to the
    token limit): exit 1 and the one line says that no answer passed the checks."""
    result, out = real_generate
    manifest = json.loads((out / "manifest.json").read_text())
    files = [out / task_spec(task).file_name for task in DEFAULT_TASKS if read_jsonl(out / task_spec(task).file_name)]
    if files:
        assert result.returncode == 0, result.stderr
        assert manifest["status"] == "completed" and manifest["failure"] is None
        for path in files:
            audit = datagen("audit", path, "--captions", DATA / "captions.json", "--instances", DATA / "instances.json",
                            "--out", tmp_path / path.stem, "--max-flagged", 0)
            assert audit.returncode == 0, audit.stdout + audit.stderr
    else:
        assert result.returncode == 1, result.stderr
        [line] = error_lines(result)
        assert line.startswith("error: no answer passed the checks"), line
        assert manifest["status"] == "failed" and manifest["failure"] == line.removeprefix("error: ")


@pytest.fixture(scope="module")
def mock_pair(tmp_path_factory):
    """Two offline teachers' answers over the same images: fixed inputs for the real judge."""
    root = tmp_path_factory.mktemp("judge-inputs")
    for name, teacher in (("a", "mock"), ("b", "mock-terse")):
        made = datagen("generate", "--teacher", teacher, "--captions", DATA / "captions.json", "--instances", DATA / "instances.json",
                       "--out", root / name, "--limit", IMAGES, "--tasks", "detail", "--no-progress")
        assert made.returncode == 0, made.stderr
    return root / "a", root / "b"


def test_judge_with_the_real_model_counts_every_judgement(mock_pair, smollm2, real_server, tmp_path):
    out = tmp_path / "judged"
    result = datagen("judge", *mock_pair, "--captions", DATA / "captions.json", "--instances", DATA / "instances.json",
                     "--tasks", "detail", "--out", out, "--judge-model", smollm2, "--base-url", real_server,
                     "--max-tokens", 32, "--concurrency", 2, "--timeout", TIMEOUT_S, "--max-retries", 1, "--bootstrap", 100)
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    reviews = read_jsonl(out / "reviews.jsonl")
    assert summary["judges"] == [{"kind": "openai", "model": str(smollm2), "mock": False}] and summary["mock"] is False
    assert counts["requested"] == 2 * IMAGES  # each pair in both orders
    assert counts["skipped"] == {}
    assert counts["judged"] + counts["failed"].get("no_scores", 0) == counts["requested"] == len(reviews)
    for review in reviews:
        assert isinstance(review["raw"] if not review["ok"] else review["reason"], str)
        if review["ok"]:
            assert 1 <= review["reference_score"] <= 10 and 1 <= review["candidate_score"] <= 10
    pairs = summary["tables"][str(smollm2)]["all"]["pairs"] if summary["tables"][str(smollm2)] else 0
    if pairs:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        [line] = error_lines(result)
        assert "no pair was scored in both orders" in line and summary["failure"] == line.removeprefix("error: ")
