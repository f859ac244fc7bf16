"""The `datagen` command line. Heavy imports stay inside commands so `generate` starts fast."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from datagen.errors import InputError, TeacherFatalError
from datagen.records import TASKS

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
        except (InputError, TeacherFatalError) as error:
            raise fail(str(error)) from None
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
    from datagen.context import DEFAULT_CONTEXT

    contexts = dict(DEFAULT_CONTEXT)
    for value in values:
        task, _, kind = value.partition("=")
        if task not in TASKS or kind not in ("captions", "captions+boxes"):
            raise typer.BadParameter(f"{value!r}: write TASK=captions or TASK=captions+boxes, TASK one of {','.join(TASKS)}", param_hint="--context")
        contexts[task] = kind
    return contexts


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
    from datagen.teacher import redact_url

    secret = os.environ.get("OPENAI_API_KEY")
    argv = []
    for arg in sys.argv:
        if secret and secret in arg:
            arg = arg.replace(secret, "***")
        if "://" in arg:
            arg = redact_url(arg)
        argv.append(arg)
    return argv


@app.command()
@friendly_errors
def generate(
    captions: Path = typer.Option(..., help="COCO captions file (captions_train2017.json)"),
    out: Path = typer.Option(..., help="Output folder; rerunning into it resumes"),
    instances: Optional[Path] = typer.Option(None, help="COCO instances file (boxes); needed by detail and complex_reasoning"),
    tasks: str = typer.Option(",".join(TASKS), help="Comma-separated tasks"),
    teacher: str = typer.Option("openai", help="openai (any OpenAI-compatible server) or mock (offline, labelled)"),
    model: Optional[str] = typer.Option(None, help="Teacher model name (required with --teacher openai)"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint; default $OPENAI_BASE_URL or OpenAI"),
    prompts: Optional[Path] = typer.Option(None, help="Prompt-pack root (ours or LLaVA's playground/data/prompts)"),
    concurrency: int = typer.Option(16, min=1, help="Requests in flight at most"),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images"),
    seed: int = typer.Option(0, help="Seeds every per-item choice and the teacher's sampling"),
    temperature: float = typer.Option(0.7, min=0.0, max=2.0),
    max_tokens: int = typer.Option(1024, min=1),
    retry_length: Optional[int] = typer.Option(
        None, min=1, help="On finish_reason=length, ask once more with this larger max_tokens before rejecting"
    ),
    timeout: float = typer.Option(120.0, min=0.1, help="Seconds per request before it is retried"),
    max_retries: int = typer.Option(6, min=0, help="Retries per request on 429, 5xx, timeouts and dropped connections"),
    context: list[str] = typer.Option([], help="TASK=captions|captions+boxes, repeatable; LLaVA's defaults otherwise"),
    cache: Optional[Path] = typer.Option(None, help="Response cache file to share across runs; default OUT/cache.sqlite"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the response cache"),
    force: bool = typer.Option(False, help="Start over in an --out made with other settings (old files are set aside)"),
    shard: Optional[str] = typer.Option(None, help="i/n: this machine's share of the images"),
    rpm: Optional[float] = typer.Option(None, min=0.001, help="Requests per minute at most"),
    tpm: Optional[float] = typer.Option(None, min=1, help="Tokens per minute at most (prompt estimate + max_tokens)"),
    progress: bool = typer.Option(True, help="Show the live progress bar"),
    batch: bool = typer.Option(
        False, "--batch", help="Send the requests through the OpenAI Batch API (--teacher openai); rerun to re-attach after a kill"
    ),
    poll_interval: float = typer.Option(30.0, min=0.001, help="Seconds between batch status checks (--batch)"),
    batch_size: int = typer.Option(50_000, min=1, max=50_000, help="Requests per batch at most (--batch; OpenAI allows 50,000)"),
) -> None:
    """Ask the teacher for each image and task; write validated records, rejects and a manifest."""
    from datagen.pipeline import GenerateOptions, generate as run_generate
    from datagen.prompts import BUNDLED_PROMPTS

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
        contexts=parse_contexts(context),
        cache=cache,
        use_cache=not no_cache,
        force=force,
        shard=parse_shard(shard),
        rpm=rpm,
        tpm=tpm,
        length_retry_max_tokens=retry_length,
        progress=progress and sys.stderr.isatty(),
        command=safe_argv(),
        batch=batch,
        poll_interval=poll_interval,
        batch_size=batch_size,
    )
    manifest = run_generate(options)
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
    from datagen.export import export as run_export

    counts = run_export(folder, out, parse_tasks(tasks), jsonl, keep_meta, shuffle, seed, fmt)
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
    from datagen.export import align as run_align

    count = run_align(captions, out, limit, seed, jsonl, prompts)
    typer.echo(f"wrote {count} alignment records to {out}")


# -- production runs: Batch API status and merging shards (datagen/batch.py, datagen/merge.py) --------

batch_app = typer.Typer(help="Inspect the batches of `generate --batch` runs", no_args_is_help=True)
app.add_typer(batch_app, name="batch")


@batch_app.command("status")
@friendly_errors
def batch_status(
    folder: Path = typer.Argument(..., help="The --out folder of a `generate --batch` run"),
    base_url: Optional[str] = typer.Option(None, help="Ask this endpoint instead of the one each batch was submitted to"),
) -> None:
    """Each stored batch's id, status and request counts, as the server reports them now."""
    from datagen.batch import print_status

    print_status(folder, base_url)


