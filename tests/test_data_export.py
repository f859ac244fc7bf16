"""`datagen export` (merge task files into LLaVA-Instruct files) and `datagen align` (stage-1 records)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.source.coco import CocoSource
from datagen.tasks.prompts import load_instructions
from datagen.formats.records import InstructRecord
from datagen.tasks.registry import DEFAULT_TASKS

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = REPO / "data" / "captions.json"
INSTANCES = REPO / "data" / "instances.json"
NO_KEY = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}


def invoke(*args: object, expect: int = 0):
    result = CliRunner().invoke(app, [str(arg) for arg in args], env=NO_KEY)
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    if expect:
        assert "Traceback" not in result.output
    return result


def load(path: Path, jsonl: bool = False) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()] if jsonl else json.loads(text)


def task_lines(folder: Path, task: str) -> list[dict]:
    return load(folder / f"{task}.jsonl", jsonl=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "out"
    invoke("generate", "--teacher", "mock", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--no-progress")
    return out


@pytest.fixture(scope="module")
def sample_images() -> dict[int, object]:
    source = CocoSource(CAPTIONS, INSTANCES)
    return {image.image_id: image for image in source.images()}


def check_llava_record(row: dict, sample_images: dict) -> None:
    """LLaVA-Instruct-150K's record format, checked field by field (independently of the pydantic model)."""
    assert set(row) == {"id", "image", "conversations"}
    assert re.fullmatch(r"\d{12}", row["id"])
    image = sample_images[int(row["id"])]
    assert row["image"] == image.file_name
    turns = row["conversations"]
    assert len(turns) >= 2 and len(turns) % 2 == 0
    for index, turn in enumerate(turns):
        assert set(turn) == {"from", "value"}
        assert turn["from"] == ("human" if index % 2 == 0 else "gpt")
        assert isinstance(turn["value"], str) and turn["value"].strip()
    first = turns[0]["value"]
    assert first.startswith("<image>\n") or first.endswith("\n<image>")
    assert sum(turn["value"].count("<image>") for turn in turns) == 1


# -- export -------------------------------------------------------------------------------------------


def test_export_merges_tasks_and_strips_meta(generated: Path, tmp_path: Path, sample_images) -> None:
    out = tmp_path / "all.json"
    result = invoke("export", generated, "--out", out)
    rows = load(out)
    counts = {task: len(task_lines(generated, task)) for task in DEFAULT_TASKS}
    assert len(rows) == sum(counts.values())
    assert f"wrote {len(rows)} records" in result.output
    for task, count in counts.items():
        assert f"{task} {count}" in result.output
    for row in rows:
        check_llava_record(row, sample_images)
        InstructRecord.model_validate(row)
    assert out.read_text(encoding="utf-8").lstrip().startswith("[")


