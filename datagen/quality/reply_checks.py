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

import operator
import re
from collections.abc import Iterable, Iterator
from itertools import chain
from dataclasses import dataclass
from functools import lru_cache

from datagen.formats.records import Grounding
from datagen.quality.checks import Finding
from datagen.quality.patterns import SENTENCE_END

# The reject reasons these rules give (RejectReason in records.py), most serious first.
REPLY_RULE_NAMES = ("copied_example", "repetition")

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# The same words in lowered ASCII text, found a third faster than with the Unicode classes.
_ASCII_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

# A run of this many words, inside sentences, said twice in one answer is a loop: real teacher answers repeat at
# most 7 words (LLaVA's 90 GPT-4 evaluation answers: "among the group as some people might").
LOOP_WORDS = 9
# A whole sentence said twice counts from this length: "Yes." or "I see." twice is speech, not a loop.
SENTENCE_WORDS = 5
# An answer identical to another of the same reply counts from this length, and a sentence of one answer said
# again in another from this one. A shorter run across answers does not count: a teacher quoting one caption in
# two answers ("there is a person and a dog inside a room") is dull, not looping.
TURN_WORDS = 3
TURN_SENTENCE_WORDS = 8

# copied_example: word 4-grams ("shingles") of an example's question, answer or paragraph that a reply text
# holds. A text copies an example part when it holds at least COPY_SHARE of that part's shingles; parts shorter
# than COPY_MIN_WORDS are left out, since short generic questions ("What is the boy doing?") recur in any data.
SHINGLE = 4
COPY_SHARE = 0.5
COPY_MIN_WORDS = 10


def _words(text: str) -> list[str]:
    lowered = text.lower()
    return (_ASCII_WORD if lowered.isascii() else _WORD).findall(lowered)


def _excerpt(words: Iterable[str], limit: int = 80) -> str:
    text = " ".join(words)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sentences(text: str) -> list[tuple[str, ...]]:
    """The words of each sentence, lowered; a sentence ends at . ! or ? before white space, or at a line end."""
    lowered = text.lower()
    word = _ASCII_WORD if lowered.isascii() else _WORD
    # (The break takes its stop along: no word holds one.)
    return [tuple(words) for part in SENTENCE_END.split(lowered) if (words := word.findall(part))]


def _grams(words: tuple[str, ...] | list[str], size: int) -> Iterator[tuple[str, ...]]:
    """Every run of `size` words, in order (built by zip, in C: this runs over every word of every reply)."""
    return zip(*[words[start:] for start in range(size)])


def _repeated_run(sentences: list[tuple[str, ...]], size: int) -> tuple[str, ...] | None:
    """A run of `size` words, inside a sentence, that occurs twice in the text without overlapping itself."""
    # Each word of a run's second occurrence was said before, so a text repeating fewer words holds no such run.
    if sum(map(len, sentences)) - len(set().union(*sentences)) < size:
        return None
    runs = [list(_grams(words, size)) for words in sentences]
    if sum(map(len, runs)) == len(set().union(*runs)):
        return None  # no run occurs twice: settled in C, without the walk below
    first: dict[tuple[str, ...], tuple[int, int]] = {}
    for number, grams in enumerate(runs):
        for start, run in enumerate(grams):
            seen = first.setdefault(run, (number, start))
            if seen[0] != number or start - seen[1] >= size:
                return run
    return None


