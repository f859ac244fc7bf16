"""The `datagen` command line. Heavy imports stay inside commands so `generate` starts fast, and the settings
models (pydantic) load only for the command that runs: `datagen --help` lists the commands without them."""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from datagen.errors import INCOMPLETE_EXIT, TERMINATED_EXIT, InputError, RunFailed, TeacherFatalError, Terminated, sigterm_as_interrupt
from datagen.files.storage_errors import StorageError, explain_os_error
from datagen import __version__
from datagen.cli_flags import SwitchesTakeNoValue, built_on_use, setting_default, takes_settings
from datagen.run.panels import ENGINES
from datagen.testing.mock_server_config import QUIRKS, MockServerConfig, parse_quirk

if TYPE_CHECKING:
    from datagen.run.options import AuditSettings, ExportSettings, GenerateSettings, JudgeSettings, ProgressSettings, RayRunSettings


app = typer.Typer(
    help="Regenerate LLaVA-style visual instruction data with any text-only teacher, and train on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=SwitchesTakeNoValue,
)


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"datagen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit")) -> None:
    pass  # the group's own flags only; the Typer above carries its help


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(command):
    """Expected failures end as one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt(take_over=True):
                return command(*args, **kwargs)
        except InputError as error:
            raise fail(str(error)) from None
        except TeacherFatalError as error:
            raise fail(str(error), error.exit_code) from None
        except RunFailed as error:
            raise fail(str(error), 1) from None
        except StorageError as error:
            raise fail(str(error), error.exit_code) from None
        except OSError as error:  # a full disk, a read-only folder, a folder where a file belongs, ...
            explained = explain_os_error(error)
            raise fail(str(explained), explained.exit_code) from None
        except sqlite3.Error as error:
            raise fail(f"a SQLite file of the run failed ({error}); move the damaged file aside and rerun", 1) from None
        except typer.BadParameter as error:
            # A flag checked inside the command (eval's --model/--answers, report's prices): one line too, not a usage panel.
            raise fail(error.format_message()) from None
        except Terminated:
            raise fail("terminated (SIGTERM); rerun the same command to resume where it stopped", code=TERMINATED_EXIT) from None
        except KeyboardInterrupt:
            raise fail("interrupted; rerun the same command to resume where it stopped", code=130) from None

    return wrapper


def safe_argv() -> list[str]:
    """The command as typed, with anything secret taken out before it reaches the manifest."""
    from datagen.redaction import environment_secrets, redact_argv

    return redact_argv(sys.argv, environment_secrets())


def echo_notes(notes: list[str]) -> None:
    for note in notes:
        typer.echo(f"note: {note}", err=True)


def shown_progress(settings: GenerateSettings | JudgeSettings | ProgressSettings | RayRunSettings) -> dict[str, Any]:
    """In a terminal the bar shows progress; elsewhere (CI logs, nohup, Slurm) plain lines every --log-every seconds do."""
    terminal = sys.stderr.isatty()
    return {"progress": settings.progress and terminal, "log_every": settings.log_every if settings.progress and not terminal else 0.0}


@app.command()
@friendly_errors
@takes_settings("GenerateSettings")
def generate(settings: GenerateSettings) -> None:
    """Ask the teacher for each image and task; write validated records, rejects and a manifest."""
    from datagen import api

    # The curation plan's warnings (datagen/curate/plan.py) are said before the run starts, not after it.
    result = api.generate(settings.model_copy(update={**shown_progress(settings), "command": safe_argv()}), say=lambda line: typer.echo(line, err=True))
    if result.status == "dry_run":
        from datagen.run.estimate import describe

        if result.curation is not None and result.curation.selection is not None:
            from datagen.curate.select import describe as describe_selection

            typer.echo(describe_selection(result.curation.selection))
        typer.echo(describe(result.estimate))
        return
    if result.status == "requests_out":
        typer.echo(f"wrote {result.requests_written} requests to {settings.requests_out} (OpenAI Batch input format); nothing was sent")
        return
    echo_notes(result.notes)
    if result.status == "incomplete":
        raise fail(result.failure or "some items got no answer; rerun the same command to do them", code=INCOMPLETE_EXIT)


@app.command()
@friendly_errors
@takes_settings("ExportSettings")
def export(settings: ExportSettings) -> None:
    """Merge task files into LLaVA-Instruct-150K-format records (or chat `messages`)."""
    from datagen import api

    result = api.export(settings)
    echo_notes(result.notes)
    typer.echo(f"wrote {result.records} records to {result.path} (" + ", ".join(f"{task} {n}" for task, n in result.counts.items()) + ")")
    if result.card is not None and settings.out.parent.resolve() != settings.folder.resolve():
        # Beside a file exported elsewhere (the current folder, say), a README.md appearing unannounced is a surprise.
        typer.echo(f"wrote the dataset card {result.card}, which lists {settings.out.name}")


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
@takes_settings("AuditSettings")
def audit(settings: AuditSettings) -> None:
    """Answer checks and object grounding over an existing data set, per record and per task; no teacher calls."""
    from datagen import api
    from datagen.data.audit import FINDINGS_FILE, SUMMARY_FILE, format_summary

    result = api.audit(settings)
    typer.echo(format_summary(result.summary))
    typer.echo(f"wrote {result.out / FINDINGS_FILE} and {result.out / SUMMARY_FILE}")
    if result.failures:
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
    from datagen.data.report import print_summary, write_report
    from datagen.run.prices import FLAGS, Prices

    if (price_in is None) != (price_out is None):
        raise typer.BadParameter("pass both --price-in and --price-out, or neither", param_hint="--price-in/--price-out")
    prices = Prices(price_in, price_out, FLAGS) if price_in is not None and price_out is not None else None
    runs = write_report(folders, out, prices)
    print_summary(runs, prices)
    typer.echo(f"wrote {out}")


@app.command()
@friendly_errors
def show(
    folder: Path = typer.Argument(..., help="The --out folder of a generate run"),
    task: Optional[str] = typer.Option(None, help="Only this task's records (default: every task of the run)"),
    n: int = typer.Option(5, "--n", min=1, help="How many records to show"),
    rejects: bool = typer.Option(False, "--rejects", help="Show refused answers with their reason instead of records"),
    record_id: Optional[str] = typer.Option(None, "--id", help="Every record (or reject) of this image id, e.g. 100013 or 000000100013"),
    captions: Optional[Path] = typer.Option(None, help="COCO captions file for the context shown (default: the one the run read, if still there)"),
    instances: Optional[Path] = typer.Option(None, help="COCO instances file for the boxes shown (default: the one the run read)"),
) -> None:
    """Look at a few records: the image's captions and boxes, the conversation, grounding flags; rejects with their reason."""
    from rich.console import Console

    from datagen.data.show import contexts, pick, render_terminal, source_paths
    from datagen.formats.manifest import read_run_manifest

    manifest = read_run_manifest(folder, "show")
    examples = pick(folder, manifest, task, n, rejects, record_id)
    captions_path, instances_path = source_paths(manifest, captions, instances)
    console = Console(width=None if sys.stdout.isatty() else 100)
    for panel in render_terminal(examples, contexts(examples, captions_path, instances_path)):
        console.print(panel)
    shown = "rejects" if rejects else "records"
    note = "" if captions_path else "; pass --captions (and --instances) to see each image's captions and boxes"
    typer.echo(f"{len(examples)} {shown} shown from {folder}{note}")


