"""The run manifest (`manifest.json`): what a generate run did and with what, written by the pipeline, summed by merge."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, model_serializer, model_validator

from datagen.errors import InputError
from datagen.files.jsonl import write_json_atomic
from datagen.formats.metrics import METRICS, metrics_model
from datagen.formats.records import Grounding, TeacherInfo, UsageTotals

MANIFEST_FILE = "manifest.json"


def fingerprint(parts: dict[str, object]) -> str:
    """The hash of everything that shapes a run's requests: a resume, and a merge's shards, must match it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


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
    samples_per_image: int = Field(1, description="Items per image of each whole-image task (generate --samples-per-image)")

    @model_serializer(mode="wrap")
    def _omit_shards_when_unmerged(self, handler):
        # An unmerged run of one item per image keeps exactly the settings it always had: no null `shards`, no 1.
        data = handler(self)
        if data.get("shards") is None:
            data.pop("shards", None)
        if data.get("samples_per_image") == 1:
            data.pop("samples_per_image", None)
        return data


class ExcludedImages(BaseModel):
    """`generate --exclude-images`: images kept out of the run (eval images, most often), matched by COCO id."""

    sources: list[str] = Field(description="The exclusion files, as named on the command line")
    listed: int = Field(description="Distinct COCO image ids the files name")
    list_sha256: str = Field(description="sha256 of the sorted ids, one per line: the same list gives the same hash")
    excluded: int = Field(description="Images of the source dropped because a file names them")


class ImageSelection(BaseModel):
    """`generate --select coverage --budget N`: the images picked before any request, deterministic per seed."""

    method: Literal["coverage"]
    budget: int
    seed: int
    candidates: int = Field(description="Images there were to choose from (after any exclusion)")
    chosen: int
    per_category_cap: int = Field(description="At most this many chosen images were picked for any one category")
    categories_before: dict[str, int] = Field(description="Images per COCO category among the candidates")
    categories_after: dict[str, int] = Field(description="Images per COCO category among the chosen")


class CurationStep(BaseModel):
    """One command run over the finished folder (`datagen dedup`, `datagen filter`): what it moved to rejects."""

    step: Literal["dedup", "filter"]
    command: list[str]
    finished_at: str
    settings: dict[str, Any]
    examined: int = Field(description="Records looked at")
    moved: dict[str, int] = Field(description="Records moved to rejects.jsonl, per task")


class Curation(BaseModel):
    """What was done to the data besides generating it, in order: before (excluded, selected) and after (steps)."""

    excluded: ExcludedImages | None = None
    selection: ImageSelection | None = None
    steps: list[CurationStep] = Field(default_factory=list)

    @staticmethod
    def merged(parts: list[Curation | None]) -> Curation | None:
        """Shards' curation as one: exclusion and selection are worked out over the whole source, so every shard
        holds the same; each shard's dedup and filter steps are kept, in shard order (their commands name the shard)."""
        present = [part for part in parts if part is not None]
        if not present:
            return None
        return present[0].model_copy(update={"steps": [step for part in present for step in part.steps]})


def curation_steps(folder: Path) -> list[CurationStep]:
    """The after-generation steps `folder`'s manifest already records, so that a rerun of generate into it keeps them."""
    try:
        steps = ((manifest_or_none(folder) or {}).get("curation") or {}).get("steps") or []
        return [CurationStep.model_validate(step) for step in steps]
    except (AttributeError, ValueError):
        return []


