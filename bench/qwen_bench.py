"""Qwen2.5-Coder 1.5B and 0.5B Instruct as teachers (llama.cpp's server, `make setup-qwen`), with and without
`--structured`, on the same sample images: how often each run's replies are unparseable, truncated, loops, or written,
and how fast the models are here.

    .venv/bin/python bench/qwen_bench.py                      # writes bench/results_qwen.md
    .venv/bin/python bench/qwen_bench.py --images 100042 100079 --models qwen-0.5b

Every run is `datagen generate` as a user runs it (its own process, one request at a time: the server decodes one
sequence at a time), over captions and instances files cut down to the chosen images. The replies of every run, with
their outcome, go to bench/work/qwen/replies.jsonl for labelling (tests/data/open_model_replies.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.tasks.registry import TASKS, task_spec  # noqa: E402  (run as a script from the repository)
from datagen.testing.gguf_models import DEFAULT_ROOT, MODELS, require_built, serve  # noqa: E402

OUT = HERE / "results_qwen.md"
WORK = HERE / "work" / "qwen"
# Two held-out sample images (bench/open_model_bench.py's HELD_OUT) and one the rules were tuned on.
DEFAULT_IMAGES = (100042, 100079, 100013)
MODES = ("text", "structured")
_EVAL = re.compile(r"\s eval time =\s*([\d.]+) ms /\s*(\d+) runs")
_TOTAL = re.compile(r"total time =\s*([\d.]+) ms /\s*(\d+) tokens")


def subset(images: list[int], folder: Path) -> tuple[Path, Path]:
    """The sample's captions and instances files cut down to `images`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("captions.json", "instances.json"):
        data = json.loads((ROOT / "data" / name).read_text(encoding="utf-8"))
        data["images"] = [row for row in data["images"] if row["id"] in images]
        data["annotations"] = [row for row in data["annotations"] if row["image_id"] in images]
        (folder / name).write_text(json.dumps(data), encoding="utf-8")
        paths.append(folder / name)
    return paths[0], paths[1]


def generate(base_url: str, captions: Path, instances: Path, out: Path, model: str, max_tokens: int, structured: bool) -> float:
    env = {**os.environ, "OPENAI_API_KEY": "none", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "datagen.cli", "generate", "--captions", str(captions), "--instances", str(instances), "--out", str(out),
               "--base-url", base_url, "--model", model, "--max-tokens", str(max_tokens), "--concurrency", "1", "--timeout", "900",
               "--max-retries", "1", "--seed", "0", "--no-progress", "--force",
               # llama-cpp-python's server takes a schema only in the older json_object form.
               *(["--structured", "--structured-form", "json_object"] if structured else [])]
    started = time.monotonic()
    subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=7200)
    return time.monotonic() - started


def replies(out: Path) -> list[dict]:
    """Each item's reply as the server sent it (from the run's response cache), with the outcome datagen gave it."""
    rows = []
    for task in TASKS:
        path = out / task_spec(task).file_name
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            record = json.loads(line)
            rows.append({"image_id": record["meta"]["image_id"], "task": task, "outcome": "written", "key": record["meta"]["request_key"]})
    rejects = out / "rejects.jsonl"
    for line in rejects.read_text(encoding="utf-8").splitlines() if rejects.exists() else []:
        reject = json.loads(line)
        rows.append({"image_id": reject["meta"]["image_id"], "task": reject["task"], "outcome": reject["reason"], "key": reject["meta"]["request_key"]})
    with sqlite3.connect(out / "cache.sqlite") as db:
        for row in rows:
            found = db.execute("SELECT reply FROM replies WHERE key = ?", (row.pop("key"),)).fetchone()
            reply = json.loads(found[0]) if found else {"text": "", "finish_reason": None}
            row.update(text=reply["text"], finish_reason=reply["finish_reason"])
    return sorted(rows, key=lambda row: (row["image_id"], row["task"]))


def speeds(log: Path, start: int = 0) -> tuple[float, float]:
    """Prompt and generation tokens per second over the requests in a llama.cpp server log. Its `prompt eval` line
    reads near zero in llama-cpp-python (the prompt is decoded before its counters start), so the prompt's share is
    the request's total time less its generation time. `start`: where in the log this run's requests begin."""
    text = log.read_bytes()[start:].decode("utf-8", errors="replace")
    generated = [(float(ms), int(runs)) for ms, runs in _EVAL.findall(text)]
    totals = [(float(ms), int(tokens)) for ms, tokens in _TOTAL.findall(text)]
    prompt_ms = sum(total for total, _ in totals) - sum(ms for ms, _ in generated)
    prompt_tokens = sum(tokens for _, tokens in totals) - sum(runs for _, runs in generated)
    generation_ms, generation_tokens = sum(ms for ms, _ in generated), sum(runs for _, runs in generated)
    return (prompt_tokens / (prompt_ms / 1000) if prompt_ms > 0 else 0.0, generation_tokens / (generation_ms / 1000) if generation_ms else 0.0)


