"""`datagen ray`: a requests file (`generate --requests-out`) answered through Ray Data, into a results file that
`generate --results-in` reads (both in the OpenAI Batch line formats, datagen/run/batch.py).

Two engines sit behind one driver loop:
- an OpenAI-compatible endpoint, called by `--workers` Ray actors (`Dataset.map_batches` with an async callable
  class) that each hold our own client (datagen/teachers/teacher.py). Ray's `HttpRequestProcessorConfig` is not
  used: its stage drops the HTTP status (a refused item and a failed one look alike), does not retry a 500,
  ignores Retry-After, and raises on a row that runs out of retries, failing the whole dataset;
- vLLM replicas on the cluster's GPUs, through `ray.data.llm`'s `vLLMEngineProcessorConfig` (the engine applies
  the chat template, tokenizes and detokenizes); only our row pre- and post-processing is ours.

The results file is the checkpoint. The driver appends each row's line as its block arrives and skips ids
already written, so no custom_id is ever there twice; a rerun drops what is not settled (a torn last line, a
row that failed for a reason a retry may fix, each kept in a set-aside file beside it) and sends only the rows
missing. One command at a time holds the file (a lock beside it). Ray Data's own checkpointing is not used: it checkpoints rows at a write to a folder of files on storage the whole cluster mounts, where this
contract is one JSONL file on the machine that runs the command.

The API key reaches the actors inside their constructor arguments, wrapped so that no repr, log line or error
shows it; it is never put in a runtime_env (which Ray logs and shows) nor in any file.

Ray's own output (its C++ core's lines, its loggers, the raylet's notices of a dead worker) goes to a log file
beside the results while Ray runs, so that what reaches the terminal is ours: a count line, and one line at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from datagen.errors import InputError, ServerUnavailable, TeacherFatalError, sigterm_as_interrupt
from datagen.files.jsonl import JsonLine, atomic_file, read_lines
from datagen.files.lock import lock_file
from datagen.formats.batch_lines import CHAT_URL, BatchResult, answer_line, error_line, parse_result
from datagen.redaction import environment_secrets, one_line, redact_secrets, redact_url, url_has_credentials
from datagen.formats.manifest import Manifest, write_manifest
from datagen.run.handoff import ingest_results, write_requests
from datagen.run.progress import ProgressDisplay
from datagen.run.batch import parse_custom_id, refused_per_item
from datagen.run.options import GenerateOptions, RayEngine
from datagen.teachers.endpoints import resolve_endpoint
from datagen.teachers.health import DEFAULT_GIVE_UP_AFTER
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY, RateLimiter
from datagen.teachers.teacher import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ChatRequest,
    OpenAITeacher,
    RequestRefused,
    RetryableError,
    parse_completion,
    request_from_body,
)

RAY_EXTRA = "pip install 'datagen[ray]'"
RAY_DIR = "ray"  # generate --engine ray's requests and results, inside --out
DOWN = -1  # an actor's status for a row its server watch stopped: the line holds the watch's message, not a result
# What an HTTP/2 client sends first; a gRPC server (Ray's GCS, the Ray Client server) answers with a SETTINGS frame.
HTTP2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
ADDRESS_WAIT = 5.0  # seconds an --address gets to answer that greeting
# Sampling fields of a chat body that vLLM's SamplingParams takes under the same name (max_tokens aside).
VLLM_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "presence_penalty", "frequency_penalty", "repetition_penalty")


@dataclass
class RaySettings:
    requests: Path
    out: Path
    engine: RayEngine = field(default_factory=RayEngine)
    # The endpoint, when the engine runs no vLLM.
    base_url: str | None = None
    model: str | None = None  # replaces each body's model; None keeps the model the requests name
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight across all workers
    rpm: float | None = None  # across all workers
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    give_up_after: float = DEFAULT_GIVE_UP_AFTER  # seconds of a silent server before the run stops, as in generate
    # `generate --engine ray`'s own work file: after a kill in the ingest its next plan leaves out what the cache
    # got, so lines for requests the plan no longer makes are kept there, not refused as another file's.
    own_results: bool = False

    @property
    def log(self) -> Path:
        """Where Ray's own output goes while it runs."""
        return self.out.with_name(f"{self.out.stem}.ray.log")


