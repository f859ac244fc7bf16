"""`datagen eval scienceqa`: multiple-choice accuracy on ScienceQA in its public file layout.

Inputs: `problems.json` (pid -> {question, choices, answer (index), hint, image, subject, grade, ...}),
`pid_splits.json` (split -> [pid, ...]) and the image folder (`<pid>/image.png`, directly or under the
split's name). The prompt holds the context (the problem's hint), the question, the options lettered
A, B, C, ... and an instruction line (`--instruction`). Replies are scored as LLaVA's eval_science_qa.py scores
them (llava_letter): so an answers file LLaVA's own inference wrote (`--answers`) gets LLaVA's number. Accuracy
is reported overall and per category as the ScienceQA paper did: subject (NAT/SOC/LAN), context modality
(TXT/IMG/NO), grade (G1-6/G7-12).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from datagen.errors import InputError
from datagen.eval.answers import read_answers
from datagen.eval.model import EvalProgress
from datagen.files.jsonl import JsonlAppender, atomic_file, iter_numbered_jsonl, write_json_atomic

LETTERS = "ABCDEFGHIJ"
PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
INSTRUCTION = "Reply with the letter of the correct option."
# LLaVA's scorer knows five option letters (ScienceQA has at most five choices).
LLAVA_OPTIONS = ("A", "B", "C", "D", "E")
_LLAVA_STATED = re.compile(r"The answer is ([A-Z]).")
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
    prediction: str | None  # the letter LLaVA's reading finds; None when it finds none (counted wrong)
    answer: str
    correct: bool
    source: str = ""  # the model folder, or `answers:FILE`: a rerun never mixes two sources' replies


def build_prompt(problem: Problem, instruction: str = INSTRUCTION) -> str:
    lines = []
    if problem.hint.strip():
        lines.append(f"Context: {problem.hint.strip()}")
    lines.append(f"Question: {problem.question.strip()}")
    lines.append("Options:")
    lines.extend(f"{letter}. {choice}" for letter, choice in zip(LETTERS, problem.choices))
    if instruction.strip():
        lines.append(instruction.strip())
    return "\n".join(lines)


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def llava_letter(reply: str) -> str | None:
    """The letter LLaVA's eval_science_qa.py (current version) reads from a reply, or None where it reads "FAILED":
    the whole reply when it is an option letter; else its first character when it opens with "X. "; else the one
    match of `The answer is ([A-Z]).` (exactly one, and a character must follow the letter). No stripping, as LLaVA."""
    if reply in LLAVA_OPTIONS:
        return reply
    if len(reply) >= 3 and reply[0] in LLAVA_OPTIONS and reply[1:3] == ". ":
        return reply[0]
    stated = _LLAVA_STATED.findall(reply)
    return stated[0] if len(stated) == 1 else None


def is_correct(letter: str | None, problem: Problem) -> bool:
    # LLaVA's get_pred_idx: a letter beyond the problem's choices (or beyond E) is no answer at all.
    options = LLAVA_OPTIONS[: len(problem.choices)]
    return letter in options and options.index(letter) == problem.answer


def extract_letter(reply: str, choices: list[str]) -> str | None:
    """A lenient reading, reported beside LLaVA's to tell a format problem from a wrong answer: the option a reply names: "The answer is B.", "B", "(B)", "B. cat", or the text of exactly one option."""
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


def score(problems: dict[str, Problem], replies: dict[str, str | None]) -> dict:
    """Accuracy overall and per category over the problems in `replies` (pid -> reply; None: no reply), each reply
    read as LLaVA reads it. A reply LLaVA reads no letter from, and a missing one, count as wrong (LLaVA's current
    scorer; an older one guessed at random). `lenient` is the accuracy were those replies read by extract_letter."""
    tally: dict[str, list[int]] = {name: [0, 0] for name in CATEGORY_ORDER}
    correct = unextracted = missing = rescued = 0
    for pid, reply in replies.items():
        problem = problems[pid]
        letter = llava_letter(reply) if reply is not None else None
        hit = is_correct(letter, problem)
        correct += hit
        missing += reply is None
        if reply is not None and letter is None:
            unextracted += 1
            rescued += is_correct(extract_letter(reply, problem.choices), problem)
        for label in categories(problem):
            tally[label][0] += hit
            tally[label][1] += 1
    total = len(replies)

    def entry(right: int, count: int) -> dict:
        return {"correct": right, "total": count, "accuracy": 100 * right / count if count else None}

    return {
        "overall": entry(correct, total),
        "categories": {name: entry(*tally[name]) for name in CATEGORY_ORDER},
        "unextracted": unextracted,
        "missing": missing,
        "lenient": entry(correct + rescued, total),
    }


