"""Record models (datagen/formats/records.py), record building (datagen/run/items.py) and the committed JSON Schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from datagen.source.coco import ImageAnnotations
from datagen.tasks.prompts import load_instructions
from datagen.formats.records import IMAGE_TOKEN, InstructRecord, RecordMeta, TeacherInfo, Usage, place_image_token, record_id
from datagen.formats.schemas import schema_documents
from datagen.run.items import build_record, item_seed

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def turns(*values: str, first: str = "human") -> list[dict]:
    speakers = ["human", "gpt"] if first == "human" else ["gpt", "human"]
    return [{"from": speakers[index % 2], "value": value} for index, value in enumerate(values)]


def record(*values: str, first: str = "human") -> InstructRecord:
    return InstructRecord.model_validate({"id": "000000000001", "image": "000000000001.jpg", "conversations": turns(*values, first=first)})


# -- InstructRecord rules ---------------------------------------------------------------------------


def test_valid_records_both_placements() -> None:
    assert record("<image>\nWhat is this?", "A cat.").conversations[0].value.startswith("<image>\n")
    assert record("What is this?\n<image>", "A cat.", "And the color?", "Gray.").conversations[3].value == "Gray."


def test_alias_round_trip() -> None:
    dumped = record("<image>\nQ?", "A.").model_dump(by_alias=True)
    assert dumped["conversations"][0] == {"from": "human", "value": "<image>\nQ?"}


@pytest.mark.parametrize(
    "values,first",
    [
        (("<image>\nQ?", "A."), "gpt"),  # gpt first
        (("<image>\nQ?",), "human"),  # too short
        (("<image>\nQ?", "A.", "Q2?"), "human"),  # ends on a human turn
        (("<image>\nQ?", ""), "human"),  # empty value
        (("<image>\nQ?", "   \n"), "human"),  # blank value
        (("Q?", "A."), "human"),  # no <image>
        (("Q? <image>", "A."), "human"),  # <image> not at start/end with newline
        (("<image> Q?", "A."), "human"),
        (("<image>\nQ?\n<image>", "A."), "human"),  # twice
        (("<image>\nQ?", "A.", "<image>\nQ2?", "A2."), "human"),  # also in a later turn
        (("<image>\nQ?", "See <image>."), "human"),  # in a gpt turn
    ],
)
def test_invalid_records(values: tuple[str, ...], first: str) -> None:
    with pytest.raises(ValidationError):
        record(*values, first=first)


def test_consecutive_human_turns_rejected() -> None:
    with pytest.raises(ValidationError, match="alternate"):
        InstructRecord.model_validate(
            {"id": "1", "image": "1.jpg", "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "human", "value": "Q2?"}]}
        )


def test_unknown_speaker_rejected() -> None:
    with pytest.raises(ValidationError):
        InstructRecord.model_validate(
            {"id": "1", "image": "1.jpg", "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "assistant", "value": "A."}]}
        )


def test_record_id_is_twelve_digits() -> None:
    assert record_id(33471) == "000000033471"
    assert record_id(0) == "000000000000"


# -- build_record -----------------------------------------------------------------------------------


def image(image_id: int) -> ImageAnnotations:
    return ImageAnnotations(
        image_id=image_id, file_name=f"{image_id:012d}.jpg", width=640, height=480, captions=["A cat."], caption_ids=[1], boxes=[]
    )


def meta(image_id: int, task: str) -> RecordMeta:
    return RecordMeta(
        task=task,
        teacher=TeacherInfo(kind="mock", model="mock", mock=True),
        prompt_hash="0" * 16,
        image_id=image_id,
        caption_ids=[1],
        box_ids=[],
        usage=Usage(),
        request_key="k",
    )


@pytest.fixture(scope="module")
def detail_instructions():
    return load_instructions("detail")


PAIRS = [("What is on the bed?", "A gray cat."), ("What color is the blanket?", "White.")]


def placements(seed: int, task: str, detail_instructions, count: int = 200) -> list[str]:
    content = "A cat sleeps on a bed." if task == "detail" else PAIRS
    out = []
    for image_id in range(1, count + 1):
        first = build_record(image(image_id), task, content, meta(image_id, task), detail_instructions, seed).conversations[0].value
        out.append("start" if first.startswith(IMAGE_TOKEN + "\n") else "end")
    return out


@pytest.mark.parametrize("task", ["conversation", "detail"])
def test_image_token_placed_both_ways_about_half_each(task: str, detail_instructions) -> None:
    sides = placements(0, task, detail_instructions)
    assert 60 <= sides.count("start") <= 140, sides.count("start")


def test_placement_reproducible_and_seed_dependent(detail_instructions) -> None:
    assert placements(3, "conversation", detail_instructions) == placements(3, "conversation", detail_instructions)
    assert placements(3, "conversation", detail_instructions) != placements(4, "conversation", detail_instructions)


def test_build_record_conversation_shape(detail_instructions) -> None:
    built = build_record(image(42), "conversation", PAIRS, meta(42, "conversation"), detail_instructions, 0)
    assert built.id == "000000000042" and built.image == "000000000042.jpg"
    values = [turn.value for turn in built.conversations]
    assert [turn.speaker for turn in built.conversations] == ["human", "gpt", "human", "gpt"]
    assert values[0] in ("<image>\nWhat is on the bed?", "What is on the bed?\n<image>")
    assert values[1:] == ["A gray cat.", "What color is the blanket?", "White."]
    assert built.meta.image_id == 42


def test_build_record_detail_draws_question_from_list(detail_instructions) -> None:
    questions = set()
    for image_id in range(1, 60):
        built = build_record(image(image_id), "detail", "A cat.", meta(image_id, "detail"), detail_instructions, 0)
        assert len(built.conversations) == 2 and built.conversations[1].value == "A cat."
        question = built.conversations[0].value.replace("<image>\n", "").replace("\n<image>", "")
        assert question in detail_instructions.lines
        questions.add(question)
    assert len(questions) >= 5  # drawn, not always the first line


def test_build_record_depends_on_image_not_call_order(detail_instructions) -> None:
    forward = {i: build_record(image(i), "detail", "x", meta(i, "detail"), detail_instructions, 1).conversations[0].value for i in range(1, 30)}
    backward = {i: build_record(image(i), "detail", "x", meta(i, "detail"), detail_instructions, 1).conversations[0].value for i in reversed(range(1, 30))}
    assert forward == backward


def test_item_seed_is_independent_of_order_and_distinct_per_purpose() -> None:
    keys = [(image_id, task) for image_id in (1, 2, 3) for task in ("conversation", "detail")]
    forward = [item_seed(7, image_id, task, "teacher") for image_id, task in keys]
    backward = [item_seed(7, image_id, task, "teacher") for image_id, task in reversed(keys)][::-1]
    assert forward == backward
    assert len(set(forward)) == len(forward)
    assert item_seed(7, 1, "detail", "teacher") != item_seed(7, 1, "detail", "record")
    assert item_seed(7, 1, "detail", "teacher") != item_seed(8, 1, "detail", "teacher")
    assert 0 <= item_seed(2**40, 123456789, "complex_reasoning", "teacher") < 2**63


def test_place_image_token_forms() -> None:
    import random

    seen = {place_image_token("Q?", random.Random(seed)) for seed in range(20)}
    assert seen == {"<image>\nQ?", "Q?\n<image>"}


# -- schemas ------------------------------------------------------------------------------------------


def test_committed_schemas_match_the_models() -> None:
    documents = schema_documents()
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMAS.glob("*.schema.json")}
    stale = sorted(name for name in documents if committed.get(name) != documents[name])
    extra = sorted(set(committed) - set(documents))
    assert not stale and not extra, f"schemas/ is out of date with datagen/formats/records.py ({stale + extra}); run `make schemas`"


def test_schema_documents_describe_llava_fields() -> None:
    import json

    schema = json.loads(schema_documents()["instruct_record.schema.json"])
    assert set(schema["required"]) >= {"id", "image", "conversations"}
    assert "from" in json.dumps(schema)
