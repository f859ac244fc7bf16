"""`datagen eval spatial`: counting and relation multiple-choice questions built from COCO boxes, in CV-Bench 2D's
form (Cambrian-1, Tong et al., 2024), scored as ScienceQA's letters are.

Questions (seeded). Images are taken in a seeded order; each gives at most one question of each task, under the
rules the grounded tasks use (datagen/tasks/grounded.py), until `count` images have given one:
- Count: "How many <plural> are in the image?" about a category with no crowd box, no box under 32 x 32 px and at
  most 10 boxes; four options, the true count and the three nearest other counts from 0 up, in seeded order;
- Relation: "Where is the <a> located with respect to the <b>?" about two categories boxed once each, whose boxes
  settle left/right (else above/below) by the margin rule; options the two sides of that axis, in seeded order.
CV-Bench marks the two objects with red and blue boxes drawn on the image; here the images stay as they are, and
each object is the only one of its category, so its name alone picks it out.

Lines of `OUT/questions.jsonl` carry CV-Bench's fields (`idx`, `type` "2D", `task`, `question`, `choices`, `answer`
"(A)", `filename`, `source` "COCO") and `prompt`, what the model is asked: ScienceQA's layout (Question, Options
"A. ...", the instruction line). Replies are read as LLaVA's eval_science_qa.py reads them (datagen/eval/scienceqa.py:
the reply is a letter, or opens with "X. ", or says "The answer is X."); `results.md` gives accuracy per task, their
mean (CV-Bench's 2D figure) and what a lenient reading would give.
"""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import BaseModel

from datagen.errors import InputError
from datagen.eval.answers import replies_to
from datagen.eval.bench import BenchQuestion, replies_for, write_settled
from datagen.eval.model import EvalProgress
from datagen.eval.scienceqa import LETTERS, Problem, build_prompt, extract_letter, is_correct, llava_letter
from datagen.files.jsonl import write_json_atomic
from datagen.quality.object_words import plural
from datagen.source.coco import CocoSource, ImageAnnotations
from datagen.tasks.grounded import MAX_COUNT, clear_categories, corners, relation

TASKS = ("Count", "Relation")
# LLaVA-1.5's line for multiple-choice benchmarks (its MMBench and SEED scripts).
INSTRUCTION = "Answer with the option's letter from the given choices directly."
QUESTIONS_FILE = "questions.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
COUNT_OPTIONS = 4


class SpatialQuestion(BaseModel):
    """A CV-Bench 2D line, with the prompt the model is shown."""

    idx: int
    type: str = "2D"
    task: str  # Count | Relation
    question: str
    choices: list[str]
    answer: str  # "(A)", CV-Bench's way
    filename: str
    image_id: int
    source: str = "COCO"
    prompt: str

    def problem(self) -> Problem:
        return Problem(question=self.question, choices=self.choices, answer=LETTERS.index(self.answer.strip("()")))


def _count_question(image: ImageAnnotations, rng: random.Random) -> tuple[str, list[str], str] | None:
    countable = sorted(clear_categories(image, MAX_COUNT).items())
    if not countable:
        return None
    name, boxes = rng.choice(countable)
    truth = len(boxes)
    options = sorted(range(max(0, truth - COUNT_OPTIONS), truth + COUNT_OPTIONS), key=lambda n: (abs(n - truth), n))[:COUNT_OPTIONS]
    rng.shuffle(options)
    many = "people" if name == "person" else plural(name)  # the list's "persons" is no way to ask
    return f"How many {many} are in the image?", [str(n) for n in options], str(truth)


def _relation_question(image: ImageAnnotations, rng: random.Random) -> tuple[str, list[str], str] | None:
    singles = sorted((name, corners(boxes[0])) for name, boxes in clear_categories(image).items())
    pairs = [(a, b, found) for a in singles for b in singles if a[0] != b[0] and (found := relation(a[1], b[1])) is not None]
    if not pairs:
        return None
    (a, _), (b, _), found = rng.choice(pairs)
    options = ["left", "right"] if found in ("left", "right") else ["above", "below"]
    rng.shuffle(options)
    return f"Where is the {a} located with respect to the {b}?", options, found


