"""`datagen generate` end to end with the mock teacher: outputs, manifest, determinism, resume, flags, errors, secrets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.tasks.prompts import BUNDLED_PROMPTS
from datagen.formats.records import GeneratedRecord, Reject
from datagen.tasks.registry import DEFAULT_TASKS, TASKS, task_spec

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = REPO / "data" / "captions.json"
INSTANCES = REPO / "data" / "instances.json"
SAMPLE_IDS = sorted(image["id"] for image in json.loads(CAPTIONS.read_text(encoding="utf-8"))["images"])
OUTPUT_FILES = [f"{task}.jsonl" for task in DEFAULT_TASKS] + ["rejects.jsonl"]
NO_KEY = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}


def run_generate(out: Path, *extra: object, expect: int = 0, instances: Path | None = INSTANCES, env=NO_KEY):
    args = ["generate", "--teacher", "mock", "--captions", str(CAPTIONS), "--out", str(out), "--no-progress"]
    if instances is not None:
        args += ["--instances", str(instances)]
    result = CliRunner().invoke(app, args + [str(arg) for arg in extra], env=env)
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


def snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUT_FILES if (out / name).exists()}


def error_lines(result) -> list[str]:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    return lines


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """One default run (seed 0, all tasks) shared by the read-only tests."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    run_generate(out)
    return out


