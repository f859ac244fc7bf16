import re
from pathlib import Path

import pytest

from datagen.teachers.mock import mock_answer
from datagen.tasks.token_estimate import estimate_tokens
from datagen.quality.parse import parse_qa_pairs
from datagen.tasks.registry import parse_answer

CONVERSATION_SHOT = (
    "Question:\nWhat is the man holding?\n===\nAnswer:\nHe is holding an umbrella.\n===\n"
    "Question:\nWhat is the weather like?\n===\nAnswer:\nIt looks rainy."
)
REASONING_SHOT = "Question:\nWhy might the man carry an umbrella?\n===\nAnswer:\nThe sky is overcast, so he expects rain."
DETAIL_SHOT = "A man walks along a wet street holding an umbrella.\n\nShops line the road behind him."
TASK_OF_SHOT = {CONVERSATION_SHOT: "conversation", REASONING_SHOT: "complex_reasoning", DETAIL_SHOT: "detail"}

CONTEXT = (
    "A man riding a bike down a busy street.\n"
    "Two dogs play in a park near a bench.\n"
    "A cyclist passes by a pair of dogs.\n"
    "People walk along the sidewalk.\n"
    "A city street with cars and a bus.\n"
    "\n"
    "person: [0.1, 0.2, 0.3, 0.9]\n"
    "bicycle: [0.1, 0.5, 0.35, 0.95]\n"
    "dog: [0.6, 0.7, 0.7, 0.9]\n"
    "dog: [0.75, 0.7, 0.85, 0.9]\n"
    "bench: [0.4, 0.1, 0.6, 0.3]\n"
    "car: [0.0, 0.0, 0.1, 0.1]\n"
    "car: [0.2, 0.0, 0.3, 0.1]\n"
    "car: [0.3, 0.0, 0.4, 0.1]\n"
    "traffic light: [0.9, 0.0, 0.95, 0.2]\n"
    "bus: [0.5, 0.4, 0.8, 0.6]"
)
FORBIDDEN = re.compile(r"caption|description|annotation|\bbox(es)?\b|bounding|coordinate|\d\.\d", re.IGNORECASE)


def request(shot: str | None, context: str = CONTEXT, shots: int = 2) -> list[dict]:
    messages = [{"role": "system", "content": "You are an AI visual assistant."}]
    if shot is not None:
        for _ in range(shots):
            messages += [{"role": "user", "content": "A cat sits on a sofa."}, {"role": "assistant", "content": shot}]
    messages.append({"role": "user", "content": context})
    return messages


def test_conversation_shots_give_several_question_answer_turns():
    answer = mock_answer(request(CONVERSATION_SHOT), seed=0)
    pairs = parse_qa_pairs(answer)
    assert len(pairs) >= 2
    assert answer.startswith("Question:\n")
    assert "\n===\nAnswer:\n" in answer


def test_reasoning_shots_give_exactly_one_pair():
    for seed in range(20):
        assert len(parse_qa_pairs(mock_answer(request(REASONING_SHOT), seed=seed))) == 1


def test_detail_shots_and_no_shots_give_plain_paragraphs():
    for messages in (request(DETAIL_SHOT), request(None)):
        answer = mock_answer(messages, seed=0)
        assert "Question:" not in answer and "===" not in answer
        assert answer.strip()


def test_same_input_same_answer_and_seed_changes_it():
    messages = request(CONVERSATION_SHOT)
    assert mock_answer(messages, seed=7) == mock_answer(messages, seed=7)
    assert len({mock_answer(messages, seed=s) for s in range(10)}) > 1


def test_counts_and_categories_come_from_the_context_only():
    mentioned = set()
    for seed in range(60):
        answer = mock_answer(request(CONVERSATION_SHOT), seed=seed)
        for question, reply in parse_qa_pairs(answer):
            if question.startswith("How many dogs") or "count the dogs" in question:
                assert reply == "There are two dogs in the image."
            if "count" in question or question.startswith("How many"):
                mentioned.add(question)
            assert "cat" not in reply.lower().split()
    assert mentioned, "some seed should ask a counting question"


def test_positions_follow_object_centres():
    context = "A bench in a park.\n\nbench: [0.0, 0.4, 0.2, 0.6]"
    answers = " ".join(mock_answer(request(DETAIL_SHOT, context), seed=s) for s in range(5))
    assert "on the left" in answers
    assert "on the right" not in answers


@pytest.mark.parametrize("shot", [CONVERSATION_SHOT, REASONING_SHOT, DETAIL_SHOT])
def test_answers_never_reveal_the_text_source(shot):
    leaky = CONTEXT + "\nbox: [0.1, 0.1, 0.2, 0.2]"
    leaky = "A caption about a box of donuts.\nA plate with 2.5 donuts.\n" + leaky
    for seed in range(30):
        answer = mock_answer(request(shot, leaky), seed=seed)
        assert not FORBIDDEN.search(answer), answer
        parse_answer(TASK_OF_SHOT[shot], answer, "stop")


