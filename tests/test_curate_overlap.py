"""`eval pope|bench --train-data`: eval images the training data holds are counted and, unless allowed, not scored."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.curate.overlap import TrainingData, training_ids

INSTANCES = Path(__file__).resolve().parent.parent / "data" / "instances.json"


def pope_answers(out: Path, tmp_path: Path) -> Path:
    questions = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    lines = [{"question_id": q["question_id"], "prompt": q["text"], "text": "Yes", "answer_id": "x", "model_id": "m", "metadata": {}} for q in questions]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_pope_scores_only_the_clean_images_and_prints_both_numbers(cli, tmp_path: Path) -> None:
    out = tmp_path / "pope"
    common = ["eval", "pope", "--instances", INSTANCES, "--out", out, "--image-count", 4, "--per-image", 2, "--seed", 1]
    assert cli(*common).exit_code == 0
    questions = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    drawn = sorted({q["image_id"] for q in questions})
    assert len(drawn) == 4
    # The training data names one drawn image the 2014 way and one by id, plus an image POPE did not draw.
    train = tmp_path / "train_ids.txt"
    train.write_text(f"COCO_val2014_{drawn[0]:012d}.jpg\n{drawn[1]}\n1\n")
    answers = pope_answers(out, tmp_path)
    clean = cli(*common, "--answers", answers, "--train-data", train)
    assert clean.exit_code == 0, clean.output
    assert f"--train-data {train} holds 2 of the 4 eval images; scoring the 2 clean ones only" in clean.output
    results = json.loads((out / "results.json").read_text())
    assert results["overlap"] == {"train_data": str(train), "eval_images": 4, "held": 2, "allow_overlap": False}
    per_sampling = len(questions) // 3
    assert all(row["questions"] == per_sampling // 2 and row["missing"] == 0 for row in results["samplings"].values())
    allowed = cli(*common, "--answers", answers, "--train-data", train, "--allow-overlap")
    assert allowed.exit_code == 0 and "holds 2 of the 4 eval images; all 4 scored" in allowed.output
    assert all(row["questions"] == per_sampling for row in json.loads((out / "results.json").read_text())["samplings"].values())


def test_allow_overlap_alone_is_refused(cli, tmp_path: Path) -> None:
    result = cli("eval", "pope", "--instances", INSTANCES, "--out", tmp_path / "o", "--allow-overlap")
    assert result.exit_code == 2 and "--allow-overlap goes with --train-data" in result.output


def test_bench_takes_only_the_answers_about_clean_images(cli, tmp_path: Path, generate_mock) -> None:
    run = tmp_path / "run"
    generate_mock(run, "--tasks", "conversation")
    held = training_ids(run)
    assert held and all(isinstance(image_id, int) for image_id in held)
    one = sorted(held)[0]
    questions = tmp_path / "qa90_questions.jsonl"
    rows = [
        {"question_id": 0, "image": f"{one:012d}.jpg", "text": "What is shown?", "category": "conv"},
        {"question_id": 1, "image": "000000999999.jpg", "text": "What is shown?", "category": "detail"},
    ]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": row["question_id"], "text": "A picture."}) + "\n" for row in rows))
    result = cli("eval", "bench", "--questions", questions, "--answers", answers, "--out", tmp_path / "bench", "--train-data", run)
    assert result.exit_code == 0, result.output
    assert f"--train-data {run} holds 1 of the 2 eval images; scoring the 1 clean ones only" in result.output
    taken = [json.loads(line) for line in (tmp_path / "bench" / "answers.jsonl").read_text().splitlines()]
    assert [line["question_id"] for line in taken] == [1]


def test_training_data_reads_a_run_folder_or_a_list(tmp_path: Path, generate_mock) -> None:
    run = tmp_path / "run"
    generate_mock(run, "--tasks", "detail")
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": "x", "image": "COCO_train2014_000000100013.jpg", "conversations": []}]))
    assert 100013 in training_ids(run) and training_ids(export) == {100013}
    data = TrainingData.read(export, allow_overlap=False)
    kept, overlap = data.split(["000000100013.jpg", "000000100027.jpg", "no-image"], lambda name: name)
    assert kept == ["000000100027.jpg", "no-image"] and (overlap.eval_images, overlap.held) == (2, 1)
