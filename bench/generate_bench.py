"""Generation benchmark: `datagen generate` against the mock server, beside bare client loops.

Every client runs as its own process against a mock server in another process, so the numbers are
the client's alone: CPU from the child's rusage (`os.wait4`), minus what it had spent when the
server saw its first request (read from /proc), peak RSS from the same rusage. Rates are counted
from the first request the server sees to the client's exit, so start-up is reported on its own.

    .venv/bin/python bench/generate_bench.py            # everything, medians of 3 (~8 min)
    .venv/bin/python bench/generate_bench.py --quick    # one repeat, fewer requests, no full-size runs
    .venv/bin/python bench/generate_bench.py --full-only  # only the full-size runs; the rest of --out is kept
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import synth_coco  # noqa: E402  (a sibling script, not a package)

BIN = Path(sys.executable).parent
TASK = "detail"  # captions+boxes: the heaviest context to build, and a real validator path
CLIENT_ENV = {**os.environ, "OPENAI_API_KEY": "bench-key", "PYTHONUNBUFFERED": "1"}
TICKS = os.sysconf("SC_CLK_TCK")
FULL_SECTION = "## Full-size input (synthetic train2017 shape: bench/synth_coco.py)"


# -- the mock server, in its own process --------------------------------------------------------


class Stats:
    """The server's /_stats and /_reset over one kept-alive connection (one per thread)."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def _call(self, method: str, path: str) -> dict:
        self._connection.request(method, path)
        return json.loads(self._connection.getresponse().read())

    def requests(self) -> int:
        return self._call("GET", "/_stats")["total"]

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def close(self) -> None:
        self._connection.close()


class Server:
    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datagen.cli", "mock-server", "--port", "0", "--latency-ms", str(latency_ms)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()  # "mock OpenAI-compatible server on http://127.0.0.1:PORT/v1"
        self.base_url = line.split()[-1]
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/")[0])
        self.stats = Stats(self.port)

    def close(self) -> None:
        self.stats.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)


# -- one client process, measured ----------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Measurement:
    requests: int = 0
    wall_s: float = 0.0
    first_request_s: float = float("nan")  # process start -> the server sees a request
    cpu_at_first_s: float = float("nan")
    rss_at_first_mb: float = float("nan")
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    returncode: int = 0

    @property
    def rate(self) -> float:
        return self.requests / (self.wall_s - self.first_request_s)

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * (self.cpu_s - self.cpu_at_first_s) / self.requests

    @property
    def cpu_ms_total_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests


def measure(command: list[str], server: Server, kill_after: int | None = None) -> Measurement:
    """Run `command` to its end (or `kill -9` once the server has seen `kill_after` requests)."""
    server.stats.reset()
    result = Measurement()
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=CLIENT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done, first_seen = threading.Event(), threading.Event()

    def watch() -> None:
        # The poll's own cost lands on the server and on this process, never on the client.
        poller = Stats(server.port)
        try:
            while not done.is_set():
                seen = poller.requests()
                if seen and not first_seen.is_set():
                    first_seen.set()
                    result.first_request_s = time.monotonic() - started
                    try:
                        result.cpu_at_first_s = _proc_cpu(process.pid)
                        result.rss_at_first_mb = _proc_hwm_mb(process.pid)
                    except FileNotFoundError:
                        pass
                    if kill_after is None:
                        return
                if kill_after is not None and seen >= kill_after:
                    process.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.002 if not seen else 0.01)
        finally:
            poller.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    result.wall_s = time.monotonic() - started
    done.set()
    watcher.join()
    result.returncode = process.returncode
    if result.returncode != 0 and kill_after is None:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{stderr.decode()[-2000:]}")
    result.cpu_s = usage.ru_utime + usage.ru_stime
    result.peak_rss_mb = usage.ru_maxrss / 1024
    result.requests = server.stats.requests()
    return result


# -- the clients -----------------------------------------------------------------------------------


def datagen_command(base_url: str, captions: Path, instances: Path, out: Path, concurrency: int, limit: int, task: str = TASK) -> list[str]:
    return [
        str(BIN / "datagen"), "generate", "--teacher", "openai", "--model", "mock", "--base-url", base_url,
        "--captions", str(captions), "--instances", str(instances), "--out", str(out), "--tasks", task,
        "--concurrency", str(concurrency), "--limit", str(limit), "--no-progress",
    ]  # fmt: skip