@pytest.fixture
def baseline_copy(baseline: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(baseline, copy)
    return copy


# -- outputs ------------------------------------------------------------------------------------------


def test_writes_task_files_rejects_and_manifest(baseline: Path) -> None:
    for name in [*OUTPUT_FILES, "manifest.json"]:
        assert (baseline / name).is_file(), name


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_one_outcome_per_image_and_task(baseline: Path, task: str) -> None:
    records = read_jsonl(baseline / f"{task}.jsonl")
    rejects = [row for row in read_jsonl(baseline / "rejects.jsonl") if row["task"] == task]
    ids = [row["id"] for row in records] + [row["id"] for row in rejects]
    assert sorted(ids) == [f"{image_id:012d}" for image_id in SAMPLE_IDS]
    assert len(records) >= len(SAMPLE_IDS) - 2  # the mock answers in the right format


def test_every_record_validates_and_says_mock(baseline: Path) -> None:
    for task in DEFAULT_TASKS:
        for row in read_jsonl(baseline / f"{task}.jsonl"):
            record = GeneratedRecord.model_validate(row)
            assert record.meta.task == task
            assert record.meta.teacher.kind == "mock" and record.meta.teacher.mock is True
            assert record.image == f"{record.meta.image_id:012d}.jpg" and record.id == f"{record.meta.image_id:012d}"
            assert record.meta.caption_ids
    for row in read_jsonl(baseline / "rejects.jsonl"):
        Reject.model_validate(row)
    assert manifest(baseline)["teacher"] == {"kind": "mock", "model": "mock", "mock": True}


def test_record_shapes_per_task(baseline: Path) -> None:
    conversation = read_jsonl(baseline / "conversation.jsonl")
    assert any(len(row["conversations"]) >= 4 for row in conversation)  # several turns
    for row in read_jsonl(baseline / "complex_reasoning.jsonl"):
        assert len(row["conversations"]) == 2
    for row in read_jsonl(baseline / "detail.jsonl"):
        assert len(row["conversations"]) == 2


def test_default_contexts_show_boxes_only_where_llava_did(baseline: Path) -> None:
    assert all(row["meta"]["box_ids"] == [] for row in read_jsonl(baseline / "conversation.jsonl"))
    detail = {row["meta"]["image_id"]: row["meta"]["box_ids"] for row in read_jsonl(baseline / "detail.jsonl")}
    assert detail[100027] == [700005, 700006, 700007, 700008]
    assert 700018 not in detail[100058] and 700042 not in detail[100103]  # crowd and degenerate skipped
    assert detail[100061] == [] and detail[100117] == []


def test_manifest_contents(baseline: Path) -> None:
    data = manifest(baseline)
    assert data["status"] == "completed"
    assert data["prompt_hashes"] == {task: task_spec(task).load_pack(BUNDLED_PROMPTS).sha256 for task in DEFAULT_TASKS}
    assert data["settings"]["sampling"]["seed"] == 0
    assert data["source"]["images"] == 22 and data["source"]["boxes"] == 91
    assert data["source"]["hard_cases"]["boxes_crowd_skipped"] == 1
    rejects = read_jsonl(baseline / "rejects.jsonl")
    for task in DEFAULT_TASKS:
        counts = data["counts"][task]
        written = len(read_jsonl(baseline / f"{task}.jsonl"))
        assert counts["written"] == written
        assert sum(counts["rejected"].values()) == sum(1 for row in rejects if row["task"] == task)
        assert counts["requested"] == 22 == counts["written"] + sum(counts["rejected"].values()) + sum(counts["skipped"].values())
    rows = [row for task in DEFAULT_TASKS for row in read_jsonl(baseline / f"{task}.jsonl")] + rejects
    assert data["usage"]["prompt_tokens"] == sum(row["meta"]["usage"]["prompt_tokens"] for row in rows) > 0
    assert data["usage"]["completion_tokens"] == sum(row["meta"]["usage"]["completion_tokens"] for row in rows) > 0
    assert data["requests_sent"] == 66


# -- determinism --------------------------------------------------------------------------------------


def test_same_seed_same_files(baseline: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    run_generate(other, "--concurrency", "3")  # a different completion order must not matter
    for name in OUTPUT_FILES:
        assert sorted_lines(other / name) == sorted_lines(baseline / name), name
    assert manifest(other)["fingerprint"] == manifest(baseline)["fingerprint"]
    assert manifest(other)["counts"] == manifest(baseline)["counts"]


def test_different_seed_changes_records(baseline: Path, tmp_path: Path) -> None:
    other = tmp_path / "seed1"
    run_generate(other, "--seed", "1")
    for task in DEFAULT_TASKS:
        assert sorted_lines(other / f"{task}.jsonl") != sorted_lines(baseline / f"{task}.jsonl"), task
    assert manifest(other)["settings"]["sampling"]["seed"] == 1


# -- selection flags ----------------------------------------------------------------------------------


def test_limit(tmp_path: Path) -> None:
    out = tmp_path / "limit"
    run_generate(out, "--limit", "5")
    for task in DEFAULT_TASKS:
        ids = {row["meta"]["image_id"] for row in read_jsonl(out / f"{task}.jsonl")}
        ids |= {row["meta"]["image_id"] for row in read_jsonl(out / "rejects.jsonl") if row["task"] == task}
        assert ids == set(SAMPLE_IDS[:5])
        assert manifest(out)["counts"][task]["requested"] == 5
    assert manifest(out)["requests_sent"] == 15


def test_tasks_detail_only(tmp_path: Path) -> None:
    out = tmp_path / "detail"
    run_generate(out, "--tasks", "detail")
    assert (out / "detail.jsonl").exists()
    assert not (out / "conversation.jsonl").exists() and not (out / "complex_reasoning.jsonl").exists()
    assert list(manifest(out)["counts"]) == ["detail"]
    assert manifest(out)["requests_sent"] == 22


def test_conversation_alone_needs_no_instances(tmp_path: Path) -> None:
    out = tmp_path / "conv"
    run_generate(out, "--tasks", "conversation", instances=None)
    assert len(read_jsonl(out / "conversation.jsonl")) >= 20


def test_box_tasks_without_instances_refused(tmp_path: Path) -> None:
    result = run_generate(tmp_path / "o", instances=None, expect=2)
    lines = error_lines(result)
    assert len(lines) == 1 and "--instances" in lines[0]


def test_context_override_shows_boxes_to_conversation(baseline: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    run_generate(out, "--tasks", "conversation", "--context", "conversation=captions+boxes")
    by_image = {row["meta"]["image_id"]: row["meta"] for row in read_jsonl(out / "conversation.jsonl")}
    assert by_image[100027]["box_ids"] == [700005, 700006, 700007, 700008]
    base = {row["meta"]["image_id"]: row["meta"] for row in read_jsonl(baseline / "conversation.jsonl")}
    assert by_image[100027]["request_key"] != base[100027]["request_key"]  # the request itself changed
    assert manifest(out)["settings"]["sampling"]["contexts"] == {"conversation": "captions+boxes"}


def test_context_override_hides_boxes_from_detail(tmp_path: Path) -> None:
    out = tmp_path / "ctx2"
    run_generate(out, "--tasks", "detail", "--context", "detail=captions", instances=None)
    assert all(row["meta"]["box_ids"] == [] for row in read_jsonl(out / "detail.jsonl"))


def test_shards_partition_the_images(tmp_path: Path) -> None:
    seen = []
    for index in range(2):
        out = tmp_path / f"shard{index}"
        run_generate(out, "--tasks", "detail", "--shard", f"{index}/2")
        seen.append({row["meta"]["image_id"] for row in read_jsonl(out / "detail.jsonl")})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(SAMPLE_IDS)


def test_llava_layout_prompts_root(tmp_path: Path, llava_prompts: Path) -> None:
    root = llava_prompts
    out = tmp_path / "out"
    run_generate(out, "--prompts", root)
    data = manifest(out)
    assert data["prompt_hashes"] == {task: task_spec(task).load_pack(root).sha256 for task in DEFAULT_TASKS}
    assert data["prompt_hashes"]["detail"] != task_spec("detail").load_pack(BUNDLED_PROMPTS).sha256
    for task in DEFAULT_TASKS:
        rows = read_jsonl(out / f"{task}.jsonl")
        assert len(rows) >= 20
        assert {row["meta"]["prompt_hash"] for row in rows} == {data["prompt_hashes"][task]}
    # The request sent for an image is exactly system message (byte for byte) + shots in file order + context.
    from datagen.source.coco import CocoSource
    from datagen.run.items import SamplingSettings, build_request

    image = CocoSource(CAPTIONS, INSTANCES).image(100027)
    sampling = SamplingSettings(model="mock", temperature=0.7, max_tokens=1024, seed=0, contexts={name: TASKS[name].default_context for name in DEFAULT_TASKS})
    request = build_request(image, "detail", task_spec("detail").load_pack(root), sampling)
    assert request.messages[0]["content"].encode() == (root / "detail_description" / "system_message.txt").read_bytes()
    sent = {row["meta"]["image_id"]: row["meta"]["request_key"] for row in read_jsonl(out / "detail.jsonl")}
    assert sent[100027] == request.key()


# -- resume, refusal to mix settings, --force --------------------------------------------------------


def test_rerun_makes_no_requests_and_changes_nothing(baseline_copy: Path) -> None:
    before = snapshot(baseline_copy)
    counts_before = manifest(baseline_copy)["counts"]
    run_generate(baseline_copy)
    assert snapshot(baseline_copy) == before
    data = manifest(baseline_copy)
    assert data["requests_sent"] == 0
    assert data["counts"] == counts_before
    assert data["status"] == "completed"


def test_rerun_manifest_keeps_source_hard_cases(baseline_copy: Path) -> None:
    before = manifest(baseline_copy)["source"]
    run_generate(baseline_copy)
    assert manifest(baseline_copy)["source"] == before


def test_interrupted_run_resumes_only_missing_items(baseline_copy: Path, baseline: Path) -> None:
    path = baseline_copy / "detail.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-3]) + lines[-3][:40], encoding="utf-8")  # lost 2 lines and tore one
    run_generate(baseline_copy, "--no-cache")
    assert manifest(baseline_copy)["requests_sent"] == 3
    assert sorted_lines(path) == sorted_lines(baseline / "detail.jsonl")


def test_changed_seed_refused_then_force_sets_old_files_aside(baseline_copy: Path) -> None:
    before = snapshot(baseline_copy)
    result = run_generate(baseline_copy, "--seed", "5", expect=2)
    lines = error_lines(result)
    assert len(lines) == 1 and "seed" in lines[0] and "--force" in lines[0]
    assert snapshot(baseline_copy) == before  # nothing touched

    run_generate(baseline_copy, "--seed", "5", "--force")
    aside = [path for path in baseline_copy.iterdir() if path.name.startswith("replaced-")]
    assert len(aside) == 1 and aside[0].is_dir()
    assert {name: (aside[0] / name).read_bytes() for name in before} == before
    assert manifest(baseline_copy)["settings"]["sampling"]["seed"] == 5
    assert sorted_lines(baseline_copy / "detail.jsonl") != sorted(before["detail.jsonl"].decode().splitlines())


def test_changed_context_is_named(baseline_copy: Path) -> None:
    result = run_generate(baseline_copy, "--context", "conversation=captions+boxes", expect=2)
    assert "context:conversation" in error_lines(result)[0]


# -- bad flags and bad input: exit 2, one line -------------------------------------------------------


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--tasks", "bogus"], "--tasks"),
        (["--tasks", ""], "--tasks"),
        (["--shard", "3/2"], "--shard"),
        (["--shard", "x"], "--shard"),
        (["--teacher", "nope"], "--teacher"),
        (["--context", "conversation=pixels"], "--context"),
    ],
)
def test_bad_flags(tmp_path: Path, flags: list[str], named: str) -> None:
    out = tmp_path / "o"
    result = run_generate(out, *flags, expect=2)
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert named in lines[0]
    assert not (out / "manifest.json").exists()


def coco_error(tmp_path: Path, captions: Path) -> str:
    args = ["generate", "--teacher", "mock", "--captions", str(captions), "--instances", str(INSTANCES), "--out", str(tmp_path / "o"), "--no-progress"]
    result = CliRunner().invoke(app, args, env=NO_KEY)
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert str(captions) in lines[0]
    return lines[0]


def test_missing_captions_file(tmp_path: Path) -> None:
    assert "not found" in coco_error(tmp_path, tmp_path / "absent.json")


def test_broken_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n', encoding="utf-8")
    assert "line 2" in coco_error(tmp_path, path)


def test_non_coco_json(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": "world"}', encoding="utf-8")
    assert "not a COCO" in coco_error(tmp_path, path)


def test_openai_without_key(tmp_path: Path) -> None:
    result = run_generate(tmp_path / "o", "--teacher", "openai", "--model", "m", expect=2)
    lines = error_lines(result)
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0]


def test_openai_without_model(tmp_path: Path) -> None:
    result = run_generate(tmp_path / "o", "--teacher", "openai", expect=2, env={"OPENAI_API_KEY": "sk-x"})
    lines = error_lines(result)
    assert len(lines) == 1 and "--model" in lines[0]


# -- secrets ------------------------------------------------------------------------------------------


def test_api_key_never_written(tmp_path: Path) -> None:
    secret = "sk-test-SECRET-123"
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": secret}
    command = [
        str(Path(sys.executable).with_name("datagen")),
        "generate", "--teacher", "mock", "--captions", str(CAPTIONS), "--instances", str(INSTANCES),
        "--out", str(out), "--limit", "2", "--no-progress",
        "--base-url", f"http://user:{secret}@127.0.0.1:9/v1?api-key={secret}",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout and secret not in result.stderr
    written = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name == "manifest.json" for path in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert manifest(out)["command"][0].endswith("datagen")  # the command is recorded, redacted


def test_safe_argv_redacts_key_anywhere_and_url_credentials(monkeypatch) -> None:
    from datagen.cli import safe_argv

    secret = "sk-test-SECRET-123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setattr(
        sys, "argv", ["datagen", "generate", f"--model={secret}", "--base-url", "https://bob:pw@example.com:8443/v1?api-key=abc#frag"]
    )
    argv = safe_argv()
    assert secret not in " ".join(argv) and "pw" not in " ".join(argv) and "abc" not in " ".join(argv)
    assert argv[:2] == ["datagen", "generate"] and argv[4] == "https://example.com:8443/v1"


# -- rejects ------------------------------------------------------------------------------------------


def test_truncated_answers_become_rejects_and_are_counted(tmp_path: Path) -> None:
    out = tmp_path / "short"
    run_generate(out, "--max-tokens", "80", "--limit", "4")
    rejects = read_jsonl(out / "rejects.jsonl")
    assert rejects, "an 80-token budget must cut some mock answers (and leave some whole: a run that writes nothing fails)"
    for row in rejects:
        reject = Reject.model_validate(row)
        assert reject.reason == "truncated" and reject.finish_reason == "length" and reject.raw
    data = manifest(out)
    for task in DEFAULT_TASKS:
        counts = data["counts"][task]
        mine = [row for row in rejects if row["task"] == task]
        assert counts["rejected"].get("truncated", 0) == len(mine)
        assert counts["written"] == len(read_jsonl(out / f"{task}.jsonl"))
        assert counts["requested"] == 4 == counts["written"] + len(mine) + sum(counts["skipped"].values())
    # A rerun keeps rejects as done: no new requests, no duplicate reject lines.
    run_generate(out, "--max-tokens", "80", "--limit", "4")
    assert manifest(out)["requests_sent"] == 0 and len(read_jsonl(out / "rejects.jsonl")) == len(rejects)


def test_changed_input_file_is_refused(tmp_path: Path) -> None:
    instances = tmp_path / "instances.json"
    shutil.copy(INSTANCES, instances)
    out = tmp_path / "out"
    run_generate(out, "--limit", "2", instances=instances)
    data = json.loads(instances.read_text(encoding="utf-8"))
    data["annotations"][0]["bbox"][0] += 1.0
    instances.write_text(json.dumps(data), encoding="utf-8")
    result = run_generate(out, "--limit", "2", instances=instances, expect=2)
    assert "instances_sha256" in error_lines(result)[0]


def test_more_images_later_extends_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_generate(out, "--limit", "3")
    first = snapshot(out)
    run_generate(out, "--limit", "5")
    assert manifest(out)["requests_sent"] == 6  # only the 2 new images x 3 tasks
    for name, content in first.items():
        assert (out / name).read_bytes().startswith(content)  # appended, never rewritten
    assert manifest(out)["counts"]["detail"]["requested"] == 5
