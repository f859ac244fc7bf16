"""Answers files as LLaVA's inference scripts write them (model_vqa*, model_vqa_science, model_vqa_loader):
one JSON object a line with at least `question_id` and `text` (the reply), usually also `prompt`,
`answer_id`, `model_id`, `metadata`. `--answers FILE` of every `eval` command reads them here."""

from __future__ import annotations

from pathlib import Path

from datagen.errors import InputError
from datagen.files.jsonl import iter_input_objects


def read_answers(path: Path, flag: str = "--answers") -> dict[str, dict]:
    """question_id (as a string) -> its line, in file order."""
    return {key: line for key, (_, line) in answer_lines(path, flag).items()}


def answer_lines(path: Path, flag: str = "--answers") -> dict[str, tuple[str, dict]]:
    """question_id (as a string) -> (where the line is, the line), in file order."""
    answers: dict[str, tuple[str, dict]] = {}
    for where, line in iter_input_objects(path, flag, "an answers JSONL file (question_id, text per line)", "question_id and text"):
        question_id = line.get("question_id")
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            raise InputError(f"{where}: needs question_id (a string or an integer)")
        if not isinstance(line.get("text"), str):
            raise InputError(f"{where}: needs text (the reply, a string)")
        if str(question_id) in answers:
            raise InputError(f"{where}: question_id {question_id} appears twice; keep one answer per question")
        answers[str(question_id)] = where, line
    if not answers:
        raise InputError(f"{flag} {path}: the file holds no answers")
    return answers


def replies_to(path: Path, asked: dict[str, str], what: str) -> dict[str, str]:
    """An answers file's replies (question id -> text), checked to answer these very questions: `asked` maps each
    question id to the question its `prompt`, when the line has one, must hold (a set built with another seed does
    not); `what` names the questions in the message ("POPE questions")."""
    answers = answer_lines(path)
    for key, (where, line) in answers.items():
        question = asked.get(key)
        if question is None:
            raise InputError(f"--answers {path}: question_id {key} is not one of the {len(asked)} {what}; answer OUT/questions.jsonl")
        prompt = line.get("prompt")
        if isinstance(prompt, str) and not prompt.strip():
            raise InputError(
                f"{where}: prompt is empty, so which question it answers is unknown; write the question asked there ({question!r}) or drop the prompt field"
            )
        if isinstance(prompt, str) and question not in prompt:
            raise InputError(
                f"{where}: question_id {key} answers {prompt.strip().splitlines()[0][:80]!r}, but here it asks {question!r}; "
                "were the questions built with another --seed or other files?"
            )
    return {key: line["text"] for key, (_, line) in answers.items()}