def write_payloads(captions: Path, instances: Path, count: int, path: Path, task: str = TASK) -> Path:
    """The request bodies datagen sends for the first `count` images, for the bare loops to send too.

    Built in a child process: a fork inherits this process's peak RSS into the child's `ru_maxrss`,
    so this process must stay small for the children's peaks to be their own.
    """
    if not path.exists():
        command = [sys.executable, __file__, "--write-payloads", str(path), "--captions", str(captions),
                   "--instances", str(instances), "--count", str(count), "--task", task]  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=True)
    return path


def _write_payloads(captions: Path, instances: Path, count: int, path: Path, task: str) -> None:
    from datagen.source.coco import CocoSource
    from datagen.run.items import SamplingSettings, build_request
    from datagen.tasks.prompts import BUNDLED_PROMPTS
    from datagen.tasks.registry import task_spec

    source = CocoSource(captions, instances)
    pack = task_spec(task).load_pack(BUNDLED_PROMPTS)
    sampling = SamplingSettings(model="mock", temperature=0.7, max_tokens=1024, seed=0, contexts={task: task_spec(task).default_context})
    with path.open("w") as handle:
        for image in source.images(source.image_ids[:count]):
            handle.write(json.dumps(build_request(image, task, pack, sampling).body()) + "\n")


