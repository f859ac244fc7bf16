"""Grounded tasks: what may be asked of an image, the plan shown to the teacher, the check of each pair, and a mock
run that writes every grounded task and refuses exactly the answers the mock got wrong on purpose."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from datagen.formats.records import RejectReason, SkipReason
from datagen.quality.parse import Rejected
from datagen.run.items import plan_item
from datagen.run.options import GenerateOptions
from datagen.run.pipeline import GenerateJob, execute
from datagen.source.coco import Box, CocoSource, ImageAnnotations, ObjectStats
from datagen.tasks.grounded import (
    Probe,
    brief,
    brief_probes,
    plan_absent_objects,
    plan_counting,
    plan_referring,
    plan_spatial,
    relation,
    verify_pairs,
)
from datagen.tasks.registry import DEFAULT_TASKS, TASKS, ItemKey
from datagen.teachers.mock import grounded_labels, mock_answer
from tests.conftest import CAPTIONS, INSTANCES

GROUNDED = ("counting", "spatial", "absent_objects", "referring")
VERDICTS = {"wrong_count", "wrong_relation", "wrong_presence", "wrong_box", "wrong_object", "unclear_answer", "off_plan_question"}


def box(number: int, category: str, x1: float, y1: float, x2: float, y2: float) -> Box:
    return Box(annotation_id=number, category=category, x1=x1, y1=y1, x2=x2, y2=y2)


def scene(*boxes: Box, crowd: tuple[str, ...] = (), captions: tuple[str, ...] = ("A room.",)) -> ImageAnnotations:
    return ImageAnnotations(
        image_id=5, file_name="000000000005.jpg", width=640, height=480, captions=list(captions), caption_ids=[1], boxes=list(boxes), crowd=list(crowd)
    )


STATS = ObjectStats(
    images_with=Counter({"person": 50, "car": 20, "cat": 8, "dog": 10, "giraffe": 2, "zebra": 3}),
    together={
        "person": Counter({"car": 15, "dog": 4}),
        "car": Counter({"person": 15}),
        "cat": Counter({"dog": 6, "zebra": 1}),
        "dog": Counter({"cat": 6, "person": 4}),
        "giraffe": Counter({"zebra": 2}),
        "zebra": Counter({"giraffe": 2, "cat": 1}),
    },
)


def stats() -> ObjectStats:
    return STATS


def test_default_tasks_stay_llavas_three() -> None:
    assert DEFAULT_TASKS == ("conversation", "detail", "complex_reasoning")
    assert set(GROUNDED) <= set(TASKS)
    assert {"wrong_count", "wrong_relation", "wrong_presence", "wrong_box", "wrong_object"} <= set(RejectReason.__args__)  # type: ignore[attr-defined]
    assert "unaskable" in SkipReason.__args__  # type: ignore[attr-defined]


# -- counting ---------------------------------------------------------------------------------------


def test_counting_asks_the_non_crowd_count() -> None:
    image = scene(box(1, "dog", 0.0, 0.0, 0.3, 0.3), box(2, "dog", 0.5, 0.5, 0.9, 0.9), box(3, "cat", 0.3, 0.3, 0.6, 0.6))
    probes = plan_counting(image, stats, random.Random(0))
    assert sorted((probe.category, probe.truth) for probe in probes) == [("cat", "1"), ("dog", "2")]


def test_counting_skips_crowd_and_tiny_categories() -> None:
    # person has a crowd box (its count is unknown); the 20 x 20 px cup is tiny; only the dog may be counted.
    image = scene(
        box(1, "person", 0.0, 0.0, 0.3, 0.5),
        box(2, "cup", 0.5, 0.5, 0.5 + 20 / 640, 0.5 + 20 / 480),
        box(3, "dog", 0.4, 0.4, 0.8, 0.9),
        crowd=("person",),
    )
    assert [probe.category for probe in plan_counting(image, stats, random.Random(0))] == ["dog"]
    only_unclear = scene(box(1, "person", 0.0, 0.0, 0.3, 0.5), crowd=("person",))
    assert plan_counting(only_unclear, stats, random.Random(0)) == []


def test_crowd_categories_come_from_the_source() -> None:
    source = CocoSource(CAPTIONS, INSTANCES)
    crowded = [image for image in source.images() if image.crowd]
    assert crowded, "data/instances.json holds a crowd box"
    for image in crowded:
        assert all(probe.category not in image.crowd for probe in plan_counting(image, source.object_stats, random.Random(0)))


# -- spatial ----------------------------------------------------------------------------------------


def test_relation_margin_rule() -> None:
    assert relation((0.0, 0.0, 0.3, 0.3), (0.5, 0.0, 0.8, 0.3)) == "left"
    assert relation((0.5, 0.0, 0.8, 0.3), (0.0, 0.0, 0.3, 0.3)) == "right"
    # Overlapping by 0.02 of a 0.3 wide box (under 10%) still counts; by 0.06 (20%) it does not, nor does the other axis.
    assert relation((0.0, 0.0, 0.32, 0.3), (0.3, 0.0, 0.6, 0.3)) == "left"
    assert relation((0.0, 0.0, 0.36, 0.3), (0.3, 0.0, 0.6, 0.3)) is None
    # Side by side but centres only 0.1 apart: too close to call.
    assert relation((0.0, 0.0, 0.1, 0.3), (0.1, 0.0, 0.2, 0.3)) is None
    # Stacked: left/right is unclear, above/below is not.
    assert relation((0.2, 0.0, 0.6, 0.3), (0.2, 0.5, 0.6, 0.9)) == "above"


def test_spatial_asks_only_about_single_objects() -> None:
    image = scene(
        box(1, "dog", 0.0, 0.5, 0.3, 0.9),
        box(2, "cat", 0.6, 0.5, 0.9, 0.9),
        box(3, "person", 0.0, 0.0, 0.2, 0.4),
        box(4, "person", 0.7, 0.0, 0.9, 0.4),
    )
    probes = plan_spatial(image, stats, random.Random(1))
    assert len(probes) == 1
    probe = probes[0]
    assert {probe.category, probe.other} == {"dog", "cat"}
    assert probe.truth == ("left" if probe.category == "dog" else "right")


# -- absent objects ---------------------------------------------------------------------------------


def test_absent_objects_mix_present_and_absent_at_the_set_ratio() -> None:
    image = scene(box(1, "dog", 0.0, 0.5, 0.3, 0.9), box(2, "person", 0.6, 0.2, 0.9, 0.9), captions=("A man and his dog near a car.",))
    probes = plan_absent_objects(image, stats, random.Random(3))
    present = sorted(probe.category for probe in probes if probe.truth == "yes")
    absent = [probe for probe in probes if probe.truth == "no"]
    assert present == ["dog", "person"]
    assert len(absent) == 2
    # Never a boxed category, nor one a caption claims (the car).
    assert {probe.category for probe in absent}.isdisjoint({"dog", "person", "car"})
    assert len({probe.sampling for probe in absent}) == 2


def test_pope_samplings() -> None:
    image = scene(box(1, "dog", 0.0, 0.5, 0.3, 0.9))
    by_sampling = {}
    for seed in range(12):
        for probe in plan_absent_objects(image, stats, random.Random(seed)):
            if probe.truth == "no":
                by_sampling.setdefault(probe.sampling, set()).add(probe.category)
    assert by_sampling["popular"] == {"person"}  # the most frequent category the image lacks
    assert by_sampling["adversarial"] == {"cat"}  # the one most often seen with a dog
    assert by_sampling["random"] <= {"person", "car", "cat", "giraffe", "zebra"}


def test_absent_objects_unaskable_without_objects() -> None:
    assert plan_absent_objects(scene(), stats, random.Random(0)) == []


# -- referring --------------------------------------------------------------------------------------


def test_referring_regions_and_locations() -> None:
    image = scene(box(1, "dog", 0.0, 0.5, 0.3, 0.9), box(2, "cat", 0.6, 0.5, 0.9, 0.9), box(3, "person", 0.05, 0.52, 0.31, 0.9))
    probes = plan_referring(image, stats, random.Random(0))
    # The dog and the person share a region (IoU over 0.5): only the cat can be pointed at without doubt.
    assert [(probe.kind, probe.category) for probe in probes] == [("locate", "cat")]
    assert probes[0].box == (0.6, 0.5, 0.9, 0.9)


# -- the plan as the teacher reads it, and the check of a reply ---------------------------------------


def test_brief_round_trip() -> None:
    probes = [
        Probe(kind="count", category="dog", truth="2"),
        Probe(kind="relation", category="dog", other="cat", truth="left"),
        Probe(kind="presence", category="giraffe", truth="no"),
        Probe(kind="region", category="cat", truth="cat", box=(0.6, 0.5, 0.9, 0.9)),
        Probe(kind="locate", category="cat", truth="[0.6, 0.5, 0.9, 0.9]", box=(0.6, 0.5, 0.9, 0.9)),
    ]
    text = "A dog.\n\ndog: [0.0, 0.5, 0.3, 0.9]\n\n" + brief(probes)
    assert text.splitlines()[-5:] == [
        "1. how many dog: 2",
        "2. is the dog left or right of the cat: left",
        "3. is there a giraffe: no",
        "4. what is in region [0.6, 0.5, 0.9, 0.9]: cat",
        "5. where is the cat: [0.6, 0.5, 0.9, 0.9]",
    ]
    assert brief_probes(text) == probes
    assert brief_probes("A dog.") == []


def test_verify_pairs_names_the_failing_question() -> None:
    image = scene(box(1, "dog", 0.0, 0.5, 0.3, 0.9), box(2, "cat", 0.6, 0.5, 0.9, 0.9))
    probes = [Probe(kind="count", category="dog", truth="1"), Probe(kind="region", category="cat", truth="cat", box=(0.6, 0.5, 0.9, 0.9))]
    verify_pairs(probes, [("How many dogs?", "One dog."), ("What is at [0.6, 0.5, 0.9, 0.9]?", "A cat.")], image)
    cases = [
        ([("How many dogs?", "Two dogs.")], "wrong_turn_count"),
        ([("How many dogs?", "Two dogs."), ("What is at [0.6, 0.5, 0.9, 0.9]?", "A cat.")], "wrong_count"),
        ([("How many cats?", "One."), ("What is at [0.6, 0.5, 0.9, 0.9]?", "A cat.")], "off_plan_question"),
        ([("How many dogs?", "One dog."), ("What is in the corner?", "A cat.")], "off_plan_question"),
        ([("How many dogs?", "One dog."), ("What is at [384, 240, 576, 432]?", "A dog.")], "wrong_object"),
    ]
    for pairs, expected in cases:
        with pytest.raises(Rejected) as caught:
            verify_pairs(probes, pairs, image)
        assert caught.value.reason == expected
    with pytest.raises(Rejected, match="^question 2: "):
        verify_pairs(probes, cases[-1][0], image)


# -- a mock run ---------------------------------------------------------------------------------------


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mock_run_writes_every_grounded_task_and_refuses_the_wrong_answers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = GenerateOptions(captions=CAPTIONS, instances=INSTANCES, out=out, tasks=list(GROUNDED), teacher="mock", use_cache=False, progress=False)
    job = GenerateJob(options)
    manifest = execute(job)
    source = job.plan.source
    assert manifest.status == "completed"
    rejects = lines(out / "rejects.jsonl")
    assert {reject["reason"] for reject in rejects} <= VERDICTS
    refused = {(reject["task"], reject["meta"]["image_id"]) for reject in rejects}
    for task in GROUNDED:
        written = {record["meta"]["image_id"] for record in lines(out / f"{task}.jsonl")}
        assert written, f"no {task} record"
        assert any(refused_task == task for refused_task, _ in refused), f"no {task} answer refused"
        for image_id in source.image_ids:
            image = source.image(image_id)
            key = ItemKey(image_id, task)
            probes = plan_item(image, key, source.object_stats, 0) if image is not None else None
            if not probes:
                assert image_id not in written and (task, image_id) not in refused  # unaskable: skipped
                continue
            request, _ = job.plan.request_for(image, key)
            wrong = any(grounded_labels(request.messages, request.body().get("seed")))
            assert ((task, image_id) in refused) == wrong, (task, image_id)
            assert (image_id in written) != wrong
    # Each written record holds one pair per planned question.
    record = lines(out / "counting.jsonl")[0]
    image = source.image(record["meta"]["image_id"])
    assert image is not None
    assert len(record["conversations"]) == 2 * len(plan_item(image, ItemKey(image.image_id, "counting"), source.object_stats, 0) or [])
    skipped = manifest.counts["spatial"].skipped
    assert skipped.get("unaskable", 0) > 0


def test_referring_replies_hold_boxes_but_no_other_corner_numbers() -> None:
    spec = TASKS["referring"]
    bare = "Question:\nWhere is the cat? Give its region.\n===\nAnswer:\n[0.0, 0.0, 0.5, 0.25]"
    assert spec.parse(bare, "stop")[0][1] == "[0.0, 0.0, 0.5, 0.25]"
    # LLaVA-1.5's own wording of the request: boxes are the task here.
    worded = "Question:\nPlease provide the bounding box coordinates of the cat.\n===\nAnswer:\nIts bounding box is [0.1, 0.2, 0.5, 0.6]."
    assert len(spec.parse(worded, "stop")) == 1
    told = "Question:\nWhere is the cat?\n===\nAnswer:\nAccording to the captions, the cat is at [0.1, 0.2, 0.5, 0.6]."
    with pytest.raises(Rejected) as caught:
        spec.parse(told, "stop")
    assert caught.value.reason == "reveals_text_source"
    leaked = "Question:\nWhere is the cat?\n===\nAnswer:\nThe cat starts at x=0.12 and ends near the middle."
    with pytest.raises(Rejected) as caught:
        spec.parse(leaked, "stop")
    assert caught.value.reason == "box_coordinates"
    # The same box in another task is a leak of the context's corners.
    with pytest.raises(Rejected) as caught:
        TASKS["counting"].parse("Question:\nHow many cats?\n===\nAnswer:\nOne cat, at [0.0, 0.0, 0.5, 0.25].", "stop")
    assert caught.value.reason == "box_coordinates"


def test_grounded_tasks_need_the_instances_file(cli, tmp_path: Path) -> None:
    for context in ([], ["--context", "counting=captions"]):
        result = cli("generate", "--teacher", "mock", "--tasks", "counting", "--captions", CAPTIONS, "--out", tmp_path / "out", *context)
        assert result.exit_code == 2
        assert "--instances is required" in result.output
    assert not (tmp_path / "out" / "counting.jsonl").exists()


def test_categories_the_word_list_cannot_read_are_not_asked() -> None:
    # A lone orange: "is there an orange" could not be checked ("orange" alone reads as a colour).
    image = scene(box(1, "orange", 0.0, 0.5, 0.3, 0.9), box(2, "bowl", 0.6, 0.5, 0.9, 0.9))
    assert [probe.category for probe in plan_counting(image, stats, random.Random(0))] == ["bowl"]
    stats_with_orange = ObjectStats(STATS.images_with, {**STATS.together, "orange": Counter()})
    for seed in range(6):
        asked = plan_absent_objects(scene(box(1, "dog", 0.0, 0.5, 0.3, 0.9)), lambda: stats_with_orange, random.Random(seed))
        assert "orange" not in {probe.category for probe in asked}


def test_the_terse_mock_answers_every_planned_question() -> None:
    probes = [Probe(kind="count", category="dog", truth="2"), Probe(kind="presence", category="cat", truth="no"),
              Probe(kind="relation", category="dog", other="bench", truth="left")]
    messages = [{"role": "user", "content": "Two dogs by a bench.\n\n" + brief(probes)}]
    terse = mock_answer(messages, 3, "terse")
    assert terse == mock_answer(messages, 3)
    assert terse.count("Question:") == 3