@dataclass
class RayOutcome:
    pending: int  # rows this invocation had to answer
    already: int  # rows the results file held settled before it started
    answered_before: int = 0  # of those, answers (the rest per-item refusals)
    counts: Counter[str] = field(default_factory=Counter)  # answered / refused / failed
    first_failure: str | None = None
    sent: int = 0  # HTTP requests to the endpoint (retries included), or rows given to the vLLM engines
    base_url: str | None = None  # the endpoint, credentials stripped
    log: Path | None = None  # where Ray's own output went, when Ray ran


class Secret:
    """A value that travels pickled to Ray actors but never shows in a repr, a log line or an error."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


# -- the files -------------------------------------------------------------------------------------


def read_requests(path: Path) -> Iterator[tuple[str, ChatRequest]]:
    """(custom_id, request) for each line of a `generate --requests-out` file; a line that is not one ends the
    command with its line number. A custom_id seen before is skipped: the file's first request for it stands."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror}); pass the file `datagen generate --requests-out` wrote") from None
    seen: set[str] = set()
    with handle:
        for line in read_lines(handle):
            try:
                cid, request = _parse_request_line(line)
            except ValueError as error:
                raise InputError(f"{path} line {line.number}: not a datagen request ({error}); pass the file `datagen generate --requests-out` wrote") from None
            if cid not in seen:
                seen.add(cid)
                yield cid, request


def _parse_request_line(read: JsonLine) -> tuple[str, ChatRequest]:
    if read.problem is not None:
        raise ValueError("not JSON")
    line = read.value
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        raise ValueError("no custom_id")
    cid = line["custom_id"]
    try:
        _, _, key = parse_custom_id(cid)
    except ValueError:
        raise ValueError(f"custom_id {cid[:60]!r} is not image:task:key") from None
    if line.get("url", CHAT_URL) != CHAT_URL:
        raise ValueError(f"url {str(line.get('url'))[:60]!r} is not {CHAT_URL}")
    request = request_from_body(line.get("body"))
    if request.key() != key:
        raise ValueError("its body is not the one its custom_id was made from")
    return cid, request


def settled(result: BatchResult) -> bool:
    """A results row that a rerun keeps: an answer, or a refusal of the item itself. Anything else (a 5xx or a
    dropped connection after every retry, a rejected key) is asked again."""
    if result.answered:
        try:
            parse_completion(result.body)
        except RetryableError:
            return False
        return True
    return refused_per_item(result.status)


@dataclass
class Resumed:
    """What a results file held when a command began: the settled custom_ids, and the lines moved aside."""

    done: set[str] = field(default_factory=set)
    answers: int = 0  # settled rows that are answers (the rest refusals of the item)
    aside: Counter[str] = field(default_factory=Counter)  # why -> lines moved to the set-aside file


def aside_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.set-aside{path.suffix}")


