"""`datagen generate` as a job of the core (run/job.py): source -> context -> prompt -> teacher -> parse/validate
-> record, resumable.

Each item (tasks.registry.ItemKey) is done once it has a line in `<task>.jsonl` or `rejects.jsonl`; a rerun skips
those and the response cache answers the ones that were in flight, so a killed run loses nothing. The job is
composed of its parts: the plan (run/plan.py: inputs, settings, pending items), one item's handling
(run/answer.py), the tally (run/tally.py) and the output folder (run/output_folder.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


from datagen import __version__
from datagen.formats.manifest import Curation, CurationStep, Manifest, RunSettings, SourceStats, curation_steps, fingerprint, write_manifest
from datagen.formats.records import SkipReason, TeacherInfo
from datagen.files.jsonl import JsonlAppender
from datagen.quality.grounding import stored_grounding
from datagen.redaction import redact_url
from datagen.run.answer import answer_item
from datagen.run.job import Job, run_job
from datagen.run.options import GenerateOptions, taken_from
from datagen.run.output_folder import CACHE_FILE, REJECTS_FILE, claim_output_folder, read_done_items
from datagen.run.plan import Plan, select_image_ids
from datagen.run.prices import generate_prices, priced
from datagen.run.tally import Tally
from datagen.source.coco import ImageAnnotations
from datagen.tasks.registry import ItemKey, task_spec
from datagen.teachers.cache import CachingTeacher, ResponseCache
from datagen.teachers.endpoints import resolve_endpoint
from datagen.teachers.factory import BackendSettings, build_teacher, check_kind
from datagen.teachers.teacher import MockTeacher, Teacher
from datagen.teachers.vision import DECODES_AT_ONCE, ImageProblem

__all__ = ["GenerateJob", "execute", "make_teacher", "select_image_ids", "teacher_info"]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Offline teachers, each labelled mock in every record and manifest; "mock-terse" gives a second, shorter-spoken
# teacher so that two-teacher comparisons (docs/COMPARING_TEACHERS.md) can be rehearsed offline.
MOCK_TEACHERS = {"mock": MockTeacher, "mock-terse": lambda: MockTeacher(variant="terse")}




def make_teacher(options: GenerateOptions, environ: Mapping[str, str] = os.environ) -> Teacher:
    return build_teacher(taken_from(options, BackendSettings, kind=options.teacher), MOCK_TEACHERS, environ=environ)


def teacher_info(options: GenerateOptions, environ: Mapping[str, str] = os.environ) -> TeacherInfo:
    """What a run's records will say about their teacher, checked like make_teacher's but with no key needed."""
    check_kind(options.teacher, MOCK_TEACHERS)
    if options.teacher in MOCK_TEACHERS:
        return MOCK_TEACHERS[options.teacher]().info
    resolve_endpoint(options.teacher, options.model, options.base_url, environ, need_key=False)
    return TeacherInfo(kind=options.teacher, model=options.model, mock=False)


def read_folder(folder: Path, plan: Plan, tally: Tally) -> None:
    """Count into `tally` the items `folder` already holds for the plan's tasks (a resume)."""
    for task in plan.options.tasks:
        for line in read_done_items(folder / task_spec(task).file_name):
            key = ItemKey.of_record(line.image_id, task, line.row.get("id"))
            tally.found(key, "written", line.usage, stored_grounding(line.row, plan.source))
    for line in read_done_items(folder / REJECTS_FILE, reject=True):
        if line.task in plan.options.tasks and line.reason is not None:  # a reject's line always names both
            tally.found(ItemKey.of_record(line.image_id, line.task, line.row.get("id")), line.reason, line.usage)
    tally.opened()


def claim(plan: Plan, tally: Tally) -> None:
    """Claim the plan's output folder (refusing other settings), read what it holds, and select the images."""
    # A text run's parts do not name `see`: switching to or from text must still count as a change.
    claim_output_folder(plan.options.out, plan.fingerprint_parts, plan.options.force, absent_means={"see": "text", "structured": False})
    read_folder(plan.options.out, plan, tally)
    plan.select()


def cache_path(options: GenerateOptions) -> Path | None:
    if not options.use_cache:
        return None
    return options.cache or options.out / CACHE_FILE


