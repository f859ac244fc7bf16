"""`datagen --help` against a bare two-command typer app's `--help`, on the same machine, in the same minutes.

Issue 30's target: within 20% of the bare app. Each run is a fresh interpreter (what a user pays); the two are
interleaved so a busy machine slows both alike, and the table gives the median CPU time (user + system, from the
children's rusage) and wall time of each, and their ratio. It also says which heavy modules `datagen --help`
loaded (none is the point: numpy and torch belong to the commands that use them).

    python bench/help_bench.py [--runs 15] [--out bench/results_help.md] [--compare OTHER_CHECKOUT]

`--compare` adds a row for another checkout's `datagen --help` (e.g. the code before a change), run the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE_APP = '''
import typer

app = typer.Typer(help="Two commands, nothing else.")


@app.command()
def first(name: str = typer.Option("x", help="A name")) -> None:
    """The first command."""


@app.command()
def second(count: int = typer.Option(1, help="A count")) -> None:
    """The second command."""


app()
'''
HEAVY = ("numpy", "torch", "pycocotools", "PIL", "httpx", "pydantic", "datagen.tasks.registry")
PROBE = (
    "import sys; sys.argv = ['datagen', '--help']\n"
    "from datagen.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    f"print('LOADED', ','.join(name for name in {HEAVY!r} if name in sys.modules))"
)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of `command` in the checkout its PYTHONPATH names, output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # `python -m` puts the working folder first on the path: run in the checkout meant.
    subprocess.run(command, env=env, cwd=env["PYTHONPATH"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results_help.md")
    parser.add_argument("--compare", type=Path, help="another checkout whose `datagen --help` gets a row too")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    with tempfile.TemporaryDirectory() as folder:
        bare = Path(folder) / "bare.py"
        bare.write_text(BARE_APP, encoding="utf-8")
        datagen = [sys.executable, "-m", "datagen.cli", "--help"]
        commands = {"bare typer app --help": ([sys.executable, str(bare), "--help"], env), "datagen --help": (datagen, env)}
        if args.compare is not None:
            commands[f"datagen --help ({args.compare})"] = (datagen, {**env, "PYTHONPATH": str(args.compare.resolve())})
        for command, command_env in commands.values():  # warm the file cache and the byte-code
            timed(command, command_env)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (command, command_env) in commands.items():
                samples[name].append(timed(command, command_env))
    loaded = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    heavy = loaded.rsplit("LOADED", 1)[1].strip() or "none"
    cpu = {name: statistics.median(cpu for cpu, _ in runs) for name, runs in samples.items()}
    wall = {name: statistics.median(wall for _, wall in runs) for name, runs in samples.items()}
    base = "bare typer app --help"
    rows = [
        f"| {name} | {cpu[name]:.3f} | {wall[name]:.3f} | {cpu[name] / cpu[base]:.2f} |"
        for name in commands
    ]
    table = "\n".join([
        f"# `datagen --help` against a bare typer app ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average"
        f" {os.getloadavg()[0]:.1f} at the end; {args.runs} interleaved runs each, fresh interpreters; medians.",
        f"Command: `python bench/help_bench.py --runs {args.runs}{f' --compare {args.compare}' if args.compare else ''}`. Target (issue 30): datagen within 1.20x of the bare app's CPU time.",
        "",
        "| command | CPU s (user+sys) | wall s | CPU vs bare |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Heavy modules `datagen --help` loaded (of {', '.join(HEAVY)}): {heavy}.",
        "",
    ])
    args.out.write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
