"""`datagen filter`'s judge: how well its score separates good answers from bad ones (AUC).

Bad: the real open-model replies of `tests/data/open_model_replies.jsonl` hand-labelled as anything but `ok` (loops,
invented objects, text that is not an answer). Good, by default: the LLaVA-style answers of
`tests/data/grounding_cases.jsonl` for the same sample images whose named objects the annotations show (written for
this project). With `--good FILE`: answers gathered outside the repository (LLaVA's GPT-4 answers, which the
repository does not ship), one JSON row a line with `task`, `question`, `answer`, and its image's `captions` and
`categories` (as `bench/realtext_bench.py` reads them), each judged against its own image. A third group, reported
beside the two: the replies labelled `ok` in the corpus (a decent open model's good answers, e.g. Qwen2.5-Coder-1.5B's).
Each answer becomes one record, judged as `datagen filter` judges it: the image's context, the record, the rule pack.
The scripted mock judge always scores the same sets; a model judge is added with --judge-model/--base-url, or with
--serve, which starts llama.cpp's server over one of the verified GGUFs (`make setup-qwen`) for the run.

    .venv/bin/python bench/judge_filter_bench.py                                   # the scripted mock judge only
    .venv/bin/python bench/judge_filter_bench.py --judge-model M --base-url URL    # and any OpenAI-compatible judge
    .venv/bin/python bench/judge_filter_bench.py --serve qwen-1.5b --good qa90.jsonl --sample 30 --cache /tmp/j.sqlite

AUC: the chance that a random good record scores above a random bad one (ties count half); 0.5 is chance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.curate.judge_filter import MOCK_JUDGES, judge_request, judge_score, parse_scores  # noqa: E402  (run as a script)
from datagen.curate.settings import RULES, FilterSettings  # noqa: E402
from datagen.curate.moves import Row  # noqa: E402
from datagen.quality.grounding import ground  # noqa: E402
from datagen.quality.parse import Rejected, parse_qa_pairs  # noqa: E402
from datagen.source.coco import CocoSource  # noqa: E402
from datagen.source.context import render_context  # noqa: E402
from datagen.teachers.cache import CachingTeacher, ResponseCache  # noqa: E402
from datagen.teachers.factory import BackendSettings, build_teacher  # noqa: E402
from datagen.teachers.teacher import Teacher  # noqa: E402
from datagen.testing import gguf_models  # noqa: E402

OUT = HERE / "results_judge_filter.md"
DETAIL_QUESTION = "Describe the image in detail."
REPLIES = ROOT / "tests" / "data" / "open_model_replies.jsonl"
TASK_ALIASES = {"conv": "conversation", "complex": "complex_reasoning"}
GROUPS = ("good", "bad", "ok open-model")


class Item(NamedTuple):
    """One record to score, with the context its judge sees and the group it was labelled into."""

    context: str
    row: Row
    group: str


def record(task: str, text: str) -> Row:
    """A reply as the record it would make: Question/Answer blocks as turns, anything else one answer."""
    try:
        pairs = parse_qa_pairs(text) if task != "detail" else [(DETAIL_QUESTION, text)]
    except Rejected:
        pairs = [(DETAIL_QUESTION if task == "detail" else "What can you tell me about the image?", text)]
    turns = []
    for question, answer in pairs:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return Row(task, 0, {"conversations": turns})


def listed_context(captions: list[str], categories: list[str]) -> str:
    """The filter's captions+boxes context for an image known only by its captions and box category names: the
    captions, one a line, then one line per box with its category and no corners (the rows carry none)."""
    return "\n".join(captions) + ("\n\n" + "\n".join(categories) if categories else "")


def good_from_file(path: Path) -> list[Item]:
    """Answers gathered outside the repository, each as a one-turn record judged against its own image."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            task = TASK_ALIASES.get(row["task"], row["task"])
            question = row.get("question") or DETAIL_QUESTION
            context = listed_context(list(row["captions"]), list(row.get("categories", [])))
            answer = row["answer"]
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"error: {path}:{number}: not a row with task, answer and captions ({error})") from None
        items.append(Item(context, Row(task, 0, {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}), "good"))
    return items


