"""Pydantic models of everything we write: records, rejects and the run manifest.

`schemas/` holds their JSON Schemas (`make schemas`) for consumers outside Python.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["conversation", "detail", "complex_reasoning"]
TASKS: tuple[Task, ...] = ("conversation", "detail", "complex_reasoning")
IMAGE_TOKEN = "<image>"

RejectReason = Literal[
    "truncated",  # finish_reason == "length": the teacher ran out of tokens mid-answer
    # Content rules of datagen/checks.py, one reason each (a test checks every rule name is listed here).
    "control_string",  # chat-template tokens such as </s> or USER: that a trainer would mistake for structure
    "image_token_echo",  # '<image>' in teacher text: the record would hold the image token twice
    "refusal",
    "ai_disclaimer",  # "as an AI language model...": talk about itself instead of the picture
    "chat_preamble",  # "Sure! Here's a detailed description:"
    "chat_closing",  # "Let me know if you have other questions!"
    "reveals_text_source",  # mentions captions, descriptions, lists or boxes: the student would learn to hallucinate them
    "box_coordinates",  # numbers only the normalised box corners hold, e.g. "x=0.12" or "(0.12, 0.40, 0.50, 0.90)"
    "incomplete_sentence",  # the answer stops mid-sentence although the teacher said it was done
    "empty",
    "unparseable",
    "wrong_turn_count",
    "request_failed",  # retries exhausted on transient errors
]


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
    """One LLaVA-Instruct-150K / LLaVA-Pretrain record (FORMATS.md sections 4-5)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(min_length=1)
    image: str = Field(min_length=1)
    conversations: list[Turn] = Field(min_length=2)

    @model_validator(mode="after")
    def _llava_rules(self) -> InstructRecord:
        for index, turn in enumerate(self.conversations):
            expected = "human" if index % 2 == 0 else "gpt"
            if turn.speaker != expected:
                raise ValueError(f"turn {index} is from {turn.speaker!r}, expected {expected!r} (turns alternate, human first)")
        if len(self.conversations) % 2:
            raise ValueError("conversation ends on a human turn with no answer")
        first = self.conversations[0].value
        if not (first.startswith(IMAGE_TOKEN + "\n") or first.endswith("\n" + IMAGE_TOKEN)):
            raise ValueError("the first human turn must start with '<image>\\n' or end with '\\n<image>'")
        if sum(turn.value.count(IMAGE_TOKEN) for turn in self.conversations) != 1:
            raise ValueError("'<image>' must appear exactly once, in the first human turn")
        return self


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class TeacherInfo(BaseModel):
    kind: Literal["mock", "openai"]
    model: str
    mock: bool = Field(description="True when the answers come from the offline mock teacher, not a language model")


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


class TaskCounts(BaseModel):
    requested: int = 0
    written: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class SourceStats(BaseModel):
    captions_file: str
    instances_file: str | None
    images: int
    captions: int
    boxes: int
    hard_cases: dict[str, int] = Field(
        description="How often each hard case of real COCO data was met and handled (clipped boxes, duplicates...) "
        "in the selected images"
    )


class Manifest(BaseModel):
    """What a run did and with what; never holds a secret."""

    datagen_version: str
    status: Literal["running", "completed", "interrupted", "failed"]
    command: list[str]
    started_at: str
    finished_at: str | None = None
    teacher: TeacherInfo
    base_url: str | None = Field(default=None, description="Teacher endpoint, credentials stripped")
    settings: dict[str, object]
    fingerprint: str = Field(description="Hash of everything that shapes the requests; a resumed run must match it")
    prompt_hashes: dict[str, str]
    source: SourceStats
    counts: dict[str, TaskCounts]
    usage: Usage
    requests_sent: int = Field(0, description="HTTP requests sent to the teacher by this invocation, retries included")
    cache_hits: int = 0
