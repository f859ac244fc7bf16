"""The two forms a teacher's reply takes, as objects a task holds: how the reply is parsed, which parts of the
pack's few-shot answers it must not copy, how the parsed reply becomes a record's turns, and what a judge reads
of a written record.

- `Prose`: plain paragraphs (a description); the record's question is drawn from an instruction list.
- `QuestionAnswer`: `Question:`/`Answer:` blocks; the record's turns are the teacher's pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from datagen.formats.records import IMAGE_TOKEN
from datagen.quality.parse import Content, Rejected, parse_prose, parse_qa_answer, parse_qa_pairs
from datagen.quality.reply_checks import Examples
from datagen.tasks.prompts import InstructionList, PromptPack


class ResponseFormat(StrEnum):
    """The name of a form; its value is what the content checks (quality/checks.py) are told."""

    PROSE = "prose"
    QA_PAIRS = "qa_pairs"


def transcript(conversations: list[dict]) -> str:
    """A record's turns as a judge reads them; the `<image>` marker is ours, not the teacher's, so it goes."""
    lines = []
    for turn in conversations:
        value = turn["value"].replace(IMAGE_TOKEN, "").strip()
        lines.append(("User: " if turn["from"] == "human" else "Assistant: ") + value)
    return "\n".join(lines)


@dataclass(frozen=True)
class Prose:
    instructions: str  # the instruction list (prompts/instructions/<name>.txt) a record's question is drawn from

    format = ResponseFormat.PROSE

    def parse(self, task: str, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> Content:
        return parse_prose(task, text, finish_reason, see, examples)

    def example_parts(self, pack: PromptPack) -> list[tuple[str, str]]:
        """Each example description, and each of its paragraphs when it has several."""
        parts: list[tuple[str, str]] = []
        for number, shot in enumerate(pack.shots, 1):
            parts.append((f"example {number}", shot.response))
            paragraphs = [paragraph for paragraph in shot.response.split("\n\n") if paragraph.strip()]
            if len(paragraphs) > 1:
                parts += [(f"example {number}, paragraph {index}", paragraph) for index, paragraph in enumerate(paragraphs, 1)]
        return parts

    def pairs(self, task: str, content: Content, instructions: InstructionList | None, rng: random.Random) -> list[tuple[str, str]]:
        if not isinstance(content, str) or instructions is None:
            raise ValueError(f"task {task}: a prose answer needs the instruction list its question is drawn from")
        return [(rng.choice(instructions.lines), content)]

    def judged_text(self, conversations: list[dict]) -> str:
        # The description is the teacher's work; the instruction before it was drawn from our list.
        return conversations[1]["value"].strip()


@dataclass(frozen=True)
class QuestionAnswer:
    exact_pairs: int | None = None  # exactly this many pairs, any number (one or more) when None
    boxes_in_text: bool = False  # [x1, y1, x2, y2] boxes are the content (referring), not a leak of the context's corners

    format = ResponseFormat.QA_PAIRS

    def parse(self, task: str, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> Content:
        return parse_qa_answer(task, text, finish_reason, self.exact_pairs, see, examples, self.boxes_in_text)

    def example_parts(self, pack: PromptPack) -> list[tuple[str, str]]:
        """Each question and answer of an example (a whole example that does not parse counts as a single part)."""
        parts: list[tuple[str, str]] = []
        for number, shot in enumerate(pack.shots, 1):
            try:
                pairs = parse_qa_pairs(shot.response)
            except Rejected:
                parts.append((f"example {number}", shot.response))
                continue
            for turn, (question, answer) in enumerate(pairs, 1):
                parts += [(f"example {number}, question {turn}", question), (f"example {number}, answer {turn}", answer)]
        return parts

    def pairs(self, task: str, content: Content, instructions: InstructionList | None, rng: random.Random) -> list[tuple[str, str]]:
        if isinstance(content, str):
            raise ValueError(f"task {task}: a Question/Answer reply parses to pairs, not prose")
        return content

    def judged_text(self, conversations: list[dict]) -> str:
        return transcript(conversations)


ResponseForm = Prose | QuestionAnswer
