"""`datagen dedup` at LLaVA-Instruct-150K's size: 158K synthetic records, time and peak memory, planted duplicates found.

A run folder is made with the mock teacher (for a real manifest and record meta), then its task files are replaced
by 58K conversation, 23K detail and 77K complex-reasoning records of LLaVA's lengths, their words drawn from a
Zipf-like vocabulary so that unrelated records share common words as real ones do. 1% of the records are planted
copies of an earlier record and 1% paraphrases of one (a few words swapped); the bench counts how many of them
`datagen dedup` moves and how many other records it moves. Target (issue 27): under 2 minutes and 2 GB.

    .venv/bin/python bench/dedup_bench.py            # writes bench/results_dedup.md
    .venv/bin/python bench/dedup_bench.py --scale 0.1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "dedup"
OUT = HERE / "results_dedup.md"
# LLaVA-Instruct-150K's files: conversation_58k, detail_23k, complex_reasoning_77k.
SIZES = {"conversation": 56_681, "detail": 23_240, "complex_reasoning": 76_643}
ANSWER_WORDS = {"conversation": (12, 60), "detail": (70, 140), "complex_reasoning": (60, 130)}
PLANTED_SHARE = 0.01  # of copies, and again of paraphrases


def vocabulary(rng: random.Random, size: int = 8000) -> tuple[list[str], list[float]]:
    """Words and their cumulative Zipf weights (cumulative: random.choices then skips summing 8,000 weights per call)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(dict.fromkeys("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)))
    return words, list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))


def sentence(rng: random.Random, words: list[str], weights: list[float], count: int) -> str:
    return " ".join(rng.choices(words, cum_weights=weights, k=count)).capitalize() + "."


def synthetic_turns(rng: random.Random, task: str, words: list[str], weights: list[float]) -> list[dict]:
    low, high = ANSWER_WORDS[task]
    rounds = rng.randint(2, 5) if task == "conversation" else 1
    turns = []
    for index in range(rounds):
        question = sentence(rng, words, weights, rng.randint(5, 12))[:-1] + "?"
        turns.append({"from": "human", "value": f"<image>\n{question}" if index == 0 else question})
        turns.append({"from": "gpt", "value": sentence(rng, words, weights, rng.randint(low, high))})
    return turns


def paraphrase(rng: random.Random, turns: list[dict], words: list[str]) -> list[dict]:
    changed = json.loads(json.dumps(turns))
    for turn in changed:
        if turn["from"] == "gpt":
            tokens = turn["value"].split()
            for _ in range(max(1, len(tokens) // 30)):  # about one word in thirty replaced
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            turn["value"] = " ".join(tokens)
    return changed


def build(folder: Path, scale: float, seed: int) -> tuple[set[str], int]:
    """The run folder; returns the keys (`task/id`) of the planted duplicates and the record count."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "datagen.cli", "generate", "--teacher", "mock", "--captions", str(ROOT / "data" / "captions.json"),
         "--instances", str(ROOT / "data" / "instances.json"), "--out", str(folder), "--no-progress"],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    rng = random.Random(seed)
    words, weights = vocabulary(rng)
    manifest = json.loads((folder / "manifest.json").read_text())
    planted: set[str] = set()
    total = 0
    for task, full_size in SIZES.items():
        path = folder / f"{task}.jsonl"
        template = json.loads(path.read_text().splitlines()[0])
        size = int(full_size * scale)
        made: list[list[dict]] = []
        with path.open("w") as handle:
            for number in range(size):
                roll = rng.random()
                if made and roll < PLANTED_SHARE:
                    turns = json.loads(json.dumps(rng.choice(made)))
                elif made and roll < 2 * PLANTED_SHARE:
                    turns = paraphrase(rng, rng.choice(made), words)
                else:
                    turns = synthetic_turns(rng, task, words, weights)
                    made.append(turns)
                if made and roll < 2 * PLANTED_SHARE and turns is not made[-1]:
                    planted.add(f"{task}/{number:012d}")
                row = {**template, "id": f"{number:012d}", "image": f"{number:012d}.jpg", "conversations": turns}
                row["meta"] = {**template["meta"], "image_id": number}
                handle.write(json.dumps(row) + "\n")
        manifest["counts"][task]["written"] = size
        total += size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return planted, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # The records are built once per scale and seed (minutes), then copied fresh for each measurement.
    pristine = WORK / f"pristine-{args.scale}-{args.seed}"
    if not (pristine / "planted.json").is_file():
        planted, total = build(pristine, args.scale, args.seed)
        (pristine / "planted.json").write_text(json.dumps({"planted": sorted(planted), "total": total}))
    built = json.loads((pristine / "planted.json").read_text())
    planted, total = set(built["planted"]), built["total"]
    folder = WORK / "run"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pristine, folder)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "datagen.cli", "dedup", str(folder)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_mb = after.ru_maxrss / 1024  # the largest child so far: dedup, or the small generate that made the folder
    if result.returncode:
        raise SystemExit(result.stderr)
    moved = {f"{row['task']}/{row['id']}" for row in map(json.loads, (folder / "rejects.jsonl").read_text().splitlines()) if row["reason"] == "near_duplicate"}
    found, extra = len(planted & moved), len(moved - planted)
    lines = [
        "# Near-duplicate removal benchmark",
        "",
        f"`bench/dedup_bench.py --scale {args.scale}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (shared). `datagen dedup RUN` with its defaults (answers' word-bigram and questions' word-set Jaccard "
        ">= 0.7, 64 permutations).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| records | {total:,} (conversation, detail, complex_reasoning at LLaVA-Instruct-150K's sizes x {args.scale}) | 158K |",
        f"| wall time of `datagen dedup` | **{seconds:.1f} s** (load average {os.getloadavg()[0]:.1f} at the end) | < 120 s |",
        f"| CPU time of `datagen dedup` (user + system) | {cpu_seconds:.1f} s | |",
        f"| peak memory (max RSS) | **{peak_mb:,.0f} MB** | < 2,048 MB |",
        f"| planted copies and paraphrases moved | {found:,} of {len(planted):,} ({found / max(1, len(planted)):.1%}) | |",
        f"| other records moved | {extra:,} | |",
        "",
        "`datagen dedup` is one process on one core: on a machine to itself its wall time is about its CPU time. On a "
        "shared machine (load average above the CPU count) the wall time also counts the time spent waiting for a core.",
        "",
        f"`datagen dedup` said: {result.stdout.strip()}",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
