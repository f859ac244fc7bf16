"""Grounding: object mentions in answers against the image's boxes and captions; CHAIR in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.source.coco import Box, ImageAnnotations
from datagen.quality.grounding import ground, mentions
from datagen.data.merge import merge
from datagen.run.options import GenerateOptions
from datagen.run.pipeline import GenerateJob, execute
from datagen.formats.records import Grounding, Usage
from datagen.formats.manifest import QualityStats
from datagen.teachers.teacher import ChatReply, ChatRequest, MockTeacher
from tests.conftest import CAPTIONS, INSTANCES


def image(categories: list[str], captions: list[str] | None = None) -> ImageAnnotations:
    boxes = [Box(annotation_id=index, category=name, x1=0.1, y1=0.1, x2=0.5, y2=0.5) for index, name in enumerate(categories)]
    captions = captions or ["A photo."]
    return ImageAnnotations(
        image_id=1, file_name="1.jpg", width=640, height=480, captions=captions, caption_ids=list(range(len(captions))), boxes=boxes
    )


def claimed(text: str) -> list[str]:
    return [mention.categories[0] for mention in mentions(text) if mention.claimed]


# -- words: synonyms, plurals, multi-word names ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man and two women chat while a boy and some girls play.", ["person"] * 4),
        ("The skier and a snowboarder pass the kids.", ["person"] * 3),
        ("A couch, or sofa, faces the television.", ["couch", "couch", "tv"]),
        ("A smartphone and a cellphone lie beside his phone.", ["cell phone"] * 3),
        ("A motorbike is parked by the motorcycles.", ["motorcycle", "motorcycle"]),
        ("A jet, two planes and an airplane on the tarmac.", ["airplane"] * 3),
        ("Doughnuts and a donut in a box.", ["donut", "donut"]),
        ("Several potted plants and a houseplant sit on the shelf.", ["potted plant", "potted plant"]),
        ("Mice, knives, sheep, geese and buses.", ["mouse", "knife", "sheep", "bird", "bus"]),
        ("A puppy chases the kittens past a pony.", ["dog", "cat", "horse"]),
    ],
)
def test_synonyms_and_plurals(text: str, expected: list[str]) -> None:
    assert claimed(text) == expected


def test_multi_word_names_win_over_their_words() -> None:
    assert claimed("The boy eats a hot dog at the dining table while checking his cell phone.") == ["person", "hot dog", "dining table", "cell phone"]
    assert claimed("A hot-dog, a stop sign and a fire hydrant.") == ["hot dog", "stop sign", "fire hydrant"]
    assert claimed("A teddy bear sits next to a wine glass.") == ["teddy bear", "wine glass"]
    # the dog of "hot dog" is no dog, and "table" alone is a dining table
    assert ground(["A hot dog lies on a table."], image(["hot dog", "dining table"])).unsupported == []


def test_phrases_that_name_no_object() -> None:
    assert claimed("A bird's-eye view of the bus stop and the train station, near a remote area.") == []
    assert claimed("The remote is on the table.") == ["remote", "dining table"]
    assert claimed("The sun sinks behind the hills; a DVD player sits under the TV.") == ["tv"]
    assert claimed("The batter is at bat; the bat is wooden.") == ["person", "baseball bat"]


def test_person_words_as_modifiers_are_not_people() -> None:
    assert claimed("A baby elephant walks between adult elephants; a passenger jet flies over.") == ["elephant", "elephant", "airplane"]
    assert claimed("A mother duck swims past; the mother on the bank waves.") == ["bird", "person"]


# -- negation and generic people ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "There are no dogs in the park.",
        "There are no people or cars on the street.",
        "Without any cars around, the road looks quiet.",
        "I don't see any cats, dogs or birds here.",
        "The beach is empty: not a single person is visible.",
        "No other vehicles such as trucks are parked nearby.",
    ],
)
def test_negated_objects_are_not_claims(text: str) -> None:
    assert claimed(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "The colourful display is meant to attract buyers.",
        "The umbrellas protect people from the sun.",
        "Passengers may need to hurry to catch it.",
        "The benches are there for visitors to rest on.",
        "If a child were to run into the street, drivers would have to stop quickly.",
        "Such a spot could be popular with tourists.",
    ],
)
def test_generic_people_in_hypotheticals_are_not_claims(text: str) -> None:
    assert "person" not in claimed(text)


@pytest.mark.parametrize(
    "text",
    [
        "People are sitting at the tables.",
        "The man might be waiting for the bus.",
        "Two women could be friends catching up over coffee.",
        "A group of passengers waits on the platform.",
    ],
)
def test_particular_people_are_claims(text: str) -> None:
    assert "person" in claimed(text)


def test_negation_stops_at_the_clause() -> None:
    assert claimed("There is no traffic, just a bus and a car.") == ["bus", "car"]
    assert claimed("There are no cars, but a dog sleeps on the road.") == ["dog"]
    assert claimed("It is not clear whether the man owns the dog.") == ["person", "dog"]
    assert claimed("The dog is not chasing the cat, and neither the man nor his son is watching.") == ["dog", "cat", "person", "person"]


# -- support: boxes or captions ----------------------------------------------------------------------


def test_supported_by_boxes_or_captions() -> None:
    beach = image([], captions=["A woman walks her dog along the beach."])  # no boxes at all
    grounding = ground(["The woman throws a stick for her dog while a horse watches."], beach)
    assert grounding == Grounding(mentioned=["dog", "horse", "person"], unsupported=["horse"])
    assert ground(["Two zebras graze."], image(["zebra"])).unsupported == []


def test_negated_caption_supports_nothing() -> None:
    assert ground(["A dog naps."], image([], captions=["An empty lawn with no dogs."])).unsupported == ["dog"]


def test_ambiguous_words_take_whichever_category_is_there() -> None:
    assert ground(["The man rides his bike."], image(["person", "motorcycle"])) == Grounding(mentioned=["motorcycle", "person"], unsupported=[])
    assert ground(["The man rides his bike."], image(["person"])).unsupported == ["bicycle"]


def test_only_answers_are_grounded_not_questions(tmp_path: Path) -> None:
    out = run_scripted(tmp_path / "out", "A dog runs across the grass.", tasks=["complex_reasoning"])
    record = json.loads((out / "complex_reasoning.jsonl").read_text().splitlines()[0])
    assert "giraffe" in record["conversations"][0]["value"]  # the question asks about one; the answer does not claim it
    assert "giraffe" not in record["meta"]["grounding"]["mentioned"]


# -- the pipeline: meta.grounding, the manifest's quality block, resume, merge, --reject-unsupported --------

DOG_IMAGES = {100013, 100117}  # the sample images with a dog: a box in 100013, only captions in 100117


class ScriptedTeacher(MockTeacher):
    """Every answer is the same text, so which records are flagged follows from the annotations alone."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    async def complete(self, request: ChatRequest) -> ChatReply:
        self.stats["requests"] += 1
        asks_questions = any("Question:" in message["content"] for message in request.messages if message["role"] == "assistant")
        text = self.answer if not asks_questions else (
            f"Question:\nIs there a giraffe here?\n===\nAnswer:\n{self.answer}"
        )
        return ChatReply(text=text, finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=5))