def good_from_cases(source: CocoSource) -> list[Item]:
    """The hand-written grounding cases whose named objects the sample annotations show."""
    items = []
    for line in (ROOT / "tests" / "data" / "grounding_cases.jsonl").read_text().splitlines():
        case = json.loads(line)
        image = source.image(case["image_id"])
        if image is not None and not ground([case["answer"]], image).unsupported:
            text = case["answer"] if case["task"] == "detail" else "Question:\nWhat do you see?\n===\nAnswer:\n" + case["answer"]
            items.append(Item(render_context(image, "captions+boxes"), record(case["task"], text), "good"))
    return items


def open_model_replies(source: CocoSource) -> list[Item]:
    """Every labelled open-model reply: `ok` ones in their own group, all others bad."""
    items = []
    for line in REPLIES.read_text().splitlines():
        reply = json.loads(line)
        image = source.image(reply["image_id"])
        assert image is not None, f"{REPLIES}: image {reply['image_id']} is not in data/"
        group = "ok open-model" if reply["label"] == "ok" else "bad"
        items.append(Item(render_context(image, "captions+boxes"), record(reply["task"], reply["text"]), group))
    return items


def sample(items: list[Item], size: int | None, seed: int) -> list[Item]:
    """The first `size` of each group in an order drawn with `seed`: a larger --sample adds records to a smaller one's
    (so the judge's cache answers those again) instead of drawing another set."""
    chosen: list[Item] = []
    for group in GROUPS:
        members = [item for item in items if item.group == group]
        random.Random(seed).shuffle(members)
        chosen += members[:size]
    return chosen


def auc(good: list[float], bad: list[float]) -> float | None:
    if not good or not bad:
        return None
    wins = sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
    return wins / (len(good) * len(bad))


async def score_all(teacher: Teacher, items: list[Item], max_tokens: int, rules_file: Path = RULES) -> list[float | None]:
    """Each item's mean judge score (None: a reply without three scores), one request at a time."""
    rules = rules_file.read_text(encoding="utf-8")
    settings = FilterSettings(max_tokens=max_tokens)
    scores: list[float | None] = []
    try:
        for number, item in enumerate(items, 1):
            reply = await teacher.complete(judge_request(item.context, item.row, rules, settings, teacher.info.model))
            scores.append(judge_score(parse_scores(reply.text), teacher.info.model, "").score)
            if not teacher.info.mock:
                print(f"{teacher.info.model}: {number}/{len(items)} -> {scores[-1]}", flush=True)
    finally:
        await teacher.aclose()
    return scores


@contextlib.contextmanager
def model_judge(args: argparse.Namespace) -> Iterator[tuple[str, str] | None]:
    """(model, base URL) of the model judge asked for, a served GGUF started for the block; None: the mock only."""
    if args.serve:
        os.environ.setdefault("OPENAI_API_KEY", "no-key-needed")  # the local server takes any key
        gguf = gguf_models.require_built(gguf_models.MODELS[args.serve], ROOT / gguf_models.DEFAULT_ROOT)
        with gguf_models.serve(gguf, log=args.cache.with_suffix(".server.log"), context=4096) as base_url:
            yield gguf.stem, base_url
    elif args.judge_model:
        yield args.judge_model, args.base_url
    else:
        yield None


def shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def bins(scores: list[float]) -> str:
    """How many scores fall in each whole-number band, 1 to 10 (a band holds [n, n+1); 10 holds exactly 10)."""
    counts = Counter(min(int(score), 10) for score in scores)
    return " ".join(str(counts[band]) for band in range(1, 11))


