"""Pydantic models of the records and rejects we write, and LLaVA's record rules; the run manifest is in manifest.py.

`schemas/` holds their JSON Schemas (`make schemas`) for consumers outside Python.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

# A registered task's name (datagen/tasks/registry.py holds the registry); it also names the task's file, `<task>.jsonl`.
Task = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
IMAGE_TOKEN = "<image>"

RejectReason = Literal[
    "truncated",  # finish_reason == "length": the teacher ran out of tokens mid-answer
    "content_filter",  # finish_reason == "content_filter": the server cut or withheld the answer
    "unfinished",  # any other finish_reason that is not a natural end (tool_calls, ...); the detail names it
    # Content rules of datagen/quality/checks.py, one reason each (a test checks every rule name is listed here).
    "control_string",  # chat-template tokens such as </s> or USER: that a trainer would mistake for structure
    "image_token_echo",  # '<image>' in teacher text: the record would hold the image token twice
    "refusal",  # a refusal in the text, or a structured one (`refusal` set, `content` null)
    "ai_disclaimer",  # "as an AI language model...": talk about itself instead of the picture
    "chat_preamble",  # "Sure! Here's a detailed description:"
    "chat_closing",  # "Let me know if you have other questions!"
    "reveals_text_source",  # mentions captions, descriptions, lists or boxes: the student would learn to hallucinate them
    "box_coordinates",  # numbers only the normalised box corners hold, e.g. "x=0.12" or "(0.12, 0.40, 0.50, 0.90)"
    "incomplete_sentence",  # the answer stops mid-sentence although the teacher said it was done
    # Whole-reply rules of datagen/quality/reply_checks.py, for the ways weak open models fail.
    "repetition",  # a sentence or a long run of words said twice, or the same question or answer in two turns
    "copied_example",  # reproduces most of a few-shot example of the prompt pack it was asked with
    "empty",
    "unparseable",
    "wrong_turn_count",
    "oversized_reply",  # a reply body over --max-reply-bytes, or an answer far longer than --max-tokens can produce
    "request_refused",  # the server refused this one request (HTTP 400 context length, 413...) after the probe succeeded
    # names more objects the image lacks than it shows, people shown aside (at least two named: a record about another
    # image), or, with --reject-unsupported,
    # any object neither the boxes nor the captions show
    "unsupported_object",
    # Grounded tasks (datagen/tasks/grounded.py): an answer checked against the fact the boxes decide.
    "wrong_count",  # states another number of the category than its boxes
    "wrong_relation",  # puts the object on the other side of (or above/below) the reference object
    "wrong_presence",  # says yes about an absent object, or no about a present one
    "wrong_box",  # gives a box overlapping the object's by IoU < 0.5
    "wrong_object",  # names something else than the object in the region asked about
    "unclear_answer",  # states no number, relation, yes/no or box the check can read
    "off_plan_question",  # a question that does not ask about the planned object or region
    # Curation after generating (datagen/curate/): a written record moved here, never deleted.
    "near_duplicate",  # `datagen dedup`: its question or answer repeats an earlier record's (named in duplicate_of)
    "judge_score",  # `datagen filter`: a judge model scored it under --min-score (meta.judge holds the scores)
]

# Why an item was left for a later run: counted in the manifest's `skipped`, written nowhere, asked again by a rerun.
# A reject (above) is final and has a line in rejects.jsonl; a skip is not.
SkipReason = Literal[
    "request_failed",  # retries exhausted on transient errors (429, 5xx, timeouts)
    "no_usable_caption",  # the image has no caption left after cleaning: nothing to show the teacher
    "not_reached",  # the run stopped (Ctrl-C, a fatal teacher error) before it got to the item
    "batch_failed",  # --batch: the batch ended (completed or failed) without an answer for it
    "batch_expired",
    "batch_cancelled",
    "batch_unanswered",  # --batch: no batch could be asked for it
    "not_in_results",  # --results-in: the results file holds no line for its request
    "image_missing",  # --see image|both: the image file is not in --images
    "image_unreadable",  # --see image|both: the file cannot be decoded as an image, or claims more pixels than a photo has
    "image_outside_folder",  # --see image|both: the captions file names a path outside --images (never read)
    "unaskable",  # a grounded task found nothing the boxes decide (only crowd or tiny boxes, no clear relation, ...)
]


# LLaVA's speakers as chat roles, for the trainer and the `messages` export.
CHAT_ROLES = {"human": "user", "gpt": "assistant"}


def check_llava_turns(turns: list[tuple[str, str]], has_image: bool = True) -> None:
    """LLaVA's record rules over (speaker, value) turns, shared by the records we write and the
    records the trainer reads; a ValueError names the first one broken."""
    if len(turns) < 2:
        raise ValueError("a record needs at least one human turn and its answer")
    for index, (speaker, value) in enumerate(turns):
        expected = "human" if index % 2 == 0 else "gpt"
        if speaker != expected:
            raise ValueError(f"turn {index} is from {speaker!r}, expected {expected!r} (turns alternate, human first)")
        if not value.strip():
            raise ValueError(f"turn {index} is blank")
        if index > 0 and IMAGE_TOKEN in value:
            raise ValueError(f"{IMAGE_TOKEN!r} may appear only in the first human turn")
    if len(turns) % 2:
        raise ValueError("conversation ends on a human turn with no answer")
    count = turns[0][1].count(IMAGE_TOKEN)
    if has_image and count != 1:
        raise ValueError(f"{IMAGE_TOKEN!r} must appear exactly once, in the first human turn")
    if not has_image and count:
        raise ValueError(f"{IMAGE_TOKEN!r} in a record without an image")


def place_image_token(question: str, rng: random.Random) -> str:
    # About half each way, as in LLaVA's data, so the student does not learn one position.
    return f"{IMAGE_TOKEN}\n{question}" if rng.random() < 0.5 else f"{question}\n{IMAGE_TOKEN}"


def task_file(task: str) -> str:
    """The output folder's file of one task's records."""
    return f"{task}.jsonl"


def record_id(image_id: int) -> str:
    return f"{image_id:012d}"


class Turn(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    speaker: Literal["human", "gpt"] = Field(alias="from")
    value: str = Field(min_length=1)

    @field_validator("value")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("turn value is blank")
        return value


class InstructRecord(BaseModel):
    """One LLaVA-Instruct-150K / LLaVA-Pretrain record: id, image file name, alternating human/gpt turns with
    `<image>` once in the first."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(min_length=1)
    image: str = Field(min_length=1)
    conversations: list[Turn] = Field(min_length=2)

    @model_validator(mode="after")
    def _llava_rules(self) -> InstructRecord:
        check_llava_turns([(turn.speaker, turn.value) for turn in self.conversations])
        # What we write also keeps LLaVA's two placements (place_image_token), which the trainer does not insist on.
        first = self.conversations[0].value
        if not (first.startswith(IMAGE_TOKEN + "\n") or first.endswith("\n" + IMAGE_TOKEN)):
            raise ValueError("the first human turn must start with '<image>\\n' or end with '\\n<image>'")
        return self


