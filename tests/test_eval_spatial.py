"""`datagen eval spatial`: CV-Bench 2D-style counting and relation questions from COCO boxes, scored by letter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from datagen.eval.spatial import INSTRUCTION, SpatialQuestion, build_questions, score
from datagen.quality.object_words import plural
from datagen.source.coco import CocoSource
from datagen.tasks.grounded import corners, relation
from tests.conftest import CAPTIONS, INSTANCES


def question(idx: int, task: str, choices: list[str], answer: str) -> SpatialQuestion:
    return SpatialQuestion(idx=idx, task=task, question=f"q{idx}", choices=choices, answer=answer, filename="x.jpg", image_id=1, prompt=f"q{idx}")


def test_scores_hand_computed() -> None:
    questions = [
        question(0, "Count", ["2", "3", "1", "0"], "(B)"),
        question(1, "Count", ["2", "3", "1", "0"], "(A)"),
        question(2, "Count", ["1", "0", "2", "3"], "(C)"),
        question(3, "Relation", ["left", "right"], "(B)"),
        question(4, "Relation", ["above", "below"], "(A)"),
        question(5, "Relation", ["left", "right"], "(A)"),
    ]
    replies = {
        "0": "B",  # right
        "1": "The answer is A.",  # right
        "2": "(C)",  # LLaVA's reading finds no letter: wrong; the lenient one reads C: right
        "3": "B. right",  # right
        "4": "below",  # wrong either way (the lenient reading finds B)
        # 5 unanswered: wrong, and counted
    }
    results = score(questions, replies)
    assert results["tasks"]["Count"] == {"questions": 3, "correct": 2, "accuracy": pytest.approx(2 / 3), "lenient_accuracy": 1.0, "missing": 0}
    assert results["tasks"]["Relation"] == {"questions": 3, "correct": 1, "accuracy": pytest.approx(1 / 3), "lenient_accuracy": pytest.approx(1 / 3), "missing": 1}
    assert results["accuracy_2d"] == pytest.approx(0.5)
    assert results["missing"] == 1


def test_questions_follow_the_boxes() -> None:
    source = CocoSource(CAPTIONS, INSTANCES)
    questions = build_questions(source, 10, seed=0, instruction=INSTRUCTION)
    assert questions == build_questions(source, 10, seed=0, instruction=INSTRUCTION)
    assert questions != build_questions(source, 10, seed=1, instruction=INSTRUCTION)
    assert len({q.image_id for q in questions}) == 10
    assert {q.task for q in questions} == {"Count", "Relation"}
    for q in questions:
        image = source.image(q.image_id)
        assert image is not None
        truth = q.choices["ABCD".index(q.answer.strip("()"))]
        assert q.prompt.startswith(f"Question: {q.question}\nOptions:\nA. {q.choices[0]}") and q.prompt.endswith(INSTRUCTION)
        if q.task == "Count":
            assert len(q.choices) == 4 and len(set(q.choices)) == 4
            asked = re.fullmatch(r"How many (.+) are in the image\?", q.question)
            assert asked is not None
            category = {("people" if box.category == "person" else plural(box.category)): box.category for box in image.boxes}[asked.group(1)]
            assert int(truth) == sum(box.category == category for box in image.boxes)
        else:
            asked = re.fullmatch(r"Where is the (.+) located with respect to the (.+)\?", q.question)
            assert asked is not None
            boxes = {box.category: corners(box) for box in image.boxes}
            assert relation(boxes[asked.group(1)], boxes[asked.group(2)]) == truth
            assert sorted(q.choices) in (["left", "right"], ["above", "below"])


def test_cli_with_an_answers_file(cli, tmp_path: Path) -> None:
    out = tmp_path / "spatial"
    made = cli("eval", "spatial", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--image-count", 10)
    assert made.exit_code == 0, made.output
    questions = [SpatialQuestion.model_validate_json(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    counts = [q for q in questions if q.task == "Count"]
    relations = [q for q in questions if q.task == "Relation"]
    lines = [{"question_id": q.idx, "prompt": q.prompt, "text": q.answer.strip("()")} for q in counts]  # every count right
    wrong = {"(A)": "B", "(B)": "A"}
    lines += [{"question_id": q.idx, "prompt": q.prompt, "text": wrong[q.answer]} for q in relations[1:]]  # every relation but one wrong
    lines.append({"question_id": relations[0].idx, "prompt": relations[0].prompt, "text": f"The answer is {relations[0].answer[1]}."})
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli("eval", "spatial", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--image-count", 10, "--answers", answers)
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "results.json").read_text())
    assert stored["tasks"]["Count"]["accuracy"] == 1.0
    assert stored["tasks"]["Relation"]["accuracy"] == pytest.approx(1 / len(relations))
    assert stored["accuracy_2d"] == pytest.approx((1 + 1 / len(relations)) / 2)
    assert f"| Count | {len(counts)} | {len(counts)} | 100.00 |" in result.output
    # Answers to other questions (another seed) are refused by their prompt.
    other = tmp_path / "other"
    assert cli("eval", "spatial", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", other, "--image-count", 10, "--seed", 3).exit_code == 0
    refused = cli("eval", "spatial", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", other, "--image-count", 10, "--seed", 3, "--answers", answers)
    assert refused.exit_code == 2 and "another --seed" in refused.output
    too_many = cli("eval", "spatial", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / "big", "--image-count", 50)
    assert too_many.exit_code == 2 and "ask for fewer" in too_many.output