def _document_metrics(schema: dict[str, Any]) -> None:
    """The manifest's schema lists each metric as the field it is in the file."""
    schema.pop("additionalProperties", None)
    schema["properties"].update(metrics_model().model_json_schema()["properties"])


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
    # Then the run's metrics (formats/metrics.py), kept as the model's extras under their names: see `_metrics`.
    last_error: str | None = Field(None, description="The teacher's last error message (one line), when a request failed")
    failure: str | None = Field(None, description="Why the run failed (status failed) or is incomplete, in one line")
    curation: Curation | None = Field(
        None, description="Images excluded and selected before generating; dedup and filter steps after (absent when none)"
    )

    # The metrics are declared in one place (METRICS), not here: extras, validated and documented as fields would be.
    model_config = ConfigDict(extra="allow", json_schema_extra=_document_metrics)

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics by name, as METRICS declares them."""
        return self.model_extra or {}

    @model_validator(mode="before")
    @classmethod
    def _metrics(cls, data: Any) -> Any:
        # Other keys are ignored, as for any model; each declared metric is checked, and takes its default when absent.
        if not isinstance(data, dict):
            return data
        given = {name: data[name] for name in METRICS if name in data}
        try:
            metrics = metrics_model().model_validate(given)
        except ValidationError as error:
            problem = error.errors()[0]
            raise ValueError(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None
        return {**{key: value for key, value in data.items() if key in cls.model_fields}, **dict(metrics)}

    @model_serializer(mode="wrap")
    def _omit_unused_fields(self, handler):
        # A run nobody curated, or run without a metric's setting (--structured), keeps exactly the manifest it
        # always had: no nulls. Metrics every run keeps follow `usage`, where requests_sent and cache_hits always
        # were; one that only some runs keep (only_with) ends the file.
        data = handler(self)
        if data.get("curation") is None:
            data.pop("curation", None)
        metrics = {name: data.pop(name) for name in METRICS if name in data}
        every_run = {name: value for name, value in metrics.items() if METRICS[name].only_with is None}
        some_runs = {name: value for name, value in metrics.items() if METRICS[name].only_with is not None and value is not None}
        items = list(data.items())
        at = [key for key, _ in items].index("usage") + 1 if "usage" in data else len(items)
        return {**dict(items[:at]), **every_run, **dict(items[at:]), **some_runs}


# The fixes a refused manifest's line ends with: the folder is not a run's, or the run's record of itself is damaged.
def _pass_a_run(command: str) -> str:
    return f"pass the --out folder of a `datagen generate` or `datagen merge` run to `datagen {command}`"


def _rebuild(folder: Path) -> str:
    return f"restore it from a copy, or rerun `datagen generate` into {folder} with --force"


def read_run_manifest(folder: Path, command: str) -> dict[str, Any]:
    """`folder`'s manifest as plain JSON, whatever datagen version wrote it (newer fields included), for the
    commands that take what they need of it: a JSON object with `counts` per task. A folder that is not there,
    holds no manifest, or holds one that is not that, is an InputError of one line naming the folder or file,
    what is wrong, and the fix `datagen command` needs."""
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise InputError(f"{folder}: {'not a folder' if folder.exists() else 'not found'}; {_pass_a_run(command)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{folder}: holds no {MANIFEST_FILE}; {_pass_a_run(command)}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror}); {_pass_a_run(command)}") from None
    try:
        manifest = json.loads(data)
    except ValueError as error:  # UnicodeDecodeError included
        raise InputError(f"{path}: not valid JSON ({error}); {_rebuild(folder)}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts"), dict):
        raise InputError(f"{path}: not a datagen manifest (no `counts` per task); {_pass_a_run(command)}")
    return manifest


def load_run_manifest(folder: Path, command: str) -> Manifest:
    """`folder`'s manifest as this version's model, for the commands that rewrite it or sum it (dedup, filter,
    merge); refused as read_run_manifest refuses, and in one line when this version cannot read it."""
    manifest = read_run_manifest(folder, command)
    try:
        return Manifest.model_validate(manifest)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the manifest"
        raise InputError(f"{folder / MANIFEST_FILE}: not a datagen manifest ({where}: {first['msg']}); {_rebuild(folder)}") from None


def manifest_or_none(folder: Path) -> dict | None:
    """`folder`'s manifest as a JSON object, or None where there is none to read."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace `folder`'s manifest whole, so a kill leaves the old one or the new one."""
    write_json_atomic(folder / MANIFEST_FILE, manifest.model_dump(mode="json"))
