"""Answers files as LLaVA's inference scripts write them (model_vqa*, model_vqa_science, model_vqa_loader):
one JSON object a line with at least `question_id` and `text` (the reply), usually also `prompt`,
`answer_id`, `model_id`, `metadata`. `--answers FILE` of every `eval` command reads them here."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.errors import InputError


def read_answers(path: Path, flag: str = "--answers") -> dict[str, dict]:
    """question_id (as a string) -> its line, in file order."""
    if not path.is_file():
        raise InputError(f"{flag} {path}: file not found; pass an answers JSONL file (question_id, text per line)")
    answers: dict[str, dict] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path}: not UTF-8 text; pass an answers JSONL file") from None
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{flag} {path} line {number}"
        try:
            line = json.loads(raw)
        except ValueError:
            raise InputError(f"{where}: not valid JSON; fix or remove that line") from None
        if not isinstance(line, dict):
            raise InputError(f"{where}: not a JSON object; each line needs question_id and text")
        question_id = line.get("question_id")
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            raise InputError(f"{where}: needs question_id (a string or an integer)")
        if not isinstance(line.get("text"), str):
            raise InputError(f"{where}: needs text (the reply, a string)")
        if str(question_id) in answers:
            raise InputError(f"{where}: question_id {question_id} appears twice; keep one answer per question")
        answers[str(question_id)] = line
    if not answers:
        raise InputError(f"{flag} {path}: the file holds no answers")
    return answers
