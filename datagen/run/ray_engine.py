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
row that failed for a reason a retry may fix) and sends only the rows missing. Ray Data's own checkpointing is
not used: it checkpoints rows at a write to a folder of files on storage the whole cluster mounts, where this
contract is one JSONL file on the machine that runs the command.

The API key reaches the actors inside their constructor arguments, wrapped so that no repr, log line or error
shows it; it is never put in a runtime_env (which Ray logs and shows) nor in any file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError, TeacherFatalError
from datagen.files.jsonl import atomic_file
from datagen.redaction import environment_secrets, one_line, redact_secrets, redact_url, url_has_credentials
from datagen.formats.manifest import Manifest
from datagen.run.handoff import ingest_results, write_requests
from datagen.run.batch import CHAT_URL, parse_custom_id, refused_per_item
from datagen.run.options import GenerateOptions, RayEngine
from datagen.teachers.endpoints import resolve_endpoint
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


@dataclass
class RayOutcome:
    pending: int  # rows this invocation had to answer
    already: int  # rows the results file held settled before it started
    counts: Counter[str] = field(default_factory=Counter)  # answered / refused / failed
    first_failure: str | None = None


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
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                cid, request = _parse_request_line(raw)
            except ValueError as error:
                raise InputError(f"{path} line {number}: not a datagen request ({error}); pass the file `datagen generate --requests-out` wrote") from None
            if cid not in seen:
                seen.add(cid)
                yield cid, request


def _parse_request_line(raw: bytes) -> tuple[str, ChatRequest]:
    try:
        line = json.loads(raw)
    except ValueError:
        raise ValueError("not JSON") from None
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


def settled(line: object) -> bool:
    """A results line that a rerun keeps: an answer, or a refusal of the item itself. Anything else (a torn
    line, a 5xx or a dropped connection after every retry, a rejected key) is asked again."""
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        return False
    response = line.get("response") or {}
    status = response.get("status_code") if isinstance(response, dict) else None
    if status == 200 and not line.get("error"):
        try:
            parse_completion(response.get("body"))
        except RetryableError:
            return False
        return True
    return refused_per_item(status)


def load_results(path: Path) -> set[str]:
    """The custom_ids settled in `path`; the lines a rerun asks again are taken out first (the file rewritten
    whole, so a kill midway leaves the old one)."""
    if not path.exists():
        return set()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"--out {path}: cannot read ({error.strerror}); pass a results file or a new path") from None
    kept: list[bytes] = []
    done: set[str] = set()
    dropped = 0
    for raw in data.splitlines(keepends=True):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not raw.endswith(b"\n") or not settled(line) or line["custom_id"] in done:
            dropped += 1
            continue
        done.add(line["custom_id"])
        kept.append(raw)
    if dropped:
        with atomic_file(path, "wb") as handle:
            handle.writelines(kept)
    return done


# -- output lines (OpenAI Batch output format) -----------------------------------------------------


def answer_line(cid: str, body: object, request_id: str) -> str:
    return json.dumps({"id": request_id, "custom_id": cid, "response": {"status_code": 200, "request_id": request_id, "body": body}, "error": None}, ensure_ascii=False)


def error_line(cid: str, status: int | None, message: str, request_id: str) -> str:
    """A failed row: with the HTTP status the server gave, in the body as OpenAI's Batch API writes it; without
    one (a dropped connection, a timeout, an engine error), as a top-level error."""
    if status is None:
        return json.dumps({"id": request_id, "custom_id": cid, "response": None, "error": {"code": "request_failed", "message": message}}, ensure_ascii=False)
    response = {"status_code": status, "request_id": request_id, "body": {"error": {"message": message}}}
    return json.dumps({"id": request_id, "custom_id": cid, "response": response, "error": None}, ensure_ascii=False)


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


def _client(settings: EndpointSettings, key: Secret, verified: bool) -> OpenAITeacher:
    return OpenAITeacher(
        model=settings.model or "(from the requests)",
        api_key=key.reveal(),
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        concurrency=settings.concurrency,
        limiter=RateLimiter(rpm=settings.rpm, concurrency=settings.concurrency),
        verified=verified,
    )


async def ask(client: OpenAITeacher, cid: str, request: ChatRequest, model: str | None, request_id: str, probing: bool = False) -> tuple[str, int | None]:
    """One row's results line and its HTTP status (None when no response came); `probing`, a wrong key, model or
    request shape ends the command instead."""
    if model is not None:
        request = request.model_copy(update={"model": model})
    try:
        _, body = await client.exchange(request)
        return answer_line(cid, body, request_id), 200
    except (RequestRefused, RetryableError) as error:
        message = str(error).removeprefix(f"HTTP {error.status}: ")
        return error_line(cid, error.status, message, request_id), error.status
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
        return {"custom_id": ids, "line": [line for line, _ in results], "status": [status or 0 for _, status in results]}


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


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(f"`datagen ray` needs Ray Data, which is not installed; {RAY_EXTRA}") from None
    return ray


