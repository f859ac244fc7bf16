"""The regex helpers behind fast checks and grounding find what the plain, slower formulations find."""

from __future__ import annotations

import random
import re

import pytest

from datagen.quality.patterns import Caseless, Triggers, alternation, fold

TEXTS = [
    "The Man said: AS DESCRIBED, I'm Sorry.",
    "İstanbul: a DOG sits as described.",  # lowering "İ" makes two characters
    "ſorry, aſ deſcribed",  # long s: IGNORECASE reads it as "s", str.lower leaves it
    "DIſ and ıf: as described",  # dotless i: IGNORECASE reads it as "i"
    "The KELVIN sign \u212a: as described",  # lowers to an ASCII k
    "5 µm, 5 μm, 5 ΜM",
    "Straße, CAFÉ, naïve — as DESCRIBED",
]
PATTERNS = [
    re.compile(r"\bas (?:was )?described\b", re.IGNORECASE),
    re.compile(r"\bI(?:'m| am) sorry\b|\bsorry\b", re.IGNORECASE),
    re.compile(r"\b(?:if|dis)\b|\bdog\b", re.IGNORECASE),
    re.compile(r"[A-Z]{2,}\b", re.IGNORECASE),
    re.compile(r"\d\s*(?:µm|μm)", re.IGNORECASE),
    re.compile(r"\bk\w*|\S+:", re.IGNORECASE),
]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda pattern: pattern.pattern[:30])
def test_caseless_finds_what_ignorecase_finds_at_the_same_places(pattern: re.Pattern[str]) -> None:
    caseless = Caseless(pattern)
    assert caseless.lowered is not None
    for text in TEXTS:
        expected = [match.span() for match in pattern.finditer(text)]
        assert [match.span() for match in caseless.finditer(text, fold(text))] == expected, text
        assert (caseless.search(text, fold(text)) is None) == (pattern.search(text) is None)


def test_fold_declines_texts_where_lowering_is_not_caseless_matching() -> None:
    assert fold("As DESCRIBED — naïve") == "as described — naïve"
    for text in ("İstanbul", "ſorry", "ıf", "5 µm"):
        assert fold(text) is None, text


def test_caseless_keeps_escapes_whose_case_matters() -> None:
    pattern = re.compile(r"\S+\B\W\D", re.IGNORECASE)
    assert Caseless(pattern).lowered is not None and Caseless(pattern).lowered.pattern == r"\S+\B\W\D"
    assert Caseless(re.compile(r"(?P<Word>x)", re.IGNORECASE)).lowered is None  # a group name must keep its case
    assert Caseless(re.compile("X")).lowered is None  # case-sensitive: used as it is


def test_triggers_finds_every_listed_substring_present() -> None:
    words = {"descri", "description", "descriptions", "i was", " ai", "a", "ai", "box ", "<", "can't", "can’t", "entr"}
    triggers = Triggers(words)
    rng = random.Random(0)
    pieces = ["descriptions", "description ", "i was", " ai", "box", " ", "<", "can't", "can’t", "centre", "entrance", "x"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert triggers.present(text) == {word for word in words if word in text}, text


def test_alternation_prefers_the_longest_word_and_matches_spaces_as_told() -> None:
    pattern = re.compile(alternation(["hot", "hot dog", "hot dog stand", "dog"], space=r"[\s\-]+"))
    assert [match.group() for match in pattern.finditer("a hot-dog stand, a hot dog, hot, dog")] == ["hot-dog stand", "hot dog", "hot", "dog"]