def load_results(path: Path, wanted: Container[str] | None = None, requests: Path | None = None) -> Resumed:
    """What `path` holds settled of the requests `wanted`. The lines a rerun asks again (failed, torn by a kill)
    and repeats of a custom_id are moved to the set-aside file first, the results file rewritten whole (a kill
    midway leaves the old one). A file that is not a results file of these requests is refused untouched."""
    if not path.exists():
        return Resumed()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"--out {path}: cannot read ({error.strerror}); pass a results file or a new path") from None
    resumed = Resumed()
    kept: list[bytes] = []
    aside: list[bytes] = []
    lines = data.splitlines(keepends=True)
    for line in read_lines(lines):
        number, raw = line.number, line.raw
        complete = raw if raw.endswith(b"\n") else raw + b"\n"
        result = parse_result(line.value) if line.problem is None else None
        if result is None or not isinstance(result.custom_id, str):
            if number == len(lines) and complete is not raw and raw.lstrip().startswith(b"{"):
                resumed.aside["torn by a kill, asked again"] += 1
                aside.append(complete)
                continue
            raise InputError(
                f"--out {path} line {number}: not a results line (a JSON object with a custom_id and a response); it is not"
                " this command's to rewrite: pass a new path, or the results file of these requests"
            )
        cid = result.custom_id
        if wanted is not None and cid not in wanted:
            raise InputError(
                f"--out {path} line {number}: answers {cid[:80]!r}, which {requests or 'the requests file'} does not ask; pass a new"
                " path, or the requests file these results were made for"
            )
        if cid in resumed.done:
            resumed.aside["repeating a custom_id, the first kept"] += 1
            aside.append(complete)
        elif not settled(result):
            resumed.aside["failed, asked again"] += 1
            aside.append(complete)
        else:
            resumed.done.add(cid)
            resumed.answers += result.status == 200
            kept.append(complete)
    if aside:
        with open(aside_path(path), "ab") as handle:
            handle.writelines(aside)
            handle.flush()
            os.fsync(handle.fileno())
    if b"".join(kept) != data:
        with atomic_file(path, "wb") as handle:
            handle.writelines(kept)
    return resumed


def describe_aside(path: Path, resumed: Resumed) -> str:
    reasons = ", ".join(f"{count} {why}" for why, count in resumed.aside.items())
    return f"ray: moved {sum(resumed.aside.values())} lines of {path} to {aside_path(path)} ({reasons})"


# -- output lines (OpenAI Batch output format) -----------------------------------------------------


def _outcome(status: int | None) -> str:
    return "answered" if status == 200 else "refused" if refused_per_item(status) else "failed"


# -- the endpoint path -----------------------------------------------------------------------------


@dataclass
class EndpointSettings:
    """What each endpoint actor needs besides the key: plain values, so Ray pickles nothing secret in them."""

    base_url: str
    model: str | None
    concurrency: int
    rpm: float | None
    timeout: float
    max_retries: int
    give_up_after: float


def _client(settings: EndpointSettings, key: Secret, verified: bool) -> OpenAITeacher:
    return OpenAITeacher(
        model=settings.model or "(from the requests)",
        api_key=key.reveal(),
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        concurrency=settings.concurrency,
        limiter=RateLimiter(rpm=settings.rpm, concurrency=settings.concurrency),
        give_up_after=settings.give_up_after,
        verified=verified,
    )


async def ask(client: OpenAITeacher, cid: str, request: ChatRequest, model: str | None, request_id: str, probing: bool = False) -> tuple[str, int | None]:
    """One row's results line and its HTTP status (None when no response came); `probing`, a wrong key, model or
    request shape ends the command instead. A server the client's watch found dead: its message and DOWN."""
    if model is not None:
        request = request.model_copy(update={"model": model})
    try:
        _, body = await client.exchange(request)
        return answer_line(cid, body, request_id), 200
    except (RequestRefused, RetryableError) as error:
        message = str(error).removeprefix(f"HTTP {error.status}: ")
        return error_line(cid, error.status, message, request_id), error.status
    except ServerUnavailable as error:
        if probing:
            raise
        return str(error), DOWN
    except TeacherFatalError as error:  # a key revoked midway: every row after it fails alike, and a rerun retries them
        if probing:
            raise
        return error_line(cid, None, str(error), request_id), None


