"""`datagen generate --batch`: the same items through the OpenAI Batch API, at its lower price and slower pace.

Every answer a batch returns is put into the response cache under its request key; the normal pipeline then
runs over the cache, so validation, rejects, records and the manifest are exactly those of a live run.
Batches are recorded in `batch/state.json` before any waiting, so rerunning a killed command re-attaches
to them instead of paying twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from datagen.teachers.cache import ResponseCache
from datagen.errors import InputError, TeacherFatalError
from datagen.run.items import length_retry
from datagen.formats.manifest import Manifest
from datagen.run.options import GenerateOptions
from datagen.files.jsonl import atomic_file, write_json_atomic
from datagen.formats.batch_lines import CHAT_URL, parse_result, read_batch_lines, request_line
from datagen.run.pipeline import GenerateJob, execute
from datagen.run.plan import Plan
from datagen.run.tally import Tally
from datagen.formats.records import SkipReason, TeacherInfo
from datagen.source.coco import ImageAnnotations
from datagen.tasks.registry import ItemKey
from datagen.redaction import environment_secrets, one_line, redact_secrets
from datagen.teachers.teacher import ChatReply, ChatRequest, RequestRefused, RetryableError, Teacher, parse_completion, redact_url
from datagen.teachers.vision import ImageProblem
from datagen.teachers.endpoints import clean_key
from datagen.teachers.providers.openai_chat import OpenAITeacher

BATCH_DIR = "batch"
STATE_FILE = "state.json"
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


class StoredBatch(BaseModel):
    base_url: str  # redacted: where the batch lives, to re-attach and to ask for its status
    input_file: str
    input_file_id: str
    batch_id: str | None = None
    status: str = "uploaded"
    request_counts: dict[str, int] = {}
    custom_ids: list[str]
    ingested: bool = False
    answered: int = 0
    failed: int = 0


class BatchState(BaseModel):
    batches: list[StoredBatch] = []


def custom_id(item: ItemKey, key: str) -> str:
    """`image_id:task:request_key` (an image's later items: `image_id:task#index:request_key`)."""
    return f"{item.image_id}:{item.label}:{key}"


def parse_custom_id(value: str) -> tuple[int, str, str]:
    """(image id, item label, request key) of a custom_id that custom_id wrote."""
    image_id, label, key = value.split(":")
    return int(image_id), label, key


def item_of(value: str) -> ItemKey:
    image_id, label, _ = parse_custom_id(value)
    return ItemKey.from_label(image_id, label)


def input_line(cid: str, request: ChatRequest) -> bytes:
    """One line of an OpenAI Batch input file: the exact body the live path would send."""
    return request_line(cid, request.body())


def iter_planned(
    plan: Plan, items: Iterable[tuple[ImageAnnotations, ItemKey]], tally: Tally, cache: ResponseCache | None, retry_tokens: int | None
) -> Iterator[tuple[str, ChatRequest]]:
    """(custom_id, request) for every pending item (`items`, from plan.pending) whose answer the cache still lacks,
    one at a time: with --see image|both each request carries its image, too many to hold at once on a big run.

    Items whose image cannot be shown are skipped (counted in `tally`), as the live run skips them."""
    for image, item in items:
        try:
            request, _ = plan.request_for(image, item)
        except ImageProblem as problem:
            tally.skip(item.task, problem.reason)
            continue
        reply = cache.get(request.key()) if cache is not None else None
        retry = length_retry(request, reply, retry_tokens) if reply is not None else None
        if retry is not None:
            request, reply = retry, cache.get(retry.key()) if cache is not None else None
        if reply is None:
            yield custom_id(item, request.key()), request


class BatchResults(BaseModel):
    """What one Batch-format results file says about the requests it was expected to answer."""

    answers: dict[str, ChatReply] = {}  # request key -> the reply
    refused: dict[str, str] = {}  # request key -> the server's message, for requests refused per item (4xx)
    first_error: str | None = None
    unreadable: int = 0  # lines that are not JSON objects
    foreign: int = 0  # lines whose custom_id names no request expected here


def refused_per_item(status: object) -> bool:
    # As on the live path: auth, unknown model and throttling are about the run, any other 4xx about the item.
    return isinstance(status, int) and 400 <= status < 500 and status not in (401, 403, 404, 408, 409, 429)


def read_results(data: bytes, expected: dict[str, str]) -> BatchResults:
    """Parse a Batch output (or error) file; `expected` maps each custom_id sent to its request key."""
    results = BatchResults()
    for line in read_batch_lines(data):
        result = parse_result(line.value)
        if result is None:
            results.unreadable += 1  # a broken line answers nothing; its item stays pending
            continue
        cid, status, body = result.custom_id, result.status, result.body
        if cid not in expected:
            results.foreign += 1  # never cache an answer under a key we did not send
            continue
        if result.answered:
            try:
                # The same parsing as a live answer, so a batch reply and a live one are indistinguishable.
                results.answers[expected[cid]] = parse_completion(body)
                continue
            except RetryableError as error:
                message = str(error)
        else:
            message = f"HTTP {status}: {one_line(result.message)}"
            if refused_per_item(status):
                results.refused[expected[cid]] = message
        if results.first_error is None:
            results.first_error = message
    return results


def state_path(folder: Path) -> Path:
    return folder / BATCH_DIR / STATE_FILE


def load_state(folder: Path) -> BatchState | None:
    path = state_path(folder)
    if not path.exists():
        return None
    try:
        return BatchState.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise InputError(
            f"{path}: not a datagen batch state ({error.errors()[0]['msg']}); move it aside to submit afresh"
            " (the batches it lists keep running at the server)"
        ) from None


_SKIP_REASONS: dict[str, SkipReason] = {"completed": "batch_failed", "failed": "batch_failed", "expired": "batch_expired", "cancelled": "batch_cancelled"}


def _reason(status: str) -> SkipReason:
    """The manifest's skip reason for an item a batch ended without answering."""
    return _SKIP_REASONS.get(status, "batch_failed")


class CacheOnlyTeacher(Teacher):
    """Beneath the cache in the ingest run: nothing goes out live, so a miss stays pending for the next run.

    `refused` (request key -> message) holds requests a batch engine refused per item: they become rejects,
    as they would live.
    """

    def __init__(self, info: TeacherInfo, refused: dict[str, str] | None = None, base_url: str | None = None) -> None:
        self.info = info
        self.refused = refused or {}
        self._base_url = base_url
        self.stats: Counter[str] = Counter()

    @property
    def base_url(self) -> str | None:
        return self._base_url

    async def complete(self, request: ChatRequest) -> ChatReply:
        message = self.refused.get(request.key())
        if message is not None:
            raise RequestRefused(message)
        raise RetryableError("no batch answered this request")

    async def aclose(self) -> None:
        return None


def openai_client(base_url: str, **options):
    """The SDK's client for the Batch API, with the key cleaned as live requests clean it (a trailing line end from
    `echo` would otherwise reach the header and be refused as a wrong key)."""
    import openai

    key = clean_key(os.environ.get(OpenAITeacher.key_variable), OpenAITeacher.key_variable)
    return openai.OpenAI(base_url=base_url, api_key=key, **options)


class BatchJob:
    """Plan, submit, wait for and ingest the batches of one `generate --batch` over one output folder."""

    def __init__(self, options: GenerateOptions) -> None:
        self.options = options
        self.planner = GenerateJob(options)  # checks --model, the API key and the inputs before anything is uploaded
        base_url = self.planner.base_url
        assert base_url is not None  # --batch takes only --teacher openai, checked above
        self.base_url = base_url
        self.where = redact_url(self.base_url)
        self.state = load_state(options.out) or BatchState()
        self.planner.open()  # refuses an --out made with other settings, as a live run does
        # Written before any waiting, so an --out whose batches are still out already records its settings.
        self.planner.started()
        assert self.planner.cache is not None  # --batch takes the response cache, checked above
        self.cache = self.planner.cache
        self.folder = options.out / BATCH_DIR
        self.folder.mkdir(exist_ok=True)
        self.failed: dict[str, SkipReason] = {}  # request key -> skip reason, for answers a batch of this invocation did not give
        self.refused: dict[str, str] = {}  # request key -> the server's message, for requests refused per item
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = openai_client(self.base_url, max_retries=3, timeout=self.options.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        asyncio.run(self.planner.close())

    def say(self, message: str) -> None:
        print(f"batch: {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def api(self, action: str) -> Iterator[None]:
        import openai

        try:
            yield
        except openai.AuthenticationError as error:
            raise TeacherFatalError(
                f"the Batch API at {self.where} rejected the API key (HTTP {error.status_code}); set OPENAI_API_KEY to a valid key for it"
            ) from None
        except openai.APIStatusError as error:
            raise TeacherFatalError(
                f"the Batch API at {self.where} refused to {action} (HTTP {error.status_code}: {self._message(error)});"
                " rerun the same command to re-attach to the batches already submitted"
            ) from None
        except openai.APIConnectionError as error:
            raise TeacherFatalError(
                f"the Batch API at {self.where} could not be reached to {action} ({type(error).__name__});"
                " rerun the same command to re-attach to the batches already submitted"
            ) from None

    @staticmethod
    def _message(error) -> str:
        body = error.body if isinstance(error.body, dict) else {}
        return redact_secrets(str(body.get("message") or error.message), environment_secrets(), limit=200, fold=True)

    def save(self) -> None:
        write_json_atomic(self.folder / STATE_FILE, self.state.model_dump(mode="json"), indent=None)

    # -- planning ---------------------------------------------------------------------------------

    def plan(self) -> Iterator[tuple[str, ChatRequest]]:
        # Streamed: with --see image|both every request carries its image, too many to hold at once.
        job = self.planner
        return iter_planned(job.plan, job.pending(), job.tally, self.cache, self.options.length_retry_max_tokens)

    def chunks(self, needed: Iterable[tuple[str, ChatRequest]]) -> Iterator[tuple[list[str], bytes]]:
        """Input files of at most --batch-size requests and `batch_max_bytes` bytes (OpenAI's 200 MB cap)."""
        ids: list[str] = []
        lines: list[bytes] = []
        size = 0
        for cid, request in needed:
            line = input_line(cid, request)
            if ids and (len(ids) >= self.options.batch_size or size + len(line) > self.options.batch_max_bytes):
                yield ids, b"".join(lines)
                ids, lines, size = [], [], 0
            ids.append(cid)
            lines.append(line)
            size += len(line)
        if ids:
            yield ids, b"".join(lines)

    # -- the server -------------------------------------------------------------------------------

    def submit(self, needed: Iterable[tuple[str, ChatRequest]]) -> int:
        """Upload and create a batch per input file; the number of requests submitted."""
        submitted = 0
        for ids, data in self.chunks(needed):
            submitted += len(ids)
            name = f"input-{len(self.state.batches) + 1:04d}.jsonl"
            self._write(name, data)
            with self.api("upload the batch input file"):
                uploaded = self.client.files.create(file=(name, data), purpose="batch")
            stored = StoredBatch(base_url=self.where, input_file=name, input_file_id=uploaded.id, custom_ids=ids)
            # Saved before the batch is created: a kill in between re-uses this upload rather than repeating it.
            self.state.batches.append(stored)
            self.save()
            self.create(stored)
        return submitted

    def create(self, stored: StoredBatch) -> None:
        with self.api("create a batch"):
            batch = self.client.batches.create(
                input_file_id=stored.input_file_id, endpoint=CHAT_URL, completion_window="24h", metadata={"datagen_input": stored.input_file}
            )
        stored.batch_id, stored.status = batch.id, batch.status
        self.save()
        self.say(f"submitted {batch.id} ({len(stored.custom_ids)} requests)")

    def settle(self) -> None:
        """Wait for every stored batch not yet ingested, then ingest each; batches submitted before a kill included."""
        open_batches = [stored for stored in self.state.batches if not stored.ingested]
        for stored in open_batches:
            if stored.base_url != self.where:
                raise InputError(
                    f"--base-url: batch {stored.batch_id or stored.input_file} in {self.folder} was submitted to {stored.base_url},"
                    f" not {self.where}; rerun with --base-url {stored.base_url} to collect it"
                )
            if stored.batch_id is None:
                self.create(stored)
        waiting = list(open_batches)
        while waiting:
            for stored in list(waiting):
                with self.api(f"retrieve batch {stored.batch_id}"):
                    batch = self.client.batches.retrieve(stored.batch_id)
                counts = batch.request_counts.model_dump() if batch.request_counts else {}
                if (batch.status, counts) != (stored.status, stored.request_counts):
                    stored.status, stored.request_counts = batch.status, counts
                    self.save()
                    self.say(f"{batch.id} {batch.status} " + " ".join(f"{k}={v}" for k, v in counts.items()))
                if batch.status in ENDED:
                    self.ingest(stored, batch)
                    waiting.remove(stored)
            if waiting:
                time.sleep(self.options.poll_interval)

    def ingest(self, stored: StoredBatch, batch) -> None:
        expected = {cid: parse_custom_id(cid)[2] for cid in stored.custom_ids}
        answered: set[str] = set()
        problems = (batch.errors.data or []) if batch.errors else []
        first_error = f"{problems[0].code}: {problems[0].message}" if problems else None
        for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
            if not file_id:
                continue
            with self.api(f"download the {kind} file of {batch.id}"):
                data = self.client.files.content(file_id).content
            self._write(stored.input_file.replace("input", kind), data)
            results = read_results(data, expected)
            for key, reply in results.answers.items():
                self.cache.put(key, reply)
            self.refused.update(results.refused)
            answered.update(cid for cid, key in expected.items() if key in results.answers or key in results.refused)
            first_error = first_error or results.first_error
        missing = [cid for cid in stored.custom_ids if cid not in answered]
        for cid in missing:
            self.failed[expected[cid]] = _reason(batch.status)
        stored.answered, stored.failed, stored.ingested = len(answered), len(missing), True
        self.save()
        left = f", {len(missing)} left pending for the next run" if missing else ""
        if first_error:  # the server's words, which may quote what it was sent
            left += f" (first error: {redact_secrets(first_error, environment_secrets(), limit=200, fold=True)})"
        self.say(f"{batch.id} {batch.status}: {len(answered)} answers into the cache{left}")

    def _write(self, name: str, data: bytes) -> None:
        with atomic_file(self.folder / name, "wb") as handle:
            handle.write(data)

    # -- the whole path ---------------------------------------------------------------------------

    def run(self) -> dict[ItemKey, SkipReason]:
        """Collect answers until nothing new can be asked; item -> why, for items left unanswered."""
        self.settle()
        while True:
            # A second round happens only for --retry-length answers cut short in the first.
            needed = ((cid, request) for cid, request in self.plan() if request.key() not in self.failed and request.key() not in self.refused)
            if not self.submit(needed):
                break
            self.settle()
        unanswered: dict[ItemKey, SkipReason] = {}
        for cid, request in self.plan():
            if request.key() in self.refused:
                continue  # becomes a request_refused reject in the ingest run
            unanswered[item_of(cid)] = self.failed.get(request.key(), "batch_unanswered")
        return unanswered


def generate_batch(options: GenerateOptions) -> Manifest:
    job = BatchJob(options)
    try:
        unanswered = job.run()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while batches are out: the manifest says so, with the true counts
        job.planner.finish("interrupted", None)
        raise
    finally:
        job.close()
    teacher = CacheOnlyTeacher(job.planner.teacher.info, refused=job.refused, base_url=job.base_url)
    return execute(GenerateJob(options, teacher, unanswered))


def status_rows(folder: Path, base_url: str | None = None) -> tuple[list[dict], list[str]]:
    """Each stored batch as the server reports it now (stored values where it cannot be asked), and any problems."""
    state = load_state(folder)
    if state is None:
        raise InputError(f"{folder}: holds no batch state ({state_path(folder)} missing); run `datagen generate --batch --out {folder}` first")
    import openai

    rows, problems, clients = [], [], {}
    try:
        for stored in state.batches:
            row = {
                "batch": stored.batch_id or f"(not created: {stored.input_file})",
                "status": stored.status,
                "counts": dict(stored.request_counts),
                "requests": len(stored.custom_ids),
                "ingested": stored.ingested,
            }
            url = base_url or stored.base_url
            if stored.batch_id is not None:
                try:
                    if url not in clients:
                        clients[url] = openai_client(url, max_retries=1, timeout=30)
                    batch = clients[url].batches.retrieve(stored.batch_id)
                    row["status"] = batch.status
                    row["counts"] = batch.request_counts.model_dump() if batch.request_counts else {}
                except openai.OpenAIError as error:  # a missing key included: the stored values still help
                    problems.append(f"{stored.batch_id}: stored values shown; the server at {redact_url(url)} could not be asked ({type(error).__name__})")
            rows.append(row)
    finally:
        for client in clients.values():
            client.close()
    return rows, problems


def print_status(folder: Path, base_url: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    rows, problems = status_rows(folder, base_url)
    table = Table(title=f"batches of {folder}")
    for column in ("batch", "status", "requests", "completed", "failed", "ingested"):
        table.add_column(column, justify="right" if column in ("requests", "completed", "failed") else "left")
    for row in rows:
        counts = row["counts"]
        table.add_row(
            row["batch"], row["status"], str(row["requests"]), str(counts.get("completed", "-")), str(counts.get("failed", "-")), "yes" if row["ingested"] else "no"
        )
    console = Console(width=160)
    console.print(table)
    for problem in problems:
        Console(stderr=True).print(problem, markup=False)
