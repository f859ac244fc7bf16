"""`datagen dedup RUN`: planted copies and paraphrases moved to rejects as near_duplicate, the folder still a run."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from datagen.curate.dedup import Sketcher, find_duplicates, similarity
from datagen.curate.settings import DedupSettings
from datagen.curate.moves import Row
from datagen.files.lock import lock_folder

pytest.importorskip("datasketch")


def record(key: int, question: str, answer: str) -> Row:
    data = {"id": f"{key:012d}", "image": f"{key:012d}.jpg", "meta": {},
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}
    return Row("conversation", key, data)


ANSWER = "A red double-decker bus waits at a busy city intersection while people cross the street in front of it."


def test_sketches_ignore_case_punctuation_and_the_image_token() -> None:
    sketcher = Sketcher(DedupSettings())
    same = sketcher.sketch(["<image>\nThe Bus, red!"], 2), sketcher.sketch(["the bus red"], 2)
    assert similarity(same[0].hashvalues, same[1].hashvalues) == 1.0
    assert similarity(sketcher.sketch(["the red bus"], 2).hashvalues, same[1].hashvalues) < 0.5  # bigrams see order
    assert similarity(sketcher.sketch(["the red bus"], 1).hashvalues, sketcher.sketch(["Bus the red"], 1).hashvalues) == 1.0
    assert len(sketcher.sketch(["Hi"], 3)) == DedupSettings().num_perm


def test_copies_and_paraphrases_move_questions_alone_do_not() -> None:
    rows = [
        record(1, "What is happening in the image?", ANSWER),
        record(2, "What is happening in the image?", ANSWER),  # a copy
        record(3, "What is happening in the image here?", ANSWER.replace("busy", "crowded")),  # a light paraphrase
        record(4, "What is happening in the image?", "Two dogs chase a frisbee across a grassy park on a sunny afternoon."),
        record(5, "Describe the scene in detail, please, with every object.", ANSWER),  # same answer, another question
    ]
    moves, examined = find_duplicates(rows, DedupSettings())
    assert examined == len(rows)
    assert [(move.row.data["id"], move.duplicate_of, move.reason) for move in moves] == [
        ("000000000002", "conversation/000000000001", "near_duplicate"),
        ("000000000003", "conversation/000000000001", "near_duplicate"),
    ]
    strict, _ = find_duplicates(rows, DedupSettings(answer_threshold=1.0, question_threshold=1.0))
    assert [move.row.data["id"] for move in strict] == ["000000000002"]
    loose, _ = find_duplicates(rows, DedupSettings(question_threshold=0.0))
    assert "000000000005" in [move.row.data["id"] for move in loose]


def test_the_same_settings_move_the_same_records() -> None:
    rows = [record(i, "What is it?", f"{ANSWER} Number {i % 3}.") for i in range(30)]
    first = [move.row.key for move in find_duplicates(rows, DedupSettings())[0]]
    assert first and first == [move.row.key for move in find_duplicates(rows, DedupSettings())[0]]


@pytest.fixture
def planted(generate_mock, tmp_path: Path, read_jsonl) -> Path:
    """A mock run whose fourth conversation repeats the first's turns and whose fifth paraphrases the second's,
    as a teacher that answers from habit would have written them."""
    run = tmp_path / "run"
    generate_mock(run, "--tasks", "conversation,detail")
    path = run / "conversation.jsonl"
    rows = read_jsonl(path)
    rows[3]["conversations"] = copy.deepcopy(rows[0]["conversations"])
    rows[4]["conversations"] = copy.deepcopy(rows[1]["conversations"])
    answer = rows[4]["conversations"][1]["value"]
    rows[4]["conversations"][1]["value"] = answer.replace("This photo captures", "This picture shows")
    assert rows[4]["conversations"][1]["value"] != answer
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


def test_dedup_moves_later_duplicates_to_rejects_and_tells_the_manifest_and_card(cli, planted: Path, read_jsonl) -> None:
    before = read_jsonl(planted / "conversation.jsonl")
    written_before = json.loads((planted / "manifest.json").read_text())["counts"]["conversation"]["written"]
    dry = cli("dedup", planted, "--dry-run")
    assert dry.exit_code == 0 and "dry run: 2 near-duplicates would move" in dry.output
    assert read_jsonl(planted / "conversation.jsonl") == before
    result = cli("dedup", planted)
    assert result.exit_code == 0, result.output
    assert "moved 2 of" in result.output and "conversation 2" in result.output
    after = read_jsonl(planted / "conversation.jsonl")
    assert after == before[:3] + before[5:]  # the others stay, in order, unchanged
    rejects = [row for row in read_jsonl(planted / "rejects.jsonl") if row["reason"] == "near_duplicate"]
    assert [(row["id"], row["duplicate_of"]) for row in rejects] == [
        (before[3]["id"], f"conversation/{before[0]['id']}"), (before[4]["id"], f"conversation/{before[1]['id']}")
    ]
    assert json.loads(rejects[0]["raw"]) == before[3]["conversations"] and rejects[0]["meta"] == before[3]["meta"]  # nothing lost
    manifest = json.loads((planted / "manifest.json").read_text())
    assert manifest["counts"]["conversation"]["written"] == written_before - 2
    assert manifest["counts"]["conversation"]["rejected"]["near_duplicate"] == 2
    step = manifest["curation"]["steps"][0]
    assert step["step"] == "dedup" and step["moved"] == {"conversation": 2} and step["settings"]["answer_threshold"] == 0.7
    assert "- Dedup: 2 of" in (planted / "README.md").read_text()
    again = cli("dedup", planted)
    assert again.exit_code == 0 and "moved 0 of" in again.output
    assert len([row for row in read_jsonl(planted / "rejects.jsonl") if row["reason"] == "near_duplicate"]) == 2


def test_the_deduplicated_folder_is_still_a_run(cli, planted: Path, tmp_path: Path, generate_mock, captions_path, instances_path, read_jsonl) -> None:
    assert cli("dedup", planted).exit_code == 0
    manifest = json.loads((planted / "manifest.json").read_text())
    # A rerun of generate resumes: it asks nothing again, and keeps the dedup step in the manifest.
    resumed = generate_mock(planted, "--tasks", "conversation,detail")
    assert "requests sent 0" in resumed.output
    assert json.loads((planted / "manifest.json").read_text())["curation"]["steps"] == manifest["curation"]["steps"]
    exported = cli("export", planted, "--out", tmp_path / "export.json", "--tasks", "conversation,detail")
    assert exported.exit_code == 0, exported.output
    exported = json.loads((tmp_path / "export.json").read_text())
    moved = {row["id"] for row in read_jsonl(planted / "rejects.jsonl") if row["reason"] == "near_duplicate"}
    assert len(moved) == 2 and len(exported) == manifest["counts"]["conversation"]["written"] + manifest["counts"]["detail"]["written"]
    assert not moved & {row["id"] for row in exported[: manifest["counts"]["conversation"]["written"]]}
    audited = cli("audit", tmp_path / "export.json", "--captions", captions_path, "--instances", instances_path, "--out", tmp_path / "audit")
    assert audited.exit_code == 0, audited.output
    reported = cli("report", planted, "--out", tmp_path / "report.html")
    assert reported.exit_code == 0, reported.output
    assert "near_duplicate" in (tmp_path / "report.html").read_text()


def test_hf_datasets_loads_the_result_and_its_rejects(cli, planted: Path, tmp_path: Path) -> None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    assert cli("dedup", planted).exit_code == 0
    records = datasets.load_dataset(str(planted), split="conversation", cache_dir=str(tmp_path / "cache"))
    rejects = datasets.load_dataset(str(planted), "rejects", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(records) == json.loads((planted / "manifest.json").read_text())["counts"]["conversation"]["written"]
    moved = [row for row in rejects if row["reason"] == "near_duplicate"]
    assert len(moved) == 2 and moved[0]["duplicate_of"].startswith("conversation/")


def test_a_held_folder_is_refused(cli, planted: Path) -> None:
    with lock_folder(planted, "generate"):
        result = cli("dedup", planted)
    assert result.exit_code == 2 and "in use by" in result.output


def test_a_folder_without_a_manifest_is_refused(cli, tmp_path: Path) -> None:
    result = cli("dedup", tmp_path / "nowhere")
    assert result.exit_code == 2 and "not found" in result.output and not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()
    result = cli("dedup", tmp_path / "empty")
    assert result.exit_code == 2 and "holds no manifest.json" in result.output


def test_deduplicated_shards_merge(cli, generate_mock, tmp_path: Path, read_jsonl) -> None:
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for index, shard in enumerate(shards):
        generate_mock(shard, "--tasks", "conversation", "--shard", f"{index}/2")
        rows = read_jsonl(shard / "conversation.jsonl")
        rows[1]["conversations"] = copy.deepcopy(rows[0]["conversations"])
        (shard / "conversation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        assert cli("dedup", shard).exit_code == 0
    merged = cli("merge", *shards, "--out", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    manifest = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    counts = manifest["counts"]["conversation"]
    assert counts["rejected"] == {"near_duplicate": 2}
    assert [step["moved"] for step in manifest["curation"]["steps"]] == [{"conversation": 1}, {"conversation": 1}]  # each shard's
    assert counts["written"] == len(read_jsonl(tmp_path / "merged" / "conversation.jsonl"))


def test_a_dedup_killed_after_writing_the_rejects_finishes_on_rerun_without_repeating_them(cli, planted: Path, read_jsonl) -> None:
    """The rejects are written first: a kill before the task file and manifest are replaced leaves the records in
    both places; the rerun moves them again without a second reject line, and the counts change once."""
    task_file, manifest_file = planted / "conversation.jsonl", planted / "manifest.json"
    records, manifest = task_file.read_text(), manifest_file.read_text()
    assert cli("dedup", planted).exit_code == 0
    finished = json.loads(manifest_file.read_text())["counts"]
    task_file.write_text(records)
    manifest_file.write_text(manifest)  # as the kill left them: only rejects.jsonl was written
    assert cli("dedup", planted).exit_code == 0
    assert len([row for row in read_jsonl(planted / "rejects.jsonl") if row["reason"] == "near_duplicate"]) == 2
    assert len(read_jsonl(task_file)) == len(records.splitlines()) - 2
    assert json.loads(manifest_file.read_text())["counts"] == finished