@app.command("ray")
@friendly_errors
@takes_settings("RayRunSettings")
def ray_command(
    settings: RayRunSettings,
    rows_per_batch: Optional[int] = typer.Option(
        None, min=1, help="Rows per Ray batch; default from --concurrency (endpoint) or 64 (--vllm)", rich_help_panel=ENGINES
    ),
) -> None:
    """Answer a requests file through Ray Data: an endpoint called by Ray actors, or vLLM on the cluster's GPUs."""
    from datagen.run.ray_engine import RaySettings, describe, run_ray

    s = settings
    run = RaySettings(
        requests=s.requests, out=s.out, engine=s.engine.model_copy(update={"batch_size": rows_per_batch}), base_url=s.base_url, model=s.model,
        concurrency=s.concurrency, rpm=s.qps * 60 if s.qps is not None else s.rpm, timeout=s.timeout, max_retries=s.max_retries,
        give_up_after=s.give_up_after,
    )
    outcome = run_ray(run, **shown_progress(s))
    typer.echo(describe(run, outcome))
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
    from datagen.api import write_card

    echo_notes(write_card(out, lambda card: card.write_run_card(out))[1])
    written = ", ".join(f"{task} {counts.written}" for task, counts in manifest.counts.items())
    typer.echo(f"merged {len(folders)} shards into {out} ({written}; status {manifest.status})")


