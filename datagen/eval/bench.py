"""`datagen eval bench`: answer LLaVA-Bench-style questions with a trained model, in LLaVA's answer format.

Questions: JSONL of `{"question_id", "image", "text", "category"}` (`image` relative to --images; a line
without `image` is a text-only question). Answers: `OUT/answers.jsonl`, one `{"question_id", "prompt",
"text", "answer_id", "model_id", "metadata"}` line per question, appended as each batch finishes, so a
rerun continues where a killed one stopped. `datagen judge --reference REF --candidate OUT/answers.jsonl`
then scores them. `take_answers` brings in an answers file another tool wrote (LLaVA's model_vqa), checked
against the questions, in its place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from datagen.curate.overlap import Overlap, TrainingData
from datagen.errors import InputError
from datagen.eval.answers import read_answers
from datagen.eval.model import EvalProgress
from datagen.files.jsonl import JsonlAppender, atomic_file, iter_numbered_jsonl, json_line

ANSWERS_FILE = "answers.jsonl"


class BenchQuestion(BaseModel):
    question_id: int | str
    image: str | None = None
    text: str
    category: str = ""


class BenchAnswer(BaseModel):
    """LLaVA's answer-file line (model_vqa's output)."""

    question_id: int | str
    prompt: str
    text: str
    answer_id: str
    model_id: str
    metadata: dict = {}


def answer_id(model_id: str, question_id: int | str, text: str) -> str:
    # Deterministic, unlike LLaVA's random ids: the same model and answer give the same id on every run.
    return hashlib.sha256(f"{model_id}\x00{question_id}\x00{text}".encode()).hexdigest()[:22]


def load_questions(path: Path) -> list[BenchQuestion]:
    if not path.is_file():
        raise InputError(f"--questions {path}: file not found; pass a JSONL file of question_id, image, text, category")
    questions: list[BenchQuestion] = []
    seen: set[str] = set()
    needs = "needs a JSON object with question_id, text (and image, category)"
    for number, line in iter_numbered_jsonl(path, f"--questions {path}", needs):
        try:
            question = BenchQuestion.model_validate(line)
        except ValueError:
            raise InputError(
                f"--questions {path} line {number}: {needs}"
            ) from None
        if str(question.question_id) in seen:
            raise InputError(f"--questions {path} line {number}: question_id {question.question_id} appears twice")
        seen.add(str(question.question_id))
        questions.append(question)
    if not questions:
        raise InputError(f"--questions {path}: no questions in the file")
    return questions


def image_path(images: Path | None, name: str | None, flag: str = "--images") -> Path | None:
    if not name:
        return None
    if images is None:
        raise InputError(f"{flag} is required: the questions name images ({name}, ...)")
    path = (images / name).resolve()
    if not path.is_relative_to(images.resolve()) or not path.is_file():
        raise InputError(f"{flag} {images}: no image {name}; pass the folder the questions' image names are relative to")
    return path


def answered(path: Path, model_id: str) -> set[str]:
    if not path.exists():
        return set()
    JsonlAppender(path).close()  # cut a line torn by a kill
    done = set()
    for number, line in iter_numbered_jsonl(path, fix="delete that line (its question is asked again)"):
        if not isinstance(line, dict) or "question_id" not in line:
            raise InputError(f"{path} line {number}: not an answer line (question_id, text); delete it (its question is asked again)")
        if line.get("model_id") != model_id:
            raise InputError(
                f"--out {path.parent}: holds answers of model {line.get('model_id')!r}, not {model_id!r}; pick another --out"
            )
        done.add(str(line["question_id"]))
    return done


def run_bench(
    model_path: Path, questions_path: Path, images: Path | None, out: Path, batch_size: int,
    max_new_tokens: int, model_id: str | None, dtype: str, train_data: TrainingData | None = None, shown: EvalProgress = EvalProgress(),
) -> tuple[Path, int, int]:
    """Returns (answers file, answered now, answered before)."""
    questions, _ = clean_questions(load_questions(questions_path), train_data)
    paths = {str(q.question_id): image_path(images, q.image) for q in questions}
    return answer_questions(model_path, questions, paths, out, batch_size, max_new_tokens, model_id, dtype, shown)


def answer_questions(
    model_path: Path, questions: list[BenchQuestion], paths: dict[str, Path | None], out: Path, batch_size: int,
    max_new_tokens: int, model_id: str | None, dtype: str, shown: EvalProgress = EvalProgress(),
) -> tuple[Path, int, int]:
    """Greedy answers to `questions` (images by question id in `paths`), appended to OUT/answers.jsonl batch by batch,
    the progress `shown`; questions already answered there are skipped. Returns (answers file, answered now,
    answered before)."""
    from datagen.eval.model import AnswerModel, answer_all

    if not model_path.is_dir():
        raise InputError(f"--model {model_path}: not a directory; pass a checkpoint folder")
    model_id = model_id or model_path.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    answers_file = out / ANSWERS_FILE
    done = answered(answers_file, model_id)
    todo = [q for q in questions if str(q.question_id) not in done]
    if not todo:
        return answers_file, 0, len(done)
    model = AnswerModel(model_path, dtype)
    writer = JsonlAppender(answers_file)
    try:
        asked = answer_all(model, todo, batch_size, lambda q: paths[str(q.question_id)] is not None, lambda q: (paths[str(q.question_id)], q.text),
                           max_new_tokens, shown)
        for question, text in asked:
            writer.append(
                BenchAnswer(
                    question_id=question.question_id, prompt=question.text, text=text,
                    answer_id=answer_id(model_id, question.question_id, text), model_id=model_id,
                    metadata={"category": question.category, "decoding": "greedy", "max_new_tokens": max_new_tokens},
                )
            )
    finally:
        writer.close()
    return answers_file, len(todo), len(done)


def clean_questions(questions: list[BenchQuestion], train_data: TrainingData | None) -> tuple[list[BenchQuestion], Overlap | None]:
    """The questions to answer and score: without those about images the model was trained on, unless allowed."""
    if train_data is None:
        return questions, None
    return train_data.split(questions, lambda question: question.image)


def take_answers(answers_path: Path, questions_path: Path, out: Path, train_data: TrainingData | None = None) -> tuple[Path, int, list[str]]:
    """Check an external answers file against the questions (every answer to a known question, at most one
    each) and write its lines, unchanged, in question order to OUT/answers.jsonl. Returns (that file, answers
    taken, ids of the questions left unanswered). With `train_data`, answers about training images are left out."""
    every_question = load_questions(questions_path)
    questions, _ = clean_questions(every_question, train_data)
    answers = read_answers(answers_path)
    known = {str(question.question_id) for question in every_question}
    asked = [str(question.question_id) for question in questions]
    unknown = [key for key in answers if key not in known]
    if unknown:
        raise InputError(
            f"--answers {answers_path}: question_id {unknown[0]} is not in --questions {questions_path} "
            f"({len(unknown)} such); pass the answers to these questions"
        )
    answers = {key: answers[key] for key in asked if key in answers}
    text = "".join(json_line(answers[key]) for key in asked if key in answers)
    path = out / ANSWERS_FILE
    write_settled(path, text, f"--out {out}: already holds other answers ({ANSWERS_FILE}); pick another --out")
    return path, len(answers), [key for key in asked if key not in answers]


def write_settled(path: Path, text: str, conflict: str) -> None:
    """Write `text` to `path`, whose folder is made; a file already there with other text is an InputError(conflict),
    so an --out keeps the questions (or answers) its answers were made for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") != text:
        raise InputError(conflict)
    with atomic_file(path, "w") as handle:
        handle.write(text)


def replies_for(
    questions: list[BenchQuestion], answers: Path | None, external: Callable[[Path], dict[str, str]], model_path: Path | None,
    images: Path | None, out: Path, batch_size: int, max_new_tokens: int, model_id: str | None, dtype: str, shown: EvalProgress = EvalProgress(),
) -> tuple[dict[str, str], str]:
    """The replies to `questions` (question id as a string -> reply) and where they come from: the answers file read
    by `external`, or the model's, answered into OUT/answers.jsonl as `eval bench` does (batched, resumed)."""
    if answers is not None:
        return external(answers), f"answers:{answers}"
    assert model_path is not None
    paths = {str(q.question_id): image_path(images, q.image) for q in questions}
    answers_file, _, _ = answer_questions(model_path, questions, paths, out, batch_size, max_new_tokens, model_id, dtype, shown)
    return {key: line["text"] for key, line in read_answers(answers_file, "--out").items()}, str(model_path)
