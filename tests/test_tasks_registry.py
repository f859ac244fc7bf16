"""A new task is one registration (plus its prompt folder): the CLI, pipeline, --force, merge and export follow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.tasks.prompts import BUNDLED_PROMPTS
from datagen.tasks.registry import TASKS, ResponseFormat, TaskSpec, register, unregister

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = REPO / "data" / "captions.json"
INSTANCES = REPO / "data" / "instances.json"
TOY = "scene_summary"


def toy_prompts(root: Path) -> Path:
    """Our prompts plus a pack and an instruction list for the toy task."""
    shutil.copytree(BUNDLED_PROMPTS, root)
    pack = root / TOY
    pack.mkdir()
    (pack / "system_message.txt").write_text("Summarise the scene in a short paragraph, as if you saw the picture.\n", encoding="utf-8")
    shots = {
        "A cat sleeps on a red sofa.\nA sleepy cat on a couch.": "A cat is asleep on a red sofa, curled up in the afternoon light.",
        "Two people ride bikes down a street.\nCyclists on a city road.": "Two people are cycling down a city street side by side.",
    }
    for number, (context, answer) in enumerate(shots.items()):
        (pack / f"{number:03d}_caps.txt").write_text(context, encoding="utf-8")
        (pack / f"{number:03d}_conv.txt").write_text(answer, encoding="utf-8")
    (root / "instructions" / "summary.txt").write_text("Summarise the picture.\nWhat is this picture about, in brief?\n", encoding="utf-8")
    return root


@pytest.fixture
def toy_task():
    spec = register(TaskSpec(TOY, (TOY,), "captions", ResponseFormat.PROSE, instructions="summary"))
    yield spec
    unregister(TOY)


def invoke(*args: object, expect: int = 0):
    result = CliRunner().invoke(app, [str(arg) for arg in args], env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result


def generate(out: Path, prompts: Path, *extra: object, expect: int = 0):
    return invoke(
        "generate", "--teacher", "mock", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--prompts", prompts,
        "--no-progress", "--tasks", f"{TOY},conversation", *extra, expect=expect,
    )


def test_a_registered_task_runs_end_to_end_with_the_mock_teacher(toy_task, tmp_path: Path) -> None:
    prompts = toy_prompts(tmp_path / "prompts")
    out = tmp_path / "out"
    generate(out, prompts)
    rows = [json.loads(line) for line in (out / f"{TOY}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 20
    instructions = {"Summarise the picture.", "What is this picture about, in brief?"}
    for row in rows:
        assert row["meta"]["task"] == TOY and row["meta"]["teacher"]["mock"] is True
        assert row["conversations"][0]["value"].replace("<image>", "").strip() in instructions
        assert row["meta"]["box_ids"] == []  # its default context is captions only
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"][TOY]["written"] == len(rows)
    assert manifest["settings"]["sampling"]["contexts"][TOY] == "captions"
    assert "instructions:summary" in manifest["settings"]["fingerprint_parts"]

    exported = tmp_path / "llava.json"
    result = invoke("export", out, "--out", exported, "--tasks", f"{TOY},conversation")
    assert f"{TOY} {len(rows)}" in result.output
    records = json.loads(exported.read_text(encoding="utf-8"))
    assert sum(record["id"] in {row["id"] for row in rows} for record in records) >= len(rows)


def test_force_sets_aside_a_registered_task_file(toy_task, tmp_path: Path) -> None:
    prompts = toy_prompts(tmp_path / "prompts")
    out = tmp_path / "out"
    generate(out, prompts, "--limit", 2)
    (out / "manifest.json").unlink()  # records whose manifest is gone: only --force may set them aside
    generate(out, prompts, "--limit", 2, expect=2)
    generate(out, prompts, "--limit", 2, "--force")
    aside = next(out.glob("replaced-*"))
    assert (aside / f"{TOY}.jsonl").stat().st_size > 0


def test_unknown_and_duplicate_tasks_are_refused(tmp_path: Path) -> None:
    result = invoke("generate", "--teacher", "mock", "--captions", CAPTIONS, "--out", tmp_path / "o", "--tasks", TOY, expect=2)
    assert f"unknown task {TOY}" in result.output and ",".join(TASKS) in result.output
    with pytest.raises(ValueError, match="registered already"):
        register(TaskSpec("detail", ("detail",), "captions", ResponseFormat.PROSE, instructions="detail"))
    with pytest.raises(ValueError, match="instruction list"):
        TaskSpec("bad", ("bad",), "captions", ResponseFormat.PROSE)


def test_shards_of_a_registered_task_merge(toy_task, tmp_path: Path) -> None:
    prompts = toy_prompts(tmp_path / "prompts")
    generate(tmp_path / "a", prompts, "--shard", "0/2")
    generate(tmp_path / "b", prompts, "--shard", "1/2")
    invoke("merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "merged")
    whole = tmp_path / "whole"
    generate(whole, prompts)
    assert sorted((tmp_path / "merged" / f"{TOY}.jsonl").read_bytes().splitlines()) == sorted((whole / f"{TOY}.jsonl").read_bytes().splitlines())
    merged = json.loads((tmp_path / "merged" / "manifest.json").read_text(encoding="utf-8"))
    assert merged["counts"][TOY]["written"] == json.loads((whole / "manifest.json").read_text(encoding="utf-8"))["counts"][TOY]["written"]


def test_a_registered_prose_task_gets_the_prose_answer_checks(toy_task) -> None:
    from datagen.quality.parse import Rejected
    from datagen.tasks.registry import parse_answer

    reply = "Sure, a brown dog runs across a green park while its owner watches from a bench."
    with pytest.raises(Rejected) as rejected:
        parse_answer(TOY, reply, "stop")
    assert rejected.value.reason == "chat_preamble"  # as for detail: a description opens with the picture
    assert parse_answer(TOY, reply.removeprefix("Sure, ").capitalize(), "stop")