# -- curation after generating: near-duplicates and a judge's low scores moved to rejects (datagen/curate/) ------

DEDUP, FILTER = "datagen.curate.settings:DedupSettings", "datagen.curate.settings:FilterSettings"  # where the flags' defaults are


@app.command()
@friendly_errors
def dedup(
    folder: Path = typer.Argument(..., help="The --out folder of a generate (or merge) run"),
    answer_threshold: float = typer.Option(setting_default("answer_threshold", DEDUP), min=0.1, max=1.0, help="Answers this alike (Jaccard of word n-grams) or more..."),
    question_threshold: float = typer.Option(setting_default("question_threshold", DEDUP), min=0.0, max=1.0, help="...and questions this alike make a near-duplicate"),
    ngram: int = typer.Option(setting_default("ngram", DEDUP), min=1, help="Words per shingle of the answers (questions are compared as word sets)"),
    num_perm: int = typer.Option(setting_default("num_perm", DEDUP), min=16, help="MinHash permutations (more: slower, more exact)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count the near-duplicates; move nothing"),
) -> None:
    """Move near-duplicate records (later ones; the first is kept) to rejects.jsonl as near_duplicate, never deleting."""
    from datagen.api import write_card
    from datagen.curate.dedup import dedup as run_dedup
    from datagen.curate.settings import DedupSettings

    settings = DedupSettings(answer_threshold=answer_threshold, question_threshold=question_threshold, ngram=ngram, num_perm=num_perm)
    step, moves = run_dedup(folder, settings, safe_argv(), dry_run)
    per_task = ", ".join(f"{task} {count}" for task, count in Counter(move.row.task for move in moves).items()) or "none"
    if step is None:
        typer.echo(f"dry run: {len(moves)} near-duplicates would move to rejects.jsonl ({per_task}); nothing was moved")
        return
    echo_notes(write_card(folder, lambda card: card.write_run_card(folder))[1])
    typer.echo(f"moved {len(moves)} of {step.examined} records to {folder / 'rejects.jsonl'} as near_duplicate ({per_task})")


