"""The Python API: `datagen`'s commands as functions over the settings tree, for notebooks and pipelines.

    from datagen import GenerateSettings, generate
    result = generate(GenerateSettings(captions="captions.json", instances="instances.json", out="run", teacher="mock"))

Each function takes the settings model its command's flags are built from (datagen/run/options.py), runs the same
code as the command, and returns a result with counts and paths. Bad input raises InputError (the message the
command would print), a teacher that cannot be used raises TeacherFatalError, a run that ends without records
raises RunFailed; nothing calls sys.exit. Rerunning a call into the same `out` resumes, as the command does.
Heavy modules load inside the functions, so `import datagen` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from datagen.errors import InputError, RunFailed, TeacherFatalError
from datagen.formats.manifest import Curation, TaskCounts
from datagen.run.options import AuditSettings, ExportSettings, GenerateSettings, JudgeSettings

__all__ = [
    "GenerateSettings", "generate", "GenerateResult", "ExportSettings", "export", "ExportResult",
    "AuditSettings", "audit", "AuditResult", "JudgeSettings", "judge_answers", "JudgeResult",
    "InputError", "TeacherFatalError", "RunFailed",
]


class GenerateResult(BaseModel):
    status: str = Field(description="completed, incomplete (some items got no answer: call again to do them), dry_run or requests_out")
    out: Path
    files: dict[str, Path] = Field(description="Per task, its records file (JSONL)")
    rejects: Path
    manifest: Path
    counts: dict[str, TaskCounts] = {}
    failure: str | None = None
    estimate: Any = Field(None, description="With dry_run: the requests and tokens a run would take (datagen.run.estimate.Estimate)")
    requests_written: int | None = Field(None, description="With requests_out: the requests written to that file")
    notes: list[str] = Field([], description="What the command would print as a note (e.g. why no dataset card was written)")
    curation: Curation | None = Field(None, description="Images excluded and selected before the run (exclude_images, select)")

    @property
    def written(self) -> int:
        return sum(counts.written for counts in self.counts.values())

    @property
    def rejected(self) -> int:
        return sum(counts.rejected_total for counts in self.counts.values())


class ExportResult(BaseModel):
    path: Path
    counts: dict[str, int] = Field(description="Records per task")
    card: Path | None = Field(None, description="The README.md dataset card written beside `path`, if one was")
    notes: list[str] = []

    @property
    def records(self) -> int:
        return sum(self.counts.values())


class AuditResult(BaseModel):
    out: Path = Field(description="Folder holding findings.jsonl and summary.json")
    summary: Any = Field(description="datagen.data.audit.AuditSummary: per task and overall, checks and CHAIR")
    failures: list[str] = Field(description="Thresholds exceeded (max_chair_s, max_flagged); `datagen audit` exits 1 on any")


class JudgeResult(BaseModel):
    out: Path
    status: str
    summary: dict[str, Any] = Field(description="summary.json's content: tables per judge and task, agreement, usage")
    table: str = Field(description="summary.md's table")


def generate(settings: GenerateSettings, say: Callable[[str], None] | None = None) -> GenerateResult:
    """Run `datagen generate` with these settings; a dry run or a requests file sends nothing. The curation plan's
    warnings go to `say` as soon as they are known, before the run starts; without it, into the result's notes."""
    from datagen.formats.manifest import MANIFEST_FILE
    from datagen.run.output_folder import REJECTS_FILE
    from datagen.run.generate import generate as run_generate
    from datagen.tasks.registry import task_spec

    plan_notes: list[str] = []
    settings = curated(settings, say or plan_notes.append)
    paths: dict[str, Any] = {
        "curation": settings.curation,
        "out": settings.out,
        "files": {task: settings.out / task_spec(task).file_name for task in settings.tasks},
        "rejects": settings.out / REJECTS_FILE,
        "manifest": settings.out / MANIFEST_FILE,
    }
    if settings.dry_run:
        from datagen.run.estimate import estimate

        return GenerateResult(status="dry_run", estimate=estimate(settings), **paths)
    if settings.requests_out is not None:
        from datagen.run.handoff import write_requests

        return GenerateResult(status="requests_out", requests_written=write_requests(settings), **paths)
    manifest = run_generate(settings)
    _, notes = write_card(settings.out, lambda card: card.write_run_card(settings.out))
    result = GenerateResult(status=manifest.status, counts=manifest.counts, failure=manifest.failure, notes=plan_notes + notes, **paths)
    if manifest.status not in ("completed", "incomplete"):
        raise RunFailed(manifest.failure or f"the run ended {manifest.status}", result)
    return result


def curated(settings: GenerateSettings, say: Callable[[str], None]) -> GenerateSettings:
    """The settings with the images exclude_images leaves out and select chooses worked out (datagen/curate/)."""
    from datagen.curate.plan import plan_images
    from datagen.run.output_folder import SOURCE_SNAPSHOT_FILE

    s = settings
    # The run's own snapshot of the source, when its folder exists already: the run then reads it instead of the JSON.
    snapshot = s.out / SOURCE_SNAPSHOT_FILE if s.out.is_dir() else None
    plan = plan_images(s.captions, s.instances, snapshot, s.exclude_images, s.select, s.budget, s.seed, s.category_cap)
    for note in plan.notes:
        say(note)
    if plan.exclude_ids and s.out.is_dir():
        from datagen.curate.exclude import resume_warning, written_of_excluded

        if (warning := resume_warning(s.out, written_of_excluded(s.out, s.tasks, plan.exclude_ids))) is not None:
            say(warning)
    return s.model_copy(update={"exclude_ids": plan.exclude_ids, "chosen_ids": plan.chosen_ids, "curation": plan.curation})


