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
import sys
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

    def finditer(self, text: str, folded: str | None, pos: int = 0, endpos: int = sys.maxsize) -> Iterator[re.Match[str]]:
        pattern, subject = self._pick(text, folded)
        return pattern.finditer(subject, pos, endpos)

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


# Where a sentence ends: the white space after its stop, the stop taken along, or line breaks. One character class
# opens it, which the regex skips ahead to: "[.!?]\s+|\n+", or a look-behind for the stop, is tried at every character.
SENTENCE_END = re.compile(r"[.!?\n](?:(?<=\n)\n*|(?<=[.!?])\s+)")


def whole_words(words: list[str], not_after: tuple[str, ...] = ()) -> str:
    """Alternatives for any of `words` (plain text) as whole words, and not right after one of `not_after` and a
    space.

    Each alternative opens with its word and looks behind itself for the start of the word: a pattern that opens
    with a few letters lets the regex engine skip ahead to them, where one that opens with a look-behind or `\\b` is
    tried at every character (three to eight times slower on a sentence). The engine sees those letters only
    where the alternatives stand at the top of the pattern, not inside a group."""
    alternatives = []
    for word in words:
        escaped = re.escape(word)
        behind = "".join(rf"(?<!\b{re.escape(before)} {escaped})" for before in not_after)
        alternatives.append(rf"{escaped}(?<!\w{escaped}){behind}\b")
    return "|".join(alternatives)


# How often each character comes in English text, in percent (letters: the usual table; a space about every sixth
# character). Others are rare. Triggers looks for its substrings by their rare characters.
_CHARACTER_SHARE = dict(zip(" etaoinshrdlcumwfgypbvkjxqz", (
    16.0, 10.5, 7.5, 6.8, 6.3, 5.9, 5.6, 5.3, 5.1, 5.0, 3.6, 3.3, 2.3, 2.3, 2.0, 2.0, 1.8, 1.7, 1.7, 1.6, 1.2, 0.8, 0.6, 0.1, 0.1, 0.1, 0.06,
)))


def _share(character: str) -> float:
    return _CHARACTER_SHARE.get(character, 0.05)


def _rare_cover(words: set[str]) -> set[str]:
    """Few characters, rare ones, such that every word holds one of them (a greedy weighted set cover)."""
    uncovered, chosen = set(words), set()
    while uncovered:
        characters = sorted(set("".join(uncovered)))
        best = max(characters, key=lambda character: sum(character in word for word in uncovered) / _share(character))
        chosen.add(best)
        uncovered = {word for word in uncovered if best not in word}
    return chosen


class Triggers:
    """Which of many substrings occur in a text, in one pass of one regex instead of one `in` per substring.

    The regex looks for each substring at one of its characters, its anchor, drawn from a few characters rare in
    English that between them stand in every substring: it skips ahead to those (about a quarter of a text's
    characters), where one that tries every substring at every character costs twice as much. Where an anchor
    stands with the rest of a substring around it, every substring with that anchor is checked there."""

    def __init__(self, words: set[str]) -> None:
        cover = _rare_cover(words)
        self._by_anchor: dict[str, list[tuple[str, int]]] = {}
        for word in sorted(words):
            # At its first character if that is an anchor (one look ahead, shared in a trie), else at its rarest anchor.
            offset = 0 if word[0] in cover else min((index for index, character in enumerate(word) if character in cover), key=lambda index: _share(word[index]))
            self._by_anchor.setdefault(word[offset], []).append((word, offset))
        alternatives = []
        for anchor, entries in self._by_anchor.items():
            # At the anchor: the substring's end ahead and, unless it starts there, its start behind (anchor included).
            starting = [word[1:] for word, offset in entries if offset == 0]
            around = [f"(?={alternation(starting, space=' ')})"] if starting else []
            around += [f"(?<={re.escape(word[: offset + 1])})(?={re.escape(word[offset + 1 :])})" for word, offset in entries if offset]
            alternatives.append(f"{re.escape(anchor)}(?:{'|'.join(around)})")
        # Each match is one character, the anchor: the next search starts right after it, so none is passed over.
        self._regex = re.compile("|".join(alternatives), re.DOTALL)

    def present(self, lowered: str) -> frozenset[str]:
        found: set[str] = set()
        for match in self._regex.finditer(lowered):
            at = match.start()
            for word, offset in self._by_anchor[lowered[at]]:
                if at >= offset and lowered.startswith(word, at - offset):
                    found.add(word)
        return frozenset(found)
