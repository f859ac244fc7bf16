"""Answer-check benchmark: precision and recall of every rule of datagen/quality/checks.py on the labelled corpus.

Each reply of `tests/data/answer_corpus.jsonl` goes through `parse_answer`, exactly as a teacher
reply does during `datagen generate`; its reject reason (or none) is compared with its label.

    .venv/bin/python bench/checks_bench.py          # writes bench/results_checks.md

Per rule: precision = replies refused for that rule that are bad and expected to be refused for it;
recall = bad replies expected for that rule that are refused for it. Overall: the share of bad
replies refused for any reason, and the share of good replies refused (false refusals).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from datetime import datetime, UTC
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.quality.checks import RULES  # noqa: E402  (run as a script from the repository)
from datagen.quality.parse import Rejected  # noqa: E402
from datagen.tasks.registry import TASKS, parse_answer  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "answer_corpus.jsonl"
PROMPTS = ROOT / "prompts"
OUT = HERE / "results_checks.md"
RECALL_TARGET, FALSE_REFUSAL_TARGET = 0.90, 0.02


def reject_reason(task: str, text: str, finish_reason: str | None) -> str | None:
    try:
        parse_answer(task, text, finish_reason)
    except Rejected as rejection:
        return rejection.reason
    return None


def ratio(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part}/{whole})" if whole else "n/a"


def rule_table(outcomes: list[tuple[dict, str | None]]) -> list[str]:
    lines = ["| rule | refuses an answer that | bad replies | recall | refused for it | precision |", "|---|---|---|---|---|---|"]
    for rule in RULES:
        expected = [got for row, got in outcomes if row["rule"] == rule.name]
        refused = [row for row, got in outcomes if got == rule.name]
        hits = sum(got == rule.name for got in expected)
        correct = sum(row["rule"] == rule.name for row in refused)
        lines.append(
            f"| `{rule.name}` | {rule.summary} | {len(expected)} | {ratio(hits, len(expected))} | {len(refused)} | {ratio(correct, len(refused))} |"
        )
    return lines


def task_table(outcomes: list[tuple[dict, str | None]]) -> list[str]:
    lines = ["| task | good | refused (false refusal) | bad | refused (recall) | for the expected rule |", "|---|---|---|---|---|---|"]
    for task in TASKS:
        good = [got for row, got in outcomes if row["task"] == task and row["label"] == "good"]
        bad = [(row, got) for row, got in outcomes if row["task"] == task and row["label"] == "bad"]
        lines.append(
            f"| {task} | {len(good)} | {ratio(sum(g is not None for g in good), len(good))} | {len(bad)} "
            f"| {ratio(sum(g is not None for _, g in bad), len(bad))} | {ratio(sum(g == row['rule'] for row, g in bad), len(bad))} |"
        )
    return lines


def shipped_shots() -> list[tuple[str, str]]:
    """The reference answers of the shipped prompt packs: teacher-style text that must pass."""
    return [(folder.name, conv.read_text(encoding="utf-8")) for folder in sorted(PROMPTS.iterdir()) if folder.is_dir()
            for conv in sorted(folder.glob("*_conv.txt"))]


def cpu_per_reply(rows: list[dict]) -> float:
    """Best of 5 passes over the good replies (the full check path), CPU microseconds per reply."""
    good = [row for row in rows if row["label"] == "good"]
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for row in good:
            parse_answer(row["task"], row["text"], row["finish_reason"])
        best = min(best, (time.process_time() - start) / len(good))
    return best * 1e6


def main() -> None:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    outcomes = [(row, reject_reason(row["task"], row["text"], row["finish_reason"])) for row in rows]
    good = [got for row, got in outcomes if row["label"] == "good"]
    bad = [(row, got) for row, got in outcomes if row["label"] == "bad"]
    refused_good = sum(got is not None for got in good)
    refused_bad = sum(got is not None for _, got in bad)
    refused = refused_good + refused_bad
    recall = refused_bad / len(bad)
    false_refusal = refused_good / len(good)
    shots = shipped_shots()
    shots_refused = [(task, reject_reason(task, text, "stop")) for task, text in shots]
    misses = [f"- {row['task']} / {row['note']}: expected `{row['rule']}`, got `{got}`" for row, got in bad if got != row["rule"]]
    false_refusals = [f"- {row['task']} / {row['note']}: refused as `{got}`" for row, got in outcomes if row["label"] == "good" and got]
    lines = [
        "# Answer-check benchmark",
        "",
        f"`bench/checks_bench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}.",
        "",
        f"Corpus `tests/data/answer_corpus.jsonl`: {len(rows)} teacher replies in the response format of their task "
        f"({', '.join(f'{task} {n}' for task, n in Counter(row['task'] for row in rows).items())}), "
        f"{len(good)} good (LLaVA-style, with hard negatives: signs, menus, prices, times, scores, diagram annotations, "
        f"\"coordinate\" as a verb, quoted refusals) and {len(bad)} bad, every rule in every task, some in later turns. "
        "Each reply goes through `parse_answer` as in `datagen generate`.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| bad replies refused (recall) | **{ratio(refused_bad, len(bad))}** | >= {RECALL_TARGET:.0%} |",
        f"| good replies refused (false refusals) | **{ratio(refused_good, len(good))}** | <= {FALSE_REFUSAL_TARGET:.0%} |",
        f"| refused replies that are bad (precision) | {ratio(refused_bad, refused)} | |",
        f"| bad replies refused for their expected rule | {ratio(sum(got == row['rule'] for row, got in bad), len(bad))} | |",
        f"| shipped few-shot answers (prompts/) refused | {ratio(sum(got is not None for _, got in shots_refused), len(shots))} | 0 |",
        f"| CPU per good reply, parse + every check | {cpu_per_reply(rows):.0f} µs | |",
        "",
        "## Per rule",
        "",
        *rule_table(outcomes),
        "",
        "## Per task",
        "",
        *task_table(outcomes),
        "",
        "Misses (bad replies not refused for their expected rule):" if misses else "Misses: none.",
        *misses,
        "",
        "False refusals:" if false_refusals else "False refusals: none.",
        *false_refusals,
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {OUT.relative_to(ROOT)}")
    if recall < RECALL_TARGET or false_refusal > FALSE_REFUSAL_TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