def export(settings: ExportSettings) -> ExportResult:
    """Run `datagen export`: the folder's task files merged into LLaVA-Instruct records (or chat messages)."""
    from datagen.data.export import export as run_export

    s = settings
    counts = run_export(s.folder, s.out, s.tasks, s.jsonl, s.keep_meta, s.shuffle, s.seed, s.format)
    card, notes = None, []
    if s.format == "llava":  # the card types LLaVA records; chat-message rows are TRL's format, read without one
        card, notes = write_card(s.out.parent, lambda card: card.write_export_card(s.folder, s.out, counts, s.jsonl, s.keep_meta, s.shuffle, s.seed))
    return ExportResult(path=s.out, counts=counts, card=card, notes=notes)


def audit(settings: AuditSettings) -> AuditResult:
    """Run `datagen audit`: findings.jsonl and summary.json in `out`; exceeded thresholds are in `failures`."""
    from datagen.data.audit import audit as run_audit

    s = settings
    summary = run_audit(s.file, s.captions, s.instances, s.out_folder(), s.task, s.max_chair_s, s.max_flagged, s.prompts)
    return AuditResult(out=s.out_folder(), summary=summary, failures=summary.failures)


def judge_answers(settings: JudgeSettings) -> JudgeResult:
    """Run `datagen judge`: every item scored in both orders by every judge; reviews.jsonl, summary.json and
    summary.md in `out`; a run that ends without a score raises RunFailed after writing what it has. (Not named
    `judge`: the package `datagen.judge` would shadow it once imported.)"""
    from datagen.judge.run import run_judge

    summary, table = run_judge(*judge_inputs(settings))
    result = JudgeResult(out=summary_out(settings), status=summary["status"], summary=summary, table=table)
    if summary["status"] != "completed":
        raise RunFailed(summary.get("failure") or f"the judge run ended {summary['status']}", result)
    return result


def judge_inputs(settings: JudgeSettings) -> tuple[Any, Any]:
    """The judge run's options and items: from two generate folders, or from LLaVA's four answer files."""
    from datagen.judge.inputs import items_from_files, items_from_folders, refuse_mostly_unpaired
    from datagen.judge.run import RULE_SYSTEM_MESSAGE, SYSTEM_MESSAGE, JudgeOptions

    s = settings
    out = summary_out(s)
    files = {"--reference": s.reference, "--candidate": s.candidate, "--questions": s.questions, "--context": s.context}
    if s.folders and any(files.values()):
        raise InputError("A_DIR B_DIR: give either A_DIR B_DIR or the four answer files, not both")
    if s.folders:
        if len(s.folders) != 2:
            raise InputError(f"A_DIR B_DIR: got {len(s.folders)} folders; pass exactly two: A_DIR B_DIR")
        if s.captions is None:
            raise InputError("--captions is required with A_DIR B_DIR: the COCO captions file both runs used")
        if s.rule is not None:
            raise InputError("--rule goes with the LLaVA answer files (--questions ...), whose categories it names")
        loaded = items_from_folders(s.folders[0], s.folders[1], s.captions, s.instances, s.tasks, s.limit)
    else:
        missing = [flag for flag, value in files.items() if value is None]
        if missing:
            raise InputError(f"missing {', '.join(missing)}: pass A_DIR B_DIR, or all four answer files")
        loaded = items_from_files(s.reference, s.candidate, s.questions, s.context, s.limit)  # type: ignore[arg-type]
    if not loaded.items:
        skipped = ", ".join(f"{reason} {count}" for reason, count in loaded.skipped.items()) or "no items"
        raise RunFailed(f"nothing to judge: no item could be paired ({skipped}); check that the files name the same questions and images")
    refuse_mostly_unpaired(loaded)
    system_prompt = s.judge_prompt or (RULE_SYSTEM_MESSAGE if s.rule else SYSTEM_MESSAGE)
    return JudgeOptions(**{**s.model_dump(), "out": out, "system_prompt": system_prompt}), loaded


def summary_out(settings: JudgeSettings) -> Path:
    if settings.out is None:
        raise InputError("--out is required: the folder for reviews.jsonl and the summary")
    return settings.out


def write_card(folder: Path, write) -> tuple[Path | None, list[str]]:
    """Write the dataset card beside the data (datagen/data/dataset_card.py): its path once written, and notes
    saying why when none was."""
    from datagen.data import dataset_card

    try:
        written = write(dataset_card)
    except dataset_card.UntypeableField as error:
        # The data is already safe on disk; a record field the card cannot type must not fail the call.
        return None, [f"no dataset card written: {error}"]
    if written is None:
        return None, [f"{folder / dataset_card.CARD_FILE} was not written by datagen; left it alone (no dataset card)"]
    return written, []

