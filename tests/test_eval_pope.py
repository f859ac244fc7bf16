"""`datagen eval pope`: POPE question sets built from a hand-made COCO instances file (each sampling checked by
hand), deterministic per seed; LLaVA's yes/no reading on awkward replies; the metrics on a hand-made answers file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.eval.pope import build_questions, metrics, question_text, read_yes_no, is_unclear
from datagen.source.coco import image_objects

CATEGORIES = ["person", "dog", "cat", "car", "bus", "apple", "chair"]
IMAGES = {  # image id -> categories in annotation order (person twice in 3: a category counts once)
    1: ["person", "dog", "car"],
    2: ["person", "cat", "chair"],
    3: ["dog", "person", "bus", "person", "car"],
    4: ["apple"],  # one category: too few for two yes-questions, never drawn
    5: [],
}


def write_instances(path: Path) -> Path:
    ids = {name: index + 1 for index, name in enumerate(CATEGORIES)}
    annotations = []
    for image_id, names in IMAGES.items():
        for name in names:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[name],
                                "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": int(name == "person" and image_id == 2)})
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 100, "height": 100} for i in IMAGES],
        "annotations": annotations,
        "categories": [{"id": ids[name], "name": name, "supercategory": "x"} for name in CATEGORIES],
    }))
    return path


@pytest.fixture
def instances(tmp_path) -> Path:
    return write_instances(tmp_path / "instances_val2014.json")


def sets(questions):
    """sampling -> image id -> [(object, label), ...] in asking order."""
    found: dict = {}
    for q in questions:
        found.setdefault(q.category, {}).setdefault(q.image_id, []).append((q.object, q.label))
    return found


def test_the_three_samplings_by_hand(instances):
    images, _ = image_objects(instances)
    assert [(i.image_id, i.objects) for i in images][:3] == [(1, ["person", "dog", "car"]), (2, ["person", "cat", "chair"]),
                                                              (3, ["dog", "person", "bus", "car"])]
    questions = build_questions(images, count=3, per_image=2, seed=0, instruction="")
    got = sets(questions)
    # Over the drawn images 1-3: frequency person 3, car 2, dog 2, bus 1, cat 1, chair 1 (ties by name).
    # popular, each no-question the most frequent category neither in the image nor asked about already:
    assert got["popular"] == {
        1: [("person", "yes"), ("bus", "no"), ("dog", "yes"), ("cat", "no")],
        2: [("person", "yes"), ("car", "no"), ("cat", "yes"), ("dog", "no")],
        3: [("dog", "yes"), ("cat", "no"), ("person", "yes"), ("chair", "no")],
    }
    # Seen together (1: person dog car; 2: person cat chair; 3: dog person bus car):
    #   person -> car 2, dog 2, bus 1, cat 1, chair 1;  dog -> car 2, person 2, bus 1;  cat -> chair 1, person 1
    # adversarial: image 1 person -> bus (car, dog are in it); image 2 person -> car. Where every partner of the object is
    # in the image or used, POPE falls back to a random pick among what is left:
    adversarial = got["adversarial"]
    assert adversarial[1][:2] == [("person", "yes"), ("bus", "no")] and adversarial[1][3][0] in {"cat", "chair"}
    assert adversarial[2][:2] == [("person", "yes"), ("car", "no")] and adversarial[2][3][0] in {"bus", "dog"}
    fallback = adversarial[3][1][0]
    assert fallback in {"cat", "chair"} and adversarial[3][3] == ({"cat": "chair", "chair": "cat"}[fallback], "no")
    for by_image in got.values():
        for image_id, asked in by_image.items():
            labels = [label for _, label in asked]
            assert labels == ["yes", "no", "yes", "no"]
            objects = [name for name, _ in asked]
            assert len(set(objects)) == 4  # nothing asked twice about one image
            assert all(name not in IMAGES[image_id] for name, label in asked if label == "no")
    assert [q.question_id for q in questions] == list(range(36))  # 3 samplings x 3 images x 4
    first = questions[0]
    assert first.text == question_text(IMAGES[first.image_id][0]) and first.image == f"COCO_val2014_{first.image_id:012d}.jpg"


def test_question_sets_are_deterministic_per_seed(instances):
    images, _ = image_objects(instances)
    first = build_questions(images, 3, 2, seed=7, instruction="Answer the question using a single word or phrase.")
    again = build_questions(images, 3, 2, seed=7, instruction="Answer the question using a single word or phrase.")
    assert [q.model_dump() for q in first] == [q.model_dump() for q in again]
    assert first[0].text.endswith("in the image?\nAnswer the question using a single word or phrase.")
    randoms = {seed: [q.object for q in build_questions(images, 3, 2, seed=seed, instruction="") if q.category == "random"]
               for seed in range(6)}
    assert len({tuple(objects) for objects in randoms.values()}) > 1  # the seed moves the random picks
    # leaving a sampling out does not change the others
    only_random = build_questions(images, 3, 2, seed=7, instruction="Answer the question using a single word or phrase.",
                                  samplings=("random",))
    assert [q.object for q in only_random] == [q.object for q in first if q.category == "random"]


def test_articles():
    assert question_text("apple") == "Is there an apple in the image?"
    assert question_text("umbrella") == "Is there an umbrella in the image?"
    assert question_text("dining table") == "Is there a dining table in the image?"


@pytest.mark.parametrize(
    "reply, read, unclear",
    [
        ("Yes", "yes", False),
        ("Yes, there is.", "yes", False),
        ("There is no dog.", "no", False),
        ("No", "no", False),
        ("no.", "no", False),
        ("There is not a cat in the image.", "no", False),
        ("I can't tell", "yes", True),  # no negation word for LLaVA's reading: yes
        ("NO", "yes", True),  # LLaVA's words are No, no and not, case kept
        ("Nope, none.", "yes", True),
        ("There is a dog. No cat though.", "yes", True),  # only the first sentence counts
        ("No\nthere is none", "yes", True),  # split on spaces only: "No\nthere" is no word "No"
        ("", "yes", True),
    ],
)
def test_yes_no_reading_on_awkward_replies(reply, read, unclear):
    assert read_yes_no(reply) == read and is_unclear(reply) == unclear


def test_metrics_by_hand():
    labels = ["yes", "yes", "yes", "yes", "no", "no", "no", "no", "no", "no"]
    replies = ["Yes.", "Yes, there is a dog.", "There is no dog.", "I can't tell", "No", "no.", "Yes",
               "There is not a cat.", "Nope, none.", "NO"]
    # read: yes yes no yes | no no yes no yes yes
    # TP = 3 (0, 1, 3), FN = 1 (2), TN = 3 (4, 5, 7), FP = 3 (6, 8, 9)
    row = metrics(labels, replies)
    assert (row["tp"], row["fn"], row["tn"], row["fp"]) == (3, 1, 3, 3)
    assert row["accuracy"] == pytest.approx(0.6)  # (3 + 3) / 10
    assert row["precision"] == pytest.approx(0.5)  # 3 / (3 + 3)
    assert row["recall"] == pytest.approx(0.75)  # 3 / (3 + 1)
    assert row["f1"] == pytest.approx(0.6)  # 2 x 0.5 x 0.75 / 1.25
    assert row["yes_ratio"] == pytest.approx(0.6)  # 6 read yes of 10
    assert row["unclear"] == 3  # "I can't tell", "Nope, none.", "NO"
    none = metrics(["yes", "no"], ["No", "No"])
    assert none["precision"] is None and none["recall"] == 0.0 and none["f1"] is None


def test_scoring_an_answers_file_through_the_cli(cli, instances, tmp_path):
    out = tmp_path / "pope"
    common = ["eval", "pope", "--instances", instances, "--out", out, "--image-count", 3, "--per-image", 2, "--seed", 3]
    built = cli(*common)
    assert built.exit_code == 0 and "wrote 36 POPE questions" in built.output
    questions = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert set(questions[0]) == {"question_id", "image", "image_id", "text", "label", "category", "object"}
    # random: always "Yes"; popular: right every time; adversarial: "I can't tell" (read yes), one left unanswered
    answers = []
    for q in questions:
        if q["category"] == "random":
            text = "Yes"
        elif q["category"] == "popular":
            text = "Yes, there is." if q["label"] == "yes" else f"No, there is no {q['object']}."
        elif q["question_id"] == 35:
            continue
        else:
            text = "I can't tell"
        answers.append({"question_id": q["question_id"], "prompt": q["text"], "text": text, "answer_id": "x", "model_id": "m", "metadata": {}})
    answers_file = tmp_path / "answers.jsonl"
    answers_file.write_text("".join(json.dumps(line) + "\n" for line in answers))
    result = cli(*common, "--answers", answers_file)
    assert result.exit_code == 1 and "1 POPE questions have no answer" in result.output
    rows = json.loads((out / "results.json").read_text())["samplings"]
    # random: 6 yes-labels all TP, 6 no-labels all FP -> accuracy 6/12, precision 6/12, recall 1, F1 2/3, yes 100%
    assert {k: rows["random"][k] for k in ("tp", "fp", "tn", "fn", "missing")} == {"tp": 6, "fp": 6, "tn": 0, "fn": 0, "missing": 0}
    assert rows["random"]["accuracy"] == 0.5 and rows["random"]["f1"] == pytest.approx(2 / 3) and rows["random"]["yes_ratio"] == 1.0
    assert rows["popular"]["accuracy"] == 1.0 and rows["popular"]["yes_ratio"] == 0.5 and rows["popular"]["unclear"] == 0
    # adversarial: 11 answered (question 35, a no-question, left out): 6 TP, 5 FP, all 11 unclear
    assert (rows["adversarial"]["questions"], rows["adversarial"]["tp"], rows["adversarial"]["fp"]) == (11, 6, 5)
    assert rows["adversarial"]["missing"] == 1 and rows["adversarial"]["unclear"] == 11
    assert "| random | 12 | 50.00 | 50.00 | 100.00 | 66.67 | 100.00 | 0 | 0 |" in result.output
    assert "| adversarial | 11 | 54.55 | 54.55 | 100.00 | 70.59 | 100.00 | 11 | 1 |" in result.output


def test_answers_to_other_questions_are_refused(cli, instances, tmp_path):
    out = tmp_path / "pope"
    common = ["eval", "pope", "--instances", instances, "--out", out, "--image-count", 3, "--per-image", 2]
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"question_id": 0, "prompt": "Is there a giraffe in the image?", "text": "No"}) + "\n")
    result = cli(*common, "--answers", answers)
    assert result.exit_code == 2 and "question_id 0 answers 'Is there a giraffe in the image?'" in result.output
    answers.write_text(json.dumps({"question_id": 99, "text": "No"}) + "\n")
    result = cli(*common, "--answers", answers)
    assert result.exit_code == 2 and "question_id 99 is not one of the 36 POPE questions" in result.output
    # the same --out with other settings is refused, the questions already there kept
    before = (out / "questions.jsonl").read_text()
    result = cli(*common[:-2], "--per-image", 1)
    assert result.exit_code == 2 and "holds POPE questions built from other" in result.output
    assert (out / "questions.jsonl").read_text() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image-count", 4], "only 3 images of --instances have 2 or more object categories"),
        (["--model", "m", "--answers", "a"], "--model/--answers"),
    ],
)
def test_bad_settings_are_one_line(cli, instances, tmp_path, extra, message):
    result = cli("eval", "pope", "--instances", instances, "--out", tmp_path / "o", "--per-image", 2, *extra)
    assert result.exit_code == 2 and message in result.output


def test_bad_instances_file_is_one_line(cli, tmp_path):
    result = cli("eval", "pope", "--instances", tmp_path / "none.json", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--instances" in result.output and "file not found" in result.output
    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations": []}))
    result = cli("eval", "pope", "--instances", tmp_path / "captions.json", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "no 'categories' list" in result.output
