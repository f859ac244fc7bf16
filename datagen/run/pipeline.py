"""`datagen generate`: source -> context -> prompt -> teacher -> parse/validate -> record, resumable.

Each (image, task) item is done once it has a line in `<task>.jsonl` or `rejects.jsonl`; a rerun skips
those and the response cache answers the ones that were in flight, so a killed run loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from datagen import __version__
from datagen.teachers.cache import CachingTeacher, ResponseCache
from datagen.source.coco import CocoSource, ImageAnnotations
from datagen.teachers.endpoints import resolve_endpoint
from datagen.errors import InputError, TeacherFatalError, leading_error
from datagen.quality.grounding import ground_record, stored_grounding
from datagen.run.items import SamplingSettings, build_meta, build_record, build_reject, build_request, length_retry
from datagen.formats.manifest import MANIFEST_FILE, Manifest, RunSettings, SourceStats, fingerprint, tally
from datagen.run.options import GenerateOptions
from datagen.files.jsonl import JsonlAppender, write_json_atomic
from datagen.run.output_folder import CACHE_FILE, REJECTS_FILE, SOURCE_SNAPSHOT_FILE, claim_output_folder, read_done_items
from datagen.quality.parse import Rejected
from datagen.tasks.prompts import InstructionList, PromptPack, load_instructions
from datagen.formats.records import Grounding, RecordMeta, RejectReason, SkipReason, TeacherInfo, Usage, UsageTotals
from datagen.redaction import one_line, redact_url
from datagen.files.storage_errors import StorageError
from datagen.tasks.registry import task_spec
from datagen.tasks.structured import fits_schema, parse_structured, response_format
from datagen.teachers.teacher import ChatReply, ChatRequest, MockTeacher, RequestRefused, RetryableError, Teacher
from datagen.teachers.factory import BackendSettings, build_teacher, check_kind
from datagen.teachers.vision import DECODES_AT_ONCE, EncodedImage, ImageProblem, encode_image, image_path


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Offline teachers, each labelled mock in every record and manifest; "mock-terse" gives a second, shorter-spoken
# teacher so that two-teacher comparisons (docs/COMPARING_TEACHERS.md) can be rehearsed offline.
MOCK_TEACHERS = {"mock": MockTeacher, "mock-terse": lambda: MockTeacher(variant="terse")}


def make_teacher(options: GenerateOptions, environ: Mapping[str, str] = os.environ) -> Teacher:
    settings = BackendSettings(
        kind=options.teacher,
        model=options.model,
        base_url=options.base_url,
        concurrency=options.concurrency,
        timeout=options.timeout,
        max_retries=options.max_retries,
        rpm=options.rpm,
        tpm=options.tpm,
        give_up_after=options.give_up_after,
        max_reply_bytes=options.max_reply_bytes,
    )
    return build_teacher(settings, MOCK_TEACHERS, environ=environ)


def teacher_info(options: GenerateOptions, environ: Mapping[str, str] = os.environ) -> TeacherInfo:
    """What a run's records will say about their teacher, checked like make_teacher's but with no key needed."""
    check_kind(options.teacher, MOCK_TEACHERS)
    if options.teacher in MOCK_TEACHERS:
        return MOCK_TEACHERS[options.teacher]().info
    resolve_endpoint(options.teacher, options.model, options.base_url, environ, need_key=False)
    return TeacherInfo(kind=options.teacher, model=options.model, mock=False)


def select_image_ids(image_ids: list[int], shard: tuple[int, int] | None, limit: int | None) -> list[int]:
    """Shard i/n takes every n-th image of the sorted ids, so n machines split a run with no overlap."""
    if shard is not None:
        index, count = shard
        image_ids = image_ids[index::count]
    return image_ids if limit is None else image_ids[:limit]


class Run:
    """One invocation of `generate` over an output folder."""

    def __init__(self, options: GenerateOptions, teacher: Teacher | None = None, unanswered: dict[tuple[int, str], SkipReason] | None = None) -> None:
        """`teacher` is where replies come from: live, or (batch, results file) the cache alone, with `unanswered`
        naming the items that source ended without, which are skipped for that reason instead of asked."""
        self.options = options
        self.unanswered = unanswered or {}
        self.out = options.out
        # A teacher shown only the image is sent no boxes, so it needs no instances file.
        needs_boxes = [task for task in options.tasks if options.context_of(task) == "captions+boxes" and options.see != "image"]
        if needs_boxes and options.instances is None:
            raise InputError(
                f"--instances is required: tasks {', '.join(needs_boxes)} show object boxes; pass the COCO instances file"
                " or --context TASK=captions"
            )
        if options.see != "text" and options.images is None:
            raise InputError(f"--see {options.see} needs --images DIR, the folder holding the images named in the captions file")
        if options.images is not None and not options.images.is_dir():
            raise InputError(f"--images {options.images}: folder not found; pass the folder holding the COCO images")
        vision = options.see != "text"
        self.packs: dict[str, PromptPack] = {task: task_spec(task).load_pack(options.prompts, vision) for task in options.tasks}
        # What each task's replies must not copy: the examples of the pack actually sent, ours or the user's --prompts.
        self.examples = {task: task_spec(task).examples(pack) for task, pack in self.packs.items()}
        # "detail" always: its hash has been a fingerprint part since the first manifest, whichever tasks ran.
        lists = {"detail", *(name for name in (task_spec(task).instructions for task in options.tasks) if name is not None)}
        self.instructions: dict[str, InstructionList] = {name: load_instructions(name, options.prompts) for name in sorted(lists)}
        self.teacher: Teacher = teacher or make_teacher(options)
        self.source = CocoSource(options.captions, options.instances, snapshot=options.out / SOURCE_SNAPSHOT_FILE)
        self.sampling = SamplingSettings(
            model=self.teacher.info.model,
            temperature=options.temperature,
            max_tokens=options.max_completion_tokens or options.max_tokens,
            seed=options.seed,
            contexts={task: options.context_of(task) for task in options.tasks},
            shape=options.request_shape(),
        )
        # --structured: each task's reply schema, sent with its every request.
        form = options.structured_form
        self.response_formats = {task: response_format(task_spec(task), form) for task in options.tasks} if options.structured else {}
        self.reasks: Counter[str] = Counter()  # --structured: replies not in the schema, asked once more
        self.fingerprint_parts = self._fingerprint_parts()
        self.started_at = _utc_now()
        self.outcomes: dict[tuple[int, str], str] = {}  # (image_id, task) -> "written" or a reject reason
        self.groundings: dict[tuple[int, str], Grounding] = {}  # of the written records, for the manifest's quality
        self.skipped: dict[str, Counter[str]] = {task: Counter() for task in options.tasks}
        self.usage = UsageTotals()
        self.done_before = 0  # items the folder held when this invocation started

    def _fingerprint_parts(self) -> dict[str, object]:
        parts: dict[str, object] = {
            "captions_sha256": self.source.captions_sha256,
            "instances_sha256": self.source.instances_sha256,
            "teacher": self.teacher.info.kind,
            "model": self.sampling.model,
            "temperature": self.sampling.temperature,
            "max_tokens": self.sampling.max_tokens,
            "length_retry_max_tokens": self.options.length_retry_max_tokens,
            "reject_unsupported": self.options.reject_unsupported,
            "seed": self.sampling.seed,
            "detail_instructions": self.instructions["detail"].sha256,
            "shard": list(self.options.shard) if self.options.shard else None,
            "request_shape": self.sampling.shape.model_dump(mode="json"),
        }
        if self.options.structured:
            parts["structured"] = self.options.structured_form  # named only when on, so other runs keep the fingerprint they had
        if self.options.see != "text":
            # Only vision runs name these, so a text run's fingerprint is the one it always had.
            parts["see"] = self.options.see
            parts["image_max_side"] = self.options.image_max_side
        for name, instructions in self.instructions.items():
            if name != "detail":
                parts[f"instructions:{name}"] = instructions.sha256
        for task in self.options.tasks:
            parts[f"prompt_pack:{task}"] = self.packs[task].sha256
            parts[f"context:{task}"] = self.sampling.contexts[task]
        return parts

    # -- the output folder ------------------------------------------------------------------------

    def prepare_output(self) -> None:
        # A text run's parts do not name `see`: switching to or from text must still count as a change.
        claim_output_folder(self.out, self.fingerprint_parts, self.options.force, absent_means={"see": "text", "structured": False})
        for task in self.options.tasks:
            for line in read_done_items(self.out / task_spec(task).file_name):
                self._count_existing(line.image_id, task, "written", line.usage)
                self.groundings[(line.image_id, task)] = stored_grounding(line.row, self.source)
        for line in read_done_items(self.out / REJECTS_FILE, reject=True):
            if line.task in self.options.tasks and line.reason is not None:  # a reject's line always names both
                self._count_existing(line.image_id, line.task, line.reason, line.usage)
        self.done_before = len(self.outcomes)

    def _count_existing(self, image_id: int, task: str, outcome: str, usage: Usage) -> None:
        self.outcomes[(image_id, task)] = outcome
        # The manifest's usage covers every answer the folder holds, as its counts do, not only this invocation's.
        self.usage = self.usage + usage

    def failure(self) -> str | None:
        """Why a run that ended without an error still failed: no answer came back, or no record exists."""
        last_error = self.teacher.last_error
        because = f"; the teacher's last error: {one_line(last_error)}" if last_error else ""
        failed = sum(counts["request_failed"] for counts in self.skipped.values())
        if failed and len(self.outcomes) == self.done_before:
            return f"every request failed ({failed} items left for a rerun){because}"
        if self.selected and not any(outcome == "written" for (image_id, _), outcome in self.outcomes.items() if image_id in self.selected):
            reasons = Counter(outcome for (image_id, _), outcome in self.outcomes.items() if image_id in self.selected)
            reasons.update(reason for counts in self.skipped.values() for reason in counts.elements())
            summary = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) or "nothing was asked"
            # Every item answered and every answer refused: a teacher that cannot follow the format, not a bad night.
            every_answer_refused = bool(reasons) and not any(counts.total() for counts in self.skipped.values())
            headline = "no answer passed the checks; no record could be written" if every_answer_refused else "no record could be written"
            return f"{headline} ({summary}){because}"
        return None

    def unfinished(self) -> str | None:
        """Why a run that did write records is still not done: items a transient failure left unanswered."""
        failed = sum(counts["request_failed"] for counts in self.skipped.values())
        if not failed:
            return None
        last_error = self.teacher.last_error
        because = f"; the teacher's last error: {one_line(last_error)}" if last_error else ""
        return f"{failed} items got no answer after their retries (request_failed); rerun the same command to do them{because}"

    def manifest(self, status: str, failure: str | None = None) -> Manifest:
        counts, quality = tally(self.options.tasks, self.selected, self.outcomes, self.skipped, self.groundings)
        base_url = self.teacher.base_url
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
            settings=RunSettings(
                tasks=list(self.options.tasks),
                prompts=str(self.options.prompts),
                concurrency=self.options.concurrency,
                limit=self.options.limit,
                timeout=self.options.timeout,
                max_retries=self.options.max_retries,
                rpm=self.options.rpm,
                tpm=self.options.tpm,
                cache=str(self.cache_path) if self.cache_path else None,
                sampling=self.sampling.model_dump(),
                fingerprint_parts=self.fingerprint_parts,
            ),
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
            quality=quality,
            usage=self.usage,
            requests_sent=self.teacher.stats["requests"],
            cache_hits=self.teacher.stats["cache_hits"],
            last_error=self.teacher.last_error,
            failure=failure,
            structured_reasks=dict(sorted(self.reasks.items())) if self.options.structured else None,
        )

    def write_manifest(self, status: str, failure: str | None = None) -> Manifest:
        manifest = self.manifest(status, failure)
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
                reason: SkipReason | None = "no_usable_caption" if image is None else self.unanswered.get((image_id, task))
                if image is not None and reason is None:
                    yield image, task
                elif reason is not None:
                    self.skip(task, reason)

    def check_images(self) -> None:
        """With --see image|both, some selected image must be in --images: else nothing could be asked at all."""
        if self.options.see == "text" or not self.selected_ids:
            return
        folder = self.options.images
        assert folder is not None  # Run() refuses --see image|both without --images
        if not any((folder / self.source.file_name(image_id)).is_file() for image_id in self.selected_ids):
            example = self.source.file_name(self.selected_ids[0])
            raise InputError(
                f"--images {folder}: none of the {len(self.selected_ids)} selected images is there (e.g. {example});"
                " pass the folder holding the files named in the captions file"
            )

    def request_for(self, image: ImageAnnotations, task: str) -> tuple[ChatRequest, EncodedImage | None]:
        """The item's request, with its image encoded now (one at a time); ImageProblem when it cannot be shown."""
        picture = None
        if self.options.see != "text":
            assert self.options.images is not None  # Run() refuses --see image|both without --images
            picture = encode_image(image_path(self.options.images, image.file_name), self.options.image_max_side)
        return build_request(image, task, self.packs[task], self.sampling, self.options.see, picture, self.response_formats.get(task)), picture

    async def process(self, image: ImageAnnotations, task: str) -> None:
        pack = self.packs[task]
        try:
            if self.options.see == "text":
                request, picture = self.request_for(image, task)
            else:
                # Decoding and re-encoding a photo takes milliseconds of CPU (PIL frees the GIL): off the event loop,
                # on a pool of DECODES_AT_ONCE threads however many requests are in flight.
                request, picture = await asyncio.get_running_loop().run_in_executor(self.decoder, self.request_for, image, task)
        except ImageProblem as problem:
            self.skip(task, problem.reason)
            return
        see = self.options.see
        try:
            reply = await self.teacher.complete(request)
            retry = length_retry(request, reply, self.options.length_retry_max_tokens)
            if retry is not None:
                # One more try with room to finish; the answer then comes from the larger request (and its cache key).
                self.usage = self.usage + reply.usage  # the cut answer was paid for too
                request = retry
                reply = await self.teacher.complete(request)
            if self.options.structured and reply.refusal is None and not fits_schema(task_spec(task), reply.text, reply.finish_reason):
                # One re-ask, with another seed so that neither the cache nor a seeded server gives the same reply.
                self.usage = self.usage + reply.usage
                self.reasks[task] += 1
                request = request.model_copy(update={"seed": request.seed + 1})
                reply = await self.teacher.complete(request)
        except RetryableError:
            # Not written anywhere: a rerun asks again, after the transient trouble has passed.
            self.skip(task, "request_failed")
            return
        except RequestRefused as refused:
            # A reject, so a rerun does not ask again: the server would refuse this item the same way.
            reply = ChatReply(text="", finish_reason=None, usage=Usage(prompt_tokens=0, completion_tokens=0))
            meta = build_meta(image, task, pack, self.sampling, self.teacher.info, request, reply, see, picture)
            self.reject(image, task, refused.reason, str(refused), reply, meta)
            return
        self.usage = self.usage + reply.usage
        meta = build_meta(image, task, pack, self.sampling, self.teacher.info, request, reply, see, picture)
        try:
            if reply.refusal is not None:
                raise Rejected("refusal", f"structured refusal: {reply.refusal[:80]!r}")
            spec = task_spec(task)
            if self.options.structured:
                content = parse_structured(spec, reply.text, reply.finish_reason, see, self.examples[task])
            else:
                content = spec.parse(reply.text, reply.finish_reason, see, self.examples[task])
            instructions = self.instructions[spec.instructions] if spec.instructions else None
            record = build_record(image, task, content, meta, instructions, self.sampling.seed)
            ground_record(record, image, self.options.reject_unsupported)
        except Rejected as rejection:
            reason, detail = rejection.reason, rejection.detail
        except ValidationError as error:  # an answer that parsed but breaks the LLaVA record rules
            reason, detail = "unparseable", error.errors()[0]["msg"]
        else:
            self.writers[task].append(record)
            self.outcomes[(image.image_id, task)] = "written"
            if record.meta.grounding is not None:  # ground_record always sets it
                self.groundings[(image.image_id, task)] = record.meta.grounding
            self.on_progress("written")
            return
        self.reject(image, task, reason, detail, reply, meta)

    def reject(self, image: ImageAnnotations, task: str, reason: RejectReason, detail: str, reply: ChatReply, meta: RecordMeta) -> None:
        self.rejects.append(build_reject(image, task, reason, detail, reply, meta))
        self.outcomes[(image.image_id, task)] = reason
        self.on_progress("rejected")

    def skip(self, task: str, reason: SkipReason) -> None:
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
        self.check_images()
        self.cache = ResponseCache(self.cache_path) if self.cache_path is not None else None
        if self.cache is not None:
            self.teacher = CachingTeacher(self.teacher, self.cache)
        self.writers = {task: JsonlAppender(self.out / task_spec(task).file_name) for task in self.options.tasks}
        self.rejects = JsonlAppender(self.out / REJECTS_FILE)
        self.decoder = ThreadPoolExecutor(DECODES_AT_ONCE, thread_name_prefix="decode")

    def remaining(self) -> int:
        done = sum(1 for (image_id, task) in self.outcomes if image_id in self.selected and task in self.options.tasks)
        return len(self.selected_ids) * len(self.options.tasks) - done

    async def close(self) -> None:
        for writer in [*self.writers.values(), self.rejects]:
            writer.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)
        await self.teacher.aclose()


