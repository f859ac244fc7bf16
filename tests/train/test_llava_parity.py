"""Token parity with LLaVA's preprocessing for a SentencePiece Llama-style tokenizer.

The expected sequences are written down from LLaVA's convention (its
`tokenizer_image_token`): BOS is an id, the prompt is cut at `<image>` and each piece is tokenised as
a fresh string, so the first word after BOS and the text after the image keep their `▁` marker;
`</s>` closing an answer is the control token; loss only on answers and their `</s>`
(`preprocess_v1`), or on the caption and its newline (`preprocess_plain`).
"""
from __future__ import annotations

import pytest

from datagen.train.data import IGNORE, record_turns, render, tokenize_record
from sp_tokenizer import build_sp_tokenizer

pytestmark = pytest.mark.train
TOK = build_sp_tokenizer()
IMG = TOK.convert_tokens_to_ids("<image>")
SYSTEM = ("▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The ▁assistant "
          "▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user ' s ▁questions .").split()


def record(*turns: str) -> dict:
    convs = [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(turns)]
    return {"id": "p", "image": "a.png", "conversations": convs}


def expected(prompt: list[str], answers: list[list[str]]) -> tuple[list[int], list[int]]:
    """Ids and labels from token strings: `prompt` untrained, then for each answer its tokens trained."""
    ids = [TOK.convert_tokens_to_ids(t) for t in prompt]
    labels = [IGNORE] * len(ids)
    for prefix, answer in answers:
        ids += [TOK.convert_tokens_to_ids(t) for t in prefix] + [TOK.convert_tokens_to_ids(t) for t in answer]
        labels += [IGNORE] * len(prefix) + [TOK.convert_tokens_to_ids(t) for t in answer]
    assert TOK.unk_token_id not in ids, "the test tokenizer lacks a piece the expectation names"
    return ids, labels


def ours(rec: dict, template: str) -> tuple[list[int], list[int]]:
    return tokenize_record(record_turns(rec), template, TOK, IMG, n_image=1, max_length=4096)


def test_plain_matches_llava_preprocess_plain():
    # LLaVA: "<image>" + caption + "\n" through tokenizer_image_token; the first <bos, image> are masked.
    rec = record("Describe briefly.\n<image>", "A red circle.")
    ids, labels = expected(["<s>", "<image>"], [([], ["▁A", "▁red", "▁circle", ".", "\n"])])
    assert ours(rec, "plain") == (ids, labels)


def test_vicuna_v1_single_turn_matches_llava_preprocess_v1():
    rec = record("What colour?\n<image>", "Red.")  # LLaVA moves the image to the front of the question
    ids, labels = expected(
        ["<s>", *SYSTEM, "▁USER", ":", "▁", "<image>", "▁", "\n", "What", "▁colour", "?", "▁ASSISTANT", ":"],
        [([], ["▁Red", ".", "</s>"])],
    )
    assert ours(rec, "vicuna_v1") == (ids, labels)


def test_vicuna_v1_two_turns_matches_llava_preprocess_v1():
    # Within one <image>-free piece the prompt is one string: after "</s>", "USER" has no word marker.
    rec = record("<image>\nWhat colour?", "Red.", "Shape?", "A circle.")
    ids, labels = expected(
        ["<s>", *SYSTEM, "▁USER", ":", "▁", "<image>", "▁", "\n", "What", "▁colour", "?", "▁ASSISTANT", ":"],
        [([], ["▁Red", ".", "</s>"]),
         (["USER", ":", "▁Shape", "?", "▁ASSISTANT", ":"], ["▁A", "▁circle", ".", "</s>"])],
    )
    assert ours(rec, "vicuna_v1") == (ids, labels)


@pytest.mark.parametrize("template", ["plain", "vicuna_v1"])
def test_teacher_text_never_becomes_control_tokens(template):
    rec = record("<image>\nWhat is this?", "Use </s> or <s> here.")
    ids, labels = ours(rec, template)
    # One BOS (the template's), one EOS at most (the template's own, closing the answer).
    assert ids.count(TOK.bos_token_id) == 1 and ids.count(TOK.eos_token_id) == (template == "vicuna_v1")
    answer = TOK.decode([t for t, l in zip(ids, labels) if l != IGNORE], skip_special_tokens=True)
    assert "Use </s> or <s> here." in answer
    tokens = TOK.convert_ids_to_tokens(ids)
    assert tokens[tokens.index("▁Use"):tokens.index("▁here")] == ["▁Use", "▁", "<", "/", "s", ">", "▁or", "▁", "<", "s", ">"]


def test_one_piece_tokenisation_differs_only_after_the_image_and_only_in_non_legacy_mode():
    """What a HF processor does with the same rendered text: one string, BOS from the post-processor.
    Legacy-mode tokenizers give LLaVA's ids exactly; non-legacy ones drop the lone `▁` after <image>."""
    rec = record("<image>\nWhat colour?", "Red.", "Shape?", "A circle.")
    for scheme in ("always", "first"):
        tok = build_sp_tokenizer(scheme)
        text, _ = render("vicuna_v1", record_turns(rec), tok)
        one_piece = tok(text.removeprefix(tok.bos_token))["input_ids"]
        ids, _ = tokenize_record(record_turns(rec), "vicuna_v1", tok, IMG, n_image=1, max_length=4096)
        if scheme == "always":
            assert one_piece == ids
        else:
            after = ids.index(IMG) + 1
            assert tok.convert_ids_to_tokens(ids[after]) == "▁" and one_piece == ids[:after] + ids[after + 1:]
