"""`datagen eval scienceqa`: multiple-choice accuracy on ScienceQA in its public file layout.

Inputs: `problems.json` (pid -> {question, choices, answer (index), hint, image, subject, grade, ...}),
`pid_splits.json` (split -> [pid, ...]) and the image folder (`<pid>/image.png`, directly or under the
split's name). The prompt holds the context (the problem's hint), the question and the options lettered
A, B, C, ...; the reply's letter is extracted, and accuracy is reported overall and per category as the
ScienceQA paper and LLaVA did: subject (NAT/SOC/LAN), context modality (TXT/IMG/NO), grade (G1-6/G7-12).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from datagen.errors import InputError
from datagen.files.jsonl import JsonlAppender, iter_jsonl, write_json_atomic

LETTERS = "ABCDEFGHIJ"
PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
INSTRUCTION = "Reply with the letter of the correct option."
CATEGORY_ORDER = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}


class Problem(BaseModel):
    question: str
    choices: list[str]
    answer: int
    hint: str = ""
    image: str | None = None
    subject: str = ""
    grade: str = ""


class Prediction(BaseModel):
    pid: str
    prompt: str
    reply: str
    prediction: str | None  # the extracted letter; None when the reply names no option
    answer: str
    correct: bool


def build_prompt(problem: Problem) -> str:
    lines = []
    if problem.hint.strip():
        lines.append(f"Context: {problem.hint.strip()}")
    lines.append(f"Question: {problem.question.strip()}")
    lines.append("Options:")
    lines.extend(f"{letter}. {choice}" for letter, choice in zip(LETTERS, problem.choices))
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def extract_letter(reply: str, choices: list[str]) -> str | None:
    """The option a reply names: "The answer is B.", "B", "(B)", "B. cat", or the text of exactly one option."""
    letters = LETTERS[: len(choices)]
    text = reply.strip()
    stated = re.search(rf"answer is:?\s*\(?([{letters}])\b\)?", text, re.IGNORECASE)
    if stated:
        return stated.group(1).upper()
    alone = re.fullmatch(rf"[\s(\[]*([{letters}])[\s)\].:]*", text)
    if alone:
        return alone.group(1)
    # A letter then punctuation opens the reply ("B. The cat", "(B) cat"); a bare "A cat" is the article, not a letter.
    leading = re.match(rf"\s*\(([{letters}])\)|\s*([{letters}])[.):]", text)
    if leading:
        return leading.group(1) or leading.group(2)
    said = _normalise(text)
    exact = [letter for letter, choice in zip(letters, choices) if _normalise(choice) == said]
    if len(exact) == 1:
        return exact[0]
    mentioned = [letter for letter, choice in zip(letters, choices) if _normalise(choice) and f" {_normalise(choice)} " in f" {said} "]
    return mentioned[0] if len(mentioned) == 1 else None


def categories(problem: Problem) -> list[str]:
    labels = []
    if problem.subject in SUBJECTS:
        labels.append(SUBJECTS[problem.subject])
    if problem.hint.strip():
        labels.append("TXT")
    if problem.image:
        labels.append("IMG")
    if not problem.hint.strip() and not problem.image:
        labels.append("NO")
    grade = re.fullmatch(r"grade(\d+)", problem.grade.strip())
    if grade:
        labels.append("G1-6" if int(grade.group(1)) <= 6 else "G7-12")
    return labels


def score(problems: dict[str, Problem], predictions: dict[str, str | None]) -> dict:
    """Accuracy overall and per category over the problems in `predictions`; no answer counts as wrong."""
    tally: dict[str, list[int]] = {name: [0, 0] for name in CATEGORY_ORDER}
    correct = unextracted = 0
    for pid, letter in predictions.items():
        problem = problems[pid]
        hit = letter is not None and LETTERS.index(letter) == problem.answer
        correct += hit
        unextracted += letter is None
        for label in categories(problem):
            tally[label][0] += hit
            tally[label][1] += 1
    total = len(predictions)

    def entry(right: int, count: int) -> dict:
        return {"correct": right, "total": count, "accuracy": 100 * right / count if count else None}

    return {
        "overall": entry(correct, total),
        "categories": {name: entry(*tally[name]) for name in CATEGORY_ORDER},
        "unextracted": unextracted,
    }


def table(results: dict) -> str:
    names = ["all", *CATEGORY_ORDER]
    rows = [results["overall"], *(results["categories"][name] for name in CATEGORY_ORDER)]
    cells = ["-" if row["accuracy"] is None else f"{row['accuracy']:.2f}" for row in rows]
    counts = [f"{row['correct']}/{row['total']}" for row in rows]
    return "\n".join([
        "| " + " | ".join(["", *names]) + " |",
        "|" + "---|" * (len(names) + 1),
        "| accuracy % | " + " | ".join(cells) + " |",
        "| correct/total | " + " | ".join(counts) + " |",
    ])


# -- inputs ---------------------------------------------------------------------------------------


def _read_json(path: Path, flag: str):
    if not path.is_file():
        raise InputError(f"{flag} {path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{flag} {path}: not valid JSON ({type(error).__name__}); pass ScienceQA's file") from None


def load_problems(problems_path: Path, split_path: Path, split: str, limit: int | None = None) -> dict[str, Problem]:
    raw = _read_json(problems_path, "--problems")
    splits = _read_json(split_path, "--split-file")
    if not isinstance(raw, dict):
        raise InputError(f"--problems {problems_path}: expected an object keyed by problem id (ScienceQA's problems.json)")
    if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
        names = ", ".join(splits) if isinstance(splits, dict) else "none"
        raise InputError(f"--split {split}: not in {split_path} (it has: {names})")
    problems: dict[str, Problem] = {}
    for pid in splits[split][:limit] if limit else splits[split]:
        pid = str(pid)
        if pid not in raw:
            raise InputError(f"--split-file {split_path}: problem {pid} of split {split} is not in --problems {problems_path}")
        try:
            problem = Problem.model_validate(raw[pid])
        except ValueError as error:
            first = error.errors()[0] if hasattr(error, "errors") else {"loc": (), "msg": str(error)}
            raise InputError(f"--problems {problems_path}: problem {pid}: {'.'.join(map(str, first['loc']))} {first['msg']}") from None
        if not 0 <= problem.answer < min(len(problem.choices), len(LETTERS)):
            raise InputError(f"--problems {problems_path}: problem {pid}: answer index {problem.answer} is not one of its choices")
        problems[pid] = problem
    return problems


def problem_image(images: Path | None, split: str, pid: str, problem: Problem) -> Path | None:
    if not problem.image:
        return None
    if images is None:
        raise InputError(f"--images is required: problem {pid} has an image")
    for folder in (images / pid, images / split / pid):
        if (folder / problem.image).is_file():
            return folder / problem.image
    raise InputError(f"--images {images}: no {pid}/{problem.image} (nor {split}/{pid}/{problem.image}); pass ScienceQA's image folder")


# -- the run --------------------------------------------------------------------------------------


def run_scienceqa(
    model_path: Path, problems_path: Path, split_path: Path, split: str, images: Path | None, out: Path,
    batch_size: int, max_new_tokens: int, limit: int | None, dtype: str,
) -> tuple[dict, str]:
    from datagen.eval.model import AnswerModel, batches

    problems = load_problems(problems_path, split_path, split, limit)
    paths = {pid: problem_image(images, split, pid, problem) for pid, problem in problems.items()}
    if not model_path.is_dir():
        raise InputError(f"--model {model_path}: not a directory; pass a checkpoint folder")
    out.mkdir(parents=True, exist_ok=True)
    predictions_file = out / PREDICTIONS_FILE
    done: dict[str, str | None] = {}
    if predictions_file.exists():
        JsonlAppender(predictions_file).close()  # cut a line torn by a kill
        done = {line["pid"]: line["prediction"] for line in iter_jsonl(predictions_file) if line["pid"] in problems}
    todo = [pid for pid in problems if pid not in done]
    if todo:
        model = AnswerModel(model_path, dtype)
        writer = JsonlAppender(predictions_file)
        try:
            for batch in batches(todo, batch_size, lambda pid: paths[pid] is not None):
                prompts = [build_prompt(problems[pid]) for pid in batch]
                replies = model.answer([(paths[pid], prompt) for pid, prompt in zip(batch, prompts)], max_new_tokens)
                for pid, prompt, reply in zip(batch, prompts, replies):
                    letter = extract_letter(reply, problems[pid].choices)
                    answer = LETTERS[problems[pid].answer]
                    writer.append(Prediction(pid=pid, prompt=prompt, reply=reply, prediction=letter, answer=answer, correct=letter == answer))
                    done[pid] = letter
        finally:
            writer.close()
    results = score(problems, done)
    results["split"] = split
    results["model"] = str(model_path)
    text = table(results)
    write_json_atomic(out / RESULTS_FILE, results)
    (out / TABLE_FILE).write_text(text + "\n", encoding="utf-8")
    return results, text
