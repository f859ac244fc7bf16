"""Regex helpers that keep the answer checks and the grounding cheap: caseless twins, trie alternations, triggers.

Case-insensitive patterns run fast on the text lowered once, with no IGNORECASE flag.

Python's `re` matches an IGNORECASE pattern about three times slower than the same pattern without the flag, and
the answer checks and the grounding run dozens of such patterns over every answer. On the lowered text a pattern
of lowercase letters finds exactly what the IGNORECASE pattern finds in the original, at the same places, except
where lowering changes a text's length ("İ") or where IGNORECASE equates letters that `str.lower` leaves apart
(dotless "ı" with "i", long "ſ" with "s", micro "µ" with Greek "μ"...): `fold` returns None for those texts and
the original pattern runs on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator


# The characters `re` treats as the same letter as another beyond lowercasing (re._casefix, Python 3.11-3.13).
_EXTRA_CASES = frozenset("µıſͅΐΰβεθικμπρςσφϐϑϕϖϰϱϵвдостъѣᲀᲁᲂᲃᲄᲅᲆᲇᲈṡẛιΐΰꙋﬅﬆ")


def fold(text: str) -> str | None:
    """`text` lowered, or None where a pattern on it could differ from IGNORECASE on the original."""
    lowered = text.lower()
    if not text.isascii() and (len(lowered) != len(text) or not _EXTRA_CASES.isdisjoint(lowered)):
        return None
    return lowered


def _lowercase_source(source: str) -> str | None:
    """The pattern with its letters lowered, escapes (`\\S`, `\\B`, `\\W`) kept; None if it holds a construct
    whose meaning lowering could change (a named group or character name, an inline flag)."""
    if "(?P" in source or "\\N" in source or "(?i" in source or "(?-" in source:
        return None
    out = []
    escaped = False
    for character in source:
        out.append(character if escaped else character.lower())
        escaped = not escaped and character == "\\"
    return "".join(out)


class Caseless:
    """An IGNORECASE pattern with its twin for lowered text; plain patterns pass through unchanged."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        source = _lowercase_source(pattern.pattern) if pattern.flags & re.IGNORECASE else None
        self.lowered = re.compile(source, pattern.flags & ~re.IGNORECASE) if source is not None else None

    def _pick(self, text: str, folded: str | None) -> tuple[re.Pattern[str], str]:
        if self.lowered is not None and folded is not None:
            return self.lowered, folded
        return self.pattern, text

    def finditer(self, text: str, folded: str | None) -> Iterator[re.Match[str]]:
        pattern, subject = self._pick(text, folded)
        return pattern.finditer(subject)

    def search(self, text: str, folded: str | None) -> re.Match[str] | None:
        pattern, subject = self._pick(text, folded)
        return pattern.search(subject)

    def match(self, text: str, folded: str | None) -> re.Match[str] | None:
        pattern, subject = self._pick(text, folded)
        return pattern.match(subject)


def alternation(words: list[str], space: str = " ") -> str:
    """One regex for all `words`, shaped as a trie so that the regex engine steps through the words sharing a
    prefix once; a longer word is tried before a shorter one it starts with. A space in a word matches `space`."""
    trie: dict = {}
    for word in words:
        node = trie
        for character in word:
            node = node.setdefault(character, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        branches = [(space if key == " " else re.escape(key)) + pattern(child) for key, child in sorted(node.items()) if key]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return pattern(trie)


def whole_words(words: list[str], not_after: tuple[str, ...] = ()) -> str:
    """Alternatives for any of `words` (plain text) at the start of a word, and not right after one of `not_after`
    and a space; where each word ends is the caller's to say.

    Each alternative opens with its word and looks behind itself for the start of the word: a pattern that opens
    with a few letters lets the regex engine skip ahead to them, where one that opens with a look-behind or `\\b` is
    tried at every character (five to eight times slower on a sentence)."""
    alternatives = []
    for word in words:
        escaped = re.escape(word)
        behind = "".join(rf"(?<!\b{re.escape(before)} {escaped})" for before in not_after)
        alternatives.append(rf"{escaped}(?<!\w{escaped}){behind}")
    return "|".join(alternatives)


class Triggers:
    """Which of many substrings occur in a text, found in one pass of one regex instead of one `in` per substring.

    At each place the regex reports the longest substring starting there; every shorter one starting there is a
    prefix of it, so each reported one stands for itself and the listed substrings it begins with."""

    def __init__(self, words: set[str]) -> None:
        self._regex = re.compile("(?=(" + alternation(sorted(words), space=" ") + "))", re.DOTALL)
        self._implied = {word: frozenset(other for other in words if word.startswith(other)) for word in words}

    def present(self, lowered: str) -> frozenset[str]:
        found: set[str] = set()
        for match in self._regex.finditer(lowered):
            found |= self._implied[match.group(1)]
        return frozenset(found)