def table(results: dict) -> str:
    names = ["all", *CATEGORY_ORDER]
    rows = [results["overall"], *(results["categories"][name] for name in CATEGORY_ORDER)]
    cells = ["-" if row["accuracy"] is None else f"{row['accuracy']:.2f}" for row in rows]
    counts = [f"{row['correct']}/{row['total']}" for row in rows]
    lenient = results["lenient"]
    note = (
        f"read as LLaVA's eval_science_qa.py reads replies; wrong for want of a letter: {results['unextracted']} replies"
        f" and {results['missing']} problems without one"
    )
    if lenient["accuracy"] is not None:
        note += f"; a lenient reading of those replies would give {lenient['accuracy']:.2f}% ({lenient['correct']}/{lenient['total']})"
    return "\n".join([
        "| " + " | ".join(["", *names]) + " |",
        "|" + "---|" * (len(names) + 1),
        "| accuracy % | " + " | ".join(cells) + " |",
        "| correct/total | " + " | ".join(counts) + " |",
        "",
        note,
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
    if not isinstance(splits, dict):
        raise InputError(f"--split-file {split_path}: expected an object of split name -> list of problem ids (ScienceQA's pid_splits.json)")
    if split not in splits:
        raise InputError(f"--split {split}: not in {split_path} (it has: {', '.join(splits) or 'no splits'})")
    if not isinstance(splits[split], list):
        kind = type(splits[split]).__name__
        raise InputError(
            f"--split-file {split_path}: split {split!r} is a {kind}, not a list of problem ids; pass ScienceQA's pid_splits.json"
        )
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
    if not problems:
        raise InputError(f"--split {split}: {split_path} lists no problems for it; pass a split that has some (ScienceQA scores `test`)")
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


def _prediction(pid: str, problem: Problem, prompt: str, reply: str, source: str) -> Prediction:
    letter = llava_letter(reply)
    return Prediction(pid=pid, prompt=prompt, reply=reply, prediction=letter, answer=LETTERS[problem.answer],
                      correct=is_correct(letter, problem), source=source)


def read_predictions(path: Path) -> Iterator[Prediction]:
    """The predictions an earlier run left in `path` (a line torn by a kill cut first); a line that is not one
    (hand-edited, another tool's file) is an InputError naming it."""
    JsonlAppender(path).close()
    fix = "delete that line (its problem is asked again) or pick another --out"
    for number, line in iter_numbered_jsonl(path, fix=fix):
        try:
            yield Prediction.model_validate(line)
        except ValueError:
            raise InputError(f"{path} line {number}: not a prediction of `datagen eval scienceqa`; {fix}") from None


def _finish(out: Path, problems: dict[str, Problem], replies: dict[str, str | None], extra: dict) -> tuple[dict, str]:
    results = score(problems, replies)
    results.update(extra)
    text = table(results)
    write_json_atomic(out / RESULTS_FILE, results)
    (out / TABLE_FILE).write_text(text + "\n", encoding="utf-8")
    return results, text


def run_scienceqa(
    model_path: Path, problems_path: Path, split_path: Path, split: str, images: Path | None, out: Path,
    batch_size: int, max_new_tokens: int, limit: int | None, dtype: str, instruction: str = INSTRUCTION, shown: EvalProgress = EvalProgress(),
) -> tuple[dict, str]:
    from datagen.eval.model import AnswerModel, answer_all

    problems = load_problems(problems_path, split_path, split, limit)
    paths = {pid: problem_image(images, split, pid, problem) for pid, problem in problems.items()}
    if not model_path.is_dir():
        raise InputError(f"--model {model_path}: not a directory; pass a checkpoint folder")
    prompts = {pid: build_prompt(problem, instruction) for pid, problem in problems.items()}
    source = str(model_path)
    out.mkdir(parents=True, exist_ok=True)
    predictions_file = out / PREDICTIONS_FILE
    replies: dict[str, str | None] = {}
    if predictions_file.exists():
        for line in read_predictions(predictions_file):
            if line.pid not in problems:
                continue
            if (line.source or source) != source or line.prompt != prompts[line.pid]:
                raise InputError(
                    f"--out {out}: holds replies of {line.source!r} or to other prompts (another --instruction?); "
                    "pick another --out to score this model with these prompts"
                )
            replies[line.pid] = line.reply  # scored afresh: the reading is the scorer's, not the file's
    todo = [pid for pid in problems if pid not in replies]
    if todo:
        model = AnswerModel(model_path, dtype)
        writer = JsonlAppender(predictions_file)
        try:
            for pid, reply in answer_all(model, todo, batch_size, lambda pid: paths[pid] is not None, lambda pid: (paths[pid], prompts[pid]), max_new_tokens, shown):
                writer.append(_prediction(pid, problems[pid], prompts[pid], reply, source))
                replies[pid] = reply
        finally:
            writer.close()
    return _finish(out, problems, replies, {"split": split, "model": source, "instruction": instruction})


def score_answers(
    answers_path: Path, problems_path: Path, split_path: Path, split: str, out: Path, limit: int | None,
) -> tuple[dict, str]:
    """An answers file LLaVA's inference wrote (question_id = pid, prompt, text), scored as LLaVA's
    eval_science_qa.py scores it: every problem of the split counts, an unanswered one as wrong."""
    problems = load_problems(problems_path, split_path, split, limit)
    answers = read_answers(answers_path)
    if not any(pid in problems for pid in answers):
        # A 0% that only says the file answers another split (or another --limit's problems) is no score.
        raise InputError(
            f"--answers {answers_path}: none of its {len(answers)} answers is to a problem of split {split}"
            f"{f' (first {limit})' if limit else ''}; pass the answers to that split, or --split the one they answer"
        )
    replies = {pid: answers[pid]["text"] if pid in answers else None for pid in problems}
    source = f"answers:{answers_path}"
    predictions = [
        _prediction(pid, problems[pid], str(answers[pid].get("prompt", "")), reply, source).model_dump_json()
        for pid, reply in replies.items() if reply is not None
    ]
    out.mkdir(parents=True, exist_ok=True)
    if (out / PREDICTIONS_FILE).exists():
        others = {line.source for line in read_predictions(out / PREDICTIONS_FILE)} - {source}
        if others:
            raise InputError(f"--out {out}: holds the predictions of {sorted(map(str, others))[0]!r}; pick another --out")
    with atomic_file(out / PREDICTIONS_FILE, "w") as handle:
        handle.write("".join(line + "\n" for line in predictions))
    extra = {"split": split, "answers": str(answers_path), "not_in_split": sum(pid not in problems for pid in answers)}
    return _finish(out, problems, replies, extra)