def _reachable(address: str) -> str | None:
    """Why a HOST:PORT (or ray://HOST:PORT) address cannot be a cluster, None when something listens there:
    ray.init waits minutes for an address where nothing answers."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return "write auto, HOST:PORT or ray://HOST:PORT"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        return f"nothing answers at {host}:{port}: {error.strerror or type(error).__name__}"
    return None


def _connect(ray, settings: RaySettings) -> bool:
    """Join or start the cluster; True when this call did, so the driver lets go of it at the end."""
    address = settings.engine.address
    problem = _reachable(address) if address not in (None, "auto") else None
    if problem is not None:
        raise InputError(f"--address {address}: {problem}; pass the address `ray start --head` printed, or drop --address for a local Ray")
    if ray.is_initialized():
        return False  # a caller (a test session, a notebook) already holds one
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if settings.engine.address is None:
        options["num_cpus"] = settings.engine.num_cpus
    try:
        # "local": a new Ray of this command's own; with None, ray.init would join a cluster another user `ray start`ed here.
        ray.init(address=settings.engine.address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        where = settings.engine.address or "a local Ray"
        raise InputError(f"--address {where}: cannot connect to a Ray cluster ({one_line(str(error), 160)}); start one with `ray start --head` or drop --address") from None
    return True


def _probe(settings: EndpointSettings, key: Secret, rows: list[tuple[str, ChatRequest]], write: Callable[[str, str, int | None], None]) -> int:
    """The first rows go from the driver, one at a time, until one is answered: a wrong key, model or URL then
    ends the command in one line before any actor starts. How many rows it used."""

    async def run() -> int:
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
                    return used
            return len(rows)
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
    )
    return share, Secret(key)


def run_ray(settings: RaySettings, progress: bool = False) -> RayOutcome:
    """Answer every request of `settings.requests` not yet settled in `settings.out`; with `progress`, a count on
    stderr every few seconds."""
    ray = _import_ray()
    done = load_results(settings.out)
    rows = [(cid, request) for cid, request in read_requests(settings.requests) if cid not in done]
    outcome = RayOutcome(pending=len(rows), already=len(done))
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
    started = _connect(ray, settings)
    try:
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        with ResultsFile(settings.out, done, outcome, print_progress(len(rows)) if progress else None) as results:
            if settings.engine.vllm is None:
                rows = rows[_probe(endpoint, key, rows, results.write) :]
                results.flush()
            if rows:
                dataset = ray.data.from_items([{"custom_id": cid, "body": json.dumps(request.body(), ensure_ascii=False)} for cid, request in rows])
                if settings.engine.vllm is None:
                    answered = _endpoint_dataset(dataset, settings, endpoint, key)
                else:
                    answered = _vllm_dataset(dataset, settings, chat_template_kwargs)
                for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
                    for cid, line, status in zip(batch["custom_id"], batch["line"], batch["status"]):
                        results.write(str(cid), str(line), int(status) or None)
                    results.flush()
    finally:
        if started:
            ray.shutdown()
    return outcome


class ResultsFile:
    """The results file open for appending: one line per custom_id, flushed as each block arrives."""

    def __init__(self, path: Path, done: set[str], outcome: RayOutcome, on_row: Callable[[int], None] | None) -> None:
        self.path, self.done, self.outcome, self.on_row = path, done, outcome, on_row
        self.secrets = environment_secrets()

    def __enter__(self) -> ResultsFile:
        self.handle = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.handle:
            self.flush()
            os.fsync(self.handle.fileno())

    def flush(self) -> None:
        self.handle.flush()

    def write(self, cid: str, line: str, status: int | None) -> None:
        if cid in self.done:
            return  # a block Ray ran twice (a worker restarted): its first copy stands
        self.done.add(cid)
        self.handle.write(line + "\n")
        kind = _outcome(status)
        self.outcome.counts[kind] += 1
        if kind == "failed" and self.outcome.first_failure is None:
            self.outcome.first_failure = redact_secrets(_line_message(line), self.secrets, limit=200, fold=True)
        if self.on_row is not None:
            self.on_row(1)


def _line_message(line: str) -> str:
    data = json.loads(line)
    error = data.get("error") or ((data.get("response") or {}).get("body") or {}).get("error") or {}
    status = (data.get("response") or {}).get("status_code")
    return (f"HTTP {status}: " if status else "") + str(error.get("message", "no message"))


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
    return (
        f"ray: {counts['answered']} answered, {counts['refused']} refused per item, {counts['failed']} failed"
        f" of {outcome.pending} pending requests ({outcome.already} already in {settings.out})"
    )


def print_progress(total: int) -> Callable[[int], None]:
    """A line on stderr every few seconds: Ray's own bars are off, and a run of hours must show it moves."""
    state = {"done": 0, "at": time.monotonic(), "start": time.monotonic()}

    def advance(count: int) -> None:
        state["done"] += count
        now = time.monotonic()
        if now - state["at"] >= 5 or state["done"] == total:
            state["at"] = now
            rate = state["done"] / max(now - state["start"], 1e-9)
            print(f"ray: {state['done']}/{total} rows, {rate:.1f}/s", file=sys.stderr, flush=True)

    return advance


def generate_with_ray(options: GenerateOptions) -> Manifest:
    """`generate --engine ray`: the pending requests into OUT/ray/, through Ray, and their results back through
    the response cache; a kill anywhere is resumed by the same command (the results file keeps what came)."""
    assert options.ray is not None  # the CLI sets it with --engine ray
    folder = options.out / RAY_DIR
    requests, results = folder / "requests.jsonl", folder / "results.jsonl"
    if options.ray.vllm is None:
        resolve_endpoint("openai", options.model, options.base_url, os.environ)  # a missing key or model, before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    written = write_requests(options.model_copy(update={"requests_out": requests}))
    settings = RaySettings(
        requests=requests, out=results, engine=options.ray, base_url=options.base_url, concurrency=options.concurrency,
        rpm=options.rpm, timeout=options.timeout, max_retries=options.max_retries,
    )
    outcome = run_ray(settings, progress=written > 0)
    print(describe(settings, outcome), file=sys.stderr, flush=True)
    # --force set the old output aside in the first step; the ingest must not set aside what that step began.
    manifest = ingest_results(options.model_copy(update={"results_in": results, "force": False}))
    if not outcome.counts["failed"]:
        # Every answer is in the response cache now; the next run plans its own requests afresh.
        requests.unlink(missing_ok=True)
        results.unlink(missing_ok=True)
    return manifest
