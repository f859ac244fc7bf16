"""`datagen eval chair`: object hallucination in a model's own detailed descriptions, CHAIR (Rohrbach et al., 2018)
as Object HalBench asks it, from COCO's captions and instances alone.

Questions. `count` images with at least one kept box are drawn (seeded); each is asked for a detailed description
in one of a few wordings (`PROMPTS`, ours, picked per image from the seed). `OUT/questions.jsonl` holds them
(`question_id` = the COCO image id, `image`, `image_id`, `text`).

Scoring. Each description is grounded with our word list and rules (datagen/quality/grounding.py: synonyms and
plurals, negated and generic mentions are no claims) against the image's support: its box categories and the
objects its captions claim. Per description each category counts once. Over the answered descriptions:
- CHAIR_s: the share of descriptions naming at least one unsupported object;
- CHAIR_i: unsupported / mentioned objects, summed over the descriptions;
- recall: supported objects mentioned / objects the image's support holds, summed over the descriptions;
- mean length: words (split on whitespace) per description.
LLaVA-1.5-7B is reported at CHAIR_s 46.4, CHAIR_i 12.1 (greedy, 512 new tokens) by the papers that use Object
HalBench; their word lists and images differ from ours, so compare runs of this command with each other.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from datagen.errors import InputError
from datagen.eval.answers import replies_to
from datagen.eval.bench import BenchQuestion, replies_for, write_settled
from datagen.eval.model import EvalProgress
from datagen.files.jsonl import write_json_atomic
from datagen.quality.grounding import claimed_categories, ground
from datagen.source.coco import CocoSource, ImageSupport

# Our wordings of "describe this image in detail"; one per image, drawn with the seed.
PROMPTS = (
    "Describe this image in detail.",
    "Give a detailed description of what this picture shows.",
    "Tell me everything you can see in this photo, in detail.",
    "Write a thorough description of the scene in this image.",
)
QUESTIONS_FILE = "questions.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"


class ChairQuestion(BaseModel):
    question_id: int  # the COCO image id
    image: str
    image_id: int
    text: str


def truth(support: ImageSupport) -> frozenset[str]:
    """The objects an image holds as CHAIR counts them: its box categories and the objects its captions claim."""
    return support.categories | {category for categories in claimed_categories(support.captions) for category in categories}


def build_questions(source: CocoSource, count: int, seed: int) -> list[ChairQuestion]:
    eligible = [image_id for image_id in source.image_ids if (support := source.support(image_id)) is not None and support.categories]
    if len(eligible) < count:
        raise InputError(
            f"--image-count {count}: only {len(eligible)} images of --captions have a caption and a box in --instances; ask for fewer"
        )
    rng = random.Random(seed)
    drawn = sorted(rng.sample(eligible, count))
    return [
        ChairQuestion(question_id=image_id, image=source.file_name(image_id), image_id=image_id, text=rng.choice(PROMPTS))
        for image_id in drawn
    ]


def score(questions: list[ChairQuestion], replies: dict[str, str], source: CocoSource) -> dict:
    """CHAIR_s, CHAIR_i, recall and mean length over the questions with a reply, and each description's objects."""
    described, hallucinating, mentioned, unsupported, covered, held, words = 0, 0, 0, 0, 0, 0, 0
    most_unsupported: Counter[str] = Counter()
    rows = []
    for question in questions:
        reply = replies.get(str(question.question_id))
        support = source.support(question.image_id)
        if reply is None or support is None:
            continue
        grounding = ground([reply], support)
        objects = truth(support)
        described += 1
        hallucinating += bool(grounding.unsupported)
        mentioned += len(grounding.mentioned)
        unsupported += len(grounding.unsupported)
        covered += len(objects & set(grounding.mentioned))
        held += len(objects)
        words += len(reply.split())
        most_unsupported.update(grounding.unsupported)
        rows.append({"question_id": question.question_id, "words": len(reply.split()), **grounding.model_dump()})
    return {
        "descriptions": described,
        "missing": len(questions) - described,
        "chair_s": hallucinating / described if described else None,
        "chair_i": unsupported / mentioned if mentioned else None,
        "recall": covered / held if held else None,
        "mean_words": words / described if described else None,
        "mentioned": mentioned,
        "unsupported": unsupported,
        "most_unsupported": dict(most_unsupported.most_common(10)),
        "per_description": rows,
    }


def table(results: dict) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    mean = "-" if results["mean_words"] is None else f"{results['mean_words']:.1f}"
    lines = [
        "| descriptions | CHAIR_s % | CHAIR_i % | recall % | mean words | objects mentioned | unsupported | unanswered |",
        "|---|---|---|---|---|---|---|---|",
        f"| {results['descriptions']} | {cell(results['chair_s'])} | {cell(results['chair_i'])} | {cell(results['recall'])} | {mean} | "
        f"{results['mentioned']} | {results['unsupported']} | {results['missing']} |",
        "",
        "objects read with datagen's COCO word list and grounding rules; an object is supported when a box or a caption of the image shows it",
    ]
    if results["most_unsupported"]:
        lines.append("most often unsupported: " + ", ".join(f"{name} {n}" for name, n in results["most_unsupported"].items()))
    return "\n".join(lines)


def prepare(out: Path, source: CocoSource, count: int, seed: int) -> list[ChairQuestion]:
    """The questions, written to OUT/questions.jsonl; an --out built with other settings is refused."""
    questions = build_questions(source, count, seed)
    text = "".join(question.model_dump_json() + "\n" for question in questions)
    conflict = f"--out {out}: holds CHAIR questions built from other files or settings (--image-count, --seed); pick another --out"
    write_settled(out / QUESTIONS_FILE, text, conflict)
    return questions


def run_chair(
    captions: Path, instances: Path, out: Path, count: int, seed: int, answers: Path | None, model: Path | None, images: Path | None,
    batch_size: int, max_new_tokens: int, model_id: str | None, dtype: str, shown: EvalProgress = EvalProgress(),
) -> tuple[dict | None, str]:
    source = CocoSource(captions, instances)
    questions = prepare(out, source, count, seed)
    if answers is None and model is None:
        return None, f"wrote {len(questions)} description prompts to {out / QUESTIONS_FILE}; answer them, then score with --answers"
    asked = [BenchQuestion(question_id=q.question_id, image=q.image, text=q.text, category="chair") for q in questions]
    replies, origin = replies_for(
        asked, answers, lambda path: replies_to(path, {str(q.question_id): q.text for q in questions}, "images asked (question_id = COCO image id)"), model, images, out, batch_size, max_new_tokens, model_id, dtype, shown
    )
    results = {"source": origin, "captions": str(captions), "instances": str(instances), "images": count, "seed": seed,
               "max_new_tokens": max_new_tokens if model is not None else None, **score(questions, replies, source)}
    text = table(results)
    write_json_atomic(out / RESULTS_FILE, results)
    (out / TABLE_FILE).write_text(text + "\n", encoding="utf-8")
    return results, text