def section(label: str, items: list[Item], scores: list[float | None], min_score: float) -> list[str]:
    by_group = {group: [s for s, item in zip(scores, items) if item.group == group and s is not None] for group in GROUPS}
    unscored = {group: sum(s is None for s, item in zip(scores, items) if item.group == group) for group in GROUPS}
    present = [group for group in GROUPS if any(item.group == group for item in items)]

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"### {label}", "",
        f"| group | records | unscored | mean score | kept at --min-score {min_score:g} | scores in bands 1 2 3 4 5 6 7 8 9 10 |",
        "|---|---|---|---|---|---|",
    ]
    for group in present:
        values = by_group[group]
        lines.append(f"| {group} | {len(values) + unscored[group]} | {unscored[group]} | {mean(values) if values else float('nan'):.2f} "
                     f"| {sum(v >= min_score for v in values)} of {len(values)} | {bins(values)} |")
    separation = f"AUC good above bad: **{shown(auc(by_group['good'], by_group['bad']))}**"
    if by_group["ok open-model"]:
        separation += (f"; ok open-model above bad: **{shown(auc(by_group['ok open-model'], by_group['bad']))}**; "
                       f"good above ok open-model: {shown(auc(by_group['good'], by_group['ok open-model']))}")
    return [*lines, "", separation, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge-model", help="a model judge beside the scripted mock (needs --base-url)")
    parser.add_argument("--base-url")
    parser.add_argument("--serve", choices=list(gguf_models.MODELS), help="serve this verified GGUF as the model judge for the run")
    parser.add_argument("--good", type=Path, help="good answers gathered outside the repository (see above); default the hand-written cases")
    parser.add_argument("--sample", type=int, help="at most this many records of each group, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=48, help="the judge's reply limit: the scores are its first line, and greedy "
                        "decoding writes the same first line under any limit that holds it")
    parser.add_argument("--min-score", type=float, default=6.0)
    parser.add_argument("--rules", type=Path, action="append", help="a rule pack (system message) for the model judge, as `datagen filter "
                        "--rules` (repeatable: a section each); default the shipped one. The scripted judge reads none")
    parser.add_argument("--cache", type=Path, default=HERE / "work" / "judge_filter" / "cache.sqlite", help="the model judge's replies, so a rerun asks nothing twice")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    packs: list[Path] = args.rules or [RULES]
    source = CocoSource(ROOT / "data" / "captions.json", ROOT / "data" / "instances.json")
    good = good_from_file(args.good) if args.good else good_from_cases(source)
    items = sample(good + open_model_replies(source), args.sample, args.seed)
    judges: list[tuple[str, list[float | None]]] = []
    with model_judge(args) as served:
        mock = build_teacher(BackendSettings(kind="mock"), MOCK_JUDGES, kind_flag="--judge")
        judges.append(("scripted mock judge (`mock-judge`: a transparent rule, not a model)", asyncio.run(score_all(mock, items, args.max_tokens))))
        if served is not None:
            model, base_url = served
            backend = BackendSettings(kind="openai", model=model, base_url=base_url, concurrency=1, timeout=1800, max_retries=1)
            for pack in packs:
                teacher = CachingTeacher(build_teacher(backend, MOCK_JUDGES, kind_flag="--judge"), ResponseCache(args.cache))
                judges.append((f"`{model}` ({'llama.cpp server, ' + args.serve if args.serve else base_url}), rule pack {shown_path(pack)}",
                               asyncio.run(score_all(teacher, items, args.max_tokens, pack))))
    counts = Counter(item.group for item in items)
    good_text = (f"`--good {args.good.name}`: answers gathered outside the repository, each judged against its own image's captions "
                 "and box categories (listed without corners: the rows carry none)" if args.good else
                 "hand-written LLaVA-style answers of tests/data/grounding_cases.jsonl whose objects the sample annotations show")
    lines = [
        "# Judge filter benchmark",
        "",
        f"`bench/judge_filter_bench.py{' --good ' + args.good.name if args.good else ''}{f' --sample {args.sample} --seed {args.seed}' if args.sample else ''}"
        f"{' --serve ' + args.serve if args.serve else ''}{''.join(' --rules ' + shown_path(pack) for pack in args.rules or [])} --max-tokens {args.max_tokens}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"Python {platform.python_version()}.",
        "",
        f"- good ({counts['good']}): {good_text};",
        f"- bad ({counts['bad']}): real open-model replies in tests/data/open_model_replies.jsonl labelled anything but `ok`, "
        "judged against the sample image's captions and boxes;",
        f"- ok open-model ({counts['ok open-model']}): the replies there labelled `ok`.",
        "",
        "Each as one record through `datagen filter`'s request (the rule pack as a system message, temperature 0); "
        "the score is the mean of accuracy, helpfulness and detail (1-10).",
        "",
    ]
    for label, scores in judges:
        lines += section(label, items, scores, args.min_score)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