@app.command("filter")
@friendly_errors
def filter_command(
    folder: Path = typer.Argument(..., help="The --out folder of a generate (or merge) run"),
    judge_model: Optional[str] = typer.Option(None, help="The judge model (required unless --judge mock)"),
    judge_backend: str = typer.Option(setting_default("judge", FILTER), "--judge", help="openai, azure (any OpenAI-compatible server or deployment) or mock (a scripted offline judge, for CI)"),
    base_url: Optional[str] = typer.Option(None, help="The judge's endpoint; default $OPENAI_BASE_URL or OpenAI"),
    min_score: float = typer.Option(setting_default("min_score", FILTER), min=1.0, max=10.0, help="Records whose mean score (accuracy, helpfulness, detail; 1-10) is under this move to rejects"),
    rules: Optional[Path] = typer.Option(None, help="The judge's system message (default prompts/judge/filter_system_message.txt)"),
    captions: Optional[Path] = typer.Option(None, help="COCO captions file; default the one the run's manifest names"),
    instances: Optional[Path] = typer.Option(None, help="COCO instances file; default the one the run's manifest names"),
    concurrency: int = typer.Option(setting_default("concurrency", FILTER), min=1, help="Judge requests in flight at most"),
    rpm: Optional[float] = typer.Option(None, min=0.001, help="Judge requests per minute at most"),
    tpm: Optional[float] = typer.Option(None, min=1, help="Judge tokens per minute at most"),
    timeout: float = typer.Option(setting_default("timeout", FILTER), min=0.1, help="Seconds per request before it is retried"),
    max_retries: int = typer.Option(setting_default("max_retries", FILTER), min=0),
    max_tokens: int = typer.Option(setting_default("max_tokens", FILTER), min=1, help="The judge's reply limit"),
    cache: Optional[Path] = typer.Option(None, help="Judge response cache; default RUN/judge-cache.sqlite"),
    no_cache: bool = typer.Option(False, "--no-cache"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count the judge requests and price them; send nothing, move nothing"),
    price_in: Optional[float] = typer.Option(None, min=0.0, help="Price per million prompt tokens, for the cost"),
    price_out: Optional[float] = typer.Option(None, min=0.0, help="Price per million completion tokens"),
) -> None:
    """Score each record with a judge model against its image's captions and boxes; move those under --min-score to rejects."""
    from datagen.api import write_card
    from datagen.curate.judge_filter import filter_run
    from datagen.curate.settings import RULES, FilterSettings

    settings = FilterSettings(
        judge=judge_backend, judge_model=judge_model, base_url=base_url, min_score=min_score, rules=rules or RULES, captions=captions,
        instances=instances, concurrency=concurrency, timeout=timeout, max_retries=max_retries, rpm=rpm, tpm=tpm, max_tokens=max_tokens,
        cache=cache, use_cache=not no_cache, price_in=price_in, price_out=price_out,
    )
    outcome, step = filter_run(folder, settings, safe_argv(), dry_run)
    cost = f"; estimated cost ${outcome.cost:,.4f}" if outcome.cost is not None else ""
    if step is None:
        typer.echo(
            f"dry run: {outcome.requests} judge requests would be sent ({outcome.reused} records already scored); estimated tokens "
            f"{outcome.prompt_tokens:,} prompt + {outcome.completion_tokens:,} completion{cost}; nothing was sent"
        )
        return
    echo_notes(write_card(folder, lambda card: card.write_run_card(folder))[1] + outcome.notes)
    moved = ", ".join(f"{task} {count}" for task, count in outcome.moved.items()) or "none"
    typer.echo(
        f"scored {outcome.scored} records ({outcome.reused} scored before, {outcome.unscored} without a usable score); moved {sum(outcome.moved.values())} "
        f"under --min-score {min_score} to rejects.jsonl as judge_score ({moved}); {outcome.requests} requests sent{cost}"
    )
    if outcome.unscored:
        raise fail(f"{outcome.unscored} records got no usable score; rerun the same command to ask again", code=INCOMPLETE_EXIT)


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
@takes_settings("JudgeSettings")
def judge(
    settings: JudgeSettings,
    folders: list[Path] = typer.Argument(
        None, help="A_DIR B_DIR: two generate --out folders over the same images (A = reference); or `summarize REVIEWS.jsonl...`"
    ),
) -> None:
    """Score two answer sets pairwise with a judge model, both orders; write reviews and a summary table.

    `datagen judge summarize REVIEWS.jsonl...` reads LLaVA's review files instead and prints our table with intervals.
    """
    from datagen.api import judge_inputs
    from datagen.judge.run import run_judge

    if folders and str(folders[0]) == "summarize":
        _judge_summarize(folders[1:], settings.out, settings.resamples, settings.seed)
        return
    options, loaded = judge_inputs(settings.model_copy(update={"folders": folders or [], "command": safe_argv(), **shown_progress(settings)}))
    summary, text = run_judge(options, loaded)
    typer.echo(text)
    if summary["status"] != "completed":
        from datagen.run.job import EXIT_CODES

        code = EXIT_CODES.get(summary["status"], 1)
        raise fail(summary["failure"], code) if "failure" in summary else typer.Exit(code)


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

eval_app = typer.Typer(help="Score trained models: LLaVA-Bench-style answers, ScienceQA accuracy and POPE object hallucination", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("bench")
@friendly_errors
@takes_settings("ProgressSettings")
def eval_bench(
    settings: ProgressSettings,
    questions: Path = typer.Option(..., help="Questions JSONL (question_id, image, text, category)"),
    out: Path = typer.Option(..., help="Folder for answers.jsonl (LLaVA's answer format); rerunning into it resumes"),
    model: Optional[Path] = typer.Option(None, help="A datagen checkpoint or a LlavaForConditionalGeneration folder to run"),
    answers: Optional[Path] = typer.Option(None, help="Take this answers file instead (LLaVA's model_vqa output), checked against --questions"),
    images: Optional[Path] = typer.Option(None, help="Folder the questions' image names are relative to"),
    batch_size: int = typer.Option(8, min=1),
    max_new_tokens: int = typer.Option(512, min=1),
    model_id: Optional[str] = typer.Option(None, help="model_id written in the answers; default the --model folder's name"),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16 or float16"),
    train_data: Optional[Path] = typer.Option(None, help="The model's training data (a generate folder, an exported file, or any --exclude-images list): its images are counted and left out of the score"),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="With --train-data: score the eval images the training data holds too (both counts printed)"),
) -> None:
    """Answer benchmark questions greedily (or take another tool's answers); `datagen judge` then scores them."""
    from datagen.eval.bench import clean_questions, load_questions, run_bench, take_answers

    if (model is None) == (answers is None):
        raise typer.BadParameter("pass --model to run a model, or --answers to take an answers file (one of them)", param_hint="--model/--answers")
    training = _training_data(train_data, allow_overlap)
    if training is not None:
        _, overlap = clean_questions(load_questions(questions), training)
        assert overlap is not None  # given training data, the split always counts
        typer.echo(overlap.line())
    if answers is not None:
        path, taken, unanswered = take_answers(answers, questions, out, training)
        typer.echo(f"took {taken} answers from {answers} into {path}")
        if unanswered:
            shown = ", ".join(unanswered[:5]) + (", ..." if len(unanswered) > 5 else "")
            raise fail(f"{len(unanswered)} questions have no answer in {answers} ({shown}); judge would skip them", 1)
        return
    assert model is not None
    path, new, before = run_bench(model, questions, images, out, batch_size, max_new_tokens, model_id, dtype, training, _eval_progress("bench", settings))
    typer.echo(f"wrote {new} answers to {path} ({before} were already there)")


@eval_app.command("scienceqa")
@friendly_errors
@takes_settings("ProgressSettings")
def eval_scienceqa(
    settings: ProgressSettings,
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
                                INSTRUCTION if instruction is None else instruction, _eval_progress("scienceqa", settings))
    typer.echo(text)


@eval_app.command("pope")
@friendly_errors
@takes_settings("ProgressSettings")
def eval_pope(
    settings: ProgressSettings,
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
    train_data: Optional[Path] = typer.Option(None, help="The model's training data (a generate folder, an exported file, or any --exclude-images list): its images are counted and left out of the score"),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="With --train-data: score the eval images the training data holds too (both counts printed)"),
) -> None:
    """POPE object-hallucination questions (random, popular, adversarial) from COCO instances, and their scores."""
    from datagen.eval.pope import INSTRUCTION, run_pope

    if model is not None and answers is not None:
        raise typer.BadParameter("pass --model to run a model or --answers to score a file, not both", param_hint="--model/--answers")
    results, text = run_pope(instances, out, image_count, per_image, seed, INSTRUCTION if instruction is None else instruction, answers, model, images, batch_size,
                             max_new_tokens, model_id, dtype, _training_data(train_data, allow_overlap), _eval_progress("pope", settings))
    typer.echo(text)
    if results is not None:
        missing = sum(row["missing"] for row in results["samplings"].values())
        if missing:
            raise fail(f"{missing} POPE questions have no answer; the metrics above leave them out", 1)