def run_scripted(out: Path, answer: str, tasks: list[str] | None = None, **settings) -> Path:
    options = GenerateOptions(
        captions=CAPTIONS, instances=INSTANCES, out=out, tasks=tasks or ["detail"], teacher="mock", use_cache=False, progress=False, **settings
    )
    execute(GenerateJob(options, ScriptedTeacher(answer)))
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_records_carry_grounding_and_manifest_counts_chair(tmp_path: Path) -> None:
    out = run_scripted(tmp_path / "out", "A dog runs across the grass.")
    records = lines(out / "detail.jsonl")
    assert len(records) == 22
    for record in records:
        flagged = record["meta"]["image_id"] not in DOG_IMAGES
        assert record["meta"]["grounding"] == {"mentioned": ["dog"], "unsupported": ["dog"] if flagged else []}
    quality = manifest(out)["quality"]["detail"]
    assert quality == {"records": 22, "records_with_unsupported": 20, "mentions": 22, "unsupported_mentions": 20,
                       "chair_i": round(20 / 22, 4), "chair_s": round(20 / 22, 4)}
    assert manifest(out)["counts"]["detail"]["rejected"] == {}  # flagged, not rejected, by default


def test_quality_block_counts_records_of_earlier_runs(tmp_path: Path) -> None:
    out = run_scripted(tmp_path / "out", "A dog runs across the grass.", limit=5)
    assert manifest(out)["quality"]["detail"]["records"] == 5
    run_scripted(out, "A dog runs across the grass.")
    assert manifest(out)["quality"]["detail"]["records"] == 22
    assert manifest(out)["quality"]["detail"]["records_with_unsupported"] == 20


