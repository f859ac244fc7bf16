"""The hand-labelled replies of a real open model (tests/data/open_model_replies.jsonl): every label is a known
outcome, and the checks give each reply, as sent and as text alone, the outcome its labels say (the figures of
bench/results_open_model.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import get_args

import pytest

from datagen.formats.records import RejectReason
from datagen.source.coco import CocoSource

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "open_model_replies.jsonl"
def _bench():
    spec = importlib.util.spec_from_file_location("open_model_bench", ROOT / "bench" / "open_model_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROWS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_corpus_is_labelled():
    assert len(ROWS) >= 7
    allowed = {"ok", "bad", *get_args(RejectReason)}
    for row in ROWS:
        assert row["label"] in allowed and row["content"] in allowed - {"truncated"}, row
        assert row["finish_reason"] in ("stop", "length")
        assert (row["finish_reason"] == "length") == (row["label"] == "truncated"), row
    assert {row["content"] for row in ROWS} >= {"repetition", "copied_example"}


# Replies labelled with a rule's reason that the rules let through, each with why (bench/results_open_model.md).
# The last four were cut by the token limit, so they are misses of their text alone (`content`) only.
SMOL, QWEN_15 = "SmolLM2-135M-Instruct", "Qwen2.5-Coder-1.5B-Instruct"
_CLAUSE_AGAIN = "a clause said again inside longer sentences of another answer, as a teacher quoting one caption twice does"
KNOWN_MISSES = {
    (SMOL, 100212, "complex_reasoning", 1, False): "the pack's example question paraphrased: 5 of its 15 word 4-grams, under copied_example's half",
    (SMOL, 100189, "complex_reasoning", 0, False): "about a man with a tote bag in an empty bathroom: no COCO object claimed, so nothing to ground",
    (SMOL, 100061, "conversation", 0, False): _CLAUSE_AGAIN,
    (SMOL, 100061, "conversation", 1, False): _CLAUSE_AGAIN,
    (SMOL, 100125, "conversation", 0, False): _CLAUSE_AGAIN,
    (SMOL, 100142, "conversation", 0, False): "one question asked four times, the answers restating a clause: dull, not a loop by the rules",
    (QWEN_15, 100042, "complex_reasoning", 0, False): "pastes the system message's explanation of the box numbers; copied_example "
    "compares a reply with the pack's shots, not its system message (a held-out image: left as found)",
}
# `ok` replies the checks refuse (false refusals), each with why; none so far.
KNOWN_FALSE_REFUSALS: dict[tuple, str] = {}


@pytest.mark.parametrize("key", ["label", "content"])
def test_each_reply_gets_its_labelled_outcome(key: str):
    """A reply cut by the limit is `truncated`, an ok one is written, and one labelled with a rule's reason is refused
    (for that reason or another) unless it is a known miss; a `bad` one, unfit for a reason no rule names, may go
    either way: only a reader catches nonsense."""
    bench = _bench()
    source = CocoSource(ROOT / "data" / "captions.json", ROOT / "data" / "instances.json")
    judge = bench.outcome if key == "label" else bench.content_outcome
    missed, expected, refused = set(), set(), set()
    for row in ROWS:
        got = judge(row, source)
        name = (row["model"], row["image_id"], row["task"], row["seed"], bool(row.get("structured")))
        if name in KNOWN_MISSES and row[key] != "truncated":
            expected.add(name)
        if row[key] == "ok" and got != "ok":
            refused.add(name)
        elif row[key] in ("truncated", "ok"):
            assert got == row[key], (row["note"], got)
        elif row[key] != "bad" and got == "ok":
            missed.add(name)
    assert missed == expected
    assert refused == set(KNOWN_FALSE_REFUSALS)


def test_open_models_that_write_readable_text_have_ok_replies_and_a_held_out_part():
    """The Qwen 1.5B replies measure false refusals: some are labelled ok, on held-out images as well as tuned ones;
    a `slip` (an error no rule names, in a reply kept) is a note on an ok or bad reply only."""
    bench = _bench()
    qwen = [row for row in ROWS if row["model"] == QWEN_15]
    assert {row["label"] for row in qwen} >= {"ok", "bad"}
    assert any(row["image_id"] in bench.HELD_OUT and row["label"] == "ok" for row in qwen)
    assert any(row["image_id"] not in bench.HELD_OUT and row["label"] == "ok" for row in qwen)
    assert all(row["label"] in ("ok", "bad") for row in ROWS if row.get("slip"))
