"""Parsing and validation of teacher answers (datagen/quality/parse.py): formats and every reject reason."""

from __future__ import annotations

import pytest

from datagen.quality.parse import Rejected, parse_qa_pairs
from datagen.tasks.registry import parse_answer


def qa(*pairs: tuple[str, str]) -> str:
    return "\n===\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}" for q, a in pairs)


def rejected(task: str, text: str, finish_reason: str | None = "stop") -> str:
    with pytest.raises(Rejected) as error:
        parse_answer(task, text, finish_reason)
    assert error.value.detail
    return error.value.reason


def test_conversation_with_several_pairs() -> None:
    text = qa(("What is on the table?", "A bowl of fruit."), ("What color is the wall?", "It is pale blue."), ("Is it daytime?", "Yes, sunlight comes\nthrough the window."))
    assert parse_answer("conversation", text, "stop") == [
        ("What is on the table?", "A bowl of fruit."),
        ("What color is the wall?", "It is pale blue."),
        ("Is it daytime?", "Yes, sunlight comes\nthrough the window."),
    ]


def test_separator_tolerates_spaces_and_longer_rules_and_surrounding_whitespace() -> None:
    text = "\n\nQuestion:\nWhy?\n  ====  \nAnswer: Because.\n"
    assert parse_qa_pairs(text) == [("Why?", "Because.")]


def test_complex_reasoning_exactly_one_pair() -> None:
    assert parse_answer("complex_reasoning", qa(("Why is he carrying an umbrella?", "Dark clouds suggest rain.")), "stop") == [
        ("Why is he carrying an umbrella?", "Dark clouds suggest rain.")
    ]
    assert rejected("complex_reasoning", qa(("Q1?", "A1."), ("Q2?", "A2."))) == "wrong_turn_count"


def test_detail_is_plain_text() -> None:
    text = "  A red bus waits at a stop.\n\nPeople queue on the pavement.  \n"
    assert parse_answer("detail", text, "stop") == "A red bus waits at a stop.\n\nPeople queue on the pavement."


def test_finish_reason_none_is_accepted() -> None:
    assert parse_answer("detail", "A cat sleeps.", None) == "A cat sleeps."


@pytest.mark.parametrize("task", ["conversation", "detail", "complex_reasoning"])
def test_truncated(task: str) -> None:
    text = qa(("What is it?", "A dog.")) if task != "detail" else "A dog runs."
    assert rejected(task, text, "length") == "truncated"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I am sorry, I cannot describe this image.",
        "Sorry, but I can't do that.",
        "I apologize, but I cannot comply.",
        "I cannot see the image you are referring to.",
        "I can't view images.",
        "As an AI language model, I do not have eyes.",
        "I'm unable to look at pictures.",
    ],
)
def test_refusal(text: str) -> None:
    assert rejected("detail", text) == "refusal"


@pytest.mark.parametrize("text", ["I’m sorry, but I can’t help with that.", "I can’t see images.", "I’m unable to view it."])
def test_refusal_with_typographic_apostrophe(text: str) -> None:
    assert rejected("detail", text) == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "The caption says there is a dog.",
        "According to the captions, two people sit on a bench.",
        "The bounding box of the dog covers the left half.",
        "Judging by the bounding-boxes, the cat is small.",
        "The coordinates show the bus on the left.",
        "The box coordinates put it near the top.",
        "Based on the given description, it is a kitchen.",
        "The annotations mark three people.",
    ],
)
def test_reveals_text_source(text: str) -> None:
    assert rejected("detail", text) == "reveals_text_source"


@pytest.mark.parametrize("text", ["The dog is at [0.12, 0.4, 0.5, 0.9].", "The dog is at [0.12, 0.4"])
def test_box_coordinates(text: str) -> None:
    assert rejected("detail", text) == "box_coordinates"


def test_reveals_text_source_inside_a_conversation_answer() -> None:
    text = qa(("Where is the dog?", "In the park."), ("How big is it?", "Its bounding box is small."))
    assert rejected("conversation", text) == "reveals_text_source"


@pytest.mark.parametrize(
    "text",
    [
        "A pizza box sits open on the table.",
        "Two boxers spar in a ring; one boxer wears red gloves.",
        "Boxes of fruit are stacked by the door.",
        "The sign reads 3.5 miles to town.",
        "A chef in a white apron carries a cardboard box of apples.",
    ],
)
def test_legitimate_text_is_not_rejected(text: str) -> None:
    assert parse_answer("detail", text, "stop") == text


def test_legitimate_question_with_box_word_in_conversation() -> None:
    text = qa(("What is on the table?", "A pizza box."), ("Who is in the ring?", "A boxer."))
    assert parse_answer("conversation", text, "stop") == [("What is on the table?", "A pizza box."), ("Who is in the ring?", "A boxer.")]


@pytest.mark.parametrize("text", ["", "   \n\t  "])
@pytest.mark.parametrize("task", ["conversation", "detail", "complex_reasoning"])
def test_empty(task: str, text: str) -> None:
    assert rejected(task, text) == "empty"


@pytest.mark.parametrize(
    "text",
    [
        "Question:\nWhat is it?",  # missing Answer
        "Question:\nWhat is it?\n===\nQuestion:\nAnd this?\n===\nAnswer:\nA dog.",  # two questions in a row
        "Answer:\nA dog.\n===\nQuestion:\nWhat is it?",  # wrong order
        "Question:\nWhat is it?\n===\nAnswer:\n",  # empty answer
        "Question:\n\n===\nAnswer:\nA dog.",  # empty question
        "The picture shows a dog on a lawn.",  # no blocks at all
        "What is it? A dog.",
    ],
)
@pytest.mark.parametrize("task", ["conversation", "complex_reasoning"])
def test_unparseable_qa(task: str, text: str) -> None:
    assert rejected(task, text) == "unparseable"


@pytest.mark.parametrize("text", [qa(("What is it?", "A dog.")), "answer: A dog runs on the grass."])
def test_question_answer_blocks_in_detail_are_unparseable(text: str) -> None:
    assert rejected("detail", text) == "unparseable"


def test_check_order_truncation_wins_over_content() -> None:
    # A cut answer is reported as truncated even when its text would also fail other checks.
    assert rejected("detail", "I'm sorry, the caption", "length") == "truncated"


def test_refusal_inside_a_later_answer() -> None:
    text = qa(("What food is on the table?", "A hamburger and fries."), ("What brand is the ketchup?", "I'm sorry, but as an AI I cannot see images."))
    with pytest.raises(Rejected) as error:
        parse_answer("conversation", text, "stop")
    assert error.value.reason == "refusal"
    assert "answer 2" in error.value.detail


@pytest.mark.parametrize("task", ["conversation", "complex_reasoning"])
def test_a_whole_reply_that_refuses_is_a_refusal_not_unparseable(task: str) -> None:
    assert rejected(task, "I'm sorry, but I can't see the image you are describing.") == "refusal"


def test_chat_talk_before_the_first_question_is_a_preamble() -> None:
    text = "Sure! Here's a conversation about the image:\n\n" + qa(("What is she doing?", "Reading a book."))
    assert rejected("conversation", text) == "chat_preamble"


def test_checks_run_after_the_turn_count() -> None:
    assert rejected("complex_reasoning", qa(("Q1?", "As described, A1."), ("Q2?", "A2."))) == "wrong_turn_count"


def test_an_image_token_in_a_later_question_is_named() -> None:
    assert rejected("conversation", qa(("What is it?", "A dog."), ("<image>\nWhat color?", "Brown."))) == "image_token_echo"