def _stutter(sentences: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    """A few words said three times in a row: "identity identity identity", "a cake, a cake, a cake" (a list that
    loops); the first in the text, the longest unit (up to 4 words) where several start at one word."""
    for words in sentences:
        if len(words) - len(set(words)) < 2:
            continue  # no word said three times in the sentence
        first: tuple[int, int] | None = None
        for size in (4, 3, 2, 1):
            # same[i]: word i is word i + size again; a unit said three times makes 2 * size of them in a row.
            same = bytes(map(operator.eq, words, words[size:]))
            start = same.find(b"\x01" * (2 * size))
            if start != -1 and (first is None or start < first[0]):
                first = (start, size)
        if first is not None:
            return words[first[0] : first[0] + first[1]]
    return None


def _repeated_sentence(sentences: list[tuple[str, ...]], least: int) -> tuple[str, ...] | None:
    seen: set[tuple[str, ...]] = set()
    for words in sentences:
        if len(words) < least:
            continue
        if words in seen:
            return words
        seen.add(words)
    return None


def find_repetition(pairs: list[tuple[str, str]], sentences: list[list[tuple[str, ...]]] | None = None) -> list[Finding]:
    """A sentence or a long run of words said twice in one answer, a few words said three times in a row, the
    same answer twice in a reply, or one answer's long sentence again in a later answer. For a prose reply, pairs is [(instruction, description)].

    Runs stay inside sentences: a teacher that quotes the same caption in two sentences or two turns ("there is a
    dog and a cat in a kitchen") writes dull text, not a loop."""
    findings: list[Finding] = []
    if sentences is None:
        sentences = [_sentences(answer) for _, answer in pairs]
    for turn, mine in enumerate(sentences):
        run = _repeated_sentence(mine, SENTENCE_WORDS) or _repeated_run(mine, LOOP_WORDS)
        if run is not None:
            findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"said twice: {_excerpt(run)!r}"))
        elif (stutter := _stutter(mine)) is not None:
            findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"said three times in a row: {_excerpt(stutter)!r}"))
    if len(pairs) < 2:
        return findings
    whole: dict[tuple[str, ...], int] = {}
    said: dict[tuple[str, ...], int] = {}
    for turn, mine in enumerate(sentences):
        answer = tuple(chain.from_iterable(mine))
        if len(answer) >= TURN_WORDS and answer in whole:
            findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"the same as answer {whole[answer] + 1}: {_excerpt(answer)!r}"))
            continue
        whole.setdefault(answer, turn)
        again = next((words for words in mine if len(words) >= TURN_SENTENCE_WORDS and said.get(words, turn) != turn), None)
        if again is not None:
            findings.append(Finding(rule="repetition", turn=turn, role="answer", excerpt=f"also in answer {said[again] + 1}: {_excerpt(again)!r}"))
        for words in mine:
            said.setdefault(words, turn)
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


def _shingles(words: tuple[str, ...] | list[str]) -> frozenset[tuple[str, ...]]:
    return frozenset(_grams(words, SHINGLE))


@lru_cache(maxsize=64)
def examples_from(parts: tuple[tuple[str, str], ...]) -> Examples:
    """(name, text) of each example part: a question, an answer, a whole description or one of its paragraphs."""
    kept = []
    for name, text in parts:
        words = _words(text)
        if len(words) >= COPY_MIN_WORDS:
            kept.append(ExamplePart(name, _shingles(words)))
    return Examples(tuple(kept), frozenset().union(*(part.shingles for part in kept)))


def find_copies(pairs: list[tuple[str, str]], examples: Examples, sentences: list[list[tuple[str, ...]]] | None = None) -> list[Finding]:
    """Each question or answer of the reply that holds most of an example part; `sentences`, the answers' words
    by sentence when the caller has them (a sentence break is no word, so they are the answer's words in order)."""
    findings: list[Finding] = []
    for turn, (question, answer) in enumerate(pairs):
        answer_words = _words(answer) if sentences is None else list(chain.from_iterable(sentences[turn]))
        for role, words in (("question", _words(question)), ("answer", answer_words)):
            if examples.every_shingle.isdisjoint(_grams(words, SHINGLE)):
                continue  # most texts share no 4 words in a row with any example: settled without building a set
            shingles = examples.every_shingle.intersection(_grams(words, SHINGLE))
            for part in examples.parts:
                share = len(shingles & part.shingles) / len(part.shingles)
                if share >= COPY_SHARE:
                    excerpt = f"{share:.0%} of the prompt's {part.name}"
                    findings.append(Finding(rule="copied_example", turn=turn, role=role, excerpt=excerpt))  # type: ignore[arg-type]
                    break
    return findings


def check_reply(pairs: list[tuple[str, str]], examples: Examples | None = None) -> list[Finding]:
    """Findings of the whole-reply rules, copies first (a copied example often repeats itself as well)."""
    sentences = [_sentences(answer) for _, answer in pairs]
    copies = find_copies(pairs, examples, sentences) if examples is not None else []
    return copies + find_repetition(pairs, sentences)


# Records about another image: so many named objects, more of them absent than shown.
ANOTHER_IMAGE_MIN_OBJECTS = 2
# Shown, it does not speak for a record: people are in half of COCO's images, so an answer written for another
# picture of people would keep a person there. Absent, it counts against the record like any object.
_NOT_EVIDENCE = frozenset({"person"})


def shown_objects(grounding: Grounding) -> list[str]:
    """The objects a record names that its image's boxes or captions show, people left out."""
    return [category for category in grounding.mentioned if category not in grounding.unsupported and category not in _NOT_EVIDENCE]


def names_another_image(grounding: Grounding) -> bool:
    """At least ANOTHER_IMAGE_MIN_OBJECTS objects named, and more of them absent from the image's boxes and captions
    than shown there (people shown left out). One stray object among objects the image shows is a claim to flag;
    a record whose absent objects outnumber its shown ones describes another picture."""
    return len(grounding.mentioned) >= ANOTHER_IMAGE_MIN_OBJECTS and len(grounding.unsupported) > len(shown_objects(grounding))

