"""Answer checks: every rule that refuses a teacher answer by its content, in one place.

Each rule has a name, which is the reject reason (`RejectReason` in records.py), and looks at one
question or one answer at a time, so a refusal in the third answer of a conversation is as visible
as one at the start of the reply. Rules are written against realistic teacher text: they must fire on
a leak of the text the teacher was given ("based on the provided information", "x=0.12") and stay
quiet on what a photo legitimately shows (signs, menus, prices, "annotations" on a diagram).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

Role = Literal["question", "answer"]


class Finding(BaseModel):
    """One rule that fired on one question or answer of a reply."""

    rule: str
    turn: int  # index of the question/answer pair; 0 for a detail description
    role: Role
    excerpt: str


@dataclass(frozen=True)
class Rule:
    name: str
    roles: frozenset[str]
    find: Callable[[str], re.Match[str] | None]
    summary: str


def _excerpt(text: str, match: re.Match[str], margin: int = 30) -> str:
    start, end = max(0, match.start() - margin), min(len(text), match.end() + margin)
    return ("…" if start else "") + text[start:end].replace("\n", " ") + ("…" if end < len(text) else "")


def _searcher(pattern: re.Pattern[str]) -> Callable[[str], re.Match[str] | None]:
    return pattern.search


_APOSTROPHE = "['’]"

# --- reveals_text_source: the answer talks about the text it was given instead of a picture ---
_TEXT_SOURCE = re.compile(
    r"\bcaptions?\b|\bbounding[\s-]+box(?:es)?\b|\bcoordinates?\b|\bbox(?:es)? (?:coordinates|annotations?)\b"
    r"|\b(?:given|provided) (?:description|text|annotations?)\b|\bannotations?\b",
    re.IGNORECASE,
)

# --- box_coordinates: numbers only the normalised box corners can have produced ---
_BOX_NUMBERS = re.compile(r"\[\s*-?\d*\.\d+\s*,\s*-?\d*\.\d+")

# --- refusal: the teacher declines, or says it cannot see the picture ---
_REFUSAL = re.compile(
    # ASCII and typographic apostrophes alike: chat models often write I’m / can’t.
    rf"^\s*(?:I{_APOSTROPHE}?m sorry|I am sorry|I apologi[sz]e|Sorry, (?:but )?I"
    rf"|I can(?:no|{_APOSTROPHE})t (?:help|assist|provide|comply|see|view)"
    rf"|I am (?:unable|not able)|I{_APOSTROPHE}m (?:unable|not able)|As an AI\b)",
    re.IGNORECASE,
)

RULES: tuple[Rule, ...] = (
    Rule("refusal", frozenset({"answer"}), _searcher(_REFUSAL), "declines, apologises or says it cannot see the image"),
    Rule(
        "reveals_text_source",
        frozenset({"question", "answer"}),
        _searcher(_TEXT_SOURCE),
        "refers to the captions, descriptions, lists or boxes the teacher was given",
    ),
    Rule(
        "box_coordinates",
        frozenset({"question", "answer"}),
        _searcher(_BOX_NUMBERS),
        "quotes numbers that only the normalised box corners contain",
    ),
)
RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES)


def check_text(text: str, role: Role, turn: int = 0) -> list[Finding]:
    """Every rule that fires on one question or answer, in rule order."""
    findings = []
    for rule in RULES:
        if role not in rule.roles:
            continue
        match = rule.find(text)
        if match is not None:
            findings.append(Finding(rule=rule.name, turn=turn, role=role, excerpt=_excerpt(text, match)))
    return findings


def check_pairs(task: str, pairs: list[tuple[str, str]]) -> list[Finding]:
    """Findings over every question and answer of a reply, most serious rule first, then by turn.

    For `detail`, pairs is [(instruction, description)]; an empty question is skipped.
    """
    findings: list[Finding] = []
    for turn, (question, answer) in enumerate(pairs):
        if question.strip():
            findings.extend(check_text(question, "question", turn))
        findings.extend(check_text(answer, "answer", turn))
    priority = {name: index for index, name in enumerate(RULE_NAMES)}
    return sorted(findings, key=lambda finding: (priority[finding.rule], finding.turn, finding.role != "question"))