class EndpointWorker:
    """One Ray actor's share of the rows: its own client, limiter and connection pool, on Ray Data's event loop."""

    def __init__(self, settings: EndpointSettings, key: Secret) -> None:
        # The driver's first request already proved the key, model and request shape: a 4xx here refuses one item.
        self.client = _client(settings, key, verified=True)
        self.model = settings.model
        self.sent = 0
        self.name = f"ray-{os.getpid()}"

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids = [str(cid) for cid in batch["custom_id"]]
        requests = [request_from_body(json.loads(body)) for body in batch["body"]]
        first, self.sent = self.sent, self.sent + len(ids)
        results = await asyncio.gather(
            *(ask(self.client, cid, request, self.model, f"{self.name}-{first + n}") for n, (cid, request) in enumerate(zip(ids, requests)))
        )
        # The actor's HTTP requests so far (retries included; its batches overlap, so no per-batch count is exact):
        # the driver keeps each actor's largest for the manifest.
        return {
            "custom_id": ids, "line": [line for line, _ in results], "status": [status or 0 for _, status in results],
            "actor": [self.name] * len(ids), "sent": [self.client.stats["requests"]] * len(ids),
        }


# -- the vLLM path ---------------------------------------------------------------------------------


def vllm_config(engine: RayEngine, chat_template_kwargs: dict | None = None):
    """The processor config our flags ask for: `--replicas` engines of `--tensor-parallel-size` GPUs each."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine_kwargs = {**engine.engine_args, "tensor_parallel_size": engine.tensor_parallel_size}
    return vLLMEngineProcessorConfig(
        model_source=engine.vllm,
        engine_kwargs=engine_kwargs,
        concurrency=engine.replicas,
        batch_size=engine.batch_size or 64,
        # Failed rows come back as rows (an error line each) instead of failing the dataset.
        should_continue_on_error=True,
        chat_template_stage={"enabled": True, "chat_template_kwargs": chat_template_kwargs},
        tokenize_stage=True,
        detokenize_stage=True,
    )


def vllm_row(cid: str, request: ChatRequest) -> dict[str, object]:
    """A row for the engine: the chat messages and SamplingParams the body asks for (refused where it asks for
    something the engine cannot do)."""
    body = request.body()
    for message in request.messages:
        if not isinstance(message.get("content"), str):
            raise InputError(f"request {cid}: shows the teacher an image, which `--vllm` does not send; serve the model with `vllm serve` and use --base-url")
    sampling: dict[str, object] = {name: body[name] for name in VLLM_SAMPLING_FIELDS if name in body}
    sampling["max_tokens"] = request.max_tokens
    unknown = sorted(set(body) - {"model", "messages", "max_tokens", "max_completion_tokens", "chat_template_kwargs", *VLLM_SAMPLING_FIELDS})
    if unknown:
        raise InputError(f"request {cid}: field {', '.join(unknown)} has no vLLM sampling parameter; drop it from --extra-body or use --base-url")
    return {"custom_id": cid, "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages], "sampling_params": sampling}


def vllm_preprocess(row: dict[str, Any]) -> dict[str, Any]:
    return vllm_row(str(row["custom_id"]), request_from_body(json.loads(row["body"])))


def vllm_postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """An engine row as a chat.completion body: the engine gives no finish reason, so a reply that used its
    whole token budget is taken as cut short (`length`), as the server would say."""
    generated = int(row["num_generated_tokens"])
    limit = int(row["sampling_params"]["max_tokens"])
    body = {
        "id": f"chatcmpl-{row.get('request_id', '')}",
        "object": "chat.completion",
        "model": row.get("model_source") or "vllm",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": row["generated_text"]}, "finish_reason": "length" if generated >= limit else "stop"}],
        "usage": {"prompt_tokens": int(row["num_input_tokens"]), "completion_tokens": generated, "total_tokens": int(row["num_input_tokens"]) + generated},
    }
    cid = str(row["custom_id"])
    return {"custom_id": cid, "line": answer_line(cid, body, f"vllm-{row.get('request_id', '')}"), "status": 200}


def engine_error_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row the engine failed (ray.data.llm passes it by the postprocess, `__inference_error__` set)."""
    cid = str(row["custom_id"])
    return {"custom_id": cid, "line": error_line(cid, None, one_line(str(row["__inference_error__"])), "vllm-error"), "status": 0}


# -- the driver ------------------------------------------------------------------------------------


def _import_ray(flag: str = "`datagen ray`"):
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(f"{flag} needs Ray Data, which is not installed; {RAY_EXTRA}") from None
    return ray


