"""Parse and validate teacher answers; anything refused raises `Rejected` with a reason from `RejectReason`."""

from __future__ import annotations

import re

from datagen.quality.checks import Finding, check_lead, check_pairs
from datagen.quality.reply_checks import Examples, check_reply
from datagen.formats.records import RejectReason


class Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_SEPARATOR = re.compile(r"\n[ \t]*={3,}[ \t]*\n")
# Rules about our text context, which a teacher shown only the image never had.
IMAGE_ONLY_EXEMPT = frozenset({"reveals_text_source"})
_LABEL = re.compile(r"^\s*(Question|Answer)\s*:\s*", re.IGNORECASE)
_BOX = re.compile(r"[\[(]\s*-?[\d.]+\s*(?:,\s*-?[\d.]+\s*){3}[\])]")
_BOX_WORDS = re.compile(r"\b(?:bounding[ -])?box(?:es)?(?:[ -]coordinates?)?\b|\bcoordinates?\b", re.IGNORECASE)
_FIRST_QUESTION = re.compile(r"^\s*Question\s*:", re.IGNORECASE | re.MULTILINE)


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


def check_answer(text: str, finish_reason: str | None) -> str:
    """Checks that need no parsing; returns the answer stripped."""
    check_finish_reason(finish_reason)
    stripped = text.strip()
    if not stripped:
        raise Rejected("empty", "the teacher returned no text")
    return stripped


def _raise_first(findings: list[Finding], see: str = "text") -> None:
    findings = [finding for finding in findings if not (see == "image" and finding.rule in IMAGE_ONLY_EXEMPT)]
    if findings:
        first = findings[0]
        raise Rejected(first.rule, f"{first.role} {first.turn + 1}: {first.excerpt!r}")  # type: ignore[arg-type]


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


Content = list[tuple[str, str]] | str  # Question/Answer pairs, or one prose answer

# `see` is what the teacher was shown (generate --see): a teacher shown only the image had no captions or boxes
# to betray, and may rightly talk about text or labels it reads in the picture, so the text-source rule is off for it.


# `examples` are the few-shot answers of the prompt pack the reply was asked with (TaskSpec.examples), which it must
# not reproduce; without them the copied_example rule is not applied.


def parse_prose(task: str, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> str:
    """A prose answer (a description): plain paragraphs, checked as one answer."""
    answer = check_answer(text, finish_reason)
    if _LABEL.match(answer):
        raise Rejected("unparseable", f"a {task} description must be plain paragraphs, not Question/Answer blocks")
    _raise_first(check_pairs("prose", [("", answer)]), see)
    _raise_first(check_reply([("", answer)], examples))
    return answer


def parse_qa_answer(
    task: str,
    text: str,
    finish_reason: str | None,
    exact_pairs: int | None = None,
    see: str = "text",
    examples: Examples | None = None,
    boxes_in_text: bool = False,
) -> list[tuple[str, str]]:
    """Question/Answer pairs (exactly `exact_pairs` of them when set); with `boxes_in_text`, boxes are content.

    The reply is parsed first, then every question and answer goes through `check_pairs`, then the whole reply
    through `check_reply`; the most serious finding becomes the reject reason.
    """
    answer = check_answer(text, finish_reason)
    try:
        pairs = parse_qa_pairs(answer)
    except Rejected:
        # A reply that is all refusal, or opens with chat talk before its first block, says more than 'unparseable'.
        _raise_first(check_lead(_before_first_question(answer)))
        raise
    if not pairs:
        raise Rejected("unparseable", "no Question/Answer pair found")
    if exact_pairs is not None and len(pairs) != exact_pairs:
        wanted = "one Question/Answer pair" if exact_pairs == 1 else f"{exact_pairs} Question/Answer pairs"
        raise Rejected("wrong_turn_count", f"{task.replace('_', ' ')} needs exactly {wanted}, got {len(pairs)}")
    checked = boxes_masked(pairs) if boxes_in_text else pairs
    _raise_first(check_pairs("qa_pairs", checked), see)
    _raise_first(check_reply(checked, examples))
    return pairs


def boxes_masked(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs as the content rules read them where boxes are a task's content (referring): each `[x1, y1, x2, y2]`
    one word, so that it is no leak of box corners, no stutter of digits, and a bare box a whole answer; and "bounding
    box", "box coordinates" the region they name. Other shapes of corner numbers ("x=0.12") and talk of captions or
    descriptions are still refused."""

    def masked(text: str) -> str:
        return _BOX_WORDS.sub("region", _BOX.sub("[region]", text))

    return [(masked(question), masked(answer)) for question, answer in pairs]


def _before_first_question(text: str) -> str:
    match = _FIRST_QUESTION.search(text)
    return text[: match.start()] if match else text
