"""An offline, deterministic judge for CI: scores by a transparent heuristic, never by quality.

It reads the judge request the same way a model would (the tagged sections of our user message, or the
bracketed blocks of LLaVA's layout under --rule) and
answers in the format the judge prompt asks for, so the whole `judge` path (cache, parsing, both orders,
summary) runs without a model. Its scores say nothing about which answer is better; every review and
summary it produces is labelled mock.
"""

from __future__ import annotations

import re
from collections import Counter

from datagen.tasks.token_estimate import estimate_tokens
from datagen.formats.records import TeacherInfo, Usage
from datagen.teachers.teacher import ChatReply, ChatRequest, Teacher

# Two heuristics, so that two mock judges can disagree and judge-agreement reporting is exercised offline.
HEURISTICS = ("overlap", "length")
_WORD = re.compile(r"[a-z]+")
_COMMON = frozenset(
    "the and are was were with that this there their they them for from into onto has have had its his her "
    "you your can not but also which what where when who how why very some any all one two image picture photo "
    "scene shows show seen see".split()
)


def _words(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if len(word) > 2 and word not in _COMMON]


def _section(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.DOTALL)
    return match.group(1) if match else None


# The layout of a --rule request (run.rule_message): LLaVA's bracketed blocks, answers under the rule's role.
_RULE_LAYOUT = re.compile(
    r"\[Context\]\n(?P<context>.*?)\n\n\[Question\]\n(?P<question>.*?)\n\n"
    r"\[(?P<role>[^\]\n]+) 1\]\n(?P<first>.*?)\n\n\[End of (?P=role) 1\]\n\n"
    r"\[(?P=role) 2\]\n(?P<second>.*?)\n\n\[End of (?P=role) 2\]\n\n\[System\]\n",
    re.DOTALL,
)


def sections(prompt: str) -> tuple[str, str, str, str] | None:
    """(context, question, first answer, second answer) from either request layout, or None."""
    parts = [_section(prompt, tag) for tag in ("context", "question", "answer_1", "answer_2")]
    if all(part is not None for part in parts):
        return parts[0], parts[1], parts[2], parts[3]  # type: ignore[return-value]
    match = _RULE_LAYOUT.search(prompt)
    if match:
        return match["context"], match["question"], match["first"], match["second"]
    return None


def heuristic_score(heuristic: str, answer: str, context: str) -> int:
    """1..10. overlap: how much of the answer's vocabulary the context holds, plus some credit for length;
    length: the answer's length alone."""
    words = _words(answer)
    length = min(1.0, len(words) / 60)
    if heuristic == "length":
        share = length
    else:
        known = set(_words(context))
        grounded = sum(word in known for word in words) / len(words) if words else 0.0
        share = 0.7 * grounded + 0.3 * length
    return 1 + round(9 * share)


class MockJudge(Teacher):
    """A judge backend with the teacher interface; labelled mock in every review and summary."""

    def __init__(self, heuristic: str = "overlap") -> None:
        if heuristic not in HEURISTICS:
            raise ValueError(f"unknown mock judge heuristic {heuristic!r}")
        self.heuristic = heuristic
        self.info = TeacherInfo(kind="mock", model=f"mock-{heuristic}", mock=True)
        self.stats: Counter[str] = Counter()

    async def complete(self, request: ChatRequest) -> ChatReply:
        self.stats["requests"] += 1
        found = sections(request.messages[-1]["content"])
        if found is None:
            # A request in neither layout: answer without scores, as a confused model would.
            text = "The request did not contain the sections this mock judge reads."
        else:
            context, question, first, second = found
            known = context + "\n" + question
            answers = [first, second]
            scores = [heuristic_score(self.heuristic, answer, known) for answer in answers]
            counts = [len(_words(answer)) for answer in answers]
            text = (
                f"{scores[0]} {scores[1]}\n"
                f"Mock judge ({self.heuristic} heuristic; says nothing about quality): answer 1 has {counts[0]} content words, "
                f"answer 2 has {counts[1]}."
            )
        usage = Usage(
            prompt_tokens=sum(estimate_tokens(message["content"]) for message in request.messages),
            completion_tokens=estimate_tokens(text),
        )
        return ChatReply(text=text, finish_reason="stop", usage=usage)

    async def aclose(self) -> None:
        return None