@eval_app.command("chair")
@friendly_errors
@takes_settings("ProgressSettings")
def eval_chair(
    settings: ProgressSettings,
    captions: Path = typer.Option(..., help="COCO captions file of the images (captions_val2014.json); captions support objects too"),
    instances: Path = typer.Option(..., help="COCO instances file of the images (instances_val2014.json)"),
    out: Path = typer.Option(..., help="Folder for questions.jsonl, answers.jsonl, results.json and results.md; rerunning resumes"),
    model: Optional[Path] = typer.Option(None, help="A datagen checkpoint or a LlavaForConditionalGeneration folder to run"),
    answers: Optional[Path] = typer.Option(None, help="Score this answers file instead (question_id = COCO image id, text = the description)"),
    images: Optional[Path] = typer.Option(None, help="Folder of the captions file's images (with --model)"),
    image_count: int = typer.Option(300, min=1, help="Images described (Object HalBench: 300)"),
    seed: int = typer.Option(0, help="Seeds the images drawn and each one's prompt wording"),
    batch_size: int = typer.Option(8, min=1),
    max_new_tokens: int = typer.Option(512, min=1, help="Length cap of a description (greedy decoding)"),
    model_id: Optional[str] = typer.Option(None, help="model_id written in the answers; default the --model folder's name"),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16 or float16"),
) -> None:
    """CHAIR_s, CHAIR_i, object recall and length of a model's detailed descriptions (Object HalBench-style prompts)."""
    from datagen.eval.chair import run_chair

    if model is not None and answers is not None:
        raise typer.BadParameter("pass --model to run a model or --answers to score a file, not both", param_hint="--model/--answers")
    results, text = run_chair(captions, instances, out, image_count, seed, answers, model, images, batch_size, max_new_tokens, model_id, dtype,
                              _eval_progress("chair", settings))
    typer.echo(text)
    if results is not None and results["missing"]:
        raise fail(f"{results['missing']} images have no description; the figures above leave them out", 1)


