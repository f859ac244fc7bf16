"""`datagen filter RUN`: a judge scores each record against its annotations; low scores move to rejects as judge_score."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from datagen.curate.judge_filter import ScriptedJudge, judge_request, parse_scores
from datagen.curate.settings import FilterSettings
from datagen.curate.moves import Row
from datagen.files.lock import lock_folder
from datagen.testing.mock_openai_server import MockServer, MockServerConfig

TASK_FILES = ("conversation.jsonl", "detail.jsonl", "complex_reasoning.jsonl")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("8 7 6\nGood.", (8.0, 7.0, 6.0)),
        ("8, 7, 6", (8.0, 7.0, 6.0)),
        ("7.5 7 9", (7.5, 7.0, 9.0)),
        ("8 7", None),  # two numbers: LLaVA's pairwise format, not ours
        ("Accuracy: 8", None),
        ("11 7 6", None),  # out of range
        ("", None),
    ],
)
def test_a_reply_is_three_scores_on_its_first_line_or_none(reply: str, expected) -> None:
    assert parse_scores(reply) == expected


def conversation(answer: str) -> Row:
    data = {"id": "1", "image": "1.jpg", "meta": {}, "conversations": [
        {"from": "human", "value": "<image>\nWhat animals are on the grass?"}, {"from": "gpt", "value": answer}]}
    return Row("conversation", 1, data)


def scored(context: str, answer: str) -> tuple[float, float, float] | None:
    request = judge_request(context, conversation(answer), "rules", FilterSettings(), "mock-judge")
    assert "<image>" not in request.messages[-1]["content"] and "USER: What animals are on the grass?" in request.messages[-1]["content"]
    return parse_scores(asyncio.run(ScriptedJudge().complete(request)).text)


def test_the_scripted_judge_marks_down_objects_the_context_lacks() -> None:
    context = "Two dogs play on the grass.\n\ndog: [0.1, 0.2, 0.5, 0.9]"
    grounded = scored(context, "Two dogs are running on the grass, chasing each other near the trees in the park.")
    invented = scored(context, "Two dogs and a horse are running on the grass, next to a giraffe.")
    assert grounded is not None and invented is not None
    assert grounded[0] == 10 and invented[0] == 4  # horse and giraffe: 3 points each
    assert grounded[1] == 8  # the answer takes up the question's "grass"


@pytest.fixture
def run(generate_mock, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    generate_mock(out)
    return out


def rows(folder: Path, read_jsonl) -> list[dict]:
    return [row for name in TASK_FILES for row in read_jsonl(folder / name)]


def test_filter_scores_every_record_moves_the_low_ones_and_counts_them(cli, run: Path, read_jsonl) -> None:
    before = rows(run, read_jsonl)
    written_before = {task: counts["written"] for task, counts in json.loads((run / "manifest.json").read_text())["counts"].items()}
    dry = cli("filter", run, "--judge", "mock", "--dry-run", "--price-in", "2.5", "--price-out", "10")
    assert dry.exit_code == 0 and f"dry run: {len(before)} judge requests would be sent" in dry.output and "estimated cost $" in dry.output
    assert rows(run, read_jsonl) == before and not (run / "judge-cache.sqlite").exists()
    result = cli("filter", run, "--judge", "mock", "--min-score", "6")
    assert result.exit_code == 0, result.output
    kept = rows(run, read_jsonl)
    moved = [row for row in read_jsonl(run / "rejects.jsonl") if row["reason"] == "judge_score"]
    assert moved and len(kept) + len(moved) == len(before)
    assert all(row["meta"]["judge"]["score"] >= 6 and row["meta"]["judge"]["model"] == "mock-judge" for row in kept)
    assert all(row["meta"]["judge"]["score"] < 6 and "< --min-score 6.0" in row["detail"] for row in moved)
    manifest = json.loads((run / "manifest.json").read_text())
    step = manifest["curation"]["steps"][-1]
    assert step["step"] == "filter" and step["settings"]["mock"] is True and step["settings"]["requests_sent"] == len(before)
    assert sum(step["moved"].values()) == len(moved)
    for task, counts in manifest["counts"].items():
        assert counts["written"] == written_before[task] - step["moved"].get(task, 0)
    assert "- Filter: " in (run / "README.md").read_text()
    # Resumed: nothing asked again; a stricter bar moves more records from the stored scores alone.
    again = cli("filter", run, "--judge", "mock", "--min-score", "7.5")
    assert again.exit_code == 0 and "0 requests sent" in again.output
    assert len([row for row in read_jsonl(run / "rejects.jsonl") if row["reason"] == "judge_score"]) >= len(moved)


def test_the_filtered_folder_is_still_a_run(cli, run: Path, tmp_path: Path, generate_mock, captions_path, instances_path) -> None:
    assert cli("filter", run, "--judge", "mock", "--min-score", "7").exit_code == 0
    steps = json.loads((run / "manifest.json").read_text())["curation"]["steps"]
    assert "requests sent 0" in generate_mock(run).output
    assert json.loads((run / "manifest.json").read_text())["curation"]["steps"] == steps
    assert cli("export", run, "--out", tmp_path / "export.jsonl", "--jsonl", "--keep-meta").exit_code == 0
    assert all("judge" in json.loads(line)["meta"] for line in (tmp_path / "export.jsonl").read_text().splitlines())
    assert cli("audit", tmp_path / "export.jsonl", "--captions", captions_path, "--instances", instances_path, "--out", tmp_path / "a").exit_code == 0
    assert cli("report", run, "--out", tmp_path / "r.html").exit_code == 0
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(run), split="detail", cache_dir=str(tmp_path / "cache"))
    assert loaded[0]["meta"]["judge"]["model"] == "mock-judge"


def test_a_held_folder_is_refused(cli, run: Path) -> None:
    with lock_folder(run, "dedup"):
        result = cli("filter", run, "--judge", "mock")
    assert result.exit_code == 2 and "in use by `datagen dedup`" in result.output


def test_bad_input_is_one_line(cli, run: Path, tmp_path: Path) -> None:
    missing_model = cli("filter", run, "--dry-run")
    assert missing_model.exit_code == 2 and "--judge-model is required" in missing_model.output
    empty = tmp_path / "rules.txt"
    empty.write_text("  \n")
    assert "--rules" in cli("filter", run, "--judge", "mock", "--rules", empty).output
    unknown = cli("filter", run, "--judge", "claude-ish", "--judge-model", "m")
    assert unknown.exit_code == 2 and "--judge claude-ish: unknown backend" in unknown.output


def test_any_openai_compatible_judge_through_the_factory(run: Path, read_jsonl, monkeypatch) -> None:
    """The mock server answers as a teacher, not a judge: every reply is unusable, so nothing moves, every record is
    counted unscored and the command asks for a rerun (exit 3); retries and 429s are the teacher layer's."""
    from typer.testing import CliRunner

    from datagen.cli import app

    before = rows(run, read_jsonl)
    with MockServer(MockServerConfig(p429=0.2, retry_after=0.01)) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-9")
        result = CliRunner().invoke(app, ["filter", str(run), "--judge-model", "mock-teacher", "--base-url", server.base_url, "--concurrency", "4"])
        stats = server.stats()
    assert result.exit_code == 3, result.output
    assert f"{len(before)} records got no usable score" in result.output
    assert rows(run, read_jsonl) == before
    step = json.loads((run / "manifest.json").read_text())["curation"]["steps"][-1]
    assert step["settings"]["unscored"] == len(before) and step["settings"]["requests_sent"] == stats["total"]
    assert "SECRET" not in result.output + (run / "manifest.json").read_text()


