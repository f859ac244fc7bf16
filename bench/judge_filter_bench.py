"""`datagen filter`'s judge: how well its score separates good answers from bad ones for the same images (AUC).

Bad: every real reply of SmolLM2-135M-Instruct in `tests/data/open_model_replies.jsonl` (hand-labelled, none good:
loops, invented objects, text that is not an answer). Good: the LLaVA-style answers of
`tests/data/grounding_cases.jsonl` for the same sample images whose named objects the annotations show (written for
this project; LLaVA's GPT-4 answers are third-party text the repository does not ship). Each answer becomes one record, judged as
`datagen filter` judges it: the image's captions and boxes, the record, the rule pack.

    .venv/bin/python bench/judge_filter_bench.py                                   # the scripted mock judge
    .venv/bin/python bench/judge_filter_bench.py --judge-model M --base-url URL    # any OpenAI-compatible judge

AUC: the chance that a random good record scores above a random bad one (ties count half); 0.5 is chance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

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
from datagen.teachers.factory import BackendSettings, build_teacher  # noqa: E402

OUT = HERE / "results_judge_filter.md"
DETAIL_QUESTION = "Describe the image in detail."


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


def auc(good: list[float], bad: list[float]) -> float:
    wins = sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
    return wins / (len(good) * len(bad))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judge", default="mock")
    parser.add_argument("--judge-model")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    source = CocoSource(ROOT / "data" / "captions.json", ROOT / "data" / "instances.json")
    labelled: list[tuple[int, Row, str]] = []
    for line in (ROOT / "tests" / "data" / "grounding_cases.jsonl").read_text().splitlines():
        case = json.loads(line)
        image = source.image(case["image_id"])
        if image is not None and not ground([case["answer"]], image).unsupported:
            labelled.append((case["image_id"], record(case["task"], "Question:\nWhat do you see?\n===\nAnswer:\n" + case["answer"]
                                                       if case["task"] != "detail" else case["answer"]), "good"))
    for line in (ROOT / "tests" / "data" / "open_model_replies.jsonl").read_text().splitlines():
        reply = json.loads(line)
        labelled.append((reply["image_id"], record(reply["task"], reply["text"]), "bad"))
    kind = "mock" if args.judge == "mock" else "openai"
    teacher = build_teacher(BackendSettings(kind=kind, model=args.judge_model, base_url=args.base_url), MOCK_JUDGES, kind_flag="--judge")
    rules = RULES.read_text(encoding="utf-8")
    settings = FilterSettings()

    async def score_all() -> list[float | None]:
        scores: list[float | None] = []
        for image_id, row, _ in labelled:
            image = source.image(image_id)
            assert image is not None
            reply = await teacher.complete(judge_request(render_context(image, "captions+boxes"), row, rules, settings, teacher.info.model))
            scores.append(judge_score(parse_scores(reply.text), teacher.info.model, "").score)
        await teacher.aclose()
        return scores

    scores = asyncio.run(score_all())
    good = [score for score, (_, _, label) in zip(scores, labelled) if label == "good" and score is not None]
    bad = [score for score, (_, _, label) in zip(scores, labelled) if label == "bad" and score is not None]
    unscored = sum(score is None for score in scores)
    lines = [
        "# Judge filter benchmark",
        "",
        f"`bench/judge_filter_bench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}; judge "
        f"`{teacher.info.model}` ({'scripted mock: a transparent rule, not a model' if teacher.info.mock else args.base_url}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| good records (hand-written LLaVA-style answers, objects all shown) | {len(good)} |",
        f"| bad records (real SmolLM2-135M-Instruct replies, hand-labelled bad) | {len(bad)} |",
        f"| replies without a usable score | {unscored} |",
        f"| mean score good / bad | {sum(good) / max(1, len(good)):.2f} / {sum(bad) / max(1, len(bad)):.2f} |",
        f"| **AUC** (good above bad) | **{auc(good, bad):.3f}** |",
        f"| bad records kept at --min-score 6 | {sum(score >= 6 for score in bad)} of {len(bad)} |",
        f"| good records moved at --min-score 6 | {sum(score < 6 for score in good)} of {len(good)} |",
        "",
        "The scripted judge counts invented objects, answers that take up the question's words, and distinct words; it is "
        "there to run the filter in CI, and a model judge is what the filter is for. Not yet measured: LLaVA's GPT-4 "
        "answers against open-model replies with a served open model as judge (run with --judge-model and --base-url).",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
