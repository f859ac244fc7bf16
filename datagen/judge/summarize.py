"""`datagen judge summarize`: LLaVA review files (eval_gpt_review_*.py output) turned into our table with intervals.

A review line is `{"question_id", "category", "tuple": [reference_score, candidate_score], ...}`, one order
only (LLaVA shows the reference first), so there is no order-flip rate. LLaVA records a reply it could not
read as [-1, -1] and averages it in; here it is counted and left out, and LLaVA's own figure is printed beside
ours so the two can be told apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from datagen.errors import InputError
from datagen.files.jsonl import iter_input_objects
from datagen.judge.stats import Pair, TaskSummary, summarise, table


def _tuple(line: object, where: str) -> tuple[float, float]:
    scores = line.get("tuple") if isinstance(line, dict) else None
    if (not isinstance(scores, list) or len(scores) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores)):
        raise InputError(f"{where}: needs tuple, a list of two numbers [reference score, candidate score] (LLaVA's review format)")
    return float(scores[0]), float(scores[1])


def read_reviews(path: Path) -> list[tuple[str, str, tuple[float, float], str]]:
    """(question id, category, scores, where the line is) per review line, in file order."""
    reviews = []
    kind = "a JSONL review file written by LLaVA's eval_gpt_review_*.py"
    for where, line in iter_input_objects(path, "REVIEWS", kind, "question_id, category and tuple"):
        if "question_id" not in line:
            raise InputError(f"{where}: needs question_id (LLaVA's review format: question_id, category, tuple)")
        category = line.get("category", "all")  # LLaVA's summarizer files a review without one under `all` only
        if not isinstance(category, str):
            raise InputError(f"{where}: category must be a string")
        reviews.append((str(line["question_id"]), category, _tuple(line, where), where))
    if not reviews:
        raise InputError(f"REVIEWS {path}: the file holds no reviews; pass a review file of LLaVA's eval_gpt_review_*.py")
    return reviews


def llava_relative(scores: list[tuple[float, float]]) -> float | None:
    """LLaVA's summarize_gpt_review.py: mean of each column over every review, [-1, -1] included; ratio x 100, 1 decimal."""
    if not scores:
        return None
    reference = sum(pair[0] for pair in scores) / len(scores)
    candidate = sum(pair[1] for pair in scores) / len(scores)
    return round(candidate / reference * 100, 1) if reference else None


def summarize_file(path: Path, resamples: int, seed: int) -> dict:
    by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    pairs: dict[str, list[Pair]] = defaultdict(list)
    unread = 0
    first_line: dict[str, str] = {}
    for question_id, category, scores, where in read_reviews(path):
        first_line.setdefault(category, where)
        groups = [category, "all"] if category != "all" else ["all"]
        for group in groups:
            by_category[group].append(scores)
        if scores == (-1.0, -1.0):
            unread += 1  # LLaVA's mark for a reply it could not read
            continue
        pair = Pair(item_id=question_id, task=category, reference=scores[0], candidate=scores[1], order_flip=False)
        for group in groups:
            pairs[group].append(pair)
    rows = {}
    for group in sorted(by_category, key=lambda name: (name == "all", name)):
        row = summarise(pairs[group], resamples, seed)
        if pairs[group] and row.relative_score is None:
            # A ratio over a zero mean has no value; LLaVA's scores run 1-10, so the file was written otherwise.
            raise InputError(
                f"{first_line.get(group, f'REVIEWS {path}')}: every reference score of {group} is 0, so its relative score "
                "has no value; LLaVA's review scores run 1-10: fix the tuples or pass the file the review script wrote"
            )
        rows[group] = row.model_copy(update={"order_flip_rate": None})  # one order per review: flips unknown
    return {
        "file": str(path),
        "reviews": len(by_category["all"]),
        "unread": unread,
        "tables": {name: row.model_dump() for name, row in rows.items()},
        "llava_relative": {name: llava_relative(by_category[name]) for name in rows},
    }


def render(summary: dict) -> str:
    rows = {name: TaskSummary.model_validate(row) for name, row in summary["tables"].items()}
    llava = ", ".join(f"{name} {'-' if value is None else value}" for name, value in summary["llava_relative"].items())
    return (
        f"{summary['file']}: {summary['reviews']} reviews; relative % = mean(candidate) / mean(reference) x 100\n\n"
        f"{table(rows)}\n\n"
        f"reviews without two scores ([-1, -1]): {summary['unread']}, counted and left out of the means above; "
        f"LLaVA's summarize_gpt_review.py averages them in and prints: {llava}"
    )


def summarize(paths: list[Path], resamples: int, seed: int) -> tuple[list[dict], str]:
    summaries = [summarize_file(path, resamples, seed) for path in paths]
    return summaries, "\n\n".join(render(summary) for summary in summaries)
