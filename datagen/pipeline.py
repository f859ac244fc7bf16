"""`datagen generate`: source -> context -> prompt -> teacher -> parse/validate -> record, resumable.

Each (image, task) item is done once it has a line in `<task>.jsonl` or `rejects.jsonl`; a rerun skips
those and the response cache answers the ones that were in flight, so a killed run loses nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from datagen import __version__
from datagen.cache import CachingTeacher, ResponseCache
from datagen.coco import CocoSource, ImageAnnotations
from datagen.context import DEFAULT_CONTEXT, ContextKind
from datagen.errors import InputError, TeacherFatalError
from datagen.output import JsonlAppender, iter_jsonl, write_json_atomic
from datagen.parse import Rejected, parse_answer
from datagen.prompts import BUNDLED_PROMPTS, InstructionList, PromptPack, load_instructions, load_pack
from datagen.records import Manifest, SourceStats, Task, TaskCounts, Usage
from datagen.tasks import SamplingSettings, build_meta, build_record, build_reject, build_request
from datagen.teacher import MockTeacher, RetryableError, Teacher, redact_url
from datagen.teacher_factory import BackendSettings, build_teacher

REJECTS_FILE = "rejects.jsonl"
MANIFEST_FILE = "manifest.json"
CACHE_FILE = "cache.sqlite"
SOURCE_SNAPSHOT_FILE = "source-index.bin"  # the inputs, indexed: a resume reads it instead of the JSON


class GenerateOptions(BaseModel):
    captions: Path
    instances: Path | None = None
    out: Path
    tasks: list[Task]
    teacher: str = "openai"
    model: str | None = None
    base_url: str | None = None
    prompts: Path = BUNDLED_PROMPTS
    concurrency: int = 16
    limit: int | None = None
    seed: int = 0
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout: float = 120.0
    max_retries: int = 6
    contexts: dict[str, ContextKind] = dict(DEFAULT_CONTEXT)
    cache: Path | None = None
    use_cache: bool = True
    force: bool = False
    shard: tuple[int, int] | None = None
    rpm: float | None = None
    tpm: float | None = None
    length_retry_max_tokens: int | None = None
    progress: bool = True
    command: list[str] = []
    # The Batch API path (datagen/batch.py): answers arrive in the cache first, then this pipeline runs over them.
    batch: bool = False
    poll_interval: float = 30.0
    batch_size: int = 50_000


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fingerprint(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# Offline teachers, each labelled mock in every record and manifest; "mock-terse" gives a second, shorter-spoken
# teacher so that two-teacher comparisons (docs/COMPARING_TEACHERS.md) can be rehearsed offline.
MOCK_TEACHERS = {"mock": MockTeacher, "mock-terse": lambda: MockTeacher(variant="terse")}


def make_teacher(options: GenerateOptions, environ: dict[str, str] = os.environ) -> Teacher:
    settings = BackendSettings(
        kind=options.teacher,
        model=options.model,
        base_url=options.base_url,
        concurrency=options.concurrency,
        timeout=options.timeout,
        max_retries=options.max_retries,
        rpm=options.rpm,
        tpm=options.tpm,
    )
    return build_teacher(settings, MOCK_TEACHERS, environ=environ)


def select_image_ids(image_ids: list[int], shard: tuple[int, int] | None, limit: int | None) -> list[int]:
    """Shard i/n takes every n-th image of the sorted ids, so n machines split a run with no overlap."""
    if shard is not None:
        index, count = shard
        image_ids = image_ids[index::count]
    return image_ids if limit is None else image_ids[:limit]


class Run:
    """One invocation of `generate` over an output folder."""

    def __init__(self, options: GenerateOptions) -> None:
        self.options = options
        self.out = options.out
        needs_boxes = [task for task in options.tasks if options.contexts[task] == "captions+boxes"]
        if needs_boxes and options.instances is None:
            raise InputError(
                f"--instances is required: tasks {', '.join(needs_boxes)} show object boxes; pass the COCO instances file"
                " or --context TASK=captions"
            )
        self.packs: dict[str, PromptPack] = {task: load_pack(options.prompts, task) for task in options.tasks}
        self.detail_instructions: InstructionList = load_instructions("detail", options.prompts)
        self.teacher: Teacher = make_teacher(options)
        self.source = CocoSource(options.captions, options.instances, snapshot=options.out / SOURCE_SNAPSHOT_FILE)
        self.sampling = SamplingSettings(
            model=self.teacher.info.model,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            seed=options.seed,
            contexts={task: options.contexts[task] for task in options.tasks},
        )
        self.fingerprint_parts = self._fingerprint_parts()
        self.started_at = _utc_now()
        self.outcomes: dict[tuple[int, str], str] = {}  # (image_id, task) -> "written" or a reject reason
        self.skipped: dict[str, Counter[str]] = {task: Counter() for task in options.tasks}
        self.usage = Usage()

    def _fingerprint_parts(self) -> dict[str, object]:
        parts: dict[str, object] = {
            "captions_sha256": self.source.captions_sha256,
            "instances_sha256": self.source.instances_sha256,
            "teacher": self.teacher.info.kind,
            "model": self.sampling.model,
            "temperature": self.sampling.temperature,
            "max_tokens": self.sampling.max_tokens,
            "length_retry_max_tokens": self.options.length_retry_max_tokens,
            "seed": self.sampling.seed,
            "detail_instructions": self.detail_instructions.sha256,
            "shard": list(self.options.shard) if self.options.shard else None,
        }
        for task in self.options.tasks:
            parts[f"prompt_pack:{task}"] = self.packs[task].sha256
            parts[f"context:{task}"] = self.sampling.contexts[task]
        return parts

    # -- the output folder ------------------------------------------------------------------------

    def prepare_output(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        manifest_path = self.out / MANIFEST_FILE
        if manifest_path.exists():
            try:
                previous = json.loads(manifest_path.read_text(encoding="utf-8"))
                before = previous["settings"]["fingerprint_parts"]
            except (ValueError, KeyError, TypeError):
                before = None
            changed = (
                ["manifest.json (unreadable)"]
                if before is None
                else [key for key, value in self.fingerprint_parts.items() if key in before and before[key] != value]
            )
            if changed and not self.options.force:
                raise InputError(
                    f"--out {self.out}: holds a run made with other settings (changed: {', '.join(changed)}); "
                    "rerun with the original settings to resume, pick another --out, or pass --force to set the old files aside"
                )
            if changed:
                self._set_aside()
        for task in self.options.tasks:
            for line in self._read_outputs(self.out / f"{task}.jsonl"):
                self._count_existing(line, task, "written")
        for line in self._read_outputs(self.out / REJECTS_FILE):
            if line["task"] in self.options.tasks:
                self._count_existing(line, line["task"], line["reason"])

    def _count_existing(self, line: dict, task: str, outcome: str) -> None:
        self.outcomes[(line["meta"]["image_id"], task)] = outcome
        # The manifest's usage covers every answer the folder holds, as its counts do, not only this invocation's.
        self.usage = self.usage + Usage.model_validate(line["meta"]["usage"])

    @staticmethod
    def _read_outputs(path: Path) -> Iterator[dict]:
        if path.exists():
            JsonlAppender(path).close()  # repairs a torn last line before reading
            yield from iter_jsonl(path)

    def _set_aside(self) -> None:
        """--force keeps the old outputs, moved into a dated sub-folder, instead of deleting paid-for data."""
        aside = self.out / f"replaced-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        aside.mkdir()
        for name in [MANIFEST_FILE, REJECTS_FILE, *(f"{task}.jsonl" for task in ("conversation", "detail", "complex_reasoning"))]:
            if (self.out / name).exists():
                shutil.move(str(self.out / name), aside / name)

    def manifest(self, status: str) -> Manifest:
        counts: dict[str, TaskCounts] = {}
        for task in self.options.tasks:
            counts[task] = TaskCounts(skipped=dict(self.skipped[task]))
        for (image_id, task), outcome in self.outcomes.items():
            if image_id not in self.selected:
                continue
            if outcome == "written":
                counts[task].written += 1
            else:
                counts[task].rejected[outcome] = counts[task].rejected.get(outcome, 0) + 1
        for task_counts in counts.values():
            task_counts.requested = len(self.selected)
            # Items neither answered nor skipped for a reason: the run stopped (Ctrl-C, a fatal teacher error) first.
            not_reached = task_counts.requested - task_counts.written - task_counts.rejected_total - task_counts.skipped_total
            if not_reached > 0:
                task_counts.skipped["not_reached"] = not_reached
        base_url = getattr(self.teacher, "base_url", None)
        # A finished run reports the whole selection; while running, only the images built so far are known.
        hard_cases = self.source.hard_cases if status == "running" else self.source.count_hard_cases(self.selected_ids)
        return Manifest(
            datagen_version=__version__,
            status=status,
            command=self.options.command,
            started_at=self.started_at,
            finished_at=None if status == "running" else _utc_now(),
            teacher=self.teacher.info,
            base_url=redact_url(base_url) if base_url else None,
            settings={
                "tasks": list(self.options.tasks),
                "prompts": str(self.options.prompts),
                "concurrency": self.options.concurrency,
                "limit": self.options.limit,
                "timeout": self.options.timeout,
                "max_retries": self.options.max_retries,
                "rpm": self.options.rpm,
                "tpm": self.options.tpm,
                "cache": str(self.cache_path) if self.cache_path else None,
                "sampling": self.sampling.model_dump(),
                "fingerprint_parts": self.fingerprint_parts,
            },
            fingerprint=fingerprint(self.fingerprint_parts),
            prompt_hashes={task: pack.sha256 for task, pack in self.packs.items()},
            source=SourceStats(
                captions_file=str(self.options.captions),
                instances_file=str(self.options.instances) if self.options.instances else None,
                images=len(self.source.image_ids),
                captions=self.source.caption_count(),
                boxes=self.source.box_count(),
                hard_cases=dict(sorted(hard_cases.items())),
            ),
            counts=counts,
            usage=self.usage,
            requests_sent=self.teacher.stats["requests"],
            cache_hits=self.teacher.stats["cache_hits"],
        )

    def write_manifest(self, status: str) -> Manifest:
        manifest = self.manifest(status)
        write_json_atomic(self.out / MANIFEST_FILE, manifest.model_dump(mode="json"))
        return manifest

    # -- the work ---------------------------------------------------------------------------------

    @property
    def cache_path(self) -> Path | None:
        if not self.options.use_cache:
            return None
        return self.options.cache or self.out / CACHE_FILE

    def pending(self) -> Iterator[tuple[ImageAnnotations, str]]:
        for image_id in self.selected_ids:
            todo = [task for task in self.options.tasks if (image_id, task) not in self.outcomes]
            if not todo:
                continue
            image = self.source.image(image_id)
            for task in todo:
                if image is None:
                    self.skip(task, "no_usable_caption")
                else:
                    yield image, task

    async def process(self, image: ImageAnnotations, task: str) -> None:
        pack = self.packs[task]
        request = build_request(image, task, pack, self.sampling)
        try:
            reply = await self.teacher.complete(request)
            if reply.finish_reason == "length" and (self.options.length_retry_max_tokens or 0) > request.max_tokens:
                # One more try with room to finish; the answer then comes from the larger request (and its cache key).
                self.usage = self.usage + reply.usage  # the cut answer was paid for too
                request = request.model_copy(update={"max_tokens": self.options.length_retry_max_tokens})
                reply = await self.teacher.complete(request)
        except RetryableError:
            # Not written anywhere: a rerun asks again, after the transient trouble has passed.
            self.skip(task, "request_failed")
            return
        self.usage = self.usage + reply.usage
        meta = build_meta(image, task, pack, self.sampling, self.teacher.info, request, reply)
        try:
            content = parse_answer(task, reply.text, reply.finish_reason)
            record = build_record(image, task, content, meta, self.detail_instructions, self.sampling.seed)
        except Rejected as rejection:
            reason, detail = rejection.reason, rejection.detail
        except ValidationError as error:  # an answer that parsed but breaks the LLaVA record rules
            reason, detail = "unparseable", error.errors()[0]["msg"]
        else:
            self.writers[task].append(record)
            self.outcomes[(image.image_id, task)] = "written"
            self.on_progress("written")
            return
        self.rejects.append(build_reject(image, task, reason, detail, reply, meta))
        self.outcomes[(image.image_id, task)] = reason
        self.on_progress("rejected")

    def skip(self, task: str, reason: str) -> None:
        """An item left for a later run (counted per reason in the manifest), not written anywhere now."""
        self.skipped[task][reason] += 1
        self.on_progress("skipped")

    def on_progress(self, outcome: str) -> None:
        """Called with "written", "rejected" or "skipped" per item; replaced by the progress display."""

    async def run_items(self) -> None:
        items = self.pending()

        async def worker() -> None:
            for image, task in items:  # one shared iterator: workers pull the next item when free
                await self.process(image, task)

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, self.options.concurrency)):
                group.create_task(worker())

    def open(self) -> None:
        self.prepare_output()
        self.selected_ids = select_image_ids(self.source.image_ids, self.options.shard, self.options.limit)
        self.selected = set(self.selected_ids)
        if self.cache_path is not None:
            self.teacher = CachingTeacher(self.teacher, ResponseCache(self.cache_path))
        self.writers = {task: JsonlAppender(self.out / f"{task}.jsonl") for task in self.options.tasks}
        self.rejects = JsonlAppender(self.out / REJECTS_FILE)

    def remaining(self) -> int:
        done = sum(1 for (image_id, task) in self.outcomes if image_id in self.selected and task in self.options.tasks)
        return len(self.selected_ids) * len(self.options.tasks) - done

    async def close(self) -> None:
        for writer in [*self.writers.values(), self.rejects]:
            writer.close()
        await self.teacher.aclose()


def generate(options: GenerateOptions) -> Manifest:
    if options.batch:
        from datagen.batch import generate_batch

        return generate_batch(options)
    return execute(Run(options))


def execute(run: Run) -> Manifest:
    """Open `run`'s output folder, do its pending items and write the manifest, whatever the teacher beneath."""
    from datagen.progress import ProgressDisplay

    run.open()
    run.write_manifest("running")
    display = ProgressDisplay(run, enabled=run.options.progress)
    status = "failed"

    async def main() -> None:
        try:
            with display:
                await run.run_items()
        except ExceptionGroup as group:
            fatal = [error for error in group.exceptions if isinstance(error, TeacherFatalError)]
            if fatal:
                raise fatal[0] from None
            raise
        finally:
            await run.close()

    try:
        asyncio.run(main())
        status = "completed"
    finally:
        if sys.exc_info()[0] is KeyboardInterrupt:
            status = "interrupted"
        manifest = run.write_manifest(status)
    display.summary(manifest)
    return manifest