def test_export_ids_unique_within_a_task_and_repeat_across(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    invoke("export", generated, "--out", out, "--keep-meta")
    rows = load(out)
    by_task: dict[str, list[str]] = {}
    for row in rows:
        by_task.setdefault(row["meta"]["task"], []).append(row["id"])
    for ids in by_task.values():
        assert len(ids) == len(set(ids))
    repeated = Counter(record_id for ids in by_task.values() for record_id in ids)
    assert max(repeated.values()) == 3


def test_export_order_is_deterministic_by_task_then_id(generated: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    invoke("export", generated, "--out", first, "--keep-meta")
    invoke("export", generated, "--out", second, "--keep-meta")
    assert first.read_bytes() == second.read_bytes()
    rows = load(first)
    keys = [(list(DEFAULT_TASKS).index(row["meta"]["task"]), row["id"]) for row in rows]
    assert keys == sorted(keys)


def test_keep_meta(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.json"
    invoke("export", generated, "--out", out, "--keep-meta")
    rows = load(out)
    assert all(row["meta"]["teacher"]["mock"] is True for row in rows)
    originals = {(row["meta"]["task"], row["id"]): row for task in DEFAULT_TASKS for row in task_lines(generated, task)}
    for row in rows:
        assert originals[(row["meta"]["task"], row["id"])] == row  # nothing lost or changed


def test_jsonl(generated: Path, tmp_path: Path) -> None:
    array, lines = tmp_path / "a.json", tmp_path / "a.jsonl"
    invoke("export", generated, "--out", array)
    invoke("export", generated, "--out", lines, "--jsonl")
    text = lines.read_text(encoding="utf-8")
    assert not text.startswith("[") and text.endswith("\n")
    assert load(lines, jsonl=True) == load(array)
    assert len(text.splitlines()) == len(load(array))


def test_export_keeps_non_ascii(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    invoke("export", generated, "--out", out, "--jsonl", "--tasks", "detail")
    text = out.read_text(encoding="utf-8")
    assert "café" in text and "\\u00e9" not in text


def test_export_subset_of_tasks(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    invoke("export", generated, "--out", out, "--tasks", "detail", "--keep-meta")
    rows = load(out)
    assert {row["meta"]["task"] for row in rows} == {"detail"}
    assert len(rows) == len(task_lines(generated, "detail"))


def test_shuffle_is_seeded(generated: Path, tmp_path: Path) -> None:
    plain, a, b, c = (tmp_path / f"{name}.json" for name in ("plain", "a", "b", "c"))
    invoke("export", generated, "--out", plain)
    invoke("export", generated, "--out", a, "--shuffle", "--seed", "1")
    invoke("export", generated, "--out", b, "--shuffle", "--seed", "1")
    invoke("export", generated, "--out", c, "--shuffle", "--seed", "2")
    assert a.read_bytes() == b.read_bytes()
    assert load(a) != load(c) and load(a) != load(plain)
    key = lambda row: json.dumps(row, sort_keys=True)  # noqa: E731
    assert sorted(map(key, load(a))) == sorted(map(key, load(plain)))  # same records, new order


def test_corrupt_line_names_file_and_line(generated: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gen"
    shutil.copytree(generated, folder)
    path = folder / "detail.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = '{"id": "000000100013", "image": \n'
    path.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "x.json"
    result = invoke("export", folder, "--out", out, expect=2)
    output = [line for line in result.output.splitlines() if line.strip()]
    assert len(output) == 1 and str(path) in output[0] and "line 3" in output[0]
    assert not out.exists()


def test_invalid_record_names_file(generated: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gen"
    shutil.copytree(generated, folder)
    path = folder / "conversation.jsonl"
    rows = task_lines(folder, "conversation")
    rows[0]["conversations"][0]["value"] = rows[0]["conversations"][0]["value"].replace("<image>", "")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = invoke("export", folder, "--out", tmp_path / "x.json", expect=2)
    assert str(path) in result.output and "line 1" in result.output


def test_duplicate_id_within_a_task_refused(generated: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gen"
    shutil.copytree(generated, folder)
    path = folder / "detail.jsonl"
    path.write_text(path.read_text(encoding="utf-8") + path.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    result = invoke("export", folder, "--out", tmp_path / "x.json", expect=2)
    assert "appears twice" in result.output and str(path) in result.output


def test_missing_folder_and_missing_task_file(tmp_path: Path, generated: Path) -> None:
    result = invoke("export", tmp_path / "absent", "--out", tmp_path / "x.json", expect=2)
    assert str(tmp_path / "absent") in result.output
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copy(generated / "detail.jsonl", folder / "detail.jsonl")
    result = invoke("export", folder, "--out", tmp_path / "x.json", expect=2)
    assert "conversation.jsonl" in result.output


# -- align --------------------------------------------------------------------------------------------


def test_align_records(tmp_path: Path, sample_images) -> None:
    out = tmp_path / "pre.json"
    result = invoke("align", "--captions", CAPTIONS, "--out", out)
    rows = load(out)
    assert len(rows) == len(sample_images) == 22
    assert f"wrote {len(rows)} alignment records" in result.output
    brief = load_instructions("brief").lines
    positions = Counter()
    for row in rows:
        check_llava_record(row, sample_images)
        assert len(row["conversations"]) == 2
        human, gpt = (turn["value"] for turn in row["conversations"])
        assert gpt in sample_images[int(row["id"])].captions  # cleaned: no stray whitespace, no duplicates
        question = human.removeprefix("<image>\n").removesuffix("\n<image>")
        assert question in brief
        positions["start" if human.startswith("<image>") else "end"] += 1
    assert positions["start"] and positions["end"]
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)


def test_align_uses_cleaned_captions(tmp_path: Path) -> None:
    out = tmp_path / "pre.json"
    for seed in range(6):
        invoke("align", "--captions", CAPTIONS, "--out", out, "--seed", seed)
        for row in load(out):
            value = row["conversations"][1]["value"]
            assert value == " ".join(value.split())


def test_align_limit_jsonl_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    invoke("align", "--captions", CAPTIONS, "--out", a, "--limit", "4", "--jsonl", "--seed", "3")
    invoke("align", "--captions", CAPTIONS, "--out", b, "--limit", "4", "--jsonl", "--seed", "3")
    invoke("align", "--captions", CAPTIONS, "--out", c, "--limit", "4", "--jsonl", "--seed", "4")
    rows = load(a, jsonl=True)
    assert len(rows) == 4 and len(a.read_text(encoding="utf-8").splitlines()) == 4
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_align_user_brief_list(tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    (root / "instructions").mkdir(parents=True)
    (root / "instructions" / "brief.txt").write_text("Caption this.\n", encoding="utf-8")
    out = tmp_path / "pre.json"
    invoke("align", "--captions", CAPTIONS, "--out", out, "--prompts", root)
    assert {row["conversations"][0]["value"] for row in load(out)} <= {"<image>\nCaption this.", "Caption this.\n<image>"}


def test_align_bad_captions_file(tmp_path: Path) -> None:
    result = invoke("align", "--captions", tmp_path / "absent.json", "--out", tmp_path / "x.json", expect=2)
    assert str(tmp_path / "absent.json") in result.output
