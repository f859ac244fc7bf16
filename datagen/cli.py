"""The `datagen` command line. Heavy imports stay inside commands so `generate` starts fast."""

from __future__ import annotations

import functools
import sqlite3
import sys
from pathlib import Path
from typing import Optional

import typer

from datagen.errors import INCOMPLETE_EXIT, InputError, TeacherFatalError
from datagen.files.storage_errors import StorageError, explain_os_error
from datagen.judge.run import JudgeOptions
from datagen.run.options import MAX_BATCH_REQUESTS, RayEngine, default
from datagen.testing.mock_server_config import QUIRKS, MockServerConfig, parse_quirk
from datagen.tasks.registry import TASKS

_RAY = RayEngine()  # the Ray engine's defaults, which the flags of `ray` and `generate --engine ray` show

app = typer.Typer(
    help="Regenerate LLaVA-style visual instruction data with any text-only teacher, and train on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(command):
    """Expected failures end as one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as error:
            raise fail(str(error)) from None
        except TeacherFatalError as error:
            raise fail(str(error), error.exit_code) from None
        except StorageError as error:
            raise fail(str(error), error.exit_code) from None
        except OSError as error:  # a full disk, a read-only folder, a folder where a file belongs, ...
            explained = explain_os_error(error)
            raise fail(str(explained), explained.exit_code) from None
        except sqlite3.Error as error:
            raise fail(f"a SQLite file of the run failed ({error}); move the damaged file aside and rerun", 1) from None
        except typer.BadParameter as error:
            # A flag checked inside the command (--tasks, --shard, --context): one line too, not a usage panel.
            raise fail(error.format_message()) from None
        except KeyboardInterrupt:
            raise fail("interrupted; rerun the same command to resume where it stopped", code=130) from None

    return wrapper


def parse_tasks(value: str) -> list[str]:
    tasks = [task.strip() for task in value.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise typer.BadParameter(f"unknown task {', '.join(unknown) or '(none)'}; choose from {','.join(TASKS)}", param_hint="--tasks")
    return list(dict.fromkeys(tasks))


def parse_contexts(values: list[str]) -> dict[str, str]:
    """Only the tasks named: the others keep their task's default context."""
    from datagen.source.context import CONTEXT_KINDS

    contexts = {}
    for value in values:
        task, _, kind = value.partition("=")
        if task not in TASKS or kind not in CONTEXT_KINDS:
            kinds = " or ".join(f"TASK={kind}" for kind in CONTEXT_KINDS)
            raise typer.BadParameter(f"{value!r}: write {kinds}, TASK one of {','.join(TASKS)}", param_hint="--context")
        contexts[task] = kind
    return contexts


def parse_see(value: str) -> str:
    from datagen.teachers.vision import SEE_CHOICES

    if value not in SEE_CHOICES:
        raise typer.BadParameter(f"{value!r}: choose text, image or both", param_hint="--see")
    return value


def parse_structured_form(value: str, structured: bool) -> str:
    from datagen.tasks.structured import STRUCTURED_FORMS

    if value not in STRUCTURED_FORMS:
        raise typer.BadParameter(f"{value!r}: choose {' or '.join(STRUCTURED_FORMS)}", param_hint="--structured-form")
    if value != "json_schema" and not structured:
        raise InputError("--structured-form says how --structured sends its schema; add --structured")
    return value


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise typer.BadParameter(f"{value!r}: write i/n with 0 <= i < n, e.g. 0/4", param_hint="--shard")
    return index, count


def safe_argv() -> list[str]:
    """The command as typed, with anything secret taken out before it reaches the manifest."""
    from datagen.redaction import environment_secrets, redact_argv

    return redact_argv(sys.argv, environment_secrets())


def write_card(folder: Path, write) -> None:
    """The README.md dataset card beside the data (datagen/data/dataset_card.py); someone else's README is left alone."""
    from datagen.data import dataset_card
    try:
        written = write(dataset_card)
    except dataset_card.UntypeableField as error:
        # The data is already safe on disk; a record field the card cannot type must not fail the command.
        typer.echo(f"note: no dataset card written: {error}", err=True)
        return
    if written is None:
        typer.echo(f"note: {folder / dataset_card.CARD_FILE} was not written by datagen; left it alone (no dataset card)", err=True)


@app.command()
@friendly_errors
def generate(
    captions: Path = typer.Option(..., help="COCO captions file (captions_train2017.json)"),
    out: Path = typer.Option(..., help="Output folder; rerunning into it resumes"),
    instances: Optional[Path] = typer.Option(None, help="COCO instances file (boxes); needed by detail and complex_reasoning"),
    tasks: str = typer.Option(",".join(TASKS), help="Comma-separated tasks"),
    teacher: str = typer.Option(
        default("teacher"),
        help="openai (any OpenAI-compatible server), azure (an Azure OpenAI deployment), mock or mock-terse (offline, labelled; two for comparisons)",
    ),
    model: Optional[str] = typer.Option(None, help="Teacher model name (required with --teacher openai; the deployment with azure)"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint; default $OPENAI_BASE_URL or OpenAI"),
    prompts: Optional[Path] = typer.Option(None, help="Prompt-pack root (ours or LLaVA's playground/data/prompts)"),
    concurrency: int = typer.Option(default("concurrency"), min=1, help="Requests in flight at most"),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images"),
    seed: int = typer.Option(default("seed"), help="Seeds every per-item choice and the teacher's sampling"),
    temperature: float = typer.Option(default("temperature"), min=0.0, max=2.0),
    max_tokens: int = typer.Option(default("max_tokens"), min=1),
    max_completion_tokens: Optional[int] = typer.Option(
        None, min=1, help="Send max_completion_tokens=N instead of max_tokens (reasoning models need it)"
    ),
    omit_params: Optional[str] = typer.Option(None, help="Comma-separated request fields to leave out: seed,temperature"),
    extra_body: Optional[str] = typer.Option(None, help="JSON object merged into every request body (top_k, chat_template_kwargs...)"),
    structured: bool = typer.Option(
        False, "--structured", help="Ask for the task's reply form as a JSON schema (response_format); one re-ask for a reply not in it"
    ),
    structured_form: str = typer.Option(
        "json_schema", help="How --structured sends the schema: json_schema (OpenAI, vLLM, Ollama, llama-server) or json_object (llama-cpp-python's server)"
    ),
    retry_length: Optional[int] = typer.Option(
        None, min=1, help="On finish_reason=length, ask once more with this larger max_tokens before rejecting"
    ),
    timeout: float = typer.Option(default("timeout"), min=0.1, help="Seconds per request before it is retried"),
    max_retries: int = typer.Option(default("max_retries"), min=0, help="Retries per request on 5xx, timeouts and dropped connections (429s are waited out by time)"),
    give_up_after: float = typer.Option(
        default("give_up_after"), min=0.1, help="Stop the run (exit 1) when the server has answered nothing for this many seconds (only 429s: 5x as long)"
    ),
    max_reply_bytes: int = typer.Option(default("max_reply_bytes"), min=1024, help="Largest reply body read; a bigger one is rejected as oversized_reply"),
    context: list[str] = typer.Option([], help="TASK=captions|captions+boxes, repeatable; LLaVA's defaults otherwise"),
    cache: Optional[Path] = typer.Option(None, help="Response cache file to share across runs; default OUT/cache.sqlite"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the response cache"),
    force: bool = typer.Option(False, help="Start over in an --out made with other settings (old files are set aside)"),
    shard: Optional[str] = typer.Option(None, help="i/n: this machine's share of the images"),
    rpm: Optional[float] = typer.Option(None, min=0.001, help="Requests per minute at most"),
    tpm: Optional[float] = typer.Option(None, min=1, help="Tokens per minute at most (prompt estimate + max_tokens)"),
    progress: bool = typer.Option(True, help="Show the live progress bar"),
    reject_unsupported: bool = typer.Option(
        False, "--reject-unsupported", help="Reject records naming an object neither the boxes nor the captions show (default: flag in meta.grounding)"
    ),
    batch: bool = typer.Option(
        False, "--batch", help="Send the requests through the OpenAI Batch API (--teacher openai); rerun to re-attach after a kill"
    ),
    poll_interval: float = typer.Option(default("poll_interval"), min=0.001, help="Seconds between batch status checks (--batch)"),
    batch_size: int = typer.Option(default("batch_size"), min=1, max=MAX_BATCH_REQUESTS, help=f"Requests per batch at most (--batch; OpenAI allows {MAX_BATCH_REQUESTS:,})"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the request count and estimated tokens; send nothing (no API key needed)"),
    price_in: Optional[float] = typer.Option(None, min=0.0, help="Price per million prompt tokens, for --dry-run's cost estimate"),
    price_out: Optional[float] = typer.Option(None, min=0.0, help="Price per million completion tokens, for --dry-run's cost estimate"),
    requests_out: Optional[Path] = typer.Option(None, help="Write the pending requests as an OpenAI Batch input file; send nothing"),
    results_in: Optional[Path] = typer.Option(None, help="Ingest an OpenAI-Batch-format results file (e.g. vLLM run_batch's) instead of asking live"),
    see: str = typer.Option(default("see"), help="What the teacher is shown: text (captions+boxes, LLaVA's recipe), image, or both (needs --images)"),
    images: Optional[Path] = typer.Option(None, help="Folder of the images named in the captions file (--see image|both)"),
    image_max_side: int = typer.Option(default("image_max_side"), min=16, help="Longer side of the JPEG sent to the teacher, in pixels (--see image|both)"),
    engine: str = typer.Option("live", help="live (this process asks the teacher) or ray (Ray Data runs the requests: `datagen ray`'s flags below; needs datagen[ray])"),
    workers: int = typer.Option(_RAY.workers, min=1, help="Ray actors calling the endpoint (--engine ray)"),
    vllm: Optional[str] = typer.Option(None, help="Run MODEL on vLLM replicas on the cluster's GPUs instead of calling an endpoint (--engine ray)"),
    replicas: int = typer.Option(_RAY.replicas, min=1, help="vLLM engines (--vllm)"),
    tensor_parallel_size: int = typer.Option(_RAY.tensor_parallel_size, min=1, help="GPUs per vLLM engine (--vllm)"),
    engine_arg: list[str] = typer.Option([], help="NAME=VALUE for vLLM's engine, repeatable, e.g. max_model_len=8192 (--vllm)"),
    address: Optional[str] = typer.Option(None, help="auto or ray://HOST:PORT: a running Ray cluster (--engine ray); default a local one"),
    num_cpus: Optional[int] = typer.Option(None, min=1, help="CPUs of the local Ray (--engine ray without --address); default all"),
) -> None:
    """Ask the teacher for each image and task; write validated records, rejects and a manifest."""
    from datagen.run.generate import generate as run_generate
    from datagen.run.options import GenerateOptions
    from datagen.tasks.prompts import BUNDLED_PROMPTS
    from datagen.teachers.request_shape import parse_extra_body, parse_omit_params

    offline = [flag for flag, on in (("--dry-run", dry_run), ("--requests-out", requests_out), ("--results-in", results_in), ("--batch", batch)) if on]
    if len(offline) > 1:
        raise InputError(f"{offline[0]} and {offline[1]} do not go together; pick one")
    if force and offline[:1] in (["--dry-run"], ["--requests-out"]):
        raise InputError(f"--force with {offline[0]}: nothing is set aside when nothing is sent; drop --force or pick a fresh --out")
    if (requests_out or results_in) and teacher != "openai":
        raise InputError(f"{offline[0]} needs --teacher openai (the requests name --model for an OpenAI-compatible batch engine)")
    if engine not in ("live", "ray"):
        raise typer.BadParameter(f"{engine!r}: choose live or ray", param_hint="--engine")
    ray_engine = ray_settings(workers, vllm, replicas, tensor_parallel_size, engine_arg, address, num_cpus, None, used=engine == "ray", flag="--engine ray")
    if ray_engine is not None and offline:
        raise InputError(f"--engine ray and {offline[0]} do not go together; --engine ray does requests-out, the Ray run and results-in itself")
    if vllm is not None and model is None:
        model = vllm  # the requests name the model the engine runs
    if structured and (offline[:1] in (["--batch"], ["--results-in"]) or ray_engine is not None):
        # Its one re-ask is a live request; these ways get each answer once, from elsewhere.
        raise InputError(f"--structured asks a reply not in the schema once more, live; drop {offline[0] if offline else '--engine ray'} or --structured")

    options = GenerateOptions(
        captions=captions,
        instances=instances,
        out=out,
        tasks=parse_tasks(tasks),
        teacher=teacher,
        model=model,
        base_url=base_url,
        prompts=prompts or BUNDLED_PROMPTS,
        concurrency=concurrency,
        limit=limit,
        seed=seed,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=max_retries,
        give_up_after=give_up_after,
        max_reply_bytes=max_reply_bytes,
        contexts=parse_contexts(context),
        cache=cache,
        use_cache=not no_cache,
        force=force,
        shard=parse_shard(shard),
        rpm=rpm,
        tpm=tpm,
        length_retry_max_tokens=retry_length,
        reject_unsupported=reject_unsupported,
        progress=progress and sys.stderr.isatty(),
        command=safe_argv(),
        batch=batch,
        poll_interval=poll_interval,
        batch_size=batch_size,
        max_completion_tokens=max_completion_tokens,
        omit_params=parse_omit_params(omit_params),
        extra_body=parse_extra_body(extra_body),
        structured=structured,
        structured_form=parse_structured_form(structured_form, structured),
        dry_run=dry_run,
        price_in=price_in,
        price_out=price_out,
        requests_out=requests_out,
        results_in=results_in,
        see=parse_see(see),
        images=images,
        image_max_side=image_max_side,
        ray=ray_engine,
    )
    if dry_run:
        from datagen.run.estimate import describe, estimate

        typer.echo(describe(estimate(options)))
        return
    if requests_out is not None:
        from datagen.run.handoff import write_requests

        typer.echo(f"wrote {write_requests(options)} requests to {requests_out} (OpenAI Batch input format); nothing was sent")
        return
    manifest = run_generate(options)
    write_card(out, lambda card: card.write_run_card(out))
    if manifest.status == "failed" and manifest.failure:
        raise fail(manifest.failure, code=1)
    if manifest.status == "incomplete":
        raise fail(manifest.failure or "some items got no answer; rerun the same command to do them", code=INCOMPLETE_EXIT)
    if manifest.status != "completed":
        raise typer.Exit(1)


@app.command()
@friendly_errors
def export(
    folder: Path = typer.Argument(..., help="The --out folder of a generate run"),
    out: Path = typer.Option(..., help="File to write (JSON array, or JSONL with --jsonl)"),
    tasks: str = typer.Option(",".join(TASKS), help="Comma-separated tasks to merge"),
    jsonl: bool = typer.Option(False, "--jsonl", help="One record per line instead of a JSON array"),
    keep_meta: bool = typer.Option(False, "--keep-meta", help="Keep the provenance field `meta`"),
    shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle the merged records (seeded)"),
    seed: int = typer.Option(0, help="Seed of --shuffle"),
    fmt: str = typer.Option("llava", "--format", help="llava (LLaVA-Instruct records) or messages (OpenAI/TRL-style chat messages)"),
) -> None:
    """Merge task files into LLaVA-Instruct-150K-format records (or chat `messages`)."""
    from datagen.data.export import export as run_export

    counts = run_export(folder, out, parse_tasks(tasks), jsonl, keep_meta, shuffle, seed, fmt)
    if fmt == "llava":  # the card types LLaVA records; chat-message rows are TRL's format, read without one
        write_card(out.parent, lambda card: card.write_export_card(folder, out, counts, jsonl, keep_meta, shuffle, seed))
    typer.echo(f"wrote {sum(counts.values())} records to {out} (" + ", ".join(f"{task} {n}" for task, n in counts.items()) + ")")


@app.command()
@friendly_errors
def align(
    captions: Path = typer.Option(..., help="COCO captions file"),
    out: Path = typer.Option(..., help="File to write"),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images"),
    seed: int = typer.Option(0, help="Seeds the caption, instruction and <image> placement choices"),
    prompts: Optional[Path] = typer.Option(None, help="Prompt root whose instructions/brief.txt replaces ours"),
    jsonl: bool = typer.Option(False, "--jsonl", help="One record per line instead of a JSON array"),
) -> None:
    """Stage-1 alignment records (LLaVA-Pretrain style) from caption pairs; no teacher needed."""
    from datagen.data.export import align as run_align

    count = run_align(captions, out, limit, seed, jsonl, prompts)
    typer.echo(f"wrote {count} alignment records to {out}")


@app.command()
@friendly_errors
def audit(
    file: Path = typer.Argument(..., help="LLaVA-format records: a JSON array (llava_instruct_150k.json...) or JSONL (ours)"),
    captions: Path = typer.Option(..., help="COCO captions file of the images the records are about"),
    instances: Path = typer.Option(..., help="COCO instances file (boxes) of those images"),
    out: Optional[Path] = typer.Option(None, help="Folder for findings.jsonl and summary.json; default FILE-STEM-audit/"),
    task: Optional[str] = typer.Option(None, help="Task of records without meta.task; inferred from their turns otherwise"),
    max_chair_s: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Exit 1 when the share of records naming an absent object exceeds this"),
    max_flagged: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Exit 1 when the share of records with check findings exceeds this"),
    prompts: Optional[Path] = typer.Option(None, help="Prompt-pack root the records were made with; copied_example looks for its few-shot examples (default: ours)"),
) -> None:
    """Answer checks and object grounding over an existing data set, per record and per task; no teacher calls."""
    from datagen.data.audit import audit as run_audit, format_summary
    from datagen.tasks.prompts import BUNDLED_PROMPTS

    if task is not None and task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; choose one of {', '.join(TASKS)}", param_hint="--task")
    summary = run_audit(file, captions, instances, out or Path(f"{file.stem}-audit"), task, max_chair_s, max_flagged, prompts or BUNDLED_PROMPTS)
    typer.echo(format_summary(summary))
    if summary.failures:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def report(
    folders: list[Path] = typer.Argument(..., help="--out folders of generate runs, shown side by side (e.g. one per teacher)"),
    out: Path = typer.Option(..., help="HTML file to write (self-contained: plots embedded, no network)"),
    price_in: Optional[float] = typer.Option(None, min=0.0, help="Price per million prompt tokens, for the cost rows"),
    price_out: Optional[float] = typer.Option(None, min=0.0, help="Price per million completion tokens"),
) -> None:
    """Compare output folders: outcomes, grounding (CHAIR), lengths, question types, diversity, tokens and cost."""
    from datagen.data.report import Prices, print_summary, write_report

    if (price_in is None) != (price_out is None):
        raise typer.BadParameter("pass both --price-in and --price-out, or neither", param_hint="--price-in/--price-out")
    prices = Prices(price_in, price_out) if price_in is not None and price_out is not None else None
    runs = write_report(folders, out, prices)
    print_summary(runs, prices)
    typer.echo(f"wrote {out}")


def ray_settings(
    workers: int, vllm: str | None, replicas: int, tensor_parallel_size: int, engine_arg: list[str], address: str | None,
    num_cpus: int | None, batch_size: int | None, used: bool = True, flag: str = "datagen ray",
):
    """The Ray engine the flags ask for (None when `used` is False, where any Ray flag given is refused)."""
    from datagen.run.options import RayEngine
    from datagen.run.ray_engine import parse_engine_args

    defaults = RayEngine()
    given = {
        "--workers": workers != defaults.workers, "--vllm": vllm is not None, "--replicas": replicas != defaults.replicas,
        "--tensor-parallel-size": tensor_parallel_size != defaults.tensor_parallel_size, "--engine-arg": bool(engine_arg),
        "--address": address is not None, "--num-cpus": num_cpus is not None,
    }
    if not used:
        named = [name for name, on in given.items() if on]
        if named:
            raise InputError(f"{named[0]} is a Ray flag; add {flag}")
        return None
    if vllm is None:
        named = [name for name in ("--replicas", "--tensor-parallel-size", "--engine-arg") if given[name]]
        if named:
            raise InputError(f"{named[0]} sets up vLLM engines; add --vllm MODEL, or drop it to call an endpoint")
    elif given["--workers"]:
        raise InputError("--workers counts the actors calling an endpoint; with --vllm, --replicas counts the engines")
    if address is not None and num_cpus is not None:
        raise InputError("--num-cpus sizes a local Ray; a cluster joined with --address has its own")
    return RayEngine(
        address=address, num_cpus=num_cpus, workers=workers, vllm=vllm, replicas=replicas, tensor_parallel_size=tensor_parallel_size,
        engine_args=parse_engine_args(engine_arg), batch_size=batch_size,
    )


@app.command("ray")
@friendly_errors
def ray_command(
    requests: Path = typer.Argument(..., help="The requests file `generate --requests-out` wrote (OpenAI Batch input lines)"),
    out: Path = typer.Option(..., help="Results file (OpenAI Batch output lines) for `generate --results-in`; rerunning resumes it"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint; default $OPENAI_BASE_URL or OpenAI (key: $OPENAI_API_KEY)"),
    model: Optional[str] = typer.Option(None, help="Send this model name instead of the one the requests carry"),
    workers: int = typer.Option(_RAY.workers, min=1, help="Ray actors calling the endpoint"),
    concurrency: int = typer.Option(default("concurrency"), min=1, help="Requests in flight at most, across all workers"),
    rpm: Optional[float] = typer.Option(None, min=0.001, help="Requests per minute at most, across all workers"),
    qps: Optional[float] = typer.Option(None, min=0.001, help="Requests per second at most, across all workers (instead of --rpm)"),
    timeout: float = typer.Option(default("timeout"), min=0.1, help="Seconds per request before it is retried"),
    max_retries: int = typer.Option(default("max_retries"), min=0, help="Retries per request on 429, 5xx, timeouts and dropped connections"),
    vllm: Optional[str] = typer.Option(None, help="Run MODEL (a Hugging Face id or a local folder) on vLLM replicas on the cluster's GPUs instead of calling an endpoint"),
    replicas: int = typer.Option(_RAY.replicas, min=1, help="vLLM engines (--vllm)"),
    tensor_parallel_size: int = typer.Option(_RAY.tensor_parallel_size, min=1, help="GPUs per vLLM engine (--vllm)"),
    engine_arg: list[str] = typer.Option([], help="NAME=VALUE for vLLM's engine, repeatable, e.g. max_model_len=8192 (--vllm)"),
    rows_per_batch: Optional[int] = typer.Option(None, min=1, help="Rows per Ray batch; default from --concurrency (endpoint) or 64 (--vllm)"),
    address: Optional[str] = typer.Option(None, help="auto or ray://HOST:PORT: a running Ray cluster; default a local one started for the command"),
    num_cpus: Optional[int] = typer.Option(None, min=1, help="CPUs of the local Ray (without --address); default all"),
    progress: bool = typer.Option(True, help="Print the row count every few seconds"),
) -> None:
    """Answer a requests file through Ray Data: an endpoint called by Ray actors, or vLLM on the cluster's GPUs."""
    from datagen.run.ray_engine import RaySettings, describe, run_ray

    if vllm is not None and (base_url is not None or model is not None):
        raise InputError(f"--vllm and {'--base-url' if base_url is not None else '--model'} do not go together; --vllm runs the model itself")
    if rpm is not None and qps is not None:
        raise InputError("--rpm and --qps set the same limit; pass one")
    engine = ray_settings(workers, vllm, replicas, tensor_parallel_size, engine_arg, address, num_cpus, rows_per_batch)
    settings = RaySettings(
        requests=requests, out=out, engine=engine, base_url=base_url, model=model, concurrency=concurrency,
        rpm=qps * 60 if qps is not None else rpm, timeout=timeout, max_retries=max_retries,
    )
    outcome = run_ray(settings, progress)
    typer.echo(describe(settings, outcome))
    if outcome.counts["failed"]:
        raise fail(f"{outcome.counts['failed']} requests failed (first: {outcome.first_failure}); rerun the same command to retry them", code=1)


# -- production runs: Batch API status and merging shards (datagen/run/batch.py, datagen/data/merge.py) --------

batch_app = typer.Typer(help="Inspect the batches of `generate --batch` runs", no_args_is_help=True)
app.add_typer(batch_app, name="batch")


@batch_app.command("status")
@friendly_errors
def batch_status(
    folder: Path = typer.Argument(..., help="The --out folder of a `generate --batch` run"),
    base_url: Optional[str] = typer.Option(None, help="Ask this endpoint instead of the one each batch was submitted to"),
) -> None:
    """Each stored batch's id, status and request counts, as the server reports them now."""
    from datagen.run.batch import print_status

    print_status(folder, base_url)


@app.command()
@friendly_errors
def merge(
    folders: list[Path] = typer.Argument(..., help="The --out folders of `generate --shard i/n` runs"),
    out: Path = typer.Option(..., help="New folder for the merged output"),
    cache: bool = typer.Option(True, help="Merge the shards' response caches too, so a rerun into --out sends no requests"),
) -> None:
    """Join shard outputs into the folder one unsharded run would have written."""
    from datagen.data.merge import merge as run_merge

    manifest = run_merge(folders, out, merge_cache=cache, command=safe_argv())
    write_card(out, lambda card: card.write_run_card(out))
    written = ", ".join(f"{task} {counts.written}" for task, counts in manifest.counts.items())
    typer.echo(f"merged {len(folders)} shards into {out} ({written}; status {manifest.status})")


_PROBABILITY = {"min": 0.0, "max": 1.0}
_SERVER = MockServerConfig()  # the server's defaults, which the flags below show and pass on


@app.command("mock-server")
@friendly_errors
def mock_server_command(
    port: int = typer.Option(8000, "--port", help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option(_SERVER.host, "--host", help="Interface to bind."),
    latency_ms: float = typer.Option(_SERVER.latency_ms, "--latency-ms", min=0.0, help="Delay before every chat answer."),
    p429: float = typer.Option(_SERVER.p429, "--p429", **_PROBABILITY, help="Share of chat requests answered 429 with Retry-After."),
    p500: float = typer.Option(_SERVER.p500, "--p500", **_PROBABILITY, help="Share answered 500, 502 or 503."),
    hang: float = typer.Option(_SERVER.hang, "--hang", **_PROBABILITY, help="Share never answered."),
    drop: float = typer.Option(_SERVER.drop, "--drop", **_PROBABILITY, help="Share whose connection is closed without a response."),
    malformed: float = typer.Option(_SERVER.malformed, "--malformed", **_PROBABILITY, help="Share answered 200 with invalid JSON."),
    p_length: float = typer.Option(_SERVER.p_length, "--p-length", **_PROBABILITY, help="Share cut short with finish_reason=length."),
    p_refusal: float = typer.Option(_SERVER.p_refusal, "--p-refusal", **_PROBABILITY, help="Share answered with a refusal."),
    retry_after: float = typer.Option(_SERVER.retry_after, "--retry-after", min=0.0, help="Retry-After seconds sent with 429s."),
    fail_first: int = typer.Option(_SERVER.fail_first, "--fail-first", min=0, help="Fail the first N chat requests with --fail-status."),
    fail_status: int = typer.Option(_SERVER.fail_status, "--fail-status", help="HTTP status for --fail-first failures."),
    api_key: Optional[str] = typer.Option(_SERVER.api_key, "--api-key", help="Require this bearer key (401 otherwise)."),
    seed: int = typer.Option(_SERVER.seed, "--seed", help="Seed of the fault sequence."),
    model: list[str] = typer.Option(list(_SERVER.models), "--model", help="Model name listed by /v1/models (repeatable)."),
    only_listed_models: bool = typer.Option(False, "--only-listed-models", help="Answer 404 for models not listed."),
    batch_delay_s: float = typer.Option(_SERVER.batch_delay_s, "--batch-delay-s", min=0.0, help="Pause per batch stage, to exercise polling."),
    quirk: list[str] = typer.Option(
        [], "--quirk", help=f"NAME or NAME=RATE, repeatable: {', '.join(QUIRKS)} (see datagen/testing/mock_server_config.py)."
    ),
    context_window: int = typer.Option(_SERVER.context_window, "--context-window", min=1, help="Tokens of prompt + limit allowed (--quirk context_length)."),
    max_body_bytes: int = typer.Option(_SERVER.max_body_bytes, "--max-body-bytes", min=1, help="Largest request body accepted (--quirk too_large)."),
) -> None:
    """Serve a fault-injecting OpenAI-compatible API backed by the offline mock teacher."""
    import asyncio

    from datagen.testing.mock_openai_server import serve

    try:
        config = MockServerConfig(
            host=host,
            port=port,
            latency_ms=latency_ms,
            p429=p429,
            p500=p500,
            hang=hang,
            drop=drop,
            malformed=malformed,
            p_length=p_length,
            p_refusal=p_refusal,
            retry_after=retry_after,
            fail_first=fail_first,
            fail_status=fail_status,
            api_key=api_key,
            seed=seed,
            models=tuple(model),
            accept_any_model=not only_listed_models,
            batch_delay_s=batch_delay_s,
            quirks=dict(parse_quirk(value) for value in quirk),
            context_window=context_window,
            max_body_bytes=max_body_bytes,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    asyncio.run(serve(config))


@app.command()
@friendly_errors
def judge(
    folders: list[Path] = typer.Argument(
        None, help="A_DIR B_DIR: two generate --out folders over the same images (A = reference); or `summarize REVIEWS.jsonl...`"
    ),
    out: Optional[Path] = typer.Option(None, help="Output folder (reviews.jsonl, summary.json, summary.md); rerunning into it resumes"),
    captions: Optional[Path] = typer.Option(None, help="With A_DIR B_DIR: the COCO captions file both runs used"),
    instances: Optional[Path] = typer.Option(None, help="With A_DIR B_DIR: the COCO instances file (boxes in the judge's context)"),
    tasks: str = typer.Option(",".join(TASKS), help="With A_DIR B_DIR: comma-separated tasks to compare"),
    reference: Optional[Path] = typer.Option(None, help="LLaVA answers JSONL (question_id, text) scored as the reference"),
    candidate: Optional[Path] = typer.Option(None, help="LLaVA answers JSONL (question_id, text) scored as the candidate"),
    questions: Optional[Path] = typer.Option(None, help="Questions JSONL (question_id, image, text, category)"),
    context: Optional[Path] = typer.Option(
        None, help="Context JSONL, one line per image: LLaVA-Bench COCO's caps_boxes file, in-the-wild's context.jsonl, or ours"
    ),
    rule: Optional[Path] = typer.Option(None, help="LLaVA's rule.json: per-category judge prompts, requests laid out as LLaVA's scripts do"),
    judge_backend: str = typer.Option(default("judge", JudgeOptions), "--judge", help="openai (any OpenAI-compatible server) or mock (offline heuristic, for CI)"),
    judge_model: list[str] = typer.Option([], help="Judge model; give it twice to use two judges and report their agreement"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint; default $OPENAI_BASE_URL or OpenAI"),
    judge_prompt: Optional[Path] = typer.Option(None, help="File replacing the system message (prompts/judge/)"),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items (per task with A_DIR B_DIR)"),
    concurrency: int = typer.Option(default("concurrency", JudgeOptions), min=1),
    timeout: float = typer.Option(default("timeout", JudgeOptions), min=0.1),
    max_retries: int = typer.Option(default("max_retries", JudgeOptions), min=0),
    rpm: Optional[float] = typer.Option(None, min=0.001),
    tpm: Optional[float] = typer.Option(None, min=1),
    temperature: float = typer.Option(default("temperature", JudgeOptions), min=0.0, max=2.0),
    max_tokens: int = typer.Option(default("max_tokens", JudgeOptions), min=1),
    seed: int = typer.Option(default("seed", JudgeOptions), help="Seeds the judge's sampling and the bootstrap"),
    bootstrap: int = typer.Option(default("resamples", JudgeOptions), min=0, help="Bootstrap resamples of the 95% interval (0: none)"),
    cache: Optional[Path] = typer.Option(None, help="Response cache file; default OUT/cache.sqlite"),
    no_cache: bool = typer.Option(False, "--no-cache"),
    force: bool = typer.Option(False, help="Start over in an --out made with other inputs or settings (old files set aside)"),
) -> None:
    """Score two answer sets pairwise with a judge model, both orders; write reviews and a summary table.

    `datagen judge summarize REVIEWS.jsonl...` reads LLaVA's review files instead and prints our table with intervals.
    """
    from datagen.judge.inputs import items_from_files, items_from_folders
    from datagen.judge.run import RULE_SYSTEM_MESSAGE, SYSTEM_MESSAGE, run_judge

    if folders and str(folders[0]) == "summarize":
        _judge_summarize(folders[1:], out, bootstrap, seed)
        return
    if out is None:
        raise typer.BadParameter("is required: the folder for reviews.jsonl and the summary", param_hint="--out")
    files = {"--reference": reference, "--candidate": candidate, "--questions": questions, "--context": context}
    if folders and any(files.values()):
        raise typer.BadParameter("give either A_DIR B_DIR or the four answer files, not both", param_hint="A_DIR B_DIR")
    if folders:
        if len(folders) != 2:
            raise typer.BadParameter(f"got {len(folders)} folders; pass exactly two: A_DIR B_DIR", param_hint="A_DIR B_DIR")
        if captions is None:
            raise typer.BadParameter("is required with A_DIR B_DIR: the COCO captions file both runs used", param_hint="--captions")
        if rule is not None:
            raise typer.BadParameter("goes with the LLaVA answer files (--questions ...), whose categories it names", param_hint="--rule")
        loaded = items_from_folders(folders[0], folders[1], captions, instances, parse_tasks(tasks), limit)
    else:
        missing = [flag for flag, value in files.items() if value is None]
        if missing:
            raise typer.BadParameter(f"missing {', '.join(missing)}: pass A_DIR B_DIR, or all four answer files", param_hint="judge")
        loaded = items_from_files(reference, candidate, questions, context, limit)
    if not loaded.items:
        skipped = ", ".join(f"{reason} {count}" for reason, count in loaded.skipped.items()) or "no items"
        raise fail(f"nothing to judge: no item could be paired ({skipped}); check that the files name the same questions and images", 1)
    options = JudgeOptions(
        out=out, judge=judge_backend, judge_models=judge_model, base_url=base_url,
        system_prompt=judge_prompt or (RULE_SYSTEM_MESSAGE if rule else SYSTEM_MESSAGE), rule=rule,
        concurrency=concurrency, timeout=timeout,
        max_retries=max_retries, rpm=rpm, tpm=tpm, temperature=temperature, max_tokens=max_tokens, seed=seed,
        resamples=bootstrap, cache=cache, use_cache=not no_cache, force=force, command=safe_argv(),
    )
    summary, text = run_judge(options, loaded)
    typer.echo(text)
    if summary["status"] != "completed":
        raise fail(summary["failure"], 1) if "failure" in summary else typer.Exit(1)


def _judge_summarize(paths: list[Path], out: Path | None, resamples: int, seed: int) -> None:
    from datagen.files.jsonl import write_json_atomic
    from datagen.judge.summarize import summarize

    if not paths:
        raise typer.BadParameter("pass one or more review files: datagen judge summarize REVIEWS.jsonl...", param_hint="summarize")
    summaries, text = summarize(paths, resamples, seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "summary.json", {"bootstrap": {"resamples": resamples, "seed": seed, "level": 95}, "files": summaries})
        (out / "summary.md").write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


# -- scoring trained models (datagen/eval/); torch loads inside the commands -------------------------

eval_app = typer.Typer(help="Score trained models: LLaVA-Bench-style answers and ScienceQA accuracy", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("bench")
@friendly_errors
def eval_bench(
    questions: Path = typer.Option(..., help="Questions JSONL (question_id, image, text, category)"),
    out: Path = typer.Option(..., help="Folder for answers.jsonl (LLaVA's answer format); rerunning into it resumes"),
    model: Optional[Path] = typer.Option(None, help="A datagen checkpoint or a LlavaForConditionalGeneration folder to run"),
    answers: Optional[Path] = typer.Option(None, help="Take this answers file instead (LLaVA's model_vqa output), checked against --questions"),
    images: Optional[Path] = typer.Option(None, help="Folder the questions' image names are relative to"),
    batch_size: int = typer.Option(8, min=1),
    max_new_tokens: int = typer.Option(512, min=1),
    model_id: Optional[str] = typer.Option(None, help="model_id written in the answers; default the --model folder's name"),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16 or float16"),
) -> None:
    """Answer benchmark questions greedily (or take another tool's answers); `datagen judge` then scores them."""
    from datagen.eval.bench import run_bench, take_answers

    if (model is None) == (answers is None):
        raise typer.BadParameter("pass --model to run a model, or --answers to take an answers file (one of them)", param_hint="--model/--answers")
    if answers is not None:
        path, taken, unanswered = take_answers(answers, questions, out)
        typer.echo(f"took {taken} answers from {answers} into {path}")
        if unanswered:
            shown = ", ".join(unanswered[:5]) + (", ..." if len(unanswered) > 5 else "")
            raise fail(f"{len(unanswered)} questions have no answer in {answers} ({shown}); judge would skip them", 1)
        return
    assert model is not None
    path, new, before = run_bench(model, questions, images, out, batch_size, max_new_tokens, model_id, dtype)
    typer.echo(f"wrote {new} answers to {path} ({before} were already there)")


@eval_app.command("scienceqa")
@friendly_errors
def eval_scienceqa(
    problems: Path = typer.Option(..., help="ScienceQA's problems.json"),
    split_file: Path = typer.Option(..., help="ScienceQA's pid_splits.json"),
    out: Path = typer.Option(..., help="Folder for predictions.jsonl, results.json and results.md; rerunning resumes"),
    model: Optional[Path] = typer.Option(None, help="A datagen checkpoint or a LlavaForConditionalGeneration folder to run"),
    answers: Optional[Path] = typer.Option(None, help="Score this answers file instead (LLaVA's: question_id = pid, prompt, text)"),
    split: str = typer.Option("test", help="Which split of --split-file"),
    images: Optional[Path] = typer.Option(None, help="ScienceQA's image folder (<pid>/image.png, or <split>/<pid>/image.png)"),
    instruction: Optional[str] = typer.Option(
        None, help="The prompt's last line, asking for the letter; default ours, \"Reply with the letter of the correct option.\" "
        "(LLaVA-1.5's: \"Answer with the option's letter from the given choices directly.\")"
    ),
    batch_size: int = typer.Option(8, min=1),
    max_new_tokens: int = typer.Option(32, min=1),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N problems of the split"),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16 or float16"),
) -> None:
    """Multiple-choice accuracy overall and per subject, context modality and grade band, read as LLaVA reads replies."""
    from datagen.eval.scienceqa import INSTRUCTION, run_scienceqa, score_answers

    if (model is None) == (answers is None):
        raise typer.BadParameter("pass --model to run a model, or --answers to score an answers file (one of them)", param_hint="--model/--answers")
    if answers is not None:
        _, text = score_answers(answers, problems, split_file, split, out, limit)
    else:
        assert model is not None
        _, text = run_scienceqa(model, problems, split_file, split, images, out, batch_size, max_new_tokens, limit, dtype,
                                INSTRUCTION if instruction is None else instruction)
    typer.echo(text)


@eval_app.command("pope")
@friendly_errors
def eval_pope(
    instances: Path = typer.Option(..., help="COCO instances file the questions are built from (POPE used instances_val2014.json)"),
    out: Path = typer.Option(..., help="Folder for questions.jsonl, answers.jsonl, results.json and results.md; rerunning resumes"),
    model: Optional[Path] = typer.Option(None, help="A datagen checkpoint or a LlavaForConditionalGeneration folder to run"),
    answers: Optional[Path] = typer.Option(None, help="Score this answers file instead (question_id, text; answers to OUT/questions.jsonl)"),
    images: Optional[Path] = typer.Option(None, help="Folder of the instances file's images (with --model)"),
    image_count: int = typer.Option(500, min=1, help="Images drawn (POPE: 500)"),
    per_image: int = typer.Option(3, min=1, help="Yes-questions per image, each paired with a no-question (POPE: 3)"),
    seed: int = typer.Option(0, help="Seeds the images drawn and the random no-questions"),
    instruction: Optional[str] = typer.Option(
        None, help="Line after each question; default LLaVA-1.5's \"Answer the question using a single word or phrase.\" ('' for none)"
    ),
    batch_size: int = typer.Option(8, min=1),
    max_new_tokens: int = typer.Option(16, min=1),
    model_id: Optional[str] = typer.Option(None, help="model_id written in the answers; default the --model folder's name"),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16 or float16"),
) -> None:
    """POPE object-hallucination questions (random, popular, adversarial) from COCO instances, and their scores."""
    from datagen.eval.pope import INSTRUCTION, run_pope

    if model is not None and answers is not None:
        raise typer.BadParameter("pass --model to run a model or --answers to score a file, not both", param_hint="--model/--answers")
    results, text = run_pope(instances, out, image_count, per_image, seed, INSTRUCTION if instruction is None else instruction, answers, model, images, batch_size,
                             max_new_tokens, model_id, dtype)
    typer.echo(text)
    if results is not None:
        missing = sum(row["missing"] for row in results["samplings"].values())
        if missing:
            raise fail(f"{missing} POPE questions have no answer; the metrics above leave them out", 1)


def _register_trainer() -> None:
    # datagen.train.cli imports torch only inside its commands, so registering it costs generate nothing.
    from datagen.train.cli import chat, train_app

    app.add_typer(train_app, name="train", help="Two-stage LLaVA training on the records we generate (needs the datagen\\[train] extra)")
    app.command("chat")(chat)


_register_trainer()


def main() -> None:
    from typer.exceptions import TyperException

    try:
        code = app(standalone_mode=False)
    except TyperException as error:
        # Bad flags: one line naming the flag, like every other input error, instead of a usage panel.
        context = getattr(error, "ctx", None)
        if context is not None and type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(context.get_help())
            sys.exit(0)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        typer.echo(f"error: {error.format_message()}{hint}", err=True)
        sys.exit(2 if error.exit_code == 2 else 1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