def _reachable(address: str) -> str | None:
    """Why a HOST:PORT (or ray://HOST:PORT) address cannot be a cluster, None when a gRPC server answers there:
    ray.init waits minutes, printing warnings, where nothing answers or where something else listens."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return "write auto, HOST:PORT or ray://HOST:PORT"
    where = f"{host}:{port}"
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_WAIT)
    except OSError as error:
        return f"nothing answers at {where}: {error.strerror or type(error).__name__}"
    with conn:
        try:
            conn.settimeout(ADDRESS_WAIT)
            conn.sendall(HTTP2_GREETING)
            reply = conn.recv(64)
        except TimeoutError:
            return f"something at {where} takes connections but sent nothing in {ADDRESS_WAIT:.0f} s to a gRPC greeting: it is not Ray"
        except OSError as error:
            return f"something at {where} takes connections but then failed ({error.strerror or type(error).__name__}): it is not Ray"
    if len(reply) >= 9 and reply[3] == 4:  # an HTTP/2 SETTINGS frame
        return None
    if not reply:
        said = "closed the connection"
    elif reply.startswith(b"HTTP/"):
        status_line = reply.split(b"\r")[0].decode("ascii", "replace")
        said = f"answered {status_line!r} (a web server)"
    else:
        said = f"answered {reply[:24]!r}"
    return f"something at {where} {said}: it is not Ray"


def check_address(address: str | None) -> None:
    problem = _reachable(address) if address not in (None, "auto") else None
    if problem is not None:
        raise InputError(f"--address {address}: {problem}; pass the address `ray start --head` printed, or drop --address for a local Ray")


def _connect(ray, settings: RaySettings, log: TextIO) -> bool:
    """Join or start the cluster; True when this call did, so the driver lets go of it at the end."""
    if ray.is_initialized():
        return False  # a caller (a test session, a notebook) already holds one
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if settings.engine.address is None:
        options["num_cpus"] = settings.engine.num_cpus
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        # "local": a new Ray of this command's own; with None, ray.init would join a cluster another user `ray start`ed here.
        ray.init(address=settings.engine.address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        where = settings.engine.address or "a local Ray"
        raise InputError(f"--address {where}: cannot connect to a Ray cluster ({one_line(str(error), 160)}); start one with `ray start --head` or drop --address") from None
    finally:
        if main:
            # ray.init puts in a SIGTERM handler that exits at once with code 15; the command's own handling stands.
            signal.signal(signal.SIGTERM, sigterm)
    if settings.engine.address is None:
        # Its session folder (the sockets' paths are too short for most run folders to hold it) is named here.
        print(f"datagen: the local Ray's session logs: {ray._private.worker._global_node.get_session_dir_path()}/logs", file=log, flush=True)
    return True


@contextlib.contextmanager
def ray_output(path: Path) -> Iterator[TextIO]:
    """Ray's own output while it runs -- its C++ core's lines on file descriptor 2, its loggers, the raylet's
    paragraphs about a dead worker on stdout -- appended to `path` instead of the terminal, where it buried our
    lines and made no failure one line. Yields the stream our own lines go to."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = [os.dup(1), os.dup(2)]
    ours: TextIO = sys.stderr
    if _on_descriptor(sys.stderr, 2):  # else (a test's captured stream) our lines already go elsewhere than fd 2
        ours = open(os.dup(saved[1]), "w", encoding="utf-8", buffering=1)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        with open(os.dup(target), "a", encoding="utf-8") as log:
            print(f"datagen: Ray's own output of `datagen ray` (PID {os.getpid()}), {time.strftime('%Y-%m-%d %H:%M:%S')}", file=log, flush=True)
        yield ours
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
        if ours is not sys.stderr:
            ours.close()


