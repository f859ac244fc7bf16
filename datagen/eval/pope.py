"""`datagen eval pope`: POPE (Li et al., 2023), object hallucination as yes/no questions, built from COCO instances.

Questions. Images with at least `per_image` object categories are drawn at random (seeded); for each, the
first `per_image` categories in annotation order are asked about ("Is there a dog in the image?", label yes),
each followed by a category the image lacks (label no), picked three ways, one question set per sampling:
- random: uniformly among the categories of the drawn images;
- popular: the most frequent category (images holding it, among the drawn ones) not yet used for the image;
- adversarial: the category most often seen together with the yes-question's object, among the drawn images.
A category the image has, or that this image was already asked about, is never a no-question; when popular or
adversarial run out of candidates the pick falls back to random, as POPE's code does. Ties go to the name
that sorts first, so a set depends on the instances file and the seed alone.

Reading replies (`read_yes_no`) is LLaVA's eval_pope.py rule, so numbers compare with the papers: keep the
reply up to its first ".", drop commas, split on spaces; "no" when a word is exactly `No`, `no` or `not`,
else "yes". So "There is no dog." is no, "Yes, there is." yes, and "I can't tell" (or "NO", or "Nope") yes:
replies read as yes whose first sentence has no word "yes" in any case are counted as `unclear` beside the metrics.

Metrics per sampling, positive = yes: accuracy, precision, recall, F1 and the share of yes answers.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from datagen.curate.overlap import TrainingData
from datagen.errors import InputError
from datagen.eval.answers import replies_to
from datagen.eval.bench import BenchQuestion, replies_for, write_settled
from datagen.eval.model import EvalProgress
from datagen.files.jsonl import write_json_atomic
from datagen.source.coco import ImageObjects, image_objects

SAMPLINGS = ("random", "popular", "adversarial")
# LLaVA-1.5's line after each POPE question (its llava_pope_test.jsonl); --instruction replaces it.
INSTRUCTION = "Answer the question using a single word or phrase."
QUESTIONS_FILE = "questions.jsonl"
ANSWERS_FILE = "answers.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"


class PopeQuestion(BaseModel):
    """POPE's question line (question_id, image, text, label) with LLaVA's `category` (the sampling)."""

    question_id: int
    image: str
    image_id: int
    text: str  # the question, then the instruction line when there is one: what the model is asked
    label: str  # "yes" | "no"
    category: str  # the sampling
    object: str


def question_text(name: str) -> str:
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"Is there {article} {name} in the image?"


def _co_occurrence(images: list[ImageObjects]) -> dict[str, list[str]]:
    counts: dict[str, Counter[str]] = {}
    for image in images:
        for name in image.objects:
            counts.setdefault(name, Counter()).update(other for other in image.objects if other != name)
    return {name: sorted(found, key=lambda other: (-found[other], other)) for name, found in counts.items()}


def build_questions(
    images: list[ImageObjects], count: int, per_image: int, seed: int, instruction: str, samplings: tuple[str, ...] = SAMPLINGS
) -> list[PopeQuestion]:
    eligible = [image for image in images if len(image.objects) >= per_image]
    if len(eligible) < count:
        raise InputError(
            f"--image-count {count}: only {len(eligible)} images of --instances have {per_image} or more object categories; "
            "ask for fewer images or fewer per image"
        )
    drawn = random.Random(seed).sample(eligible, count)
    frequency = Counter(name for image in drawn for name in image.objects)
    vocabulary = sorted(frequency)
    popular = sorted(vocabulary, key=lambda name: (-frequency[name], name))
    together = _co_occurrence(drawn)
    suffix = "\n" + instruction.strip() if instruction.strip() else ""
    questions: list[PopeQuestion] = []
    for sampling in samplings:
        # Each sampling draws from its own stream, so one set does not change when another is left out.
        rng = random.Random(f"{seed}:{sampling}")
        for image in drawn:
            asked: list[tuple[str, str]] = []  # (object, label) in asking order
            for positive in image.objects[:per_image]:
                asked.append((positive, "yes"))
                used = {name for name, _ in asked}
                allowed = [name for name in vocabulary if name not in used and name not in image.objects]
                if not allowed:
                    raise InputError(
                        f"--instances: image {image.image_id} leaves no category to ask a no-question about; "
                        "draw more images (--image-count) so more categories are in play"
                    )
                ranked = {"popular": popular, "adversarial": together.get(positive, [])}.get(sampling, [])
                negative = next((name for name in ranked if name in allowed), None)
                asked.append((negative if negative is not None else rng.choice(allowed), "no"))
            questions.extend([
                PopeQuestion(question_id=len(questions) + index, image=image.file_name, image_id=image.image_id,
                             text=question_text(name) + suffix, label=label, category=sampling, object=name)
                for index, (name, label) in enumerate(asked)
            ])
    return questions


# -- reading replies and the metrics ---------------------------------------------------------------------


def read_yes_no(reply: str) -> str:
    """LLaVA's eval_pope.py reading (see the module's docstring): "no" or "yes"."""
    first = reply.split(".")[0]
    words = first.replace(",", "").split(" ")
    return "no" if "No" in words or "no" in words or "not" in words else "yes"


def is_unclear(reply: str) -> bool:
    """Read as yes for want of a no, not for a yes: the first sentence has no word "yes" in any case."""
    return read_yes_no(reply) == "yes" and "yes" not in re.findall(r"[a-z]+", reply.split(".")[0].lower())


def metrics(labels: list[str], replies: list[str]) -> dict:
    said = [read_yes_no(reply) for reply in replies]
    pairs = list(zip(said, labels))
    tp, fp = pairs.count(("yes", "yes")), pairs.count(("yes", "no"))
    tn, fn = pairs.count(("no", "no")), pairs.count(("no", "yes"))
    total = len(pairs)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision is not None and recall is not None and precision + recall else None
    return {
        "questions": total, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": (tp + tn) / total if total else None, "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": said.count("yes") / total if total else None,
        "unclear": sum(is_unclear(reply) for reply in replies),
    }


def score(questions: list[PopeQuestion], replies: dict[str, str]) -> dict:
    """Metrics per sampling over the questions with a reply; the unanswered are counted, not guessed."""
    results: dict[str, dict] = {}
    for sampling in dict.fromkeys(question.category for question in questions):
        asked = [question for question in questions if question.category == sampling]
        answered = [question for question in asked if str(question.question_id) in replies]
        row = metrics([q.label for q in answered], [replies[str(q.question_id)] for q in answered])
        row["missing"] = len(asked) - len(answered)
        results[sampling] = row
    return results


def table(results: dict) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = [
        "| sampling | questions | accuracy % | precision % | recall % | F1 % | yes % | unclear | unanswered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sampling, row in results.items():
        lines.append(
            f"| {sampling} | {row['questions']} | {cell(row['accuracy'])} | {cell(row['precision'])} | {cell(row['recall'])} | "
            f"{cell(row['f1'])} | {cell(row['yes_ratio'])} | {row['unclear']} | {row['missing']} |"
        )
    lines.append("")
    lines.append(
        "replies read as LLaVA's eval_pope.py reads them: no when the first sentence has the word No, no or not, else yes; "
        "`unclear` counts the replies read as yes without the word yes in that sentence (\"I can't tell\", \"NO\")"
    )
    return "\n".join(lines)


# -- the command -------------------------------------------------------------------------------------


def prepare(out: Path, instances: Path, count: int, per_image: int, seed: int, instruction: str) -> list[PopeQuestion]:
    """The question set, written to OUT/questions.jsonl; an --out built with other settings is refused."""
    images, _ = image_objects(instances)
    questions = build_questions(images, count, per_image, seed, instruction)
    text = "".join(question.model_dump_json() + "\n" for question in questions)
    conflict = (
        f"--out {out}: holds POPE questions built from other instances or settings (--image-count, --per-image, --seed, "
        "--instruction); rerun with those, or pick another --out"
    )
    write_settled(out / QUESTIONS_FILE, text, conflict)
    return questions


def run_pope(
    instances: Path, out: Path, count: int, per_image: int, seed: int, instruction: str, answers: Path | None,
    model: Path | None, images: Path | None, batch_size: int, max_new_tokens: int, model_id: str | None, dtype: str,
    train_data: TrainingData | None = None, shown: EvalProgress = EvalProgress(),
) -> tuple[dict | None, str]:
    """With `train_data`, questions about images the model was trained on are neither asked nor scored (unless it
    allows the overlap); the set written stays the full one, so its ids match any other tool's answers."""
    questions = prepare(out, instances, count, per_image, seed, instruction)
    if answers is None and model is None:
        return None, f"wrote {len(questions)} POPE questions to {out / QUESTIONS_FILE}; answer them, then score with --answers"
    every_question = questions
    overlap = None
    if train_data is not None:
        questions, overlap = train_data.split(questions, lambda question: question.image_id)
    asked = [BenchQuestion(question_id=q.question_id, image=q.image, text=q.text, category=q.category) for q in questions]
    # An answers file answers the whole set written, so it is checked against every question, trained-on ones too.
    every_text = {str(q.question_id): question_text(q.object) for q in every_question}
    replies, source = replies_for(
        asked, answers, lambda path: replies_to(path, every_text, "POPE questions"), model, images, out, batch_size, max_new_tokens, model_id, dtype, shown
    )
    by_sampling = score(questions, replies)
    results = {"source": source, "instances": str(instances), "images": count, "per_image": per_image, "seed": seed,
               "instruction": instruction, "samplings": by_sampling}
    text = table(by_sampling)
    if overlap is not None:
        results["overlap"] = overlap.model_dump()
        text = overlap.line() + "\n" + text
    write_json_atomic(out / RESULTS_FILE, results)
    (out / TABLE_FILE).write_text(text + "\n", encoding="utf-8")
    return results, text
