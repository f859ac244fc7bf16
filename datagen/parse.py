"""Parse and validate teacher answers; anything refused raises `Rejected` with a reason from `RejectReason`."""

from __future__ import annotations

import re

from datagen.records import RejectReason


class Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Answers must read as if the teacher saw the picture; these phrases show it read our text instead.
_TEXT_SOURCE = re.compile(
    r"\bcaptions?\b|\bbounding[\s-]+box(?:es)?\b|\bcoordinates?\b|\bbox(?:es)? (?:coordinates|annotations?)\b"
    r"|\b(?:given|provided) (?:description|text|annotations?)\b|\bannotations?\b"
    r"|\[\s*-?\d*\.\d+\s*,\s*-?\d*\.\d+",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    # ASCII and typographic apostrophes alike: chat models often write I’m / can’t.
    r"^\s*(?:I['’]?m sorry|I am sorry|I apologi[sz]e|Sorry, (?:but )?I|I can(?:no|'|’)t (?:help|assist|provide|comply|see|view)"
    r"|I am (?:unable|not able)|I['’]m (?:unable|not able)|As an AI\b)",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"\n[ \t]*={3,}[ \t]*\n")
_LABEL = re.compile(r"^\s*(Question|Answer)\s*:\s*", re.IGNORECASE)


# The ways a server says the answer ended naturally; None from servers that send no finish_reason at all.
NATURAL_FINISH = frozenset({"stop", "eos", "eos_token", None})


def check_finish_reason(finish_reason: str | None) -> None:
    """Anything but a natural end means the answer was cut or withheld: a reject named after the reason."""
    if finish_reason == "length":
        raise Rejected("truncated", "the teacher hit max_tokens (finish_reason=length)")
    if finish_reason == "content_filter":
        raise Rejected("content_filter", "the server's content filter cut or withheld the answer (finish_reason=content_filter)")
    if finish_reason not in NATURAL_FINISH:
        raise Rejected("unfinished", f"the answer did not end naturally (finish_reason={finish_reason})")


def check_answer(text: str, finish_reason: str | None, see: str = "text") -> str:
    """Checks every task shares; returns the answer stripped.

    `see` is what the teacher was shown (generate --see): a teacher shown only the image had no captions or
    boxes to betray, and may rightly talk about text or labels it reads in the picture, so the leak rule is off."""
    check_finish_reason(finish_reason)
    stripped = text.strip()
    if not stripped:
        raise Rejected("empty", "the teacher returned no text")
    if _REFUSAL.search(stripped):
        raise Rejected("refusal", f"refusal: {stripped[:80]!r}")
    leak = _TEXT_SOURCE.search(stripped) if see != "image" else None
    if leak:
        raise Rejected("reveals_text_source", f"mentions {leak.group(0)!r}, which an image cannot show")
    return stripped


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """`Question:\\n<q>\\n===\\nAnswer:\\n<a>` blocks joined by `\\n===\\n` -> [(q, a), ...]."""
    blocks = [block.strip() for block in _SEPARATOR.split("\n" + text.strip() + "\n") if block.strip()]
    pairs: list[tuple[str, str]] = []
    expected = "question"
    question = ""
    for block in blocks:
        match = _LABEL.match(block)
        if match is None or match.group(1).lower() != expected:
            raise Rejected("unparseable", f"expected a block starting '{expected.title()}:', got {block[:60]!r}")
        body = block[match.end():].strip()
        if not body:
            raise Rejected("unparseable", f"empty {expected}")
        if expected == "question":
            question, expected = body, "answer"
        else:
            pairs.append((question, body))
            expected = "question"
    if expected == "answer":
        raise Rejected("unparseable", "a question without an answer")
    return pairs


def parse_answer(task: str, text: str, finish_reason: str | None, see: str = "text") -> list[tuple[str, str]] | str:
    """Validated content: Q/A pairs for conversation and complex reasoning, the paragraph text for detail."""
    answer = check_answer(text, finish_reason, see)
    if task == "detail":
        if _LABEL.match(answer):
            raise Rejected("unparseable", "a detail description must be plain paragraphs, not Question/Answer blocks")
        return answer
    pairs = parse_qa_pairs(answer)
    if not pairs:
        raise Rejected("unparseable", "no Question/Answer pair found")
    if task == "complex_reasoning" and len(pairs) != 1:
        raise Rejected("wrong_turn_count", f"complex reasoning needs exactly one Question/Answer pair, got {len(pairs)}")
    return pairs
