"""Answer checks (datagen/quality/checks.py): every rule fires on realistic leaks and stays quiet on picture content."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest

from datagen.quality.checks import RULE_NAMES, Finding, check_lead, check_pairs, check_text
from datagen.quality.parse import Rejected
from datagen.tasks.registry import parse_answer
from datagen.formats.records import RejectReason

CORPUS = Path(__file__).parent / "data" / "answer_corpus.jsonl"


def rules_on(text: str, role: str = "answer", form: str = "qa_pairs") -> list[str]:
    return [finding.rule for finding in check_text(text, role, 0, form)]  # type: ignore[arg-type]


# (rule, text that must make it fire)
POSITIVE = [
    ("control_string", "The bus is red.</s>"),
    ("control_string", "<s>A dog runs on the beach."),
    ("control_string", "A cake with candles.<|im_end|>"),
    ("control_string", "It is a zebra.<|eot_id|>"),
    ("control_string", "[INST] What else is there? [/INST]"),
    ("control_string", "He holds a bat.\nUSER: What color is it?\nASSISTANT: Silver."),
    ("control_string", "She paints.\n### Human: Which color?"),
    ("control_string", "A bear in a river.<end_of_turn>"),
    ("image_token_echo", "<image>\nA girl holds a balloon."),
    ("image_token_echo", "The picture <Image> shows a cabin."),
    ("image_token_echo", "A cat.<img>"),
    ("refusal", "I'm sorry, but I can't help with that."),
    ("refusal", "I’m sorry, I cannot describe this picture."),
    ("refusal", "Unfortunately, I am unable to view the image, so I can't say."),
    ("refusal", "I do not have access to the picture, so I can't read the titles."),
    ("refusal", "It looks like a golden retriever. I cannot see the image, though."),
    ("refusal", "I can't view or analyze images."),
    ("refusal", "Regrettably, I have no way of viewing the photo."),
    ("refusal", "There is no image attached to your message."),
    ("refusal", "Please upload the image so I can describe it."),
    ("refusal", "This is beyond my capabilities."),
    ("refusal", "I cannot tell since the image was not provided, only text."),
    ("refusal", "As an AI language model, I do not have eyes."),
    ("ai_disclaimer", "As an AI language model, I can only guess, but she looks happy."),
    ("ai_disclaimer", "As a text-based model, my best guess is autumn."),
    ("ai_disclaimer", "I'm just an AI, so judging art is hard, but it looks cheerful."),
    ("ai_disclaimer", "Being an AI, I have no opinions, but the dish looks fresh."),
    ("ai_disclaimer", "Based on my training data, ramen is a Japanese noodle soup."),
    ("chat_preamble", "Sure! Here's a detailed description:\n\nThe street is snowy."),
    ("chat_preamble", "Certainly! Here is a detailed answer: he walks the dog."),
    ("chat_preamble", "Here's what I see in the image: a woman and a dog."),
    ("chat_preamble", "I'd be happy to help with that. The image shows a dog."),
    ("chat_preamble", "Description: The picture shows a living room."),
    ("chat_preamble", "Let me describe the image for you. A woman reads."),
    ("chat_preamble", "## Detailed Description\n\nThe image shows a dog on a mat."),
    ("chat_closing", "The sun is shining. Let me know if you'd like more details!"),
    ("chat_closing", "He plays a saxophone. I hope this helps!"),
    ("chat_closing", "A glass of cola. Feel free to ask if you have other questions."),
    ("chat_closing", "A bowl of fruit. Would you like me to describe anything else?"),
    ("chat_closing", "A train on a bridge. If you have any other questions about the picture, just ask."),
    ("reveals_text_source", "As described, the bench is near the pond."),
    ("reveals_text_source", "Based on the provided information, they are at home."),
    ("reveals_text_source", "From the description, a girl is flying the kite."),
    ("reveals_text_source", "The objects listed include a laptop and a mouse."),
    ("reveals_text_source", "It was mentioned that a dog sits by the car."),
    ("reveals_text_source", "All five sentences agree that he rides the wave well."),
    ("reveals_text_source", "According to the annotations, there are four cars."),
    ("reveals_text_source", "The captions mention a jogger in the background."),
    ("reveals_text_source", "Its bounding box covers a quarter of the image."),
    ("reveals_text_source", "The flavor is not mentioned, but it looks pink."),
    ("reveals_text_source", "Yes, one of the captions says they wear coats."),
    ("reveals_text_source", "This description captures the lively atmosphere."),
    ("reveals_text_source", "The box coordinates place the cat low in the frame."),
    ("reveals_text_source", "In the image, they are described as antique."),
    ("reveals_text_source", "From what I've been told, the man is a chef."),
    ("reveals_text_source", "The text I received says there are two dogs."),
    ("reveals_text_source", "The image, as I understand it from your words, shows a lake."),
    ("reveals_text_source", "Based on what's written, the dog is brown."),
    ("reveals_text_source", "The object categories include person and car."),
    ("reveals_text_source", "He wears a blue jacket, as the second sentence says."),
    ("reveals_text_source", "The annotations mark three people."),
    ("reveals_text_source", "As described by the captions, a dog runs."),
    ("reveals_text_source", "The information provided by the description says there is a cat."),
    ("reveals_text_source", "It is described as a busy street."),
    ("reveals_text_source", "The image details do not include a car."),
    ("reveals_text_source", "Counting the person entries, there are five people."),
    ("reveals_text_source", "The text indicates that they just won the game."),
    ("reveals_text_source", "Yes, there is another dish mentioned, a bowl of coleslaw."),
    ("reveals_text_source", "The umbrella mentioned in the context suggests rain."),
    ("reveals_text_source", "There is no bicycle in the data, only a bench."),
    ("reveals_text_source", "The dog is brown, as described by the user."),
    ("box_coordinates", "The dog is at about x=0.12."),
    ("box_coordinates", "The leash runs through (0.12, 0.40, 0.50, 0.90)."),
    ("box_coordinates", "The bus occupies box 0.42-0.88 horizontally."),
    ("box_coordinates", "The vase sits at [0.1, 0.2 in the upper left."),
    ("box_coordinates", "The light hangs near the top, centered around 0.55 across the frame."),
    ("box_coordinates", "It spans from 0.25 to 0.75 across the image."),
    ("box_coordinates", "The kite is high, near y = 0.08."),
    ("box_coordinates", "The cyclist occupies the region from x 0.2 to x 0.6."),
    ("box_coordinates", "The bus takes up about 0.3 of the image width."),
    ("box_coordinates", "The dog, whose position is around 0.8/0.7 in the frame, waits."),
    ("box_coordinates", "The table spans from about 0.2 to 0.9 in width."),
    ("incomplete_sentence", "In the background there are trees, a pond and a few people sitting on the"),
    ("incomplete_sentence", "The chef prepares a salad with lettuce, tomatoes, cucumbers,"),
    ("incomplete_sentence", "The hiker would need a few essentials:"),
]

# (rule, legitimate text it must stay quiet on)
NEGATIVE = [
    ("control_string", "The user of the laptop types quickly; the assistant at the desk answers the phone."),
    ("control_string", "The sign reads: OPEN 9-5."),
    ("image_token_echo", "The image shows a cat on a laptop."),
    ("refusal", 'The sign on the door says "Sorry, we\'re closed" in red letters.'),
    ("refusal", "One sticker says 'I'm sorry, Dave' in red letters."),
    ("refusal", "His face is turned away, so I can't see his expression clearly."),
    ("refusal", "It is not possible to tell from the image whether the coffee is hot."),
    ("refusal", "You can't help but smile at the puppy."),
    ("refusal", "Sorry to say, the bakery appears to be closed."),
    ("ai_disclaimer", "She works as a shop assistant in the bakery."),
    ("ai_disclaimer", "A robot toy labelled AI-5 sits on the shelf."),
    ("chat_preamble", "The image shows a harbor full of fishing boats."),
    ("chat_preamble", "Sure enough, the cat is hiding under the bed."),
    ("chat_closing", "A poster says \"Let me know if you see this cat\" above a phone number."),
    ("reveals_text_source", "A poster advertises a caption contest with a cartoon of a dog."),
    ("reveals_text_source", "Her scarf and hat coordinate nicely with her coat."),
    ("reveals_text_source", "The chalkboard shows a list of specials for the day."),
    ("reveals_text_source", "The description on the plaque gives the rider's name."),
    ("reveals_text_source", "The margins are full of pencil annotations."),
    ("reveals_text_source", "There are handwritten annotations next to several arrows on the diagram."),
    ("reveals_text_source", "The prices are listed on the menu board above the counter."),
    ("reveals_text_source", "As mentioned earlier, two of the cows are near the fence."),
    ("reveals_text_source", "Based on the context, they appear to be a family."),
    ("reveals_text_source", "The monitors display stock market data in several charts."),
    ("reveals_text_source", "A wooden information board stands next to the trail."),
    ("reveals_text_source", "Most of the notes are too small to read."),
    ("reveals_text_source", "The GPS screen shows the coordinates for the next turn."),
    ("reveals_text_source", "Based on the information on the sign, the museum opens at 10:00."),
    ("reveals_text_source", "As noted on the sign, the beach closes at sunset."),
    ("reveals_text_source", "The children are given balloons by a clown."),
    ("reveals_text_source", "A pizza box sits open next to a boxer's gloves."),
    ("reveals_text_source", "The atmosphere can be described as cozy and warm."),
    ("reveals_text_source", "As indicated by the arrows painted on the road, the left lane turns."),
    ("reveals_text_source", "The carving is as detailed as a photograph."),
    ("reveals_text_source", "What is written there?"),
    ("reveals_text_source", "The sign provides the following information: opening hours and prices."),
    ("reveals_text_source", "A bottle with attached labels stands on the shelf."),
    ("reveals_text_source", "The hotel provided items such as towels and soap."),
    ("reveals_text_source", "The information provided by the plaque explains the history of the bridge."),
    ("reveals_text_source", "The people given blankets are sitting by the fire."),
    ("reveals_text_source", "In the provided image, two dogs play."),
    ("reveals_text_source", "As previously mentioned, the man wears a hat."),
    ("reveals_text_source", "The image details are crisp and the colors vivid."),
    ("reveals_text_source", "The text on the sign indicates the exit."),
    ("reveals_text_source", "The text says STOP in white letters."),
    ("reveals_text_source", "The monitor shows a scatter plot, and two dots far from the line are clear outliers in the data."),
    ("reveals_text_source", "The left lane turns, as indicated in the image by the painted arrow."),
    ("reveals_text_source", "The street name mentioned on the blue sign is Harbor Lane."),
    ("reveals_text_source", "The man you mentioned is holding the leash."),
    ("reveals_text_source", "The exit is to the right, as indicated by glowing green arrows."),
    ("box_coordinates", "They walked a 0.25-mile loop around the pond."),
    ("box_coordinates", "The grilled cheese is priced at $6.50, the soup costs $4.25."),
    ("box_coordinates", "The clock on the tower shows about 10:30."),
    ("box_coordinates", "The scoreboard shows the home team leading 3-2."),
    ("box_coordinates", "The number 42 bus stops at 221 Baker Street."),
    ("box_coordinates", "According to the label, the bottle holds 0.75 liters."),
    ("box_coordinates", "A sticky note on the laptop has 0.0025 scrawled across it."),
    ("box_coordinates", "The chart on the poster gives the correlation as 0.873."),
    ("box_coordinates", "The syringe is marked in steps of 0.05 milliliters."),
    ("box_coordinates", "A handwritten price tag shows 0.99 on the apples."),
    ("box_coordinates", "The screen shows a batting average of .312."),
    ("box_coordinates", "The board at the finish line shows 10.52 seconds."),
    ("box_coordinates", "The waterfall is 2.5 miles away."),
    ("incomplete_sentence", "Yes"),
    ("incomplete_sentence", "The cutting board holds:\n- a red pepper\n- two carrots"),
    ("incomplete_sentence", 'The green street sign says "Elm St"'),
    ("incomplete_sentence", "A cat sleeps on the sofa (a gray one)"),
]


def test_every_rule_name_is_a_reject_reason() -> None:
    assert set(RULE_NAMES) <= set(get_args(RejectReason))


def test_every_rule_has_positive_and_negative_examples() -> None:
    assert {rule for rule, _ in POSITIVE} == set(RULE_NAMES)
    assert {rule for rule, _ in NEGATIVE} == set(RULE_NAMES)


@pytest.mark.parametrize(("rule", "text"), POSITIVE)
def test_rule_fires(rule: str, text: str) -> None:
    assert rules_on(text)[:1] == [rule], rules_on(text)


@pytest.mark.parametrize(("rule", "text"), NEGATIVE)
def test_rule_stays_quiet_on_picture_content(rule: str, text: str) -> None:
    assert rule not in rules_on(text)


def test_a_description_may_not_open_with_chat_but_a_conversation_answer_may() -> None:
    text = "Certainly! The image shows a harbor full of fishing boats."
    assert rules_on(text, form="prose") == ["chat_preamble"]
    assert rules_on(text, form="qa_pairs") == []


def test_questions_are_checked_for_leaks_but_not_for_endings_or_refusals() -> None:
    assert rules_on("According to the captions, what is the man doing?", role="question") == ["reveals_text_source"]
    assert rules_on("<image>\nWhat is on the table", role="question") == ["image_token_echo"]
    assert rules_on("Is the man sorry he is late", role="question") == []


def test_check_pairs_reports_rule_turn_role_and_excerpt() -> None:
    pairs = [
        ("What is on the table?", "A bowl of oranges sits on the table."),
        ("What brand is the ketchup?", "I'm sorry, but as an AI I cannot see images, so I can't tell."),
    ]
    findings = check_pairs("conversation", pairs)
    assert findings[0] == Finding(rule="refusal", turn=1, role="answer", excerpt=findings[0].excerpt)
    assert "sorry" in findings[0].excerpt
    assert [f.rule for f in findings] == ["refusal", "ai_disclaimer"]


def test_check_pairs_orders_by_rule_then_turn() -> None:
    pairs = [("Where is it?", "As described, it is on the left."), ("And now?", "It moved.</s>"), ("Why?", "As described, it rolled.")]
    findings = check_pairs("conversation", pairs)
    assert [(f.rule, f.turn) for f in findings][:3] == [("control_string", 1), ("reveals_text_source", 0), ("reveals_text_source", 2)]


def test_check_pairs_skips_an_empty_detail_instruction() -> None:
    assert check_pairs("prose", [("", "A red bus waits at a stop while people board it.")]) == []
    assert [f.role for f in check_pairs("prose", [("Describe the image.", "Based on the captions, a bus.")])] == ["answer"]


def test_check_lead_judges_chat_talk_but_not_its_ending() -> None:
    assert [f.rule for f in check_lead("Sure! Here's a conversation about the image:\n\n")] == ["chat_preamble"]
    assert check_lead("Some words without an ending") == []


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def reject_reason(row: dict) -> str | None:
    try:
        parse_answer(row["task"], row["text"], row["finish_reason"])
    except Rejected as rejection:
        return rejection.reason
    return None


def test_corpus_shape() -> None:
    rows = load_corpus()
    assert len(rows) >= 200
    labels = Counter(row["label"] for row in rows)
    assert 0.45 <= labels["good"] / len(rows) <= 0.65
    for row in rows:
        assert row["task"] in ("conversation", "detail", "complex_reasoning")
        assert row["finish_reason"] == "stop"
        assert (row["rule"] is None) == (row["label"] == "good")
    bad_rules = {(row["task"], row["rule"]) for row in rows if row["label"] == "bad"}
    for task in ("conversation", "detail", "complex_reasoning"):
        assert {rule for t, rule in bad_rules if t == task} == set(RULE_NAMES), task


def test_corpus_targets_and_every_bad_answer_refused_for_its_own_reason() -> None:
    rows = load_corpus()
    outcomes = [(row, reject_reason(row)) for row in rows]
    bad = [(row, got) for row, got in outcomes if row["label"] == "bad"]
    good = [(row, got) for row, got in outcomes if row["label"] == "good"]
    recall = sum(got is not None for _, got in bad) / len(bad)
    false_refusal = sum(got is not None for _, got in good) / len(good)
    assert recall >= 0.90
    assert false_refusal <= 0.02, [(row["note"], got) for row, got in good if got]
    wrong = [(row["note"], row["rule"], got) for row, got in bad if got != row["rule"]]
    assert not wrong
