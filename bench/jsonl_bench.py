"""JSONL reading: the one reader (datagen/files/jsonl.py's read_lines, through jsonlines) against the loop it
replaced (iterate a binary file, json.loads each non-blank line), over the same exported records.

    .venv/bin/python bench/jsonl_bench.py           # writes bench/results_jsonl.md

The records are the sample data's mock-teacher output, repeated to about 60,000 lines (~60 MB); each reader
runs five times, alternating, and the median is kept, since the machine is shared.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.files.jsonl import read_lines  # noqa: E402  (run as a script from the repository)

OUT = HERE / "results_jsonl.md"
LINES = 60_000
ROUNDS = 5


def sample_lines() -> list[bytes]:
    from typer.testing import CliRunner

    from datagen.cli import app

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        args = ["generate", "--teacher", "mock", "--captions", str(ROOT / "data" / "captions.json"),
                "--instances", str(ROOT / "data" / "instances.json"), "--out", str(out), "--no-progress"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return [line for task in ("conversation", "detail", "complex_reasoning") for line in (out / f"{task}.jsonl").open("rb")]


def plain(data: bytes) -> int:
    count = 0
    for line in io.BytesIO(data):
        if line.strip():
            json.loads(line)
            count += 1
    return count


def one_reader(data: bytes) -> int:
    return sum(1 for line in read_lines(io.BytesIO(data)) if line.problem is None)


def main() -> None:
    lines = sample_lines()
    data = b"".join(lines * (LINES // len(lines) + 1))
    count = data.count(b"\n")
    times: dict[str, list[float]] = {"json.loads loop (before)": [], "read_lines via jsonlines (now)": []}
    for _ in range(ROUNDS):
        for name, reader in zip(times, (plain, one_reader)):
            start = time.perf_counter()
            assert reader(data) == count
            times[name].append(time.perf_counter() - start)
    rows = [f"| {name} | {count} | {len(data) / 1e6:.0f} | {statistics.median(runs) * 1e6 / count:.2f} | "
            f"{len(data) / statistics.median(runs) / 1e6:.0f} |" for name, runs in times.items()]
    text = "\n".join([
        "# JSONL reading",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, {platform.machine()}; median of {ROUNDS} rounds.",
        "",
        "| reader | lines | MB | µs per line | MB/s |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    OUT.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