class GenerateJob(Job[Manifest]):
    """One invocation of `generate` over an output folder."""

    command = "generate"
    display: Any = None  # the progress display once the items run; it knows what this run spent

    def __init__(self, options: GenerateOptions, teacher: Teacher | None = None, unanswered: dict[ItemKey, SkipReason] | None = None) -> None:
        """`teacher` is where replies come from: live, or (batch, results file) the cache alone, with `unanswered`
        naming the items that source ended without, which are skipped for that reason instead of asked."""
        self.options = options
        self.out = options.out
        self.concurrency = options.concurrency
        self.unanswered = unanswered or {}
        self.teacher: Teacher = teacher or make_teacher(options)
        self.plan = Plan(options, self.teacher.info)
        self.tally = Tally(list(options.tasks))
        self.started_at = _utc_now()
        self.cache: ResponseCache | None = None
        self.curation_steps: list[CurationStep] = []  # dedup and filter steps the folder went through, kept by a rerun

    @property
    def base_url(self) -> str | None:
        return self.teacher.base_url

    # -- the output folder ------------------------------------------------------------------------

    def open(self) -> None:
        claim(self.plan, self.tally)
        self.curation_steps = curation_steps(self.out)
        path = cache_path(self.options)
        if path is not None:
            self.cache = ResponseCache(path)
            self.teacher = CachingTeacher(self.teacher, self.cache)
        self.writers = {task: JsonlAppender(self.out / task_spec(task).file_name) for task in self.options.tasks}
        self.rejects = JsonlAppender(self.out / REJECTS_FILE)
        self.decoder = ThreadPoolExecutor(DECODES_AT_ONCE, thread_name_prefix="decode")

    def started(self) -> None:
        self.finish("running", None)

    async def close(self) -> None:
        for writer in [*self.writers.values(), self.rejects]:
            writer.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)
        await self.teacher.aclose()

    def verdict(self) -> tuple[str, str | None]:
        last_error = self.teacher.last_error
        failure = self.tally.failure(self.plan.selected, last_error)
        if failure is not None:
            return "failed", failure
        unfinished = self.tally.unfinished(last_error)
        return ("incomplete", unfinished) if unfinished is not None else ("completed", None)

    def manifest(self, status: str, failure: str | None = None) -> Manifest:
        plan, options = self.plan, self.options
        counts, quality = self.tally.counts(plan.requested(), plan.selected)
        base_url = self.teacher.base_url
        path = cache_path(options)
        # A finished run reports the whole selection; while running, only the images built so far are known.
        hard_cases = plan.source.hard_cases if status == "running" else plan.source.count_hard_cases(plan.selected_ids)
        return Manifest(
            datagen_version=__version__,
            status=status,
            command=options.command,
            started_at=self.started_at,
            finished_at=None if status == "running" else _utc_now(),
            teacher=self.teacher.info,
            base_url=redact_url(base_url) if base_url else None,
            settings=taken_from(
                options, RunSettings, cache=str(path) if path else None, sampling=plan.sampling.model_dump(), fingerprint_parts=plan.fingerprint_parts
            ),
            fingerprint=fingerprint(plan.fingerprint_parts),
            prompt_hashes={task: pack.sha256 for task, pack in plan.packs.items()},
            source=SourceStats(
                captions_file=str(options.captions),
                instances_file=str(options.instances) if options.instances else None,
                images=len(plan.source.image_ids),
                captions=plan.source.caption_count(),
                boxes=plan.source.box_count(),
                hard_cases=dict(sorted(hard_cases.items())),
            ),
            counts=counts,
            quality=quality,
            usage=self.tally.usage,
            last_error=self.teacher.last_error,
            failure=failure,
            curation=self.curation(),
            **self.tally.metric_values(self.teacher.stats, options),
        )

    def curation(self) -> Curation | None:
        """The options' account of exclusion and selection, with the dedup and filter steps the folder went through."""
        curation = self.options.curation.model_copy(deep=True) if self.options.curation else Curation()
        if curation.excluded is not None:
            curation.excluded.excluded = sum(1 for image_id in self.plan.source.image_ids if image_id in self.options.exclude_ids)
        curation.steps = self.curation_steps
        return None if curation == Curation() else curation

    def finish(self, status: str, failure: str | None) -> Manifest:
        manifest = self.manifest(status, failure)
        write_manifest(self.out, manifest)
        return manifest

    # -- the work ---------------------------------------------------------------------------------

    def pending(self) -> Iterator[tuple[ImageAnnotations, ItemKey]]:
        return self.plan.pending(self.tally, self.unanswered)

    def remaining(self) -> int:
        return self.tally.remaining(self.plan.requested(), self.plan.selected)

    async def process(self, item: tuple[ImageAnnotations, ItemKey]) -> None:
        image, key = item
        try:
            if self.options.see == "text":
                request, picture = self.plan.request_for(image, key)
            else:
                # Decoding and re-encoding a photo takes milliseconds of CPU (PIL frees the GIL): off the event loop,
                # on a pool of DECODES_AT_ONCE threads however many requests are in flight.
                request, picture = await asyncio.get_running_loop().run_in_executor(self.decoder, self.plan.request_for, image, key)
        except ImageProblem as problem:
            self.tally.skip(key.task, problem.reason)
            return
        outcome = await answer_item(self.plan, self.teacher, image, key, request, picture)
        for usage in outcome.paid:
            self.tally.paid(usage)
        if outcome.reasked:
            self.tally.count("structured_reasks", key.task)
        # Appended before it is counted: a kill in between leaves the line, which the next run counts.
        if outcome.record is not None:
            self.writers[key.task].append(outcome.record)
            self.tally.written(key, outcome.record.meta.grounding)
        elif outcome.reject is not None:
            self.rejects.append(outcome.reject)
            self.tally.rejected(key, outcome.reject.reason)
        elif outcome.skip is not None:
            self.tally.skip(key.task, outcome.skip)

    def progress(self) -> contextlib.AbstractContextManager[Any]:
        from datagen.run.progress import ProgressDisplay

        options = self.options
        display = self.display = ProgressDisplay(
            "generate", self.remaining(), lambda: self.tally.usage, [self.teacher], enabled=options.progress, log_every=options.log_every,
            costing=priced(generate_prices(options), lambda: self.tally.usage),
            metrics=lambda: self.tally.metric_values(self.teacher.stats, options),
        )
        self.tally.listener = display.advance
        return display


def execute(job: GenerateJob) -> Manifest:
    """Do `job`'s pending items through the job core and show the summary, whatever the teacher beneath."""
    manifest = run_job(job)
    from datagen.run.progress import show_summary

    show_summary(manifest, retries=job.teacher.stats["retries"], cost=job.display.cost_line() if job.display is not None else None)
    return manifest
