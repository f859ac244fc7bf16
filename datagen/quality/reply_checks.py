"""Checks over a whole reply, for the ways small open teachers fail and GPT-4 rarely does.

The rules of checks.py look at one question or answer at a time, for what it says. These look at what a reply
repeats, within an answer and across its turns (`repetition`: a model in a loop that happened to stop before the
token limit), and at what it took from the prompt it was sent (`copied_example`: a few-shot example of the prompt
pack reproduced for another picture). Both work on word sequences computed once per text, with sets and dicts,
so they add little to the per-reply cost of the text rules.

`names_another_image` is the grounding side of the same failure: a record most of whose objects the image lacks
is about some other picture (often the pack's example), and is refused even without --reject-unsupported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from datagen.formats.records import Grounding
from datagen.quality.checks import Finding

# The reject reasons these rules give (RejectReason in records.py), most serious first.
REPLY_RULE_NAMES = ("copied_example", "repetition")

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

# A run of this many words said twice in one answer (or shared by two answers) is a loop: real teacher answers
# repeat at most 7 words (LLaVA's 90 GPT-4 evaluation answers: "among the group as some people might").
LOOP_WORDS = 10
# A whole sentence said twice counts from this length: "Yes." or "I see." twice is speech, not a loop.
SENTENCE_WORDS = 5
# An answer identical to another of the same reply counts from this length.
TURN_WORDS = 3

# copied_example: word 4-grams ("shingles") of an example's question, answer or paragraph that a reply text
# holds. A text copies an example part when it holds at least COPY_SHARE of that part's shingles; parts shorter
# than COPY_MIN_WORDS are left out, since short generic questions ("What is the boy doing?") recur in any data.
SHINGLE = 4
COPY_SHARE = 0.5
COPY_MIN_WORDS = 10


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _excerpt(words: Iterable[str], limit: int = 80) -> str:
    text = " ".join(words)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _repeated_run(words: list[str], size: int) -> tuple[str, ...] | None:
    """A run of `size` words that occurs twice without overlapping itself, or None."""
    first: dict[tuple[str, ...], int] = {}
    for start in range(len(words) - size + 1):
        run = tuple(words[start : start + size])
        seen = first.setdefault(run, start)
        if start - seen >= size:
            return run
    return None


def _repeated_sentence(text: str) -> tuple[str, ...] | None:
    seen: set[tuple[str, ...]] = set()
    for sentence in _SENTENCE_END.split(text):
        words = tuple(_words(sentence))
        if len(words) < SENTENCE_WORDS:
            continue
        if words in seen:
            return words
        seen.add(words)
    return None


def find_repetition(pairs: list[tuple[str, str]]) -> list[Finding]:
    """A sentence or a long run of words said twice in one answer, the same answer twice in a reply, or a long
    run of words shared by two answers. For a prose reply, pairs is [(instruction, description)]."""
    findings: list[Finding] = []
    answers = [_words(answer) for _, answer in pairs]
    for turn, (_, answer) in enumerate(pairs):
        run = _repeated_sentence(answer) or _repeated_run(answers[turn], LOOP_WORDS)
        if run is not None:
            findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"said twice: {_excerpt(run)!r}"))
    if len(pairs) < 2:
        return findings
    # Answers only: a question asked twice with two different answers is a dull conversation, not a loop.
    seen: dict[tuple[str, ...], int] = {}
    for turn, words in enumerate(answers):
        key = tuple(words)
        if len(key) >= TURN_WORDS and key in seen:
            findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"the same as answer {seen[key] + 1}: {_excerpt(key)!r}"))
        seen.setdefault(key, turn)
    # A loop spread over turns: one answer's run of words again in a later answer.
    runs: dict[tuple[str, ...], int] = {}
    for turn, words in enumerate(answers):
        mine = {tuple(words[start : start + LOOP_WORDS]) for start in range(len(words) - LOOP_WORDS + 1)}
        for run in mine:
            earlier = runs.get(run)
            if earlier is not None and earlier != turn:
                findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"also in answer {earlier + 1}: {_excerpt(run)!r}"))
                break
        for run in mine:
            runs.setdefault(run, turn)
    return findings


@dataclass(frozen=True)
class ExamplePart:
    name: str  # "example 3, answer 2": where it is in the pack, for the reject's detail
    shingles: frozenset[tuple[str, ...]]


@dataclass(frozen=True)
class Examples:
    """The parts of a prompt pack's few-shot answers that a reply must not reproduce, prepared once per pack."""

    parts: tuple[ExamplePart, ...]
    every_shingle: frozenset[tuple[str, ...]]


def _shingles(words: list[str]) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(words[start : start + SHINGLE]) for start in range(len(words) - SHINGLE + 1))


@lru_cache(maxsize=64)
def examples_from(parts: tuple[tuple[str, str], ...]) -> Examples:
    """(name, text) of each example part: a question, an answer, a whole description or one of its paragraphs."""
    kept = []
    for name, text in parts:
        words = _words(text)
        if len(words) >= COPY_MIN_WORDS:
            kept.append(ExamplePart(name, _shingles(words)))
    return Examples(tuple(kept), frozenset().union(*(part.shingles for part in kept)))


def find_copies(pairs: list[tuple[str, str]], examples: Examples) -> list[Finding]:
    """Each question or answer of the reply that holds most of an example part."""
    findings: list[Finding] = []
    for turn, pair in enumerate(pairs):
        for role, text in zip(("question", "answer"), pair):
            shingles = _shingles(_words(text)) & examples.every_shingle
            if not shingles:
                continue
            for part in examples.parts:
                share = len(shingles & part.shingles) / len(part.shingles)
                if share >= COPY_SHARE:
                    excerpt = f"{share:.0%} of the prompt's {part.name}"
                    findings.append(Finding(rule="copied_example", turn=turn, role=role, excerpt=excerpt))  # type: ignore[arg-type]
                    break
    return findings


def check_reply(pairs: list[tuple[str, str]], examples: Examples | None = None) -> list[Finding]:
    """Findings of the whole-reply rules, copies first (a copied example often repeats itself as well)."""
    copies = find_copies(pairs, examples) if examples is not None else []
    return copies + find_repetition(pairs)


# Records about another image: so many named objects, and none of them in the image.
ANOTHER_IMAGE_MIN_OBJECTS = 2


def names_another_image(grounding: Grounding) -> bool:
    """At least ANOTHER_IMAGE_MIN_OBJECTS objects named, and the image's boxes and captions show none of them."""
    return len(grounding.mentioned) >= ANOTHER_IMAGE_MIN_OBJECTS and set(grounding.unsupported) == set(grounding.mentioned)

