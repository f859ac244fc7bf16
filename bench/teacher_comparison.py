"""docs/COMPARING_TEACHERS.md's loop run for real: several teachers over the same images (generate -> audit -> report ->
judge), one table of what each wrote and how a judge model scores it.

    .venv/bin/python bench/teacher_comparison.py                        # SmolLM2-135M, Qwen 0.5B and 1.5B; Qwen 1.5B judges
    .venv/bin/python bench/teacher_comparison.py --images 100042 --teachers qwen-0.5b --judge qwen-0.5b
    .venv/bin/python bench/teacher_comparison.py --teachers mock --judge mock --out /tmp/t.md   # offline, seconds

Every step is the command a user types (its own process): `datagen generate` per teacher into its own folder (one
request at a time: the local servers decode one sequence at a time), `datagen audit` over the written records (CHAIR),
`datagen report` over all the folders (the side-by-side page), then `datagen filter --min-score 1` with the judge, which
scores every record into its `meta.judge` and moves none (the judge's scale starts at 1), so the table can give each
teacher's absolute mean score. Absolute scores rather than pairwise `datagen judge`: three teachers need one judge
request per record (36 here), pairwise needs two orders per pair of teachers per image and task (72 for the three pairs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.qwen_bench import subset  # noqa: E402  (run as a script from the repository)
from datagen.curate.settings import RULES  # noqa: E402
from datagen.tasks.registry import TASKS, task_spec  # noqa: E402
from datagen.testing import gguf_models, real_model  # noqa: E402

OUT = HERE / "results_teachers.md"
PAGE = HERE / "teacher_comparison.html"
WORK = HERE / "work" / "teachers"
# Four sample images: three held out from the rules' tuning (bench/open_model_bench.py's HELD_OUT), one tuned on.
DEFAULT_IMAGES = (100013, 100042, 100079, 100103)
SMOLLM = "smollm2-135m"
TEACHERS = (SMOLLM, *gguf_models.MODELS, "mock")
ENV = {**os.environ, "OPENAI_API_KEY": "no-key-needed", "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def served(name: str, log: Path) -> Iterator[tuple[str | None, str]]:
    """(base URL, model name) of `name` served locally for the block; the mock teacher needs no server (URL None)."""
    if name == "mock":
        yield None, "mock"
    elif name == SMOLLM:
        model = str(real_model.require_built(ROOT / real_model.DEFAULT_FOLDER).resolve())
        # torch's OpenMP threads spin while they wait, as llama.cpp's do (gguf_models.serve): on this shared machine
        # that took SmolLM2 from seconds to five minutes a request.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        with real_model.serve(log=log) as base_url:
            yield base_url, model
    else:
        gguf = gguf_models.require_built(gguf_models.MODELS[name], ROOT / gguf_models.DEFAULT_ROOT)
        with gguf_models.serve(gguf, log=log, context=4096) as base_url:
            yield base_url, gguf.stem


def backend_flags(flag: str, base_url: str | None, model: str) -> list[str]:
    return [flag, "mock"] if base_url is None else [f"{flag}-model" if flag == "--judge" else "--model", model, "--base-url", base_url]


def datagen(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "datagen.cli", *args], env=ENV, capture_output=True, text=True, cwd=ROOT, timeout=7200)
    if result.returncode not in (0, 1):  # 1: a run that finished with rejects or an audit over its thresholds
        raise SystemExit(f"datagen {args[0]} failed ({result.returncode}): {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result


def beside(out: Path, suffix: str) -> Path:
    """A file next to a run's folder (`qwen-0.5b` + `.audit`; with_suffix would take `.5b` for a suffix)."""
    return out.parent / (out.name + suffix)


def generate(name: str, captions: Path, instances: Path, out: Path, max_tokens: int) -> None:
    """One teacher's run, timed; its seconds land beside the run, the mark that it is done (a rerun of the script does
    not generate it again: a resumed run would time nothing; delete the folder to measure it again)."""
    if beside(out, ".timing.json").exists():
        return
    with served(name, beside(out, ".server.log")) as (base_url, model):
        started = time.monotonic()
        datagen("generate", "--captions", str(captions), "--instances", str(instances), "--out", str(out), *backend_flags("--teacher", base_url, model),
                "--max-tokens", str(max_tokens), "--concurrency", "1", "--timeout", "1800", "--max-retries", "1", "--seed", "0", "--no-progress", "--force")
        seconds = time.monotonic() - started
    beside(out, ".timing.json").write_text(json.dumps({"seconds": seconds}))