@contextlib.contextmanager
def collector_for_a_long_run() -> Iterator[None]:
    """The cyclic garbage collector set for the run's event loop, and as it was afterwards.

    What was built before the first request (the annotations above all) lives as long as the run: frozen, the
    collector stops walking it on every full collection. A thousand requests in flight keep many young objects
    alive, which the default thresholds walk every 700 allocations; at 10,000 most have died by then. At
    concurrency 1,024 this took the collector's share of the client's CPU from 15% to 6%.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def execute(run: Run) -> Manifest:
    """Open `run`'s output folder, do its pending items and write the manifest, whatever the teacher beneath."""
    from datagen.run.progress import ProgressDisplay

    run.open()
    run.write_manifest("running")
    display = ProgressDisplay(run, enabled=run.options.progress)
    status = "failed"

    async def main() -> None:
        try:
            with display:
                await run.run_items()
        except ExceptionGroup as group:
            raise leading_error(group) from None
        finally:
            await run.close()

    failure = None
    try:
        with collector_for_a_long_run():
            asyncio.run(main())
        failure = run.failure()
        status = "completed" if failure is None else "failed"
        if failure is None and (failure := run.unfinished()) is not None:
            status = "incomplete"
    finally:
        error = sys.exc_info()[1]
        if isinstance(error, KeyboardInterrupt):
            status = "interrupted"
        if isinstance(error, TeacherFatalError):
            failure = str(error)
        try:
            manifest = run.write_manifest(status, failure)
        except (OSError, sqlite3.Error, StorageError):
            if error is None:
                raise
            # The disk that stopped the run may refuse the manifest too: it stays as it was, and the error that
            # stopped the run is the one reported.
    display.summary(manifest)
    return manifest
