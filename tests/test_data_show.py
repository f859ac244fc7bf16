"""`datagen show` and the report's examples: what a person sees of a few records, against the files they come from."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest

from datagen.data.report import EXAMPLES_PER_TASK, read_run, render_html
from datagen.data.show import pick
from datagen.formats.manifest import read_run_manifest

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A mock run whose unsupported-object answers are refused, so it holds records and rejects."""
    from typer.testing import CliRunner

    from datagen.cli import app

    out = tmp_path_factory.mktemp("show") / "run"
    args = ["generate", "--teacher", "mock", "--captions", str(DATA / "captions.json"), "--instances", str(DATA / "instances.json")]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress", "--reject-unsupported"])
    assert result.exit_code == 0, result.output
    assert (out / "rejects.jsonl").read_text(encoding="utf-8").strip(), "the sample run should refuse some answers"
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_records_with_their_context_turns_and_grounding(run_folder: Path, cli) -> None:
    result = cli("show", run_folder, "--n", 2)
    assert result.exit_code == 0, result.output
    first, second = lines(run_folder / "conversation.jsonl")[:2]
    for record in (first, second):
        assert f"{record['id']} · conversation" in result.output
        question = record["conversations"][0]["value"].replace("<image>", "").strip()
        assert f"user: {question}" in result.output
        assert " ".join(record["meta"]["grounding"]["mentioned"]) in result.output.replace(",", "")
    assert "<image>" not in result.output
    # The context comes from the annotation file the run read: its captions and a box line in LLaVA's layout.
    captions = json.loads((DATA / "captions.json").read_text(encoding="utf-8"))
    first_caption = next(a["caption"] for a in captions["annotations"] if a["image_id"] == first["meta"]["image_id"])
    assert first_caption.strip().split()[0] in result.output and "what the teacher was told" in result.output
    assert "dog: [0.16, 0.439, 0.442, 0.732]" in result.output
    assert result.output.count("· conversation ·") == 2 and "2 records shown" in result.output


def test_rejects_show_reason_and_raw_reply(run_folder: Path, cli) -> None:
    rejects = lines(run_folder / "rejects.jsonl")
    result = cli("show", run_folder, "--rejects", "--n", 1)
    assert result.exit_code == 0, result.output
    assert "REJECTED" in result.output and f"rejected: {rejects[0]['reason']}" in result.output
    assert rejects[0]["raw"].split()[0] in result.output
    assert "1 rejects shown" in result.output


def test_one_image_across_tasks_by_unpadded_id(run_folder: Path, cli) -> None:
    record_id = lines(run_folder / "detail.jsonl")[0]["id"]
    result = cli("show", run_folder, "--id", str(int(record_id)))
    assert result.exit_code == 0, result.output
    held = [task for task in ("conversation", "detail", "complex_reasoning") if any(r["id"] == record_id for r in lines(run_folder / f"{task}.jsonl"))]
    assert [task for task in held if f"{record_id} · {task}" in result.output] == held
    assert len(pick(run_folder, read_run_manifest(run_folder, "show"), record_id=record_id)) == len(held)


def test_task_filter_and_count(run_folder: Path) -> None:
    shown = pick(run_folder, read_run_manifest(run_folder, "show"), task="detail", n=3)
    assert [example.id for example in shown] == [record["id"] for record in lines(run_folder / "detail.jsonl")[:3]]
    assert {example.task for example in shown} == {"detail"}


def test_without_annotations_it_says_how_to_add_them(run_folder: Path, tmp_path: Path, cli) -> None:
    moved = tmp_path / "run"
    shutil.copytree(run_folder, moved)
    manifest = json.loads((moved / "manifest.json").read_text(encoding="utf-8"))
    manifest["source"]["captions_file"] = str(tmp_path / "gone.json")
    (moved / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = cli("show", moved, "--n", 1)
    assert result.exit_code == 0, result.output
    assert "what the teacher was told" not in result.output and "pass --captions" in result.output
    given = cli("show", moved, "--n", 1, "--captions", DATA / "captions.json")
    assert "what the teacher was told" in given.output


@pytest.mark.parametrize(
    "args,named",
    [
        (["--task", "poetry"], "--task poetry"),
        (["--id", "999"], "--id 999"),
        (["--n", "0"], "--n"),
    ],
)
def test_bad_flags_are_one_line_exit_2(run_folder: Path, cli, args: list[str], named: str) -> None:
    result = cli("show", run_folder, *args)
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output


def test_not_a_run_folder_is_one_line(tmp_path: Path, cli) -> None:
    result = cli("show", tmp_path)
    assert result.exit_code == 2 and "manifest.json" in result.output and len(result.output.strip().splitlines()) == 1


def test_report_shows_kept_and_rejected_examples(run_folder: Path) -> None:
    page = render_html([read_run(run_folder)], None)
    assert "<h3>Examples</h3>" in page
    for task in ("conversation", "detail", "complex_reasoning"):
        for record in lines(run_folder / f"{task}.jsonl")[:EXAMPLES_PER_TASK]:
            answer = record["conversations"][1]["value"]
            assert html.escape(answer) in page
    rejected = [row for row in lines(run_folder / "rejects.jsonl")]
    first_of_task = {row["task"]: row for row in reversed(rejected)}
    for row in first_of_task.values():
        assert html.escape(f"rejected: {row['reason']}") in page