def written_records(out: Path) -> list[dict]:
    return [json.loads(line) for task in TASKS if (out / task_spec(task).file_name).exists()
            for line in (out / task_spec(task).file_name).read_text(encoding="utf-8").splitlines()]


def audit(out: Path, captions: Path, instances: Path) -> None:
    """`datagen audit` over all the run's written records in one file (each record names its task); a run that wrote
    nothing has nothing to audit."""
    records = written_records(out)
    if not records:
        return
    merged = beside(out, ".records.jsonl")
    merged.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    datagen("audit", str(merged), "--captions", str(captions), "--instances", str(instances), "--out", str(beside(out, ".audit")))


def judge(runs: list[Path], name: str, max_tokens: int, rule_packs: list[Path]) -> None:
    """Every record of every run scored by the judge `name` under each rule pack (one server for all), nothing moved;
    each pack's scores saved beside the run as they stand after its pass (the next pass overwrites `meta.judge`)."""
    scores: dict[Path, dict[str, list[float]]] = {out: {} for out in runs}
    with served(name, runs[0].parent / "judge.server.log") as (base_url, model):
        for rules in rule_packs:
            for out in runs:
                datagen("filter", str(out), *backend_flags("--judge", base_url, model), "--min-score", "1", "--concurrency", "1",
                        "--timeout", "1800", "--max-retries", "1", "--max-tokens", str(max_tokens), "--rules", str(rules))
                scores[out][shown(rules)] = [record["meta"]["judge"]["score"] for record in written_records(out)
                                             if (record["meta"].get("judge") or {}).get("score") is not None]
    for out, by_pack in scores.items():
        beside(out, ".judge.json").write_text(json.dumps(by_pack))


def shown(path: Path) -> str:
    """A path as the table names it: from the repository's root when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def words(text: str) -> int:
    return len(text.split())


def summarize(name: str, out: Path) -> dict:
    """One teacher's row: outcomes from the manifest, CHAIR from the audit, lengths and judge scores from the records."""
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    rejected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for task in counts.values():
        rejected.update(task["rejected"])
        skipped.update(task["skipped"])
    records = written_records(out)
    lengths = {task: [words(turn["value"]) for record in records if record["meta"]["task"] == task
                      for turn in record["conversations"] if turn["from"] == "gpt"] for task in manifest["settings"]["tasks"]}
    audited = beside(out, ".audit") / "summary.json"
    audit_total = json.loads(audited.read_text())["total"]["quality"] if records else {"chair_s": None, "chair_i": None, "mentions": 0}
    timing = json.loads(beside(out, ".timing.json").read_text())
    judged_by = {step["settings"]["model"] for step in (manifest.get("curation") or {}).get("steps", []) if step["step"] == "filter"}
    return {
        "teacher": name, "model": manifest["teacher"]["model"], "mock": manifest["teacher"].get("mock", False),
        "requested": sum(task["requested"] for task in counts.values()), "written": sum(task["written"] for task in counts.values()),
        "written_by_task": {task: counts[task]["written"] for task in counts}, "rejected": dict(rejected), "skipped": dict(skipped),
        "chair_s": audit_total["chair_s"], "chair_i": audit_total["chair_i"], "mentions": audit_total["mentions"],
        "lengths": {task: mean(values) if values else None for task, values in lengths.items()},
        "judge": json.loads(beside(out, ".judge.json").read_text()), "judged_by": sorted(judged_by),
        "seconds_per_request": timing["seconds"] / max(manifest["requests_sent"], 1), "requests_sent": manifest["requests_sent"],
    }