@app.command()
@friendly_errors
def merge(
    folders: list[Path] = typer.Argument(..., help="The --out folders of `generate --shard i/n` runs"),
    out: Path = typer.Option(..., help="New folder for the merged output"),
    cache: bool = typer.Option(True, help="Merge the shards' response caches too, so a rerun into --out sends no requests"),
) -> None:
    """Join shard outputs into the folder one unsharded run would have written."""
    from datagen.merge import merge as run_merge

    manifest = run_merge(folders, out, merge_cache=cache, command=safe_argv())
    written = ", ".join(f"{task} {counts.written}" for task, counts in manifest.counts.items())
    typer.echo(f"merged {len(folders)} shards into {out} ({written}; status {manifest.status})")


_PROBABILITY = {"min": 0.0, "max": 1.0}


@app.command("mock-server")
@friendly_errors
def mock_server_command(
    port: int = typer.Option(8000, "--port", help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0.0, help="Delay before every chat answer."),
    p429: float = typer.Option(0.0, "--p429", **_PROBABILITY, help="Share of chat requests answered 429 with Retry-After."),
    p500: float = typer.Option(0.0, "--p500", **_PROBABILITY, help="Share answered 500, 502 or 503."),
    hang: float = typer.Option(0.0, "--hang", **_PROBABILITY, help="Share never answered."),
    drop: float = typer.Option(0.0, "--drop", **_PROBABILITY, help="Share whose connection is closed without a response."),
    malformed: float = typer.Option(0.0, "--malformed", **_PROBABILITY, help="Share answered 200 with invalid JSON."),
    p_length: float = typer.Option(0.0, "--p-length", **_PROBABILITY, help="Share cut short with finish_reason=length."),
    p_refusal: float = typer.Option(0.0, "--p-refusal", **_PROBABILITY, help="Share answered with a refusal."),
    retry_after: float = typer.Option(1.0, "--retry-after", min=0.0, help="Retry-After seconds sent with 429s."),
    fail_first: int = typer.Option(0, "--fail-first", min=0, help="Fail the first N chat requests with --fail-status."),
    fail_status: int = typer.Option(429, "--fail-status", help="HTTP status for --fail-first failures."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require this bearer key (401 otherwise)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fault sequence."),
    model: list[str] = typer.Option(["mock-teacher"], "--model", help="Model name listed by /v1/models (repeatable)."),
    only_listed_models: bool = typer.Option(False, "--only-listed-models", help="Answer 404 for models not listed."),
    batch_delay_s: float = typer.Option(0.05, "--batch-delay-s", min=0.0, help="Pause per batch stage, to exercise polling."),
) -> None:
    """Serve a fault-injecting OpenAI-compatible API backed by the offline mock teacher."""
    import asyncio

    from datagen.mock_server import MockServerConfig, serve

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
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    asyncio.run(serve(config))


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
