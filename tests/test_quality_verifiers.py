"""The exact answer checks of the grounded tasks, on hand-made right and wrong answers."""

from __future__ import annotations

import pytest

from datagen.quality.parse import Rejected
from datagen.quality.verifiers import (
    iou,
    stated_boxes,
    stated_count,
    stated_presence,
    stated_relation,
    verify_box,
    verify_count,
    verify_named,
    verify_presence,
    verify_relation,
)


def reason(check, *args) -> str | None:
    try:
        check(*args)
    except Rejected as rejection:
        return rejection.reason
    return None


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        ("There are three dogs in the picture.", 3),
        ("I can see 4 dogs on the grass.", 4),
        ("Three.", 3),
        ("2", 2),
        ("There is a single dog lying on the sofa.", 1),
        ("There is one dog.", 1),
        ("There are two dogs and a puppy.", 3),  # a puppy is a dog: three in all
        ("There are three small brown dogs.", 3),  # adjectives between the number and the noun
        ("There are two dogs; one of the dogs is asleep.", 2),  # "one of the dogs" counts nothing
        ("Two dogs play. Two dogs is a lot for a small flat.", 2),  # only the first sentence that counts
        ("Twelve dogs are lined up.", 12),
        ("There is a pair of dogs by the door.", 2),
        ("There are two dogs, a black one and a white puppy.", 2),  # after the comma: who the counted are
        ("There are 2 dogs on the bench, both asleep.", 2),
    ],
)
def test_stated_count(answer: str, count: int) -> None:
    assert stated_count(answer, "dog") == count


def test_count_in_words_and_digits_right_and_wrong() -> None:
    assert reason(verify_count, "There are three dogs.", "dog", 3) is None
    assert reason(verify_count, "There are 3 dogs.", "dog", 3) is None
    assert reason(verify_count, "There are two dogs and a puppy.", "dog", 3) is None
    assert reason(verify_count, "There are two dogs and a puppy.", "dog", 2) == "wrong_count"
    assert reason(verify_count, "There are 4 dogs.", "dog", 3) == "wrong_count"
    assert reason(verify_count, "Several dogs are playing.", "dog", 3) == "unclear_answer"


def test_count_ignores_other_categories() -> None:
    # Two cats and one dog: the dog count is one, whatever number stands before the cats.
    assert stated_count("There are two cats and one dog.", "dog") == 1
    assert stated_count("There are two cats and one dog.", "cat") == 2


@pytest.mark.parametrize(
    ("answer", "relation"),
    [
        ("The dog is to the left of the cat.", "left"),
        ("From the viewer's side, the dog is on the left side of the cat.", "left"),
        ("The cat is to the right of the dog.", "left"),  # the same fact, its objects swapped
        ("From where the photo was taken, the cat sits on the right of the dog.", "left"),
        ("The cat is to the dog's right.", "left"),  # the reference object named by a possessive
        ("It is on the left.", "left"),  # a short answer about the asked-about object
        ("Left of the cat.", "left"),
        ("The dog is above the cat.", "above"),
        ("The cat lies beneath the dog.", "above"),
        ("The dog is below the cat, on the floor.", "below"),
        ("The dog is to the right of the cat.", "right"),
    ],
)
def test_stated_relation_from_the_viewer(answer: str, relation: str) -> None:
    assert stated_relation(answer, "dog", "cat") == relation


@pytest.mark.parametrize(
    "answer",
    [
        "From the dog's perspective, the cat is on its left.",  # the object's own side, not the viewer's
        "The dog is not to the left of the cat.",  # a negated relation says nothing exact
        "They are next to each other.",
    ],
)
def test_relations_the_check_does_not_trust(answer: str) -> None:
    assert stated_relation(answer, "dog", "cat") is None
    assert reason(verify_relation, answer, "dog", "cat", "left") == "unclear_answer"