def test_records_written_without_grounding_are_grounded_on_resume(tmp_path: Path) -> None:
    out = run_scripted(tmp_path / "out", "A dog runs across the grass.")
    expected = manifest(out)["quality"]
    path = out / "detail.jsonl"
    old = lines(path)
    for record in old:
        del record["meta"]["grounding"]
    path.write_text("".join(json.dumps(record) + "\n" for record in old))
    run_scripted(out, "A dog runs across the grass.")
    assert manifest(out)["quality"] == expected


def test_merge_sums_the_shards_quality(tmp_path: Path) -> None:
    full = run_scripted(tmp_path / "full", "A dog runs across the grass.")
    shards = [run_scripted(tmp_path / f"s{index}", "A dog runs across the grass.", shard=(index, 2)) for index in range(2)]
    assert manifest(shards[0])["quality"] != manifest(full)["quality"]
    merged = merge(shards, tmp_path / "merged", merge_cache=False)
    assert merged.quality["detail"] == QualityStats.model_validate(manifest(full)["quality"]["detail"])
    assert manifest(tmp_path / "merged")["quality"] == manifest(full)["quality"]


def test_reject_unsupported_turns_flags_into_rejects(tmp_path: Path) -> None:
    out = run_scripted(tmp_path / "out", "A dog runs across the grass.", reject_unsupported=True)
    written = lines(out / "detail.jsonl")
    rejects = lines(out / "rejects.jsonl")
    assert {record["meta"]["image_id"] for record in written} == DOG_IMAGES
    assert len(rejects) == 20 and {reject["reason"] for reject in rejects} == {"unsupported_object"}
    assert all(reject["meta"]["grounding"]["unsupported"] == ["dog"] and "dog" in reject["detail"] for reject in rejects)
    data = manifest(out)
    assert data["counts"]["detail"]["rejected"] == {"unsupported_object": 20}
    assert data["quality"]["detail"]["records"] == 2 and data["quality"]["detail"]["chair_s"] == 0.0
    assert data["settings"]["fingerprint_parts"]["reject_unsupported"] is True


def test_reject_unsupported_is_part_of_the_fingerprint(generate_mock, tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate_mock(out, "--tasks", "conversation", "--limit", "2", "--reject-unsupported")
    result = generate_mock(out, "--tasks", "conversation", "--limit", "2", expect=2)
    assert "reject_unsupported" in result.output


# -- the hand-written corpus (bench/grounding_bench.py reports the full figures) ---------------------------

CASES = Path(__file__).parent / "data" / "grounding_cases.jsonl"


def test_hand_written_answers_right_and_swapped_image() -> None:
    """Right image: flags only where the labels say an object is absent, but for at most one answer.
    Each answer against the next sample image: nearly every answer naming an object that image lacks is caught."""
    from datagen.source.coco import CocoSource

    source = CocoSource(CAPTIONS, INSTANCES)
    instances = json.loads(INSTANCES.read_text())
    names = {category["id"]: category["name"] for category in instances["categories"]}
    present: dict[int, set[str]] = {image_id: set() for image_id in source.image_ids}
    for annotation in instances["annotations"]:
        present[annotation["image_id"]].add(names[annotation["category_id"]])
    present[100117] |= {"person", "dog"}  # named by its captions only
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]

    def flagged(case: dict, image_id: int) -> set[str]:
        return set(ground([case["answer"]], source.image(image_id)).unsupported)

    wrong_flags = sum(1 for case in cases if not flagged(case, case["image_id"]) <= set(case["objects"]) - present[case["image_id"]])
    assert wrong_flags <= 1
    ids = source.image_ids
    swapped = [(case, ids[(ids.index(case["image_id"]) + 1) % len(ids)]) for case in cases]
    lacking = [(case, other) for case, other in swapped if set(case["objects"]) - present[other]]
    caught = sum(bool(flagged(case, other)) for case, other in lacking)
    assert len(lacking) >= 60 and caught >= 0.9 * len(lacking)