def test_a_judge_that_gives_every_record_the_same_scores_is_named_in_one_note(cli, run: Path, monkeypatch) -> None:
    """A weak judge echoing its rule pack's example scores nothing apart: the run says so instead of looking fine."""
    from datagen.curate import judge_filter

    varied = cli("filter", run, "--judge", "mock", "--min-score", "1")
    assert varied.exit_code == 0 and "same scores" not in varied.output  # the scripted judge's scores differ
    monkeypatch.setattr(judge_filter, "parse_scores", lambda text: (8.0, 7.0, 6.0))
    echoed = cli("filter", run, "--judge", "mock", "--min-score", "1", "--rules", write_rules(run.parent))
    assert echoed.exit_code == 0, echoed.output
    [note] = [line for line in echoed.output.splitlines() if "same scores" in line]
    assert note.startswith("note: the judge mock-judge gave 66 of 66 records the same scores (8 7 6)") and "--judge-model" in note


def write_rules(folder: Path) -> Path:
    path = folder / "other-rules.txt"  # another pack: every record is asked again, not reused from the first run
    path.write_text("Score the example.\n", encoding="utf-8")
    return path


def test_same_scores_need_enough_records_and_nearly_all_alike() -> None:
    from datagen.curate.judge_filter import same_scores_note
    from datagen.formats.records import JudgeScore

    def score(*values: float, model: str = "m") -> JudgeScore:
        return JudgeScore(model=model, accuracy=values[0], helpfulness=values[1], detail=values[2], score=sum(values) / 3, rules_sha256="x")

    assert same_scores_note([score(8, 7, 6)] * 9, "m") is None  # too few to tell
    assert same_scores_note([score(8, 7, 6)] * 8 + [score(3, 7, 6), score(8, 9, 6)], "m") is None  # 80% alike: they differ
    assert same_scores_note([score(8, 7, 6)] * 9 + [score(3, 7, 6)], "m") is not None  # 90% is the line
    assert same_scores_note([score(8, 7, 6, model="other")] * 20, "m") is None  # another judge's scores, kept from before