@eval_app.command("spatial")
@friendly_errors
@takes_settings("ProgressSettings")
def eval_spatial(
    settings: ProgressSettings,
    captions: Path = typer.Option(..., help="COCO captions file of the images (captions_val2017.json)"),
    instances: Path = typer.Option(..., help="COCO instances file the questions are built from (instances_val2017.json)"),
    out: Path = typer.Option(..., help="Folder for questions.jsonl, answers.jsonl, results.json and results.md; rerunning resumes"),
    model: Optional[Path] = typer.Option(None, help="A datagen checkpoint or a LlavaForConditionalGeneration folder to run"),
    answers: Optional[Path] = typer.Option(None, help="Score this answers file instead (question_id = idx, text = the reply)"),
    images: Optional[Path] = typer.Option(None, help="Folder of the captions file's images (with --model)"),
    image_count: int = typer.Option(500, min=1, help="Images that give questions (one counting and one relation question at most each)"),
    seed: int = typer.Option(0, help="Seeds the images taken, the questions and the order of their options"),
    instruction: Optional[str] = typer.Option(
        None, help="Line after the options; default LLaVA-1.5's \"Answer with the option's letter from the given choices directly.\""
    ),
    batch_size: int = typer.Option(8, min=1),
    max_new_tokens: int = typer.Option(16, min=1),
    model_id: Optional[str] = typer.Option(None, help="model_id written in the answers; default the --model folder's name"),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16 or float16"),
) -> None:
    """Counting and left/right/above/below multiple-choice questions from COCO boxes (CV-Bench 2D's form), scored by letter."""
    from datagen.eval.spatial import INSTRUCTION, run_spatial

    if model is not None and answers is not None:
        raise typer.BadParameter("pass --model to run a model or --answers to score a file, not both", param_hint="--model/--answers")
    results, text = run_spatial(captions, instances, out, image_count, seed, INSTRUCTION if instruction is None else instruction, answers,
                                model, images, batch_size, max_new_tokens, model_id, dtype, _eval_progress("spatial", settings))
    typer.echo(text)
    if results is not None and results["missing"]:
        raise fail(f"{results['missing']} questions have no answer; they count as wrong above", 1)


def _eval_progress(command: str, settings: ProgressSettings):
    """`eval COMMAND`'s progress while its model answers, shown as generate shows its own (`eval COMMAND: DONE/TOTAL`)."""
    from datagen.eval.model import EvalProgress

    return EvalProgress(f"eval {command}", **shown_progress(settings))


def _training_data(path: Path | None, allow_overlap: bool):
    """--train-data read once (datagen/curate/overlap.py); --allow-overlap means nothing without it."""
    if path is None:
        if allow_overlap:
            raise InputError("--allow-overlap goes with --train-data RUN_OR_FILE, the data the model was trained on")
        return None
    from datagen.curate.overlap import TrainingData

    return TrainingData.read(path, allow_overlap)


def _register_trainer() -> None:
    # datagen.train.cli imports torch only inside its commands, so registering it costs generate nothing.
    from datagen.train.cli import chat, train_app

    app.add_typer(train_app, name="train", help="Two-stage LLaVA training on the records we generate (needs the datagen\\[train] extra)")
    app.command("chat")(chat)


_register_trainer()
built_on_use(app)


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
