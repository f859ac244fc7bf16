"""The task types: one `TaskSpec` per task, registered here; everything that handles tasks iterates over `TASKS`.

A new task is one `register(TaskSpec(...))` call and a prompt folder: the CLI's choices, the pipeline, `--force`,
merge, export, the dataset card, the report and audit all read the registry. The mock teacher needs nothing:
like a real teacher it answers in the format of the pack's few-shot answers (prose, or Question/Answer blocks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from datagen.source.context import ContextKind
from datagen.quality.parse import Content, Rejected, parse_prose, parse_qa_answer, parse_qa_pairs
from datagen.quality.reply_checks import Examples, examples_from
from datagen.tasks.prompts import PromptPack, load_pack
from datagen.formats.records import task_file
from datagen.tasks.grounded import Planner, plan_absent_objects, plan_counting, plan_referring, plan_spatial


class ResponseFormat(StrEnum):
    """What the teacher is asked to write, which fixes how its answer is parsed and how the record is built."""

    PROSE = "prose"  # paragraphs; the record's question is drawn from the spec's instruction list
    QA_PAIRS = "qa_pairs"  # `Question:`/`Answer:` blocks; the record's turns are the teacher's pairs


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a task name is also a file name (`<task>.jsonl`) and a flag value


@dataclass(frozen=True)
class TaskSpec:
    name: str
    prompt_folders: tuple[str, ...]  # sub-folders of a prompt root that may hold the pack, first found wins
    default_context: ContextKind
    response: ResponseFormat
    pairs: int | None = None  # QA_PAIRS: exactly this many pairs, any number (one or more) when None
    instructions: str | None = None  # PROSE: the instruction list (prompts/instructions/<name>.txt) questions come from
    # A grounded task (datagen/tasks/grounded.py): our code plans its questions from the boxes, and checks each answer.
    planner: Planner | None = None
    boxes_in_text: bool = False  # its questions and answers hold [x1, y1, x2, y2] boxes by design (referring)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"task name {self.name!r}: use lower-case letters, digits and _ (it names a file and a flag value)")
        if (self.response is ResponseFormat.PROSE) != (self.instructions is not None):
            raise ValueError(f"task {self.name}: a prose task names its instruction list, a Question/Answer task none")

    @property
    def file_name(self) -> str:
        return task_file(self.name)

    def load_pack(self, root: Path, vision: bool = False) -> PromptPack:
        return load_pack(root, self.name, self.prompt_folders, vision)

    def examples(self, pack: PromptPack) -> Examples:
        """The parts of the pack's few-shot answers a reply must not copy: each question and answer of a
        Question/Answer example (a whole example that does not parse as one counts as a single part), or each
        description and its paragraphs."""
        parts: list[tuple[str, str]] = []
        for number, shot in enumerate(pack.shots, 1):
            if self.response is ResponseFormat.QA_PAIRS:
                try:
                    pairs = parse_qa_pairs(shot.response)
                except Rejected:
                    parts.append((f"example {number}", shot.response))
                    continue
                for turn, (question, answer) in enumerate(pairs, 1):
                    parts += [(f"example {number}, question {turn}", question), (f"example {number}, answer {turn}", answer)]
            else:
                parts.append((f"example {number}", shot.response))
                paragraphs = [paragraph for paragraph in shot.response.split("\n\n") if paragraph.strip()]
                if len(paragraphs) > 1:
                    parts += [(f"example {number}, paragraph {index}", paragraph) for index, paragraph in enumerate(paragraphs, 1)]
        return examples_from(tuple(parts))

    def parse(self, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> Content:
        """The validated content of an answer, or `Rejected` with the reason; `see` and `examples` as in
        datagen/quality/parse.py."""
        if self.response is ResponseFormat.PROSE:
            return parse_prose(self.name, text, finish_reason, see, examples)
        return parse_qa_answer(self.name, text, finish_reason, self.pairs, see, examples, self.boxes_in_text)


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered already")
    TASKS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """For a test (or a plugin) that registered a task only for a while."""
    del TASKS[name]


def task_spec(name: str) -> TaskSpec:
    return TASKS[name]


def parse_answer(task: str, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> Content:
    return TASKS[task].parse(text, finish_reason, see, examples)


# LLaVA-Instruct-150K's three tasks. LLaVA generated conversations from captions alone, the other two from
# captions and boxes; its prompt folder for the detail task is called detail_description, accepted as is.
register(TaskSpec("conversation", ("conversation",), "captions", ResponseFormat.QA_PAIRS))
register(TaskSpec("detail", ("detail", "detail_description"), "captions+boxes", ResponseFormat.PROSE, instructions="detail"))
register(TaskSpec("complex_reasoning", ("complex_reasoning",), "captions+boxes", ResponseFormat.QA_PAIRS, pairs=1))
# What `generate`, `export` and `compare` do when --tasks is not given: LLaVA-Instruct-150K's tasks, as before.
DEFAULT_TASKS: tuple[str, ...] = tuple(TASKS)

# Grounded tasks (issue 31): questions whose answers the boxes decide, each checked exactly. Pairs per record: as
# many as the plan holds. Only on request (--tasks).
register(TaskSpec("counting", ("counting",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_counting))
register(TaskSpec("spatial", ("spatial",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_spatial))
register(TaskSpec("absent_objects", ("absent_objects",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_absent_objects))
register(
    TaskSpec(
        "referring", ("referring",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_referring, boxes_in_text=True
    )
)
