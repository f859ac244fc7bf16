"""`datagen eval chair` on an answers file: CHAIR_s, CHAIR_i, recall and length, computed by hand for the sample data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.eval.chair import PROMPTS, ChairQuestion, build_questions, score
from datagen.source.coco import CocoSource
from tests.conftest import CAPTIONS, INSTANCES

# Three images of data/: 100013 has boxes of a dog, a frisbee and a person; 100096 a giraffe; 100163 an elephant.
DESCRIPTIONS = {
    # person (man), frisbee, dog, cat, bench: the cat and the bench are on no box and in no caption.
    "100013": "A man throws a frisbee to his dog in the park. A cat watches them from a bench.",
    # giraffe only: supported.
    "100096": "A tall giraffe stands near some trees.",
    # zebra negated (no claim), elephant supported.
    "100163": "There is no zebra here, only an elephant crossing a river.",
}


def questions(source: CocoSource) -> list[ChairQuestion]:
    return [
        ChairQuestion(question_id=image_id, image=source.file_name(image_id), image_id=image_id, text=PROMPTS[0])
        for image_id in (100013, 100096, 100163)
    ]


def test_scores_hand_computed() -> None:
    source = CocoSource(CAPTIONS, INSTANCES)
    results = score(questions(source), DESCRIPTIONS, source)
    assert results["descriptions"] == 3 and results["missing"] == 0
    # Mentioned per description: 5 (person, frisbee, dog, cat, bench), 1, 1; unsupported: cat and bench.
    assert (results["mentioned"], results["unsupported"]) == (7, 2)
    assert results["chair_s"] == pytest.approx(1 / 3)
    assert results["chair_i"] == pytest.approx(2 / 7)
    # Objects the images hold: 3 + 1 + 1, all mentioned.
    assert results["recall"] == pytest.approx(5 / 5)
    # Words: 11 + 7 in the first, 7, 11.
    assert results["mean_words"] == pytest.approx(36 / 3)
    assert results["most_unsupported"] == {"bench": 1, "cat": 1}
    assert results["per_description"][0] == {"question_id": 100013, "words": 18, "mentioned": ["bench", "cat", "dog", "frisbee", "person"],
                                             "unsupported": ["bench", "cat"]}


def test_recall_counts_objects_left_out() -> None:
    source = CocoSource(CAPTIONS, INSTANCES)
    results = score(questions(source), {"100013": "A dog runs on the grass."}, source)
    # One of the three objects of 100013 (dog, frisbee, person); the other two images unanswered.
    assert results["recall"] == pytest.approx(1 / 3)
    assert (results["descriptions"], results["missing"], results["chair_s"]) == (1, 2, 0.0)


def test_questions_are_seeded_and_only_of_images_with_boxes() -> None:
    source = CocoSource(CAPTIONS, INSTANCES)
    first = build_questions(source, 5, seed=1)
    assert first == build_questions(source, 5, seed=1)
    assert first != build_questions(source, 5, seed=2)
    for question in first:
        support = source.support(question.image_id)
        assert support is not None and support.categories
        assert question.text in PROMPTS


def test_cli_scores_an_answers_file(cli, tmp_path: Path) -> None:
    out = tmp_path / "chair"
    written = cli("eval", "chair", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--image-count", 20)
    assert written.exit_code == 0, written.output
    asked = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert len(asked) == 20 and {"100013", "100096", "100163"} <= {str(q["question_id"]) for q in asked}
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": int(key), "text": text}) + "\n" for key, text in DESCRIPTIONS.items()))
    result = cli("eval", "chair", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--image-count", 20, "--answers", answers)
    # 17 images have no description: the figures cover the three, and the command says so.
    assert result.exit_code == 1
    assert "| 3 | 33.3 | 28.6 | 100.0 | 12.0 | 7 | 2 | 17 |" in result.output
    assert "17 images have no description" in result.output
    stored = json.loads((out / "results.json").read_text())
    assert stored["chair_i"] == pytest.approx(2 / 7)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"question_id": 5, "text": "A dog."}) + "\n")
    refused = cli("eval", "chair", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--image-count", 20, "--answers", unknown)
    assert refused.exit_code == 2 and "question_id 5 is not one of the 20 images asked" in refused.output
    other = cli("eval", "chair", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--image-count", 5)
    assert other.exit_code == 2 and "pick another --out" in other.output
