"""Answer checks (datagen/checks.py): every rule fires on realistic leaks and stays quiet on picture content."""

from __future__ import annotations

from typing import get_args

from datagen.checks import RULE_NAMES, Finding, check_pairs
from datagen.records import RejectReason


def test_every_rule_name_is_a_reject_reason() -> None:
    assert set(RULE_NAMES) <= set(get_args(RejectReason))


def test_check_pairs_reports_rule_turn_role_and_excerpt() -> None:
    pairs = [
        ("What is on the table?", "A bowl of oranges sits on the table."),
        ("Who is at the table?", "I'm sorry, but I cannot see the image."),
    ]
    findings = check_pairs("conversation", pairs)
    assert findings[0] == Finding(rule="refusal", turn=1, role="answer", excerpt=findings[0].excerpt)
    assert "cannot see" in findings[0].excerpt


def test_questions_are_checked_too() -> None:
    findings = check_pairs("conversation", [("According to the captions, what is the man doing?", "He is surfing.")])
    assert [(f.rule, f.turn, f.role) for f in findings] == [("reveals_text_source", 0, "question")]


def test_clean_pairs_have_no_findings() -> None:
    assert check_pairs("detail", [("Describe the image.", "A red bus waits at a stop while people board it.")]) == []
