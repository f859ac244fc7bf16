"""The task types: one `TaskSpec` per task, registered here; everything that handles tasks iterates over `TASKS`.

A new task is one `register(TaskSpec(...))` call and a prompt folder: the CLI's choices, the pipeline, `--force`,
merge, export, the judge, the dataset card, the report and audit all read the registry. The mock teacher needs
nothing: like a real teacher it answers in the format of the pack's few-shot answers (prose, or Question/Answer blocks).

A task owns its items: `items` says which an image yields (a whole-image task: one per sample), each named by an
`ItemKey`, from which its record id, its seeds (run/items.py) and its Batch custom_id (run/batch.py) follow. A
task with several items per image (one per box, say) overrides `items` in a subclass and reads `key.nth`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from datagen.source.coco import ImageAnnotations
from datagen.source.context import ContextKind
from datagen.quality.parse import Content
from datagen.quality.reply_checks import Examples, examples_from
from datagen.tasks.forms import Prose, QuestionAnswer, ResponseForm, ResponseFormat
from datagen.tasks.prompts import PromptPack, load_pack
from datagen.formats.records import record_id, task_file
from datagen.tasks.grounded import Planner, plan_absent_objects, plan_counting, plan_referring, plan_spatial

__all__ = ["DEFAULT_TASKS", "TASKS", "ItemKey", "ResponseFormat", "TaskSpec", "parse_answer", "register", "task_spec", "unregister"]


class ItemKey(NamedTuple):
    """One item of a run: an image, a task, and which of the task's items of that image it is (`nth`, 0 for the first)."""

    image_id: int
    task: str
    nth: int = 0

    @property
    def label(self) -> str:
        """The task, and the index when not 0: `detail`, `detail#2`. Names the item in Batch custom_ids."""
        return self.task if self.nth == 0 else f"{self.task}#{self.nth}"

    @classmethod
    def of_record(cls, image_id: int, task: str, record_id: object) -> ItemKey:
        """The item a written record or reject is of: its id names it (TaskSpec.record_id); any other id, the first."""
        _, dash, nth = str(record_id).partition("-")
        return cls(image_id, task, int(nth) if dash and nth.isdigit() else 0)

    @classmethod
    def from_label(cls, image_id: int, label: str) -> ItemKey:
        task, _, index = label.partition("#")
        return cls(image_id, task, int(index) if index else 0)


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a task name is also a file name (`<task>.jsonl`) and a flag value