def _on_descriptor(stream: TextIO, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _probe(settings: EndpointSettings, key: Secret, rows: list[tuple[str, ChatRequest]], write: Callable[[str, str, int | None], None]) -> tuple[int, int]:
    """The first rows go from the driver, one at a time, until one is answered: a wrong key, model or URL then
    ends the command in one line before Ray starts. How many rows it used, and the HTTP requests it sent."""

    async def run() -> tuple[int, int]:
        client = _client(settings, key, verified=False)
        try:
            for used, (cid, request) in enumerate(rows, start=1):
                line, status = await ask(client, cid, request, settings.model, "ray-driver", probing=True)
                if _outcome(status) == "failed":
                    raise TeacherFatalError(
                        f"the endpoint at {redact_url(settings.base_url)} did not answer the first request after {settings.max_retries} retries"
                        f" ({_line_message(line)}); check --base-url and that the server is up"
                    )
                write(cid, line, status)
                if status == 200:
                    return used, client.stats["requests"]
            return len(rows), client.stats["requests"]
        finally:
            await client.aclose()

    return asyncio.run(run())


def _endpoint(settings: RaySettings, first_model: str) -> tuple[EndpointSettings, Secret]:
    base_url, key = resolve_endpoint("openai", settings.model or first_model, settings.base_url, os.environ)
    assert key is not None  # resolve_endpoint refuses a missing key
    if url_has_credentials(base_url):
        # The URL travels to the actors in the clear: a password in it would be a secret Ray could show.
        flag = "--base-url" if settings.base_url else "OPENAI_BASE_URL"
        raise InputError(f"{flag} {redact_url(base_url)}: holds user:password@; drop them from the URL and pass the key in OPENAI_API_KEY")
    workers = max(1, settings.engine.workers)
    share = EndpointSettings(
        base_url=base_url,
        model=settings.model,
        concurrency=max(1, math.ceil(settings.concurrency / workers)),
        rpm=settings.rpm / workers if settings.rpm else None,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        give_up_after=settings.give_up_after,
    )
    return share, Secret(key)


def check_paths(settings: RaySettings) -> None:
    """Refuse a results path that would overwrite the requests (the same file, or a link to it) or is a folder."""
    out, requests = settings.out, settings.requests
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; pass the path of a results file (e.g. {out / 'results.jsonl'})")
    with contextlib.suppress(OSError):
        if out.resolve() == requests.resolve() or (out.exists() and os.path.samefile(out, requests)):
            raise InputError(f"--out {out}: is the requests file {requests}, which the results would overwrite; pass a new path for the results")


def run_ray(settings: RaySettings, progress: bool = False, log_every: float = 0.0) -> RayOutcome:
    """Answer every request of `settings.requests` not yet settled in `settings.out`, showing its progress as
    generate does (`progress`: the bar in a terminal; `log_every`: a plain line every so many seconds). The results file is held (a lock beside it) for the whole command: a second
    command on it would send every request again and write each answer twice."""
    ray = _import_ray()
    check_paths(settings)
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    with lock_file(settings.out, "ray"), sigterm_as_interrupt():
        return _run_held(ray, settings, progress, log_every)


def _run_held(ray, settings: RaySettings, progress: bool, log_every: float) -> RayOutcome:
    requests = dict(read_requests(settings.requests))
    resumed = load_results(settings.out, None if settings.own_results else requests, settings.requests)
    if resumed.aside:
        print(describe_aside(settings.out, resumed), file=sys.stderr, flush=True)
    rows = [(cid, request) for cid, request in requests.items() if cid not in resumed.done]
    outcome = RayOutcome(pending=len(rows), already=len(resumed.done), answered_before=resumed.answers)
    if not rows:
        return outcome
    chat_template_kwargs = None
    if settings.engine.vllm is not None:
        for cid, request in rows:
            vllm_row(cid, request)  # refuses what the engine cannot take before any GPU starts
        # --extra-body sets them alike on every request; the engine's chat template stage takes them once.
        chat_template_kwargs = rows[0][1].body().get("chat_template_kwargs")
    else:
        endpoint, key = _endpoint(settings, rows[0][1].model)
        outcome.base_url = redact_url(endpoint.base_url)
    check_address(settings.engine.address)
    with ResultsFile(settings.out, resumed.done, outcome) as results:
        if settings.engine.vllm is None:
            used, outcome.sent = _probe(endpoint, key, rows, results.write)  # before Ray starts: a wrong key costs one request
            rows = rows[used:]
            results.flush()
        if not rows:
            return outcome
        outcome.log = settings.log
        with ray_output(settings.log) as ours, ProgressDisplay("ray", len(rows), None, [], enabled=progress, log_every=log_every, stream=ours) as display:
            results.on_row = display.advance
            with open(settings.log, "a", encoding="utf-8") as log:
                started = _connect(ray, settings, log)
            try:
                dataset = ray.data.from_items([{"custom_id": cid, "body": json.dumps(request.body(), ensure_ascii=False)} for cid, request in rows])
                if settings.engine.vllm is None:
                    answered = _endpoint_dataset(dataset, settings, endpoint, key)
                else:
                    answered = _vllm_dataset(dataset, settings, chat_template_kwargs)
                _collect(answered, results, vllm=settings.engine.vllm is not None)
            finally:
                if started:
                    ray.shutdown()
    return outcome


def _collect(answered, results: ResultsFile, vllm: bool) -> None:
    """The rows' lines into the results file as each block arrives; a server an actor's watch found dead stops
    the run (as it stops `generate`), the rows of that block left for the rerun."""
    batches = iter(answered.iter_batches(batch_size=None, batch_format="numpy"))
    before = results.outcome.sent  # the driver's probe
    by_actor: dict[str, int] = {}
    try:
        for batch in batches:
            down = None
            for cid, line, status in zip(batch["custom_id"], batch["line"], batch["status"]):
                if int(status) == DOWN:
                    down = down or str(line)
                else:
                    results.write(str(cid), str(line), int(status) or None)
            if vllm:
                results.outcome.sent += len(batch["custom_id"])
            else:
                for actor, sent in zip(batch["actor"], batch["sent"]):
                    by_actor[str(actor)] = max(by_actor.get(str(actor), 0), int(sent))
                results.outcome.sent = before + sum(by_actor.values())
            results.flush()
            if down is not None:
                raise ServerUnavailable(down)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops Ray Data's executor on a cluster this command joined


class ResultsFile:
    """The results file, opened for appending at its first line: one line per custom_id, flushed as each block
    arrives. A command that ends before any line (a wrong key) leaves no file."""

    def __init__(self, path: Path, done: set[str], outcome: RayOutcome, on_row: Callable[[str], None] | None = None) -> None:
        self.path, self.done, self.outcome, self.on_row = path, done, outcome, on_row
        self.secrets = environment_secrets()
        self.handle: TextIO | None = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is not None:
            with self.handle:
                self.flush()
                os.fsync(self.handle.fileno())

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def write(self, cid: str, line: str, status: int | None) -> None:
        if cid in self.done:
            return  # a block Ray ran twice (a worker restarted): its first copy stands
        self.done.add(cid)
        if self.handle is None:
            self.handle = open(self.path, "a", encoding="utf-8")
        self.handle.write(line + "\n")
        kind = _outcome(status)
        self.outcome.counts[kind] += 1
        if kind == "failed" and self.outcome.first_failure is None:
            self.outcome.first_failure = redact_secrets(_line_message(line), self.secrets, limit=200, fold=True)
        if self.on_row is not None:
            self.on_row(_AS_GENERATE_COUNTS[kind])


# A row's outcome as `generate --results-in` will count it: a refusal per item becomes a reject, a failure a skip.
_AS_GENERATE_COUNTS = {"answered": "written", "refused": "rejected", "failed": "skipped"}


def _line_message(line: str) -> str:
    result = parse_result(json.loads(line))
    assert result is not None  # a line this module wrote
    return (f"HTTP {result.status}: " if result.status else "") + result.message


def _quiet_ray_data(ray) -> None:
    # Ray Data's bars and plan lines would bury our one progress line; they stay in its session logs.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _endpoint_dataset(dataset, settings: RaySettings, endpoint: EndpointSettings, key: Secret):
    import ray

    _quiet_ray_data(ray)
    return dataset.map_batches(
        EndpointWorker,
        fn_constructor_kwargs={"settings": endpoint, "key": key},
        # A batch a little larger than a worker's share of --concurrency keeps its requests in flight, and small
        # enough that lines reach the file (the checkpoint) every few seconds.
        batch_size=settings.engine.batch_size or max(8, endpoint.concurrency),
        compute=ray.data.ActorPoolStrategy(size=max(1, settings.engine.workers)),
        num_cpus=0.25,  # the actors wait on the network; a quarter core each leaves room for Ray Data's own tasks
        batch_format="numpy",
    )


def _vllm_dataset(dataset, settings: RaySettings, chat_template_kwargs: dict | None):
    import ray
    from ray.data.llm import build_processor

    _quiet_ray_data(ray)
    processor = build_processor(vllm_config(settings.engine, chat_template_kwargs), preprocess=vllm_preprocess, postprocess=vllm_postprocess)
    rows = processor(dataset)
    return rows.map(lambda row: engine_error_row(row) if row.get("__inference_error__") else {k: row[k] for k in ("custom_id", "line", "status")})


def describe(settings: RaySettings, outcome: RayOutcome) -> str:
    counts = outcome.counts
    where = f"; Ray's own output: {outcome.log}" if outcome.log is not None else ""
    return (
        f"ray: {counts['answered']} answered, {counts['refused']} refused per item, {counts['failed']} failed"
        f" of {outcome.pending} pending requests ({outcome.already} already in {settings.out}){where}"
    )


def generate_with_ray(options: GenerateOptions) -> Manifest:
    """`generate --engine ray`: the pending requests into OUT/ray/, through Ray, and their results back through
    the response cache; a kill anywhere is resumed by the same command (the results file keeps what came)."""
    assert options.ray is not None  # the CLI sets it with --engine ray
    _import_ray("--engine ray")  # before anything is written
    folder = options.out / RAY_DIR
    requests, results = folder / "requests.jsonl", folder / "results.jsonl"
    if options.ray.vllm is None:
        resolve_endpoint("openai", options.model, options.base_url, os.environ)  # a missing key or model, before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    write_requests(options.model_copy(update={"requests_out": requests}))
    settings = RaySettings(
        requests=requests, out=results, engine=options.ray, base_url=options.base_url, concurrency=options.concurrency,
        rpm=options.rpm, timeout=options.timeout, max_retries=options.max_retries, give_up_after=options.give_up_after, own_results=True,
    )
    outcome = run_ray(settings, progress=options.progress, log_every=options.log_every)
    print(describe(settings, outcome), file=sys.stderr, flush=True)
    # --force set the old output aside in the first step; the ingest must not set aside what that step began.
    manifest = credit_ray(options.out, ingest_results(options.model_copy(update={"results_in": results, "force": False})), outcome)
    # Every answer is in the response cache now, and every refusal a reject: the next run plans its own requests
    # afresh (the ones that failed among them), so these files, answering another plan, would only be refused by it.
    requests.unlink(missing_ok=True)
    results.unlink(missing_ok=True)
    return manifest


def credit_ray(out: Path, manifest: Manifest, outcome: RayOutcome) -> Manifest:
    """The ingest read every answer from the cache; the manifest says where they came from instead: the endpoint
    Ray's actors called and the requests they sent, the answers they brought no longer counted as cache hits."""
    via_ray = outcome.answered_before + outcome.counts["answered"]
    credited = manifest.model_copy(
        update={
            "base_url": outcome.base_url or manifest.base_url,
            "requests_sent": manifest.metrics["requests_sent"] + outcome.sent,
            "cache_hits": max(0, manifest.metrics["cache_hits"] - via_ray),
        }
    )
    write_manifest(out, credited)
    return credited