async def _bare_loop(kind: str, base_url: str, payloads: Path, concurrency: int) -> None:
    bodies = [json.loads(line) for line in payloads.read_text().splitlines()]
    items = iter(bodies)
    if kind == "openai":
        from openai import AsyncOpenAI, DefaultAioHttpClient

        async with AsyncOpenAI(base_url=base_url, api_key="bench-key", http_client=DefaultAioHttpClient()) as client:

            async def worker() -> None:
                for body in items:
                    completion = await client.chat.completions.create(**body)
                    assert completion.choices[0].message.content

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return
    import aiohttp

    headers = {"Authorization": "Bearer bench-key"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=headers) as session:

        async def worker() -> None:
            for body in items:
                async with session.post(base_url + "/chat/completions", json=body) as response:
                    assert json.loads(await response.read())["choices"][0]["message"]["content"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- the runs --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def throughput(args: argparse.Namespace, captions: Path, instances: Path, work: Path) -> list[dict]:
    rows = []
    for latency in (0, 200):
        server = Server(latency)
        try:
            for concurrency in (16, 64):
                # Enough requests for ~8 s of steady state at the concurrency/latency limit (or the 0 ms rate).
                count = args.requests if latency == 0 else min(args.requests, int(concurrency * 1000 / latency * args.seconds))
                payloads = write_payloads(captions, instances, count, work / f"payloads-{TASK}-{count}.jsonl")
                runs: dict[str, list[Measurement]] = {"datagen": [], "openai": [], "aiohttp": []}
                for repeat in range(args.repeats):
                    out = work / "runs" / f"l{latency}-c{concurrency}-r{repeat}"
                    shutil.rmtree(out, ignore_errors=True)  # a fresh --out: the cache must not answer
                    runs["datagen"].append(measure(datagen_command(server.base_url, captions, instances, out, concurrency, count), server))
                    for kind in ("openai", "aiohttp"):
                        command = [sys.executable, __file__, "--bare", kind, "--base-url", server.base_url,
                                   "--payloads", str(payloads), "--concurrency", str(concurrency)]  # fmt: skip
                        runs[kind].append(measure(command, server))
                    shutil.rmtree(out, ignore_errors=True)
                row = {"latency": latency, "concurrency": concurrency, "requests": count}
                for kind, measured in runs.items():
                    row[kind] = {
                        "rate": median([m.rate for m in measured]),
                        "cpu": median([m.cpu_ms_per_request for m in measured]),
                        "cpu_total": median([m.cpu_ms_total_per_request for m in measured]),
                        "rss": median([m.peak_rss_mb for m in measured]),
                        "first": median([m.first_request_s for m in measured]),
                        "first_cpu": median([m.cpu_at_first_s for m in measured]),
                        "all_rates": [round(m.rate) for m in measured],
                    }
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            server.close()
    return rows


def full_size(args: argparse.Namespace, work: Path) -> dict:
    print("full-size input: writing or reusing it", flush=True)
    captions, instances = synth_coco.write()
    sizes = {path.name: path.stat().st_size / 1e6 for path in (captions, instances)}
    result: dict = {"sizes_mb": sizes}
    server = Server(0)
    try:
        starts = []
        for repeat in range(args.start_repeats):
            out = work / "runs" / f"full-start-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            starts.append(measure(datagen_command(server.base_url, captions, instances, out, 16, 64), server))
            shutil.rmtree(out, ignore_errors=True)
        result["start_s"] = median([m.first_request_s for m in starts])
        result["start_rss_mb"] = median([m.rss_at_first_mb for m in starts])
        result["start_cpu_s"] = median([m.cpu_at_first_s for m in starts])
        print(json.dumps(result), flush=True)
    finally:
        server.close()

    # Resume: kill -9 half way through, rerun, and count what the server saw across both runs.
    server = Server(args.resume_latency)
    try:
        out = work / "runs" / "full-resume"
        shutil.rmtree(out, ignore_errors=True)
        command = datagen_command(server.base_url, captions, instances, out, 64, args.resume_images)
        killed = measure(command, server, kill_after=args.resume_images // 2)
        written_at_kill = _lines(out / f"{TASK}.jsonl") + _lines(out / "rejects.jsonl")
        resumed = measure(command, server)
        finished = _lines(out / f"{TASK}.jsonl") + _lines(out / "rejects.jsonl")
        manifest = json.loads((out / "manifest.json").read_text())
        result["resume"] = {
            "images": args.resume_images,
            "latency_ms": args.resume_latency,
            "requests_before_kill": killed.requests,
            "records_at_kill": written_at_kill,
            "requests_after": resumed.requests,
            "cache_hits_after": manifest["cache_hits"],
            "records_final": finished,
            "extra_requests": killed.requests + resumed.requests - finished,
            "first_new_request_s": resumed.first_request_s,
        }
        shutil.rmtree(out, ignore_errors=True)
        print(json.dumps(result["resume"]), flush=True)
    finally:
        server.close()
    return result


def _lines(path: Path) -> int:
    return sum(1 for _ in path.open("rb")) if path.exists() else 0


# -- the report ------------------------------------------------------------------------------------


def _machine() -> str:
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    packages = ", ".join(f"{name} {version(name)}" for name in ("openai", "aiohttp", "pydantic", "pycocotools"))
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}; Python {platform.python_version()}; {packages}"


def report(args: argparse.Namespace, rows: list[dict], full: dict | None, took: float) -> str:
    lines = [
        "# Generation benchmark",
        "",
        f"`{' '.join(['bench/generate_bench.py', *sys.argv[1:]])}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {took / 60:.1f} min;"
        f" {_machine()}.",
        "",
        f"Task `{TASK}` (captions + boxes), one request per image; datagen writes records, rejects, the manifest and its"
        f" SQLite response cache (on, as by default) into a fresh `--out` each run. Mock server in its own process on"
        f" loopback; medians of {args.repeats}. rec/s counts from the first request the server sees to the client's exit;"
        " CPU is the client process's (user + system) after its first request, per record; start-up CPU is shown apart."
        " Bare loops send the same request bodies: `AsyncOpenAI` with `DefaultAioHttpClient`, and plain `aiohttp`.",
        "",
        "| latency | conc. | requests | datagen rec/s | AsyncOpenAI req/s | aiohttp req/s | datagen / AsyncOpenAI | datagen / aiohttp"
        " | CPU ms/rec datagen (incl. start-up) | AsyncOpenAI | aiohttp | peak RSS MB datagen | AsyncOpenAI | aiohttp | datagen start s (CPU s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, sdk, bare = row["datagen"], row["openai"], row["aiohttp"]
        lines.append(
            f"| {row['latency']} ms | {row['concurrency']} | {row['requests']} | **{ours['rate']:.0f}** | {sdk['rate']:.0f} | {bare['rate']:.0f}"
            f" | {ours['rate'] / sdk['rate']:.2f} | {ours['rate'] / bare['rate']:.2f}"
            f" | **{ours['cpu']:.2f}** ({ours['cpu_total']:.2f}) | {sdk['cpu']:.2f} | {bare['cpu']:.2f}"
            f" | **{ours['rss']:.0f}** | {sdk['rss']:.0f} | {bare['rss']:.0f} | {ours['first']:.2f} ({ours['first_cpu']:.2f}) |"
        )
    at = {(row["latency"], row["concurrency"]): row["datagen"] for row in rows}
    checks = []
    if (0, 64) in at:
        checks.append(f"{at[(0, 64)]['rate']:.0f} rec/s at 0 ms, c64 (target >= 300)")
    if (200, 64) in at:
        checks.append(f"{at[(200, 64)]['rate']:.0f} rec/s at 200 ms, c64 (target >= 272)")
    if rows:
        checks.append(f"CPU {max(r['datagen']['cpu'] for r in rows):.2f} ms/rec at worst (target <= 4)")
        checks.append(f"peak RSS {max(r['datagen']['rss'] for r in rows):.0f} MB at worst (target <= 150)")
        checks.append(f"start-up to first request {max(r['datagen']['first'] for r in rows):.2f} s at worst (target < 1.5)")
    lines += ["", "Targets: " + "; ".join(checks) + "."]
    if full:
        resume = full["resume"]
        lines += [
            "",
            FULL_SECTION,
            "",
            f"`{' '.join(['bench/generate_bench.py', *sys.argv[1:]])}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            "Files: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in full["sizes_mb"].items())
            + f" ({synth_coco.TRAIN2017_IMAGES:,} images, ~591K captions, ~860K boxes with segmentations).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| start-up to first request | {full['start_s']:.1f} s (CPU {full['start_cpu_s']:.1f} s; median of {args.start_repeats}) | < 30 s |",
            f"| peak RSS at first request | {full['start_rss_mb'] / 1024:.2f} GiB | < 3 GiB |",
            f"| resume: requests before `kill -9` / records on disk then | {resume['requests_before_kill']} / {resume['records_at_kill']} | |",
            f"| resume: requests after / answered from cache | {resume['requests_after']} / {resume['cache_hits_after']} | |",
            f"| resume: extra requests (all requests - records) | {resume['extra_requests']} | <= 64 (in flight) |",
            f"| resume: time to first new request | {resume['first_new_request_s']:.1f} s ({resume['first_new_request_s'] - full['start_s']:+.1f} s vs a fresh start) | < 5 s |",
            "",
            f"Resume run: {resume['images']} images, concurrency 64, mock latency {resume['latency_ms']} ms, killed once the server had"
            f" seen {resume['images'] // 2} requests.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat, 800 requests, no full-size runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="requests per run at 0 ms (fewer at 200 ms)")
    parser.add_argument("--seconds", type=float, default=8.0, help="target steady-state seconds per run at 200 ms")
    parser.add_argument("--no-full", action="store_true", help="skip the full-size start-up and resume runs")
    parser.add_argument("--full-only", action="store_true", help="only the full-size runs: replaces that section of --out")
    parser.add_argument("--start-repeats", type=int, default=2)
    parser.add_argument("--resume-images", type=int, default=6000)
    parser.add_argument("--resume-latency", type=float, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "results_generate.md")
    parser.add_argument("--bare", choices=("openai", "aiohttp"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--payloads", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write-payloads", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--captions", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--instances", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--task", default=TASK, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_payloads:
        _write_payloads(args.captions, args.instances, args.count, args.write_payloads, args.task)
        return
    if args.bare:
        asyncio.run(_bare_loop(args.bare, args.base_url, args.payloads, args.concurrency))
        return
    if args.quick:
        args.repeats, args.requests, args.no_full = 1, 800, True
    started = time.monotonic()
    work = synth_coco.WORK
    if args.full_only:
        text = report(args, [], full_size(args, work), time.monotonic() - started)
        kept = args.out.read_text().split(FULL_SECTION)[0]
        args.out.write_text(kept + text[text.index(FULL_SECTION) :])
        print(f"wrote {args.out}")
        return
    captions, instances = synth_coco.write(max(args.requests, 2000))
    rows = throughput(args, captions, instances, work)
    full = None if args.no_full else full_size(args, work)
    args.out.write_text(report(args, rows, full, time.monotonic() - started))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
