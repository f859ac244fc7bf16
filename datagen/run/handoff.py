"""Hand a run's requests to another batch engine and take its results back (`--requests-out`, `--results-in`).

The requests file is in the OpenAI Batch input format, with the exact bodies the live path would send and the
custom_ids the Batch API path uses (`image_id:task:request_key`); any engine that speaks the format (vLLM's
`run_batch`, the OpenAI Batch API) can answer it. Its results file goes through the response cache and the
normal pipeline, so the records are those a live run would write.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from datagen.run.batch import BatchResults, CacheOnlyTeacher, input_line, item_of, iter_planned, read_results
from datagen.teachers.cache import ResponseCache
from datagen.errors import InputError
from datagen.formats.manifest import Manifest
from datagen.run.options import GenerateOptions
from datagen.files.jsonl import atomic_file
from datagen.run.pipeline import GenerateJob, cache_path, claim, execute, teacher_info
from datagen.run.plan import Plan
from datagen.run.tally import Tally
from datagen.formats.records import SkipReason
from datagen.tasks.registry import ItemKey
from datagen.teachers.teacher import ChatRequest


def offline_plan(options: GenerateOptions) -> tuple[Plan, Tally]:
    """The plan of a run and the tally of what its folder holds, to know what is pending: nothing sent, no writers."""
    plan, tally = Plan(options, teacher_info(options)), Tally(list(options.tasks))
    claim(plan, tally)
    return plan, tally


def open_cache(options: GenerateOptions, create: bool = False) -> ResponseCache | None:
    path = cache_path(options)
    if path is None or not (create or path.exists()):
        return None
    return ResponseCache(path)


def planned_requests(options: GenerateOptions, skipped: Counter[str] | None = None) -> Iterator[tuple[str, ChatRequest]]:
    """(custom_id, request) for every pending item whose answer the cache lacks: what a live run would send.

    One at a time: with --see image|both each request carries its image, too many to hold at once on a big run.
    `skipped` receives the items a live run would skip, by reason (a missing image, no usable caption)."""
    plan, tally = offline_plan(options)
    cache = open_cache(options)
    try:
        yield from iter_planned(plan, plan.pending(tally), tally, cache, options.length_retry_max_tokens)
    finally:
        if cache is not None:
            cache.close()
        if skipped is not None:
            for counts in tally.skipped.values():
                skipped.update(counts)


def write_requests(options: GenerateOptions) -> int:
    path = options.requests_out
    assert path is not None  # the CLI calls this only with --requests-out
    written = 0
    try:
        # Written whole or not at all: a bad --images or a full disk midway leaves no half file behind.
        with atomic_file(path, "wb") as handle:
            for cid, request in planned_requests(options):
                handle.write(input_line(cid, request))
                written += 1
    except OSError as error:
        raise InputError(f"--requests-out {path}: cannot write ({error.strerror}); pick a writable path") from None
    return written


def ingest_results(options: GenerateOptions) -> Manifest:
    path = options.results_in
    assert path is not None  # the CLI calls this only with --results-in
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"--results-in {path}: cannot read ({error.strerror}); pass the results file your batch engine wrote") from None
    plan, tally = offline_plan(options)
    cache = open_cache(options, create=True)
    assert cache is not None  # --no-cache was refused above
    try:
        # Keys only: the requests themselves (images included) are not kept.
        planned = iter_planned(plan, plan.pending(tally), tally, cache, options.length_retry_max_tokens)
        expected = {cid: request.key() for cid, request in planned}
        results = read_results(data, expected)
        if expected and not results.answers and not results.refused:
            raise InputError(
                f"--results-in {path}: none of its lines answers a pending request of this run ({results.foreign} for other requests,"
                f" {results.unreadable} unreadable); rerun with the settings used for --requests-out"
            )
        for key, reply in results.answers.items():
            cache.put(key, reply)
    finally:
        cache.close()
    _report(path, results, len(expected))
    unanswered: dict[ItemKey, SkipReason] = {}
    for cid, key in expected.items():
        if key not in results.answers and key not in results.refused:
            unanswered[item_of(cid)] = "not_in_results"
    return execute(GenerateJob(options, CacheOnlyTeacher(teacher_info(options), refused=results.refused), unanswered))


def _report(path: Path, results: BatchResults, needed: int) -> None:
    notes = [f"{len(results.answers)} answers", f"{len(results.refused)} refused per item"]
    if results.foreign:
        notes.append(f"{results.foreign} lines for requests this run does not make")
    if results.unreadable:
        notes.append(f"{results.unreadable} unreadable lines")
    first = f" (first error: {results.first_error})" if results.first_error else ""
    print(f"results-in: {path}: {', '.join(notes)} for {needed} pending requests{first}", file=sys.stderr, flush=True)
