"""Arithmetic of the judge summary: pair means, relative score, bootstrap interval, order flips, judge agreement.

Plain functions over lists of numbers, so every figure in a summary can be checked by hand.
"""

from __future__ import annotations

import math
import random

from pydantic import BaseModel


class Pair(BaseModel):
    """One item judged in both orders by one judge; scores averaged over the orders."""

    item_id: str
    task: str
    reference: float
    candidate: float
    order_flip: bool  # the two orders named different winners (or one a tie and the other not)


def winner(reference: float, candidate: float) -> str:
    return "candidate" if candidate > reference else "reference" if reference > candidate else "tie"


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in 0..100."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def relative_score(reference: list[float], candidate: list[float]) -> float | None:
    total = sum(reference)
    return 100 * sum(candidate) / total if total else None


def bootstrap_interval(
    reference: list[float], candidate: list[float], resamples: int = 1000, seed: int = 0, level: float = 95.0
) -> tuple[float, float] | None:
    """Percentile bootstrap of the relative score, resampling items (pairs stay together)."""
    count = len(reference)
    if count == 0 or resamples <= 0:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(count) for _ in range(count)]
        score = relative_score([reference[i] for i in picks], [candidate[i] for i in picks])
        if score is not None:
            values.append(score)
    if not values:
        return None  # every resample's reference scores sum to zero: no ratio to bound
    tail = (100 - level) / 2
    return percentile(values, tail), percentile(values, 100 - tail)


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    sxx = sum((x - mean_x) ** 2 for x in xs)
    syy = sum((y - mean_y) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None  # a constant series has no correlation with anything
    return sxy / math.sqrt(sxx * syy)


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(xs: list[float], ys: list[float]) -> float | None:
    return pearson(ranks(xs), ranks(ys))


class TaskSummary(BaseModel):
    pairs: int
    mean_reference: float | None
    mean_candidate: float | None
    relative_score: float | None = None  # mean(candidate) / mean(reference) x 100
    ci95: tuple[float, float] | None = None
    wins: int  # candidate scored higher
    ties: int
    losses: int
    order_flip_rate: float | None  # share of pairs whose two orders named different winners


def summarise(pairs: list[Pair], resamples: int, seed: int) -> TaskSummary:
    reference = [pair.reference for pair in pairs]
    candidate = [pair.candidate for pair in pairs]
    outcomes = [winner(pair.reference, pair.candidate) for pair in pairs]
    count = len(pairs)
    return TaskSummary(
        pairs=count,
        mean_reference=sum(reference) / count if count else None,
        mean_candidate=sum(candidate) / count if count else None,
        relative_score=relative_score(reference, candidate),
        ci95=bootstrap_interval(reference, candidate, resamples, seed),
        wins=outcomes.count("candidate"),
        ties=outcomes.count("tie"),
        losses=outcomes.count("reference"),
        order_flip_rate=sum(pair.order_flip for pair in pairs) / count if count else None,
    )


class Agreement(BaseModel):
    judges: tuple[str, str]
    pairs: int  # items both judges scored in both orders
    same_winner: float | None
    pearson: float | None  # of the score differences candidate - reference
    spearman: float | None


def agreement(first: str, second: str, pairs_first: list[Pair], pairs_second: list[Pair]) -> Agreement:
    other = {(pair.task, pair.item_id): pair for pair in pairs_second}
    both = [(pair, other[(pair.task, pair.item_id)]) for pair in pairs_first if (pair.task, pair.item_id) in other]
    same = [winner(a.reference, a.candidate) == winner(b.reference, b.candidate) for a, b in both]
    diffs_first = [a.candidate - a.reference for a, _ in both]
    diffs_second = [b.candidate - b.reference for _, b in both]
    return Agreement(
        judges=(first, second),
        pairs=len(both),
        same_winner=sum(same) / len(same) if same else None,
        pearson=pearson(diffs_first, diffs_second),
        spearman=spearman(diffs_first, diffs_second),
    )


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(summaries: dict[str, TaskSummary]) -> str:
    lines = [
        "| task | pairs | reference | candidate | relative % | 95% CI | win/tie/loss | order flips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, row in summaries.items():
        interval = "-" if row.ci95 is None else f"{row.ci95[0]:.1f}-{row.ci95[1]:.1f}"
        flips = "-" if row.order_flip_rate is None else f"{100 * row.order_flip_rate:.1f}%"
        lines.append(
            f"| {task} | {row.pairs} | {_number(row.mean_reference)} | {_number(row.mean_candidate)} | "
            f"{_number(row.relative_score, 1)} | {interval} | {row.wins}/{row.ties}/{row.losses} | {flips} |"
        )
    return "\n".join(lines)