class Usage(BaseModel):
    """One answer's tokens as the server reported them; None where it reported nothing (unknown, not zero)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = Field(None, description="Prompt tokens the server served from its prompt cache (usage.prompt_tokens_details)")


class UsageTotals(BaseModel):
    """Tokens summed over answers; answers without reported usage are counted, not summed as zeros."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    unreported: int = Field(0, description="Answers whose server reported no token usage; their tokens are not in the sums")

    def __add__(self, other: Usage | UsageTotals) -> UsageTotals:
        if isinstance(other, UsageTotals):
            return UsageTotals(**{name: getattr(self, name) + getattr(other, name) for name in UsageTotals.model_fields})
        return UsageTotals(
            prompt_tokens=self.prompt_tokens + (other.prompt_tokens or 0),
            completion_tokens=self.completion_tokens + (other.completion_tokens or 0),
            cached_tokens=self.cached_tokens + (other.cached_tokens or 0),
            unreported=self.unreported + (other.prompt_tokens is None or other.completion_tokens is None),
        )


class TeacherInfo(BaseModel):
    # The backends are listed where they are built (datagen/teachers/factory.py), not again here.
    kind: str = Field(description="The teacher backend: openai, azure, or mock for an offline one")
    model: str
    mock: bool = Field(description="True when the answers come from the offline mock teacher, not a language model")


class Grounding(BaseModel):
    """The COCO categories a record's answers claim, and those the image's boxes and captions do not show."""

    mentioned: list[str]
    unsupported: list[str]


class JudgeScore(BaseModel):
    """A judge model's 1-10 scores of one record against its image's annotations (`datagen filter`)."""

    model: str
    accuracy: float | None = Field(description="Agreement with the captions and boxes; None when the reply held no score")
    helpfulness: float | None
    detail: float | None
    score: float | None = Field(description="The mean of the three, compared with --min-score")
    rules_sha256: str = Field(description="Hash of the rule pack the judge was given")


class RecordMeta(BaseModel):
    """Provenance; `datagen export` drops it unless asked to keep it."""

    task: Task
    teacher: TeacherInfo
    prompt_hash: str
    image_id: int
    caption_ids: list[int]
    box_ids: list[int]
    usage: Usage
    request_key: str = Field(description="Hash of the exact request; the response cache key")
    finish_reason: str | None = Field(None, description="Why the teacher stopped, as the server said (stop, length, content_filter...)")
    grounding: Grounding | None = Field(default=None, description="Objects the answers name, checked against the annotations")
    see: Literal["image", "both"] | None = Field(
        None, description="What a vision teacher was shown besides the prompt (generate --see); absent for text-only runs"
    )
    image_sha256: str | None = Field(None, description="sha256 of the JPEG the teacher was shown (generate --see image|both)")
    judge: JudgeScore | None = Field(None, description="`datagen filter`: the judge model's scores of this record")

    @model_serializer(mode="wrap")
    def _omit_vision_when_unused(self, handler):
        # Text-only runs write exactly the meta they always did: no null vision (or judge) fields.
        data = handler(self)
        for name in ("see", "image_sha256", "judge"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class GeneratedRecord(InstructRecord):
    meta: RecordMeta


class Reject(BaseModel):
    """An answer we refused, kept with the reason and the raw text so prompts and rules can be tuned."""

    id: str
    image: str
    task: Task
    reason: RejectReason
    detail: str
    raw: str
    finish_reason: str | None = None
    meta: RecordMeta
    duplicate_of: str | None = Field(None, description="near_duplicate: `task/id` of the earlier record it repeats")

    @model_serializer(mode="wrap")
    def _omit_duplicate_of_when_unset(self, handler):
        # Rejects of generate keep exactly the fields they always had.
        data = handler(self)
        if data.get("duplicate_of") is None:
            data.pop("duplicate_of", None)
        return data