@pytest.mark.parametrize("shot", [CONVERSATION_SHOT, REASONING_SHOT, DETAIL_SHOT])
def test_caption_only_and_empty_contexts(shot):
    for context in ("A dog sleeps on a red couch.", ""):
        answer = mock_answer(request(shot, context), seed=1)
        parse_answer(TASK_OF_SHOT[shot], answer, "stop")


def test_non_ascii_captions_are_kept_intact():
    context = "Ein Hund schläft auf dem Sofa.\n東京の街を走るバス。\n\nbus: [0.2, 0.2, 0.8, 0.8]"
    answer = mock_answer(request(DETAIL_SHOT, context), seed=3)
    assert "schläft" in answer
    assert "東京の街を走るバス" in answer


def test_single_shot_conversation_pack_is_still_multi_turn():
    assert len(parse_qa_pairs(mock_answer(request(CONVERSATION_SHOT, shots=1), seed=2))) >= 2


def test_estimate_tokens():
    assert estimate_tokens("") == 1
    assert estimate_tokens("a" * 400) == 100


def test_punctuation_only_and_duplicate_captions():
    context = ".\n  A dog on a couch.  \nA dog on a couch\n\ndog: [0.1, 0.1, 0.4, 0.4]"
    answer = mock_answer(request(DETAIL_SHOT, context), seed=0)
    assert answer.count("dog on a couch") == 1
    assert ".." not in answer


SHIPPED_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def shipped_pack_request(task: str, context: str) -> list[dict]:
    folder = SHIPPED_PROMPTS / task
    messages = [{"role": "system", "content": (folder / "system_message.txt").read_text(encoding="utf-8")}]
    for caps in sorted(folder.glob("*_caps.txt")):
        conv = caps.with_name(caps.name.replace("_caps.txt", "_conv.txt"))
        messages += [
            {"role": "user", "content": caps.read_text(encoding="utf-8")},
            {"role": "assistant", "content": conv.read_text(encoding="utf-8")},
        ]
    messages.append({"role": "user", "content": context})
    return messages


@pytest.mark.parametrize("task", ["conversation", "detail", "complex_reasoning"])
def test_answers_to_the_shipped_prompt_packs_pass_validation(task):
    if not (SHIPPED_PROMPTS / task).is_dir():
        pytest.skip(f"no shipped {task} prompt pack")
    for seed in range(10):
        parsed = parse_answer(task, mock_answer(shipped_pack_request(task, CONTEXT), seed=seed), "stop")
        if task == "conversation":
            assert len(parsed) >= 2


def test_captions_the_answer_checks_would_refuse_are_left_out():
    # Real captions can hold what the checks refuse in an answer: quoting them would reject the mock's own reply.
    context = "As described, a dog sleeps on a couch\nI'm sorry, but I cannot see the image\nA cat naps on a rug.\n\ncat: [0.1, 0.1, 0.5, 0.5]"
    for shot, task in ((CONVERSATION_SHOT, "conversation"), (REASONING_SHOT, "complex_reasoning"), (DETAIL_SHOT, "detail")):
        for seed in range(10):
            answer = mock_answer(request(shot, context), seed=seed)
            assert "described" not in answer and "sorry" not in answer, answer
            parse_answer(task, answer, "stop")


# -- the "terse" variant: a second offline teacher for two-teacher comparisons ----------------------


@pytest.mark.parametrize("shot", [CONVERSATION_SHOT, REASONING_SHOT, DETAIL_SHOT])
def test_terse_variant_says_less_in_the_same_format(shot):
    messages = request(shot)
    full, terse = mock_answer(messages, 3), mock_answer(messages, 3, "terse")
    assert mock_answer(messages, 3, "default") == full
    assert terse != full and len(terse) < len(full)
    task = {CONVERSATION_SHOT: "conversation", REASONING_SHOT: "complex_reasoning", DETAIL_SHOT: "detail"}[shot]
    parse_answer(task, terse, "stop")  # still a valid answer for its task
    if shot is CONVERSATION_SHOT:
        assert len(parse_qa_pairs(terse)) <= 2


def test_terse_teacher_is_labelled_and_named_apart(generate_mock, tmp_path):
    import json

    generate_mock(tmp_path / "b", "--teacher", "mock-terse", "--limit", "3")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["teacher"] == {"kind": "mock", "model": "mock-terse", "mock": True}
    assert manifest["counts"]["detail"]["written"] == 3