def _number(value: float | None, digits: int = 1, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f}%" if percent else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    """The comparison as Markdown, one teacher a row."""
    tasks = list(rows[0]["lengths"]) if rows else []
    packs = list(rows[0]["judge"]) if rows else []
    lines = [
        f"| teacher | written | rejects by reason | CHAIR_s / CHAIR_i (audit) | mean words per answer: {' / '.join(tasks)} "
        + "".join(f"| judge score mean (min-max, n), rules {pack} " for pack in packs) + "| s/request |",
        "|---|---|---|---|---|" + "---|" * len(packs) + "---|",
    ]
    for row in rows:
        reasons = ", ".join([*(f"{reason} {n}" for reason, n in sorted(row["rejected"].items(), key=lambda kv: (-kv[1], kv[0]))),
                             *(f"skipped: {reason} {n}" for reason, n in sorted(row["skipped"].items()))]) or "-"
        lengths = " / ".join(_number(row["lengths"].get(task), 0) for task in tasks)
        judged = "".join(f"| {mean(scores):.2f} ({min(scores):.1f}-{max(scores):.1f}, {len(scores)}) " if scores else f"| - (0 of {row['written']}) "
                         for scores in (row["judge"][pack] for pack in packs))
        chair = f"{_number(row['chair_s'], 0, True)} / {_number(row['chair_i'], 0, True)}" if row["written"] else "-"
        lines.append(f"| {row['teacher']}{' (mock)' if row['mock'] else ''} | {row['written']}/{row['requested']} | {reasons} | {chair} "
                     f"| {lengths} {judged}| {row['seconds_per_request']:.0f} |")
    return "\n".join(lines)


def document(rows: list[dict], args: argparse.Namespace, page: Path, seconds: float) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    judges = sorted({model for row in rows for model in row["judged_by"]})
    shown_page = Path(shown(page))
    packs = "".join(f" --judge-rules {shown(pack)}" for pack in args.judge_rules or [])
    written_by_task = "; ".join(f"{row['teacher']}: " + ", ".join(f"{task} {n}" for task, n in row["written_by_task"].items()) for row in rows)
    return f"""# Comparing teachers on the same images

`bench/teacher_comparison.py --images {' '.join(map(str, args.images))} --teachers {' '.join(args.teachers)} --judge {args.judge}{packs} \
--max-tokens {args.max_tokens}` on {stamp}, {seconds / 60:.0f} min in all; {platform.processor() or platform.machine()}, \
{os.cpu_count()} cores shared with other work (timings vary run to run); Python {platform.python_version()}.

The loop of docs/COMPARING_TEACHERS.md, each step the command a user types: `datagen generate` per teacher over the \
same {len(args.images)} sample images x {len(rows[0]['lengths']) if rows else 0} tasks (seed 0, temperature 0.7, `--max-tokens {args.max_tokens}`, one request at a \
time), `datagen audit` over each run's written records, `datagen report` over the runs side by side \
([{shown_page}]({shown_page.name if shown_page.parent == Path('bench') else shown_page})), and `datagen filter --min-score 1` with \
{', '.join(f'`{j}`' for j in judges) or 'no judge'} as judge: every record scored 1-10 on accuracy against the captions and boxes, \
helpfulness and detail (the mean of the three), none moved. SmolLM2-135M is served by `transformers serve` (float32), \
the Qwen2.5-Coder GGUFs by llama.cpp's server (2 threads, prompt cache on).

{table(rows)}

s/request: the generate run's wall time over the requests it sent, the server's start and a fresh prompt cache included \
(each task's first request reads its ~1,300 tokens of shots). Written per task: {written_by_task}.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=list(DEFAULT_IMAGES))
    parser.add_argument("--teachers", nargs="+", default=[SMOLLM, "qwen-0.5b", "qwen-1.5b"], choices=TEACHERS)
    parser.add_argument("--judge", default="qwen-1.5b", choices=TEACHERS)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--judge-rules", type=Path, action="append", help="a rule pack to judge with (repeatable: one column each); "
                        "default the shipped prompts/judge/filter_system_message.txt")
    parser.add_argument("--judge-max-tokens", type=int, default=48, help="the score line comes first; the reasons after it are not read")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--page", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    began = time.monotonic()
    captions, instances = subset(args.images, args.work / "coco")
    runs = [args.work / name for name in args.teachers]
    for name, out in zip(args.teachers, runs):
        generate(name, captions, instances, out, args.max_tokens)
        print(f"generated {name}", flush=True)
        audit(out, captions, instances)
    datagen("report", *map(str, runs), "--out", str(args.page))
    judge(runs, args.judge, args.judge_max_tokens, args.judge_rules or [RULES])
    rows = [summarize(name, out) for name, out in zip(args.teachers, runs)]
    (args.work / "rows.json").write_text(json.dumps(rows, indent=1))
    args.out.write_text(document(rows, args, args.page, time.monotonic() - began), encoding="utf-8")
    print(args.out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