@pytest.mark.parametrize(
    "answer",
    [
        "On the left there is a dog, and the cat is on the right.",  # a bare side names its subject after it
        "The cat is on the right, and the dog is on the left.",
        "It's on the cat's left.",
        "The dog is lying beneath a table, to the left of the cat.",  # "beneath a table" answers no left-or-right question
        "Looking at the photo, the dog sits towards the left of the cat.",
    ],
)
def test_left_right_answers_real_teachers_write(answer: str) -> None:
    assert reason(verify_relation, answer, "dog", "cat", "left") is None


def test_relation_right_and_wrong() -> None:
    assert reason(verify_relation, "The cat is to the right of the dog.", "dog", "cat", "left") is None
    assert reason(verify_relation, "The cat is to the left of the dog.", "dog", "cat", "left") == "wrong_relation"
    assert reason(verify_relation, "From the viewer's point of view, the dog is on the right of the cat.", "dog", "cat", "left") == "wrong_relation"
    # Seen from the viewer, the relation holds whatever the subject is: stated the other way round it is still wrong.
    assert reason(verify_relation, "The cat is above the dog.", "dog", "cat", "above") == "wrong_relation"


@pytest.mark.parametrize(
    ("answer", "present"),
    [
        ("Yes, there is a dog.", True),
        ("Yes.", True),
        ("A brown dog is lying on the rug.", True),
        ("No, there is no dog in the picture.", False),
        ("No.", False),
        ("There isn't one; the room is empty.", False),
        ("I don't see any dog here.", False),
        ("Yes, there is a dog, but no cat.", True),  # the opening word settles it
        ("No, only a cat.", False),
    ],
)
def test_stated_presence(answer: str, present: bool) -> None:
    assert stated_presence(answer, "dog") is present


def test_presence_right_wrong_and_unclear() -> None:
    assert reason(verify_presence, "No, there is no giraffe.", "giraffe", False) is None
    assert reason(verify_presence, "Yes, a giraffe stands by the fence.", "giraffe", False) == "wrong_presence"
    assert reason(verify_presence, "No, there is no dog.", "dog", True) == "wrong_presence"
    assert reason(verify_presence, "It is hard to say.", "dog", True) == "unclear_answer"


def test_boxes_normalised_and_in_pixels() -> None:
    assert stated_boxes("It is at [0.1, 0.2, 0.5, 0.6].", 640, 480) == [(0.1, 0.2, 0.5, 0.6)]
    # Pixels (any number over 1) are divided by the image's width and height.
    assert stated_boxes("It spans (64, 96, 320, 288).", 640, 480) == [(0.1, 0.2, 0.5, 0.6)]
    assert stated_boxes("No box here, only 0.5 of it.", 640, 480) == []


def test_iou_hand_computed() -> None:
    assert iou((0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.5, 0.5)) == 1.0
    # Overlap 0.25 x 0.5 = 0.125; union 0.25 + 0.25 - 0.125 = 0.375.
    assert iou((0.0, 0.0, 0.5, 0.5), (0.25, 0.0, 0.75, 0.5)) == pytest.approx(1 / 3)
    assert iou((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.9, 0.9)) == 0.0


def test_box_matches_by_iou_half() -> None:
    truth = (0.1, 0.2, 0.5, 0.6)
    assert reason(verify_box, "The dog is at [0.12, 0.2, 0.5, 0.62].", truth, 640, 480, "dog") is None
    assert reason(verify_box, "The dog is at [64, 96, 320, 288].", truth, 640, 480, "dog") is None
    # Shifted by half its width: overlap 0.2 x 0.4 = 0.08, union 0.32 - 0.08 = 0.24, IoU 1/3.
    assert reason(verify_box, "The dog is at [0.3, 0.2, 0.7, 0.6].", truth, 640, 480, "dog") == "wrong_box"
    assert reason(verify_box, "The dog is at [192, 96, 448, 288].", truth, 640, 480, "dog") == "wrong_box"
    assert reason(verify_box, "The dog is on the left.", truth, 640, 480, "dog") == "unclear_answer"


def test_region_named() -> None:
    assert reason(verify_named, "That region shows a puppy chewing a toy.", "dog") is None
    assert reason(verify_named, "The region holds a cat.", "dog") == "wrong_object"
    assert reason(verify_named, "There is no dog there, only a cat.", "dog") == "wrong_object"
