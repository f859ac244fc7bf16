"""Issue 29's input cases 12-15 from outside, through the CLI: each bad input one line naming the file (and line)
with exit 2, nothing scored is no success, every file written is named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import CAPTIONS, INSTANCES, write_llava_root


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def one_line(result, code: int, *words: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- judge summarize -------------------------------------------------------------------------------------


def test_summarize_refuses_a_group_whose_reference_scores_are_all_zero(cli, tmp_path):
    reviews = write_jsonl(tmp_path / "r.jsonl", [
        {"question_id": 1, "category": "detail", "tuple": [7, 6]},
        {"question_id": 2, "category": "conv", "tuple": [0, 5]},
        {"question_id": 3, "category": "conv", "tuple": [0, 3]},
    ])
    one_line(cli("judge", "summarize", reviews), 2, f"REVIEWS {reviews} line 2", "every reference score of conv is 0")


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_summarize_refuses_nan_scores(cli, tmp_path, value):
    reviews = tmp_path / "r.jsonl"
    reviews.write_text('{"question_id": 1, "category": "conv", "tuple": [%s, 5]}\n' % value)  # noqa: UP031 (JSON braces)
    one_line(cli("judge", "summarize", reviews), 2, f"REVIEWS {reviews} line 1: not valid JSON ({value} is not a JSON number)")


def test_summarize_refuses_a_score_too_large_for_a_float(cli, tmp_path):
    reviews = tmp_path / "r.jsonl"
    reviews.write_text('{"question_id": 1, "category": "conv", "tuple": [1e400, 5]}\n')  # valid JSON, read as inf
    one_line(cli("judge", "summarize", reviews), 2, f"REVIEWS {reviews} line 1: needs tuple, a list of two numbers")


def test_summarize_reads_a_bom_and_unicode_line_separators(cli, tmp_path):
    reviews = tmp_path / "r.jsonl"
    lines = [{"question_id": 1, "category": "conv", "content": "8 6\nfine\u2028really\u0085yes", "tuple": [8, 6]},
             {"question_id": 2, "category": "conv", "content": "par\u2029graph", "tuple": [4, 6]}]
    reviews.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(line, ensure_ascii=False) + "\r\n" for line in lines).encode())
    result = cli("judge", "summarize", reviews, "--bootstrap", "10")
    assert result.exit_code == 0, result.output
    assert f"{reviews}: 2 reviews" in result.output and "| all | 2 | 6.00 | 6.00 | 100.0 |" in result.output


# -- judge over LLaVA's files ------------------------------------------------------------------------------


def judge_files(tmp_path: Path, context: list[dict]) -> list:
    questions = [{"question_id": i, "image": f"{i:03d}.jpg", "text": f"Question {i}?", "category": "conv"} for i in range(1, 5)]
    answers = [{"question_id": i, "text": f"Answer {i}."} for i in range(1, 5)]
    files = {"questions": questions, "reference": answers, "candidate": answers, "context": context}
    return [arg for name, lines in files.items() for arg in (f"--{name}", write_jsonl(tmp_path / f"{name}.jsonl", lines))]


def test_judge_refuses_when_most_items_cannot_be_paired(cli, tmp_path):
    args = judge_files(tmp_path, [{"image": "001.jpg", "caption": "A cat."}])  # another set's context: 1 of 4 images
    out = tmp_path / "judged"
    one_line(cli("judge", *args, "--out", out, "--judge", "mock"), 2, "only 1 of 4 items can be judged (no_context 3)")
    assert not (out / "reviews.jsonl").exists()  # refused before any request
    half = judge_files(tmp_path, [{"image": f"00{i}.jpg", "caption": "A cat."} for i in (1, 2)])
    assert cli("judge", *half, "--out", out, "--judge", "mock").exit_code == 0  # half paired is judged as before


def test_a_nan_box_in_a_judge_context_is_refused(cli, tmp_path):
    context = tmp_path / "context.jsonl"
    args = judge_files(tmp_path, [{"image": f"00{i}.jpg", "caption": "A cat."} for i in range(1, 5)])
    context.write_text('{"image": "001.jpg", "captions": ["A cat."], "instances": [{"category": "cat", "bbox": [NaN, 0, 1, 1]}]}\n')
    one_line(cli("judge", *args, "--out", tmp_path / "o", "--judge", "mock"), 2,
             f"--context {context} line 1: not valid JSON (NaN is not a JSON number)")
    context.write_text('{"image": "001.jpg", "captions": ["A cat."], "instances": [{"category": "cat", "bbox": [1e400, 0, 1, 1]}]}\n')
    one_line(cli("judge", *args, "--out", tmp_path / "o", "--judge", "mock"), 2, f"--context {context} line 1", "four numbers")


# -- eval ---------------------------------------------------------------------------------------------------


def scienceqa_args(tmp_path: Path, splits: dict) -> list:
    problem = {"question": "q", "choices": ["x", "y"], "answer": 1, "hint": "", "image": None, "subject": "natural science",
               "grade": "grade3", "topic": "t", "category": "c", "skill": "s", "lecture": "", "solution": "", "split": "test"}
    (tmp_path / "problems.json").write_text(json.dumps({"1": problem, "2": problem, "3": problem}))
    (tmp_path / "pid_splits.json").write_text(json.dumps(splits))
    return ["eval", "scienceqa", "--problems", tmp_path / "problems.json", "--split-file", tmp_path / "pid_splits.json"]


def test_scienceqa_answers_to_another_split_or_an_empty_split_are_no_score(cli, tmp_path):
    args = scienceqa_args(tmp_path, {"test": ["1", "2"], "val": ["3"], "minitest": []})
    answers = write_jsonl(tmp_path / "val_answers.jsonl", [{"question_id": "3", "prompt": "q", "text": "B"}])
    out = tmp_path / "sqa"
    one_line(cli(*args, "--answers", answers, "--out", out), 2, f"--answers {answers}: none of its 1 answers is to a problem of split test")
    assert not (out / "results.json").exists()
    assert cli(*args, "--answers", answers, "--split", "val", "--out", out).exit_code == 0  # the split they answer
    one_line(cli(*args, "--answers", answers, "--split", "minitest", "--out", tmp_path / "o2"), 2, "--split minitest", "lists no problems")


@pytest.mark.parametrize("line", ["5", '"text"', "[1, 2]", '{"pid": 1}'])
def test_scienceqa_names_a_bad_line_of_its_predictions_file(cli, tmp_path, line):
    args = scienceqa_args(tmp_path, {"test": ["1", "2"]})
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": "1", "prompt": "q", "text": "B"}])
    out = tmp_path / "sqa"
    assert cli(*args, "--answers", answers, "--out", out).exit_code == 0
    predictions = out / "predictions.jsonl"
    predictions.write_text(predictions.read_text() + line + "\n")
    one_line(cli(*args, "--answers", answers, "--out", out), 2, f"{predictions} line 2: not a prediction of `datagen eval scienceqa`")


def test_pope_names_the_line_of_an_empty_prompt(cli, tmp_path):
    from tests.test_eval_pope import write_instances

    instances = write_instances(tmp_path / "instances_val2014.json")
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"question_id": 0, "prompt": "", "text": "No"}\n')  # was an IndexError
    args = ["eval", "pope", "--instances", instances, "--out", tmp_path / "pope", "--image-count", 3, "--per-image", 2]
    one_line(cli(*args, "--answers", answers), 2, f"--answers {answers} line 1: prompt is empty")


# -- where files go ------------------------------------------------------------------------------------------


@pytest.fixture
def exported(generate_mock, cli, tmp_path) -> Path:
    generate_mock(tmp_path / "run", "--limit", 2)
    return tmp_path / "run"


def test_export_elsewhere_and_audit_say_where_their_files_went(cli, exported, tmp_path, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    result = cli("export", exported, "--out", "x.json")
    assert result.exit_code == 0, result.output
    assert (here / "README.md").is_file() and "wrote the dataset card README.md, which lists x.json" in result.output
    result = cli("audit", "x.json", "--captions", CAPTIONS, "--instances", INSTANCES)
    assert result.exit_code == 0, result.output
    assert (here / "x-audit" / "findings.jsonl").is_file()
    assert result.output.strip().splitlines()[-1] == f"wrote {Path('x-audit') / 'findings.jsonl'} and {Path('x-audit') / 'summary.json'}"
    # into the run's own folder the card was already there: the output stays as it was
    result = cli("export", exported, "--out", exported / "all.json")
    assert result.exit_code == 0 and "dataset card" not in result.output


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_audit_names_a_prompt_file_that_is_not_a_file(cli, exported, tmp_path, kind):
    prompts = write_llava_root(tmp_path / "prompts")
    odd = prompts / "conversation" / "002_caps.txt"
    (odd.mkdir() if kind == "folder" else os.mkfifo(odd))
    (prompts / "conversation" / "002_conv.txt").write_text("Question:\nq\n===\nAnswer:\na")
    records = tmp_path / "records.json"
    assert cli("export", exported, "--out", records).exit_code == 0
    result = cli("audit", records, "--captions", CAPTIONS, "--instances", INSTANCES, "--prompts", prompts, "--out", tmp_path / "a")
    one_line(result, 2, f"{odd}: not a regular file")


@pytest.mark.parametrize("line", ["5", "[1]", '{"text": "no id"}'])
def test_a_bad_line_of_an_earlier_answers_file_is_named(tmp_path, line):
    from datagen.errors import InputError
    from datagen.eval.bench import answered

    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": 1, "text": "A.", "model_id": "m"}) + "\n" + line + "\n")
    with pytest.raises(InputError, match=f"{answers} line 2: not an answer line"):
        answered(answers, "m")
