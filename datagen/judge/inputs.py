"""What `datagen judge` compares: pairs of answers to the same request about the same image.

Two sources, one item shape:
- two `generate` output folders (teacher A = reference, teacher B = candidate), matched by image and task;
- LLaVA's eval files: questions, a reference and a candidate answer file, and a context file.

Items that cannot be paired are returned as counted skips (never silently dropped).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from datagen.source.coco import Box, CocoSource, ImageAnnotations
from datagen.source.context import ContextKind, render_context
from datagen.errors import InputError
from datagen.files.jsonl import iter_jsonl
from datagen.formats.records import IMAGE_TOKEN, task_file
from datagen.formats.manifest import MANIFEST_FILE


class JudgeItem(BaseModel):
    item_id: str  # the record id (folders) or question_id (files)
    task: str  # the generate task, or the question's category
    context: str
    question: str
    reference: str
    candidate: str


class LoadedItems(BaseModel):
    items: list[JudgeItem]
    skipped: dict[str, int]  # reason -> items that could not be paired
    input_hashes: dict[str, str]  # what the items were read from, for the resume check


# The teachers write the questions too, so two teachers' records for one image answer different questions.
# A record is therefore judged whole, as training data, against the request the teacher was given.
TASK_REQUESTS = {
    "conversation": (
        "Write a conversation about this image: a person asks several questions and an assistant who can see the image "
        "answers them. Rate each conversation as a whole, as training data: are the answers right for this image, are the "
        "questions worth asking, and does it read naturally?"
    ),
    "detail": "Describe this image in detail. Rate each description: is it right for this image, complete and well organised?",
    "complex_reasoning": (
        "Ask one question about this image that needs reasoning beyond listing what is visible, and answer it. Rate each "
        "question-and-answer pair: is the reasoning sound, and grounded in what the image shows?"
    ),
}


def transcript(conversations: list[dict]) -> str:
    """A record's turns as the judge reads them; the `<image>` marker is ours, not the teacher's, so it goes."""
    lines = []
    for turn in conversations:
        value = turn["value"].replace(IMAGE_TOKEN, "").strip()
        lines.append(("User: " if turn["from"] == "human" else "Assistant: ") + value)
    return "\n".join(lines)


def _record_text(task: str, record: dict) -> str:
    if task == "detail":
        # The description is the teacher's work; the instruction before it was drawn from our list.
        return record["conversations"][1]["value"].strip()
    return transcript(record["conversations"])


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_records(folder: Path, task: str, flag: str) -> dict[int, dict]:
    path = folder / task_file(task)
    if not path.is_file():
        return {}
    records = {}
    for record in iter_jsonl(path):
        try:
            records[int(record["meta"]["image_id"])] = record
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{flag} {path}: a line without meta.image_id; pass a `datagen generate` output folder") from None
    return records


def _captions_hash(folder: Path) -> str | None:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return manifest["settings"]["fingerprint_parts"]["captions_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def items_from_folders(
    folder_a: Path, folder_b: Path, captions: Path, instances: Path | None, tasks: list[str], limit: int | None = None
) -> LoadedItems:
    for flag, folder in (("A_DIR", folder_a), ("B_DIR", folder_b)):
        if not (folder / MANIFEST_FILE).is_file():
            raise InputError(f"{flag} {folder}: no {MANIFEST_FILE}; pass the --out folder of a `datagen generate` run")
    source = CocoSource(captions, instances)
    for flag, folder in (("A_DIR", folder_a), ("B_DIR", folder_b)):
        made_from = _captions_hash(folder)
        if made_from is not None and made_from != source.captions_sha256:
            raise InputError(
                f"{flag} {folder}: was generated from another captions file than --captions {captions}; pass the one both runs used"
            )
    kind: ContextKind = "captions+boxes" if instances is not None else "captions"
    items: list[JudgeItem] = []
    skipped: Counter[str] = Counter()
    hashes = {"captions": source.captions_sha256, "instances": source.instances_sha256 or ""}
    for task in tasks:
        side_a = _folder_records(folder_a, task, "A_DIR")
        side_b = _folder_records(folder_b, task, "B_DIR")
        for side, folder in (("a", folder_a), ("b", folder_b)):
            path = folder / task_file(task)
            hashes[f"{side}:{task}"] = _sha256(path) if path.is_file() else ""
        image_ids = sorted(set(side_a) | set(side_b))
        if limit is not None:
            image_ids = image_ids[:limit]
        for image_id in image_ids:
            if image_id not in side_b:
                skipped["only_in_a"] += 1
                continue
            if image_id not in side_a:
                skipped["only_in_b"] += 1
                continue
            image = source.image(image_id)
            if image is None:
                skipped["no_context"] += 1
                continue
            items.append(
                JudgeItem(
                    item_id=side_a[image_id]["id"],
                    task=task,
                    context=render_context(image, kind),
                    question=TASK_REQUESTS[task],
                    reference=_record_text(task, side_a[image_id]),
                    candidate=_record_text(task, side_b[image_id]),
                )
            )
    return LoadedItems(items=items, skipped=dict(skipped), input_hashes=hashes)


# -- LLaVA eval files ---------------------------------------------------------------------------------


def _read_lines(path: Path, flag: str, required: dict[str, type | tuple[type, ...]]) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{flag} {path}: file not found")
    lines = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    raise InputError(f"{flag} {path} line {number}: not valid JSON; fix or remove that line") from None
                missing = [key for key, kind in required.items() if not isinstance(value, dict) or not isinstance(value.get(key), kind)]
                if missing:
                    raise InputError(f"{flag} {path} line {number}: needs {', '.join(missing)} ({_describe(required)})")
                lines.append(value)
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path}: not UTF-8 text; pass a JSONL file") from None
    return lines


def _describe(required: dict) -> str:
    return "a JSON object per line with " + ", ".join(required)


def _by_question(lines: list[dict], path: Path, flag: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for line in lines:
        key = str(line["question_id"])
        if key in found:
            raise InputError(f"{flag} {path}: question_id {key} appears twice; keep one answer per question")
        found[key] = line
    return found


def context_of(line: dict, path: Path) -> str:
    """A context line (`{"image", "caption", "boxes"?}`) rendered as generate renders one (datagen/source/context.py)."""
    captions = line["caption"] if isinstance(line["caption"], list) else str(line["caption"]).splitlines()
    boxes = []
    for index, box in enumerate(line.get("boxes") or []):
        try:
            x1, y1, x2, y2 = (round(float(value), 3) for value in box["bbox"])
            boxes.append(Box(annotation_id=index, category=str(box["category"]), x1=x1, y1=y1, x2=x2, y2=y2))
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"--context {path}: image {line['image']}: each box needs category and bbox [x1, y1, x2, y2] (0..1)"
            ) from None
    image = ImageAnnotations(
        image_id=0, file_name=line["image"], width=1, height=1,
        captions=[caption.strip() for caption in captions if str(caption).strip()], caption_ids=[], boxes=boxes,
    )
    return render_context(image, "captions+boxes")


def items_from_files(
    reference: Path, candidate: Path, questions: Path, context: Path, limit: int | None = None
) -> LoadedItems:
    question_id = (str, int)
    asked = _read_lines(questions, "--questions", {"question_id": question_id, "image": str, "text": str, "category": str})
    ref = _by_question(_read_lines(reference, "--reference", {"question_id": question_id, "text": str}), reference, "--reference")
    cand = _by_question(_read_lines(candidate, "--candidate", {"question_id": question_id, "text": str}), candidate, "--candidate")
    contexts = {line["image"]: context_of(line, context) for line in _read_lines(context, "--context", {"image": str, "caption": (str, list)})}
    if limit is not None:
        asked = asked[:limit]
    items: list[JudgeItem] = []
    skipped: Counter[str] = Counter()
    for question in asked:
        key = str(question["question_id"])
        if key not in ref:
            skipped["no_reference"] += 1
        elif key not in cand:
            skipped["no_candidate"] += 1
        elif question["image"] not in contexts:
            skipped["no_context"] += 1
        else:
            items.append(
                JudgeItem(
                    item_id=key, task=question["category"], context=contexts[question["image"]],
                    question=question["text"].replace(IMAGE_TOKEN, "").strip(),
                    reference=ref[key]["text"], candidate=cand[key]["text"],
                )
            )
    hashes = {name: _sha256(path) for name, path in
              (("questions", questions), ("reference", reference), ("candidate", candidate), ("context", context))}
    return LoadedItems(items=items, skipped=dict(skipped), input_hashes=hashes)