def build_questions(source: CocoSource, count: int, seed: int, instruction: str) -> list[SpatialQuestion]:
    rng = random.Random(seed)
    order = list(source.image_ids)
    rng.shuffle(order)
    questions: list[SpatialQuestion] = []
    used = 0
    for image_id in order:
        if used == count:
            break
        image = source.image(image_id)
        if image is None:
            continue
        made = [(task, found) for task, found in (("Count", _count_question(image, rng)), ("Relation", _relation_question(image, rng))) if found]
        used += bool(made)
        for task, (question, choices, truth) in made:
            problem = Problem(question=question, choices=choices, answer=choices.index(truth))
            questions.append(SpatialQuestion(
                idx=len(questions), task=task, question=question, choices=choices, answer=f"({LETTERS[problem.answer]})",
                filename=image.file_name, image_id=image_id, prompt=build_prompt(problem, instruction),
            ))
    if used < count:
        raise InputError(f"--image-count {count}: only {used} images of --captions/--instances allow a counting or relation question; ask for fewer")
    return questions


def score(questions: list[SpatialQuestion], replies: dict[str, str]) -> dict:
    """Accuracy per task over every question (an unanswered one counts as wrong, as ScienceQA's scorer counts it),
    their mean, and the lenient reading's accuracy beside it."""
    results: dict = {"tasks": {}}
    for task in TASKS:
        asked = [question for question in questions if question.task == task]
        right = lenient = missing = 0
        for question in asked:
            reply = replies.get(str(question.idx))
            if reply is None:
                missing += 1
                continue
            right += is_correct(llava_letter(reply), question.problem())
            lenient += is_correct(extract_letter(reply, question.choices), question.problem())
        results["tasks"][task] = {
            "questions": len(asked), "correct": right, "accuracy": right / len(asked) if asked else None,
            "lenient_accuracy": lenient / len(asked) if asked else None, "missing": missing,
        }
    rates = [row["accuracy"] for row in results["tasks"].values() if row["accuracy"] is not None]
    results["accuracy_2d"] = sum(rates) / len(rates) if rates else None
    results["missing"] = sum(row["missing"] for row in results["tasks"].values())
    return results


def table(results: dict) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = ["| task | questions | correct | accuracy % | lenient % | unanswered |", "|---|---|---|---|---|---|"]
    for task, row in results["tasks"].items():
        lines.append(f"| {task} | {row['questions']} | {row['correct']} | {cell(row['accuracy'])} | {cell(row['lenient_accuracy'])} | {row['missing']} |")
    lines += ["", f"2D accuracy (mean of the tasks, CV-Bench's way): {cell(results['accuracy_2d'])}%",
              "replies read as LLaVA's eval_science_qa.py reads them; lenient: also \"(B)\", \"B) ...\" or the option's text"]
    return "\n".join(lines)


def run_spatial(
    captions: Path, instances: Path, out: Path, count: int, seed: int, instruction: str, answers: Path | None, model: Path | None,
    images: Path | None, batch_size: int, max_new_tokens: int, model_id: str | None, dtype: str, shown: EvalProgress = EvalProgress(),
) -> tuple[dict | None, str]:
    questions = build_questions(CocoSource(captions, instances), count, seed, instruction)
    text = "".join(question.model_dump_json() + "\n" for question in questions)
    write_settled(out / QUESTIONS_FILE, text, f"--out {out}: holds questions built from other files or settings (--image-count, --seed, --instruction); pick another --out")
    if answers is None and model is None:
        return None, f"wrote {len(questions)} questions to {out / QUESTIONS_FILE}; answer them, then score with --answers"
    asked = [BenchQuestion(question_id=q.idx, image=q.filename, text=q.prompt, category=q.task) for q in questions]
    replies, origin = replies_for(
        asked, answers, lambda path: replies_to(path, {str(q.idx): q.question for q in questions}, "questions"), model, images, out, batch_size, max_new_tokens, model_id, dtype, shown
    )
    results = {"source": origin, "captions": str(captions), "instances": str(instances), "images": count, "seed": seed,
               "instruction": instruction, **score(questions, replies)}
    text = table(results)
    write_json_atomic(out / RESULTS_FILE, results)
    (out / TABLE_FILE).write_text(text + "\n", encoding="utf-8")
    return results, text