def row_of(model: str, mode: str, out: Path, seconds: float, log: Path, start: int) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    asked = sum(task["requested"] for task in counts.values())
    rejected: Counter[str] = Counter()
    for task in counts.values():
        rejected.update(task["rejected"])
    written = sum(task["written"] for task in counts.values())
    named = ("unparseable", "truncated", "repetition")
    skipped: Counter[str] = Counter()
    for task in counts.values():
        skipped.update(task["skipped"])
    other = ", ".join([*(f"{reason} {n}" for reason, n in sorted(rejected.items()) if reason not in named),
                       *(f"skipped: {reason} {n}" for reason, n in sorted(skipped.items()))]) or "-"
    reasks = sum((manifest.get("structured_reasks") or {}).values())
    requests = manifest["requests_sent"]
    prompt_speed, generation_speed = speeds(log, start)
    usage = manifest["usage"]
    return (
        f"| {model} | {mode} | {asked} | {written}/{asked} | {rejected['unparseable']} | {rejected['truncated']} | {rejected['repetition']} | {other} "
        f"| {reasks if mode == 'structured' else '-'} | {seconds / max(requests, 1):.0f} | {usage['completion_tokens'] / max(requests, 1):.0f} "
        f"| {f'{prompt_speed:.0f}' if prompt_speed >= 1 else 'cached'} | {generation_speed:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=list(DEFAULT_IMAGES))
    parser.add_argument("--models", nargs="+", default=["qwen-1.5b", "qwen-0.5b"], choices=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--max-tokens", type=int, default=400)
    args = parser.parse_args()
    captions, instances = subset(args.images, WORK / "coco")
    table = [
        "| model | run | requests | written | unparseable | truncated | repetition | other rejects | re-asks | s/request | tokens/reply | prompt tok/s | generation tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    collected = []
    for name in args.models:
        gguf = require_built(MODELS[name], ROOT / DEFAULT_ROOT)
        log = WORK / name / "server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        # One server per model: both runs send the same messages, so the second finds every prompt in its cache, as a
        # user's second run against a running server would.
        with serve(gguf, log=log, context=4096) as base_url:
            for mode in args.modes:
                out, start = WORK / name / mode, log.stat().st_size
                seconds = generate(base_url, captions, instances, out, gguf.stem, args.max_tokens, mode == "structured")
                (WORK / name / f"{mode}.row.md").write_text(row_of(name, mode, out, seconds, log, start), encoding="utf-8")
                print((WORK / name / f"{mode}.row.md").read_text(), flush=True)
    # Every run kept under WORK, this invocation's or an earlier one's (--models/--modes redo a part).
    for name in MODELS:
        for mode in MODES:
            if (WORK / name / f"{mode}.row.md").exists():
                table.append((WORK / name / f"{mode}.row.md").read_text(encoding="utf-8"))
                stem = MODELS[name].file_name.removesuffix(".gguf")
                collected += [{**row, "model": stem, "structured": mode == "structured"} for row in replies(WORK / name / mode)]
    (WORK / "replies.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in collected), encoding="utf-8")
    lines = [
        "# Qwen2.5-Coder as teacher: text replies and structured output",
        "",
        f"`bench/qwen_bench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}; {os.cpu_count()} CPU cores shared"
        f" with other work (load average {os.getloadavg()[0]:.0f} at the end); llama-cpp-python's server, 2 threads, OMP_WAIT_POLICY=passive,"
        " n_ctx 4096, one request at a time.",
        "",
        f"Sample images {', '.join(map(str, args.images))}, all three tasks, `--max-tokens {args.max_tokens}`, temperature 0.7, seed 0; the same"
        " requests in both runs but `response_format` (`--structured --structured-form json_object`: each task's reply as a JSON schema,"
        " which llama.cpp turns into a grammar that constrains decoding; one re-ask for a reply off it).",
        "",
        *table,
        "",
        "s/request: wall time of the run over the requests sent (re-asks included); a run on a fresh server pays for reading each"
        " task's ~1,300 tokens of shots once (then kept in llama.cpp's prompt cache), a run after another on the same server"
        " does not. Prompt and generation tok/s:"
        " llama.cpp's own timings (prompt: a request's total time less its generation time).",
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
