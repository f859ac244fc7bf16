"""`datagen eval scienceqa --answers`: an answers file from LLaVA's own ScienceQA inference, scored without a model
as LLaVA's eval_science_qa.py (current version) scores it, per ScienceQA's categories; `--instruction`."""

from __future__ import annotations

import json

import pytest

from datagen.eval.scienceqa import Problem, build_prompt, llava_letter


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("A", "A"),
        ("B. a dog", "B"),  # opens with "X. "
        ("The answer is C.", "C"),
        ("Because dogs bark. The answer is B, clearly", "B"),  # any character may follow the letter
        ("The answer is B", None),  # ... but one must: LLaVA's pattern ends in "."
        ("The answer is A. No: The answer is B.", None),  # two statements: LLaVA takes neither
        (" B", None),  # no stripping
        ("(B)", None),
        ("b", None),
        ("B.", None),  # too short for "X. "
        ("B\nbecause it barks", None),
        ("E", "E"),  # read; whether it is an option is the problem's business
        ("F", None),
    ],
)
def test_letters_are_read_as_llava_reads_them(reply, letter):
    assert llava_letter(reply) == letter


def test_instruction_line_is_the_users():
    problem = Problem(question="Which animal barks?", choices=["a cat", "a dog"], answer=1)
    llava_15 = "Answer with the option's letter from the given choices directly."
    assert build_prompt(problem, llava_15).endswith("B. a dog\n" + llava_15)
    assert build_prompt(problem, "").endswith("B. a dog")  # no instruction line at all


def scienceqa_files(tmp_path):
    def problem(subject, grade, answer, choices, hint="", image=None):
        return {"question": "q", "choices": choices, "answer": answer, "hint": hint, "image": image, "subject": subject,
                "grade": grade, "topic": "t", "category": "c", "skill": "s", "lecture": "", "solution": "", "split": "test"}

    problems = {
        "10": problem("natural science", "grade3", 1, ["x", "y", "z"], image="image.png"),
        "11": problem("social science", "grade8", 0, ["x", "y"], hint="h"),
        "12": problem("language science", "grade5", 2, ["red", "green", "blue"]),
        "13": problem("natural science", "grade10", 0, ["x", "y"], hint="h", image="image.png"),
        "14": problem("social science", "grade2", 1, ["x", "y"]),
        "16": problem("language science", "grade12", 0, ["w", "x", "y", "z"], image="image.png"),
        "15": dict(problem("natural science", "grade1", 0, ["x", "y"]), split="train"),
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"train": ["15"], "val": [], "test": ["10", "11", "12", "13", "14", "16"]}))
    # model_vqa_science's answer lines: question_id = pid, prompt, text (+ answer_id, model_id, metadata)
    answers = [
        {"question_id": "10", "prompt": "<image>\nq\nA. x\nB. y\nC. z", "text": "B", "answer_id": "x1", "model_id": "llava", "metadata": {}},
        {"question_id": "11", "prompt": "Context: h\nq", "text": "The answer is A.", "answer_id": "x2", "model_id": "llava", "metadata": {}},
        {"question_id": "12", "prompt": "q", "text": "C. blue", "answer_id": "x3", "model_id": "llava", "metadata": {}},
        {"question_id": "13", "prompt": "<image>\nq", "text": "(A)", "answer_id": "x4", "model_id": "llava", "metadata": {}},
        # 14 unanswered
        {"question_id": "16", "prompt": "<image>\nq", "text": "E", "answer_id": "x6", "model_id": "llava", "metadata": {}},
        {"question_id": "15", "prompt": "q", "text": "A", "answer_id": "x7", "model_id": "llava", "metadata": {}},
    ]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(line) + "\n" for line in answers))
    return ["--problems", tmp_path / "problems.json", "--split-file", tmp_path / "pid_splits.json"]


def test_an_llava_answers_file_is_scored_without_a_model(cli, tmp_path):
    args = scienceqa_files(tmp_path)
    out = tmp_path / "sqa"
    result = cli("eval", "scienceqa", *args, "--answers", tmp_path / "answers.jsonl", "--out", out)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    # Every test problem counts (6): 10 "B" right; 11 "The answer is A." right; 12 "C. blue" right;
    # 13 "(A)" no letter for LLaVA -> wrong; 14 unanswered -> wrong; 16 "E" with four choices -> wrong. 3/6 = 50%.
    assert results["overall"] == {"correct": 3, "total": 6, "accuracy": 50.0}
    got = {name: (row["correct"], row["total"]) for name, row in results["categories"].items()}
    # NAT 10 13 | SOC 11 14 | LAN 12 16 | TXT (a hint) 11 13 | IMG 10 13 16 | NO 12 14 | G1-6 10 12 14 | G7-12 11 13 16
    assert got == {"NAT": (1, 2), "SOC": (1, 2), "LAN": (1, 2), "TXT": (1, 2), "IMG": (1, 3), "NO": (1, 2),
                   "G1-6": (2, 3), "G7-12": (1, 3)}
    assert (results["unextracted"], results["missing"], results["not_in_split"]) == (1, 1, 1)
    # read leniently, 13's "(A)" would be right: 4/6
    assert results["lenient"] == {"correct": 4, "total": 6, "accuracy": pytest.approx(400 / 6)}
    assert "| accuracy % | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 33.33 | 50.00 | 66.67 | 33.33 |" in result.output
    assert "a lenient reading of those replies would give 66.67% (4/6)" in result.output
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(p["pid"], p["prediction"], p["correct"]) for p in predictions] == [
        ("10", "B", True), ("11", "A", True), ("12", "C", True), ("13", None, False), ("16", "E", False)]
    # scoring again is the same; a different source in this --out is refused
    again = cli("eval", "scienceqa", *args, "--answers", tmp_path / "answers.jsonl", "--out", out)
    assert again.exit_code == 0 and again.output == result.output
    (tmp_path / "other.jsonl").write_text((tmp_path / "answers.jsonl").read_text())
    refused = cli("eval", "scienceqa", *args, "--answers", tmp_path / "other.jsonl", "--out", out)
    assert refused.exit_code == 2 and "holds the predictions of" in refused.output


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question_id": "10"}\n', "line 1: needs text"),
        ('{"text": "A"}\n', "line 1: needs question_id"),
        ('{"question_id": "10", "text": "A"}\n{"question_id": 10, "text": "B"}\n', "line 2: question_id 10 appears twice"),
        ("oops\n", "line 1: not valid JSON"),
        ("\n", "holds no answers"),
    ],
)
def test_bad_answers_files_are_one_line(cli, tmp_path, content, message):
    args = scienceqa_files(tmp_path)
    (tmp_path / "answers.jsonl").write_text(content)
    result = cli("eval", "scienceqa", *args, "--answers", tmp_path / "answers.jsonl", "--out", tmp_path / "o")
    assert result.exit_code == 2 and f"--answers {tmp_path / 'answers.jsonl'}" in result.output and message in result.output


def test_model_or_answers_exactly_one(cli, tmp_path):
    args = scienceqa_files(tmp_path)
    for extra in ([], ["--model", tmp_path, "--answers", tmp_path / "answers.jsonl"]):
        result = cli("eval", "scienceqa", *args, *extra, "--out", tmp_path / "o")
        assert result.exit_code == 2 and "--model/--answers" in result.output