@dataclass(frozen=True)
class TaskSpec:
    name: str
    prompt_folders: tuple[str, ...]  # sub-folders of a prompt root that may hold the pack, first found wins
    default_context: ContextKind
    response: ResponseFormat
    pairs: int | None = None  # QA_PAIRS: exactly this many pairs, any number (one or more) when None
    instructions: str | None = None  # PROSE: the instruction list (prompts/instructions/<name>.txt) questions come from
    # What the judge is told the teacher was asked, and what to rate (datagen judge A_DIR B_DIR); a generic line if None.
    judge_request: str | None = None
    # A grounded task (datagen/tasks/grounded.py): our code plans its questions from the boxes, and checks each answer.
    planner: Planner | None = None
    boxes_in_text: bool = False  # its questions and answers hold [x1, y1, x2, y2] boxes by design (referring)
    form: ResponseForm = field(init=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"task name {self.name!r}: use lower-case letters, digits and _ (it names a file and a flag value)")
        if (self.response is ResponseFormat.PROSE) != (self.instructions is not None):
            raise ValueError(f"task {self.name}: a prose task names its instruction list, a Question/Answer task none")
        form = Prose(self.instructions) if self.instructions is not None else QuestionAnswer(self.pairs, self.boxes_in_text)
        object.__setattr__(self, "form", form)  # frozen: set once, from the fields it follows

    def items(self, image: ImageAnnotations, samples: int = 1) -> list[ItemKey]:
        """The items an image yields: for a whole-image task, one per sample (generate --samples-per-image)."""
        return [ItemKey(image.image_id, self.name, nth) for nth in range(samples)]

    def record_id(self, key: ItemKey) -> str:
        """The first item of an image keeps LLaVA's id (the zero-padded image id); later ones add their index."""
        return record_id(key.image_id) if key.nth == 0 else f"{record_id(key.image_id)}-{key.nth}"

    def judge_question(self) -> str:
        if self.judge_request is not None:
            return self.judge_request
        what = "description" if self.form.format is ResponseFormat.PROSE else "question-and-answer record"
        return (
            f"Write a {self.name.replace('_', ' ')} {what} for this image, as its prompt pack asks. Rate each as training data:"
            " is it right for this image, useful and well written?"
        )

    def judged_text(self, record: dict) -> str:
        """What a judge reads of a written record of this task."""
        return self.form.judged_text(record["conversations"])

    @property
    def file_name(self) -> str:
        return task_file(self.name)

    def load_pack(self, root: Path, vision: bool = False) -> PromptPack:
        return load_pack(root, self.name, self.prompt_folders, vision)

    def examples(self, pack: PromptPack) -> Examples:
        """The parts of the pack's few-shot answers a reply must not copy (the form says which)."""
        return examples_from(tuple(self.form.example_parts(pack)))

    def parse(self, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> Content:
        """The validated content of an answer, or `Rejected` with the reason; `see` and `examples` as in
        datagen/quality/parse.py."""
        return self.form.parse(self.name, text, finish_reason, see, examples)


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
# The teachers write the questions too, so two teachers' records for one image answer different questions: the judge
# rates a record whole, as training data, against the request the teacher was given.
register(
    TaskSpec(
        "conversation", ("conversation",), "captions", ResponseFormat.QA_PAIRS,
        judge_request=(
            "Write a conversation about this image: a person asks several questions and an assistant who can see the image "
            "answers them. Rate each conversation as a whole, as training data: are the answers right for this image, are the "
            "questions worth asking, and does it read naturally?"
        ),
    )
)
register(
    TaskSpec(
        "detail", ("detail", "detail_description"), "captions+boxes", ResponseFormat.PROSE, instructions="detail",
        judge_request="Describe this image in detail. Rate each description: is it right for this image, complete and well organised?",
    )
)
register(
    TaskSpec(
        "complex_reasoning", ("complex_reasoning",), "captions+boxes", ResponseFormat.QA_PAIRS, pairs=1,
        judge_request=(
            "Ask one question about this image that needs reasoning beyond listing what is visible, and answer it. Rate each "
            "question-and-answer pair: is the reasoning sound, and grounded in what the image shows?"
        ),
    )
)
# What `generate`, `export` and `compare` do when --tasks is not given: LLaVA-Instruct-150K's tasks, as before.
DEFAULT_TASKS: tuple[str, ...] = tuple(TASKS)

# Grounded tasks (issue 31): questions whose answers the boxes decide, each checked exactly. Pairs per record: as
# many as the plan holds. Only on request (--tasks). The judge is told the facts were given, so it rates the wording.
register(
    TaskSpec(
        "counting", ("counting",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_counting,
        judge_request=(
            "Ask how many of certain objects this image holds, and answer with the counts given. Rate each set of questions"
            " and answers as training data: are the counts right for this image, and do the questions and answers read naturally?"
        ),
    )
)
register(
    TaskSpec(
        "spatial", ("spatial",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_spatial,
        judge_request=(
            "Ask where one object in this image lies relative to another (left or right, above or below, as the viewer sees"
            " it), and answer. Rate each set as training data: are the relations right for this image, and clearly put?"
        ),
    )
)
register(
    TaskSpec(
        "absent_objects", ("absent_objects",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_absent_objects,
        judge_request=(
            "Ask whether certain objects are in this image, some present and some absent, and answer yes or no. Rate each set"
            " as training data: are the answers right for this image, and do they avoid claiming what is not there?"
        ),
    )
)
register(
    TaskSpec(
        "referring", ("referring",), "captions+boxes", ResponseFormat.QA_PAIRS, planner=plan_referring, boxes_in_text=True,
        judge_request=(
            "Ask what a region [x1, y1, x2, y2] of this image (corners as fractions of its size) holds, and where an object is,"
            " answered with such a region. Rate each set as training data: do the regions and objects match this image?"
        ),
    )
)
