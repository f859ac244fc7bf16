"""Whole-reply checks (datagen/quality/reply_checks.py): loops, copies of the pack's examples, records about another
image; each fires on what weak open models write and stays quiet on good teacher text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from datagen.formats.records import Grounding, RecordMeta, RejectReason, TeacherInfo, Usage
from datagen.quality.grounding import ground_record
from datagen.quality.parse import Rejected
from datagen.quality.reply_checks import check_reply, find_repetition, names_another_image
from datagen.run.items import build_record
from datagen.source.coco import Box, ImageAnnotations
from datagen.tasks.prompts import BUNDLED_PROMPTS, load_instructions
from datagen.tasks.registry import TASKS, parse_answer, task_spec

CORPUS = Path(__file__).resolve().parent / "data" / "answer_corpus.jsonl"


def examples(task: str, root: Path = BUNDLED_PROMPTS):
    spec = task_spec(task)
    return spec.examples(spec.load_pack(root))


def reason(task: str, text: str, root: Path = BUNDLED_PROMPTS) -> str | None:
    try:
        parse_answer(task, text, "stop", examples=examples(task, root))
    except Rejected as rejection:
        return rejection.reason
    return None


def qa(*pairs: tuple[str, str]) -> str:
    return "\n===\n".join(f"Question:\n{question}\n===\nAnswer:\n{answer}" for question, answer in pairs)


def test_new_reasons_are_reject_reasons():
    assert {"repetition", "copied_example", "unsupported_object"} <= set(get_args(RejectReason))


LOOP = "The picture is a picture of a kitchen with a white refrigerator and a microwave on the counter."
REPETITIONS = [
    ("conversation", qa(("What is in the picture?", f"{LOOP} {LOOP} {LOOP}"))),
    ("detail", "A man rides a bike down the street. He wears a red jacket. A man rides a bike down the street."),
    # a run of nine or more words said twice inside longer, different sentences
    (
        "detail",
        "Two dogs play on the beach near the water at sunset today, and the owner watches. Later, two dogs play on"
        " the beach near the water at sunset today while gulls circle.",
    ),
    ("conversation", qa(("What is the dog doing?", "The dog is chasing a ball."), ("And now?", "The dog is chasing a ball."))),
    (
        "conversation",
        qa(
            ("Where is the bus?", "The bus is parked at the curb in front of the old brick station building downtown."),
            ("What is beside it?", "A bench. The bus is parked at the curb in front of the old brick station building downtown."),
        ),
    ),
    ("complex_reasoning", qa(("Why is the road wet?", f"It rained. {LOOP} It is wet. {LOOP}"))),
    # a few words three times in a row: a word that stutters, a list that loops (SmolLM2 on a kitchen picture)
    ("detail", "The two players differ in their colors. This is not a simple identity identity identity, but a contrast."),
    ("complex_reasoning", qa(("What is on the counter?", "Many things: a toaster, a banana, a cake, a cake, a cake, a bowl and a towel."))),
]


@pytest.mark.parametrize(("task", "text"), REPETITIONS)
def test_repetition_refuses_loops(task: str, text: str):
    assert reason(task, text) == "repetition"


GOOD = [
    # phrases of up to seven words said twice, as real teachers do in long answers
    (
        "complex_reasoning",
        qa(
            (
                "What could make sharing these pizzas fair?",
                "The pizzas differ in size, so cutting each pizza into equal slices helps. Some people might prefer the larger"
                " pizza, and some people might prefer the smaller ones; asking first avoids arguments. Counting the slices of"
                " each pizza before serving means everyone at the table gets a similar share.",
            )
        ),
    ),
    # two answers sharing a run of words inside longer sentences, as a teacher quoting one caption twice does
    (
        "conversation",
        qa(
            ("What is the skier doing?", "The skier is going down the snowy slope near the trail sign at the top."),
            ("Is the skier alone?", "Yes, and she is going down the snowy slope near the trail sign without poles."),
        ),
    ),
    # a word said twice for emphasis, and a list naming things of one kind apart
    ("detail", "It is a very, very old clock. Beside it hang a red coat, a blue coat and a green coat on three hooks."),
    # the same short answer to two questions
    ("conversation", qa(("Is the man wearing a hat?", "Yes."), ("Is he holding an umbrella?", "Yes."))),
    # the same question asked twice with different answers: dull, not a loop (the mock teacher does this)
    ("conversation", qa(("What else can you see?", "A red kite in the sky."), ("What else can you see?", "Two children on the sand."))),
    (
        "detail",
        "A cat is curled up asleep on a red sofa in a sunny living room. The sofa is plush, with two cushions pushed to"
        " one side. A folded blanket lies on the armrest, and a mug sits on a low wooden table in front of the sofa.",
    ),
    # asks one of the examples' short generic questions: not a copy
    ("conversation", qa(("What is the main subject of this picture?", "A yellow school bus parked by a playground."))),
]


@pytest.mark.parametrize(("task", "text"), GOOD)
def test_good_text_passes(task: str, text: str):
    assert reason(task, text) is None


def test_every_good_reply_of_the_answer_corpus_passes_the_reply_rules():
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    good = [row for row in rows if row["label"] == "good"]
    assert len(good) > 200
    for row in good:
        assert reason(row["task"], row["text"]) is None, row["text"][:80]


def _shot(task: str, number: int) -> str:
    folder = Path(task_spec(task).load_pack(BUNDLED_PROMPTS).folder)
    return (folder / f"{number:03d}_conv.txt").read_text(encoding="utf-8")


def test_copied_example_refuses_a_whole_example_copied():
    assert reason("complex_reasoning", _shot("complex_reasoning", 2)) == "copied_example"
    assert reason("conversation", _shot("conversation", 0)) == "copied_example"
    assert reason("detail", _shot("detail", 1)) == "copied_example"


def test_copied_example_refuses_one_copied_answer_or_paragraph_among_new_text():
    answer = _shot("conversation", 1).split("Answer:\n")[4].strip()  # the last answer: why a beach suits kites
    text = qa(("What is the man holding?", "A string tied to a kite."), ("Why fly a kite here?", answer))
    assert reason("conversation", text) == "copied_example"
    paragraph = _shot("detail", 0).split("\n\n")[1]
    assert reason("detail", "A quiet riverside path in the afternoon, seen from behind a bench.\n\n" + paragraph) == "copied_example"


def test_copied_example_needs_most_of_a_part_not_a_shared_phrase():
    # a few words in common with an example answer ("a bright, colourful kite") is no copy
    text = qa(("What does the kite look like?", "It is a bright, colourful kite shaped like a fish, with a long blue tail."))
    assert reason("conversation", text) is None


def test_copied_example_compares_against_the_pack_actually_used(tmp_path: Path):
    # A user's own pack (LLaVA's layout): a copy of its example is refused with it, not with ours, and vice versa.
    folder = tmp_path / "complex_reasoning"
    folder.mkdir()
    (folder / "system_message.txt").write_text("Answer one question about the picture.\n", encoding="utf-8")
    (folder / "000_caps.txt").write_text("A red tram waits at a stop.\n\ntrain: [0.1, 0.2, 0.9, 0.8]\n", encoding="utf-8")
    own = qa(
        (
            "Why might the tram be waiting at this stop for so long this morning?",
            "Trams keep to a timetable, so a driver who arrives early at a stop waits there until the scheduled departure"
            " time; passengers may also still be boarding through the rear doors, and the signal ahead could be red.",
        )
    )
    (folder / "000_conv.txt").write_text(own, encoding="utf-8")
    assert reason("complex_reasoning", own, root=tmp_path) == "copied_example"
    assert reason("complex_reasoning", own) is None
    assert reason("complex_reasoning", _shot("complex_reasoning", 2), root=tmp_path) is None


def test_without_examples_only_repetition_applies():
    assert parse_answer("complex_reasoning", _shot("complex_reasoning", 2), "stop") is not None
    assert [finding.rule for finding in check_reply([("", f"{LOOP} {LOOP}")])] == ["repetition"]


def test_a_loop_cut_by_the_token_limit_stays_truncated():
    try:
        parse_answer("detail", f"{LOOP} {LOOP} {LOOP} The picture is", "length", examples=examples("detail"))
    except Rejected as rejection:
        assert rejection.reason == "truncated"
    else:
        pytest.fail("a reply cut at max_tokens was accepted")


def test_repetition_names_the_turn_and_the_words():
    findings = find_repetition([("Q1", "A short answer here."), ("Q2", "A short answer here.")])
    assert [(finding.turn, finding.role) for finding in findings] == [(1, "answer")]
    assert "a short answer here" in findings[0].excerpt


@pytest.mark.parametrize(
    ("mentioned", "unsupported", "another"),
    [
        (["cell phone", "clock", "person", "suitcase"], ["cell phone", "clock", "person", "suitcase"], True),
        (["dog", "frisbee"], ["dog", "frisbee"], True),
        (["dog"], ["dog"], False),  # one stray object: flagged, written unless --reject-unsupported
        (["car", "person", "truck"], ["person", "truck"], True),  # more absent than shown
        (["car", "truck"], [], False),
        (["dog", "person"], ["dog"], True),  # a person shown does not speak for the record
        (["bench", "dog", "frisbee", "person"], ["dog", "frisbee"], True),
        (["pizza", "person"], ["person"], False),  # an inferred diner beside the pizza the image shows
        (["car", "parking meter", "person", "truck"], ["person"], False),
        (["bench", "dog", "frisbee"], ["frisbee"], False),  # one stray object among shown ones
        (["bench", "dog", "frisbee", "kite"], ["frisbee", "kite"], False),  # as many shown as absent
    ],
)
def test_names_another_image(mentioned: list[str], unsupported: list[str], another: bool):
    assert names_another_image(Grounding(mentioned=mentioned, unsupported=unsupported)) is another


def _kitchen() -> ImageAnnotations:
    boxes = [Box(annotation_id=1, category="refrigerator", x1=0.1, y1=0.1, x2=0.4, y2=0.9), Box(annotation_id=2, category="microwave", x1=0.5, y1=0.4, x2=0.7, y2=0.6)]
    captions = ["A small kitchen with a white refrigerator.", "A microwave sits on the kitchen counter."]
    return ImageAnnotations(image_id=7, file_name="000000000007.jpg", width=640, height=480, captions=captions, caption_ids=[1, 2], boxes=boxes)


def _park() -> ImageAnnotations:
    boxes = [Box(annotation_id=1, category="person", x1=0.2, y1=0.2, x2=0.4, y2=0.9), Box(annotation_id=2, category="bench", x1=0.4, y1=0.6, x2=0.9, y2=0.9)]
    captions = ["An old man reads a newspaper on a park bench.", "A man sitting alone on a wooden bench under the trees."]
    return ImageAnnotations(image_id=8, file_name="000000000008.jpg", width=640, height=480, captions=captions, caption_ids=[3, 4], boxes=boxes)


def _record(task: str, answer_text: str, image: ImageAnnotations | None = None):
    image = image or _kitchen()
    content = parse_answer(task, answer_text, "stop")
    instructions = load_instructions("detail") if TASKS[task].instructions else None
    meta = RecordMeta(
        task=task, teacher=TeacherInfo(kind="mock", model="m", mock=True), prompt_hash="x", image_id=image.image_id,
        caption_ids=image.caption_ids, box_ids=[box.annotation_id for box in image.boxes], usage=Usage(), request_key="k",
    )
    return build_record(image, task, content, meta, instructions, 0)


def test_a_record_about_another_image_is_refused_by_default():
    record = _record("detail", "A man in a dark suit pulls a suitcase and checks his cell phone under a large clock.")
    with pytest.raises(Rejected) as refused:
        ground_record(record, _kitchen(), reject_unsupported=False)
    assert refused.value.reason == "unsupported_object"


def test_one_stray_object_is_flagged_by_default_and_refused_when_asked():
    text = "A white refrigerator stands beside the counter, where a microwave sits next to a sleeping cat."
    record = _record("detail", text)
    ground_record(record, _kitchen(), reject_unsupported=False)
    assert record.meta.grounding is not None and record.meta.grounding.unsupported == ["cat"]
    with pytest.raises(Rejected) as refused:
        ground_record(_record("detail", text), _kitchen(), reject_unsupported=True)
    assert refused.value.reason == "unsupported_object"


def test_a_person_in_the_image_does_not_keep_a_record_of_another_picture():
    text = "A young woman throws a frisbee across the sand while her dog races after it and a kite flies above the waves."
    with pytest.raises(Rejected) as refused:
        ground_record(_record("detail", text, _park()), _park(), reject_unsupported=False)
    assert refused.value.reason == "unsupported_object"
    assert "dog, frisbee, kite" in refused.value.detail and "(none)" in refused.value.detail


def test_a_record_naming_as_many_shown_objects_as_absent_ones_is_only_flagged():
    text = "An elderly man sits on a wooden bench with a newspaper, and a small dog naps beside his feet."
    record = _record("detail", text, _park())
    ground_record(record, _park(), reject_unsupported=False)
    assert record.meta.grounding is not None and record.meta.grounding.unsupported == ["dog"]
