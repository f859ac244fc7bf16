"""The run manifest (`manifest.json`): what a generate run did and with what, written by the pipeline, summed by merge."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, model_serializer

from datagen.formats.records import Grounding, TeacherInfo, UsageTotals

MANIFEST_FILE = "manifest.json"


def fingerprint(parts: dict[str, object]) -> str:
    """The hash of everything that shapes a run's requests: a resume, and a merge's shards, must match it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def tally(
    tasks: list[str],
    selected: set[int],
    outcomes: dict[tuple[int, str], str],
    skipped: dict[str, Counter[str]],
    groundings: dict[tuple[int, str], Grounding],
) -> tuple[dict[str, TaskCounts], dict[str, QualityStats]]:
    """Per task, the counts and the grounding quality of the selected images' items.

    `outcomes` maps (image_id, task) to "written" or a reject reason; `skipped` counts per task and reason."""
    counts = {task: TaskCounts(skipped=dict(skipped[task])) for task in tasks}
    for (image_id, task), outcome in outcomes.items():
        if image_id not in selected:
            continue
        if outcome == "written":
            counts[task].written += 1
        else:
            counts[task].rejected[outcome] = counts[task].rejected.get(outcome, 0) + 1
    quality = {task: QualityStats() for task in tasks}
    for (image_id, task), grounding in groundings.items():
        if image_id in selected and task in quality:
            quality[task].add(grounding)
    for task_counts in counts.values():
        task_counts.requested = len(selected)
        # Items neither answered nor skipped for a reason: the run stopped (Ctrl-C, a fatal teacher error) first.
        not_reached = task_counts.requested - task_counts.written - task_counts.rejected_total - task_counts.skipped_total
        if not_reached > 0:
            task_counts.skipped["not_reached"] = not_reached
    return counts, quality


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

    def __add__(self, other: TaskCounts) -> TaskCounts:
        return TaskCounts(
            requested=self.requested + other.requested,
            written=self.written + other.written,
            rejected=dict(Counter(self.rejected) + Counter(other.rejected)),
            skipped=dict(Counter(self.skipped) + Counter(other.skipped)),
        )


class QualityStats(BaseModel):
    """Object hallucination over the written records, as CHAIR (Rohrbach et al. 2018) counts it."""

    records: int = 0
    records_with_unsupported: int = 0
    mentions: int = Field(0, description="Categories mentioned, once per record")
    unsupported_mentions: int = 0

    @computed_field(description="Share of mentioned objects that the image does not show")  # type: ignore[prop-decorator]
    @property
    def chair_i(self) -> float | None:
        return round(self.unsupported_mentions / self.mentions, 4) if self.mentions else None

    @computed_field(description="Share of records that name at least one object the image does not show")  # type: ignore[prop-decorator]
    @property
    def chair_s(self) -> float | None:
        return round(self.records_with_unsupported / self.records, 4) if self.records else None

    def add(self, grounding: Grounding) -> None:
        self.records += 1
        self.records_with_unsupported += bool(grounding.unsupported)
        self.mentions += len(grounding.mentioned)
        self.unsupported_mentions += len(grounding.unsupported)

    def __add__(self, other: QualityStats) -> QualityStats:
        return QualityStats(
            records=self.records + other.records,
            records_with_unsupported=self.records_with_unsupported + other.records_with_unsupported,
            mentions=self.mentions + other.mentions,
            unsupported_mentions=self.unsupported_mentions + other.unsupported_mentions,
        )


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


class RunSettings(BaseModel):
    """How a run was set up, as far as the manifest keeps it; `fingerprint_parts` is what a resume or merge must match."""

    tasks: list[str]
    prompts: str
    concurrency: int
    limit: int | None
    timeout: float
    max_retries: int
    rpm: float | None
    tpm: float | None
    cache: str | None
    sampling: dict[str, Any] = Field(description="The model, temperature, token limit, seed, contexts and request shape of every request")
    fingerprint_parts: dict[str, Any]
    shards: list[dict[str, Any]] | None = Field(None, description="A merged folder's shards: folder, shard i/n and status each")

    @model_serializer(mode="wrap")
    def _omit_shards_when_unmerged(self, handler):
        # An unmerged run's manifest keeps exactly the settings it always had: no null `shards`.
        data = handler(self)
        if data.get("shards") is None:
            data.pop("shards", None)
        return data


class Manifest(BaseModel):
    """What a run did and with what; never holds a secret."""

    datagen_version: str
    status: Literal["running", "completed", "incomplete", "interrupted", "failed"] = Field(
        description="completed: the whole selection gone through, written, rejected or skipped with a reason (exit 0);"
        " incomplete: done, but some items got no answer (request_failed) and a rerun does them (exit 3);"
        " failed: stopped or nothing written (exit 1, 2 for bad input); interrupted: Ctrl-C (exit 130)"
    )
    command: list[str]
    started_at: str
    finished_at: str | None = None
    teacher: TeacherInfo
    base_url: str | None = Field(default=None, description="Teacher endpoint, credentials stripped")
    settings: RunSettings
    fingerprint: str = Field(description="Hash of everything that shapes the requests; a resumed run must match it")
    prompt_hashes: dict[str, str]
    source: SourceStats
    counts: dict[str, TaskCounts]
    quality: dict[str, QualityStats] = Field(
        default_factory=dict, description="Per task: objects named by the written records and not shown by the annotations"
    )
    usage: UsageTotals
    requests_sent: int = Field(0, description="HTTP requests sent to the teacher by this invocation, retries included")
    cache_hits: int = 0
    last_error: str | None = Field(None, description="The teacher's last error message (one line), when a request failed")
    failure: str | None = Field(None, description="Why the run failed (status failed) or is incomplete, in one line")
    structured_reasks: dict[str, int] | None = Field(
        None, description="generate --structured only: per task, replies not in the task's JSON schema that were asked once more (this invocation)"
    )

    @model_serializer(mode="wrap")
    def _omit_structured_when_off(self, handler):
        # A run without --structured keeps exactly the manifest it always had: no null `structured_reasks`.
        data = handler(self)
        if data.get("structured_reasks") is None:
            data.pop("structured_reasks", None)
        return data
