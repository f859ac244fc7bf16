"""What `datagen judge` compares: pairs of answers to the same request about the same image.

Two sources, one item shape:
- two `generate` output folders (teacher A = reference, teacher B = candidate), matched by image and task;
- LLaVA's eval files: questions, a reference and a candidate answer file, and a context file.

Items that cannot be paired are returned as counted skips (never silently dropped).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from datagen.source.coco import CocoSource
from datagen.source.context import ContextKind, box_line, render_context
from datagen.errors import InputError
from datagen.files.jsonl import iter_numbered_jsonl
from datagen.formats.record_lines import checked_records
from datagen.formats.records import IMAGE_TOKEN, task_file
from datagen.formats.manifest import read_run_manifest
from datagen.tasks.registry import ItemKey, task_spec


class JudgeItem(BaseModel):
    item_id: str  # the record id (folders) or question_id (files)
    task: str  # the generate task, or the question's category
    context: str
    question: str
    context_shape: str = "ours"  # where a file context came from (inputs.ContextShape); folders render ours
    reference: str
    candidate: str


class LoadedItems(BaseModel):
    items: list[JudgeItem]
    skipped: dict[str, int]  # reason -> items that could not be paired
    input_hashes: dict[str, str]  # what the items were read from, for the resume check


def refuse_mostly_unpaired(loaded: LoadedItems) -> None:
    """Judging only the few items that could be paired would end as a success that says little: when most were
    skipped (another split's context file, answers to other questions), the inputs are wrong, and nothing is paid yet."""
    skipped = sum(loaded.skipped.values())
    if skipped > len(loaded.items):
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(loaded.skipped.items()))
        raise InputError(
            f"only {len(loaded.items)} of {len(loaded.items) + skipped} items can be judged ({reasons}); "
            "pass inputs that name the same questions and images (a context file of the same set, answers to the same questions)"
        )


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_records(folder: Path, task: str) -> dict[tuple[int, int], dict]:
    """A task file's records by (image id, item index): the samples of one image (--samples-per-image) pair by index."""
    return {(line.image_id, ItemKey.of_record(line.image_id, task, line.data["id"]).nth): line.data for line in checked_records(folder / task_file(task))}


def _captions_hash(manifest: dict) -> str | None:
    try:
        return manifest["settings"]["fingerprint_parts"]["captions_sha256"]
    except (KeyError, TypeError):
        return None


def items_from_folders(
    folder_a: Path, folder_b: Path, captions: Path, instances: Path | None, tasks: list[str], limit: int | None = None
) -> LoadedItems:
    manifests = {folder: read_run_manifest(folder, "judge") for folder in (folder_a, folder_b)}
    source = CocoSource(captions, instances)
    for flag, folder in (("A_DIR", folder_a), ("B_DIR", folder_b)):
        made_from = _captions_hash(manifests[folder])
        if made_from is not None and made_from != source.captions_sha256:
            raise InputError(
                f"{flag} {folder}: was generated from another captions file than --captions {captions}; pass the one both runs used"
            )
    kind: ContextKind = "captions+boxes" if instances is not None else "captions"
    items: list[JudgeItem] = []
    skipped: Counter[str] = Counter()
    hashes = {"captions": source.captions_sha256, "instances": source.instances_sha256 or ""}
    for task in tasks:
        spec = task_spec(task)
        side_a = _folder_records(folder_a, task)
        side_b = _folder_records(folder_b, task)
        for side, folder in (("a", folder_a), ("b", folder_b)):
            path = folder / task_file(task)
            hashes[f"{side}:{task}"] = _sha256(path) if path.is_file() else ""
        keys = sorted(set(side_a) | set(side_b))
        if limit is not None:
            keys = keys[:limit]
        for key in keys:
            if key not in side_b:
                skipped["only_in_a"] += 1
                continue
            if key not in side_a:
                skipped["only_in_b"] += 1
                continue
            image = source.image(key[0])
            if image is None:
                skipped["no_context"] += 1
                continue
            items.append(
                JudgeItem(
                    item_id=side_a[key]["id"],
                    task=task,
                    context=render_context(image, kind),
                    question=spec.judge_question(),
                    reference=spec.judged_text(side_a[key]),
                    candidate=spec.judged_text(side_b[key]),
                )
            )
    return LoadedItems(items=items, skipped=dict(skipped), input_hashes=hashes)


# -- LLaVA eval files ---------------------------------------------------------------------------------

# A context line's shape, told from its keys: LLaVA-Bench (COCO)'s caps_boxes file, LLaVA-Bench in-the-wild's
# context.jsonl, or ours. The shape also picks the rule key LLaVA's own scripts look up (run.rule_keys).
ContextShape = Literal["llava_coco", "llava_wild", "ours"]
CONTEXT_SHAPES = (
    'LLaVA-Bench COCO {"image", "captions": [...], "instances": [{"category", "bbox"}]}, '
    'LLaVA-Bench in-the-wild {"image", "caption": "..."}, or ours {"image", "caption", "boxes"?}'
)


class Context(BaseModel):
    shape: ContextShape
    text: str  # captions one a line; then, when there are boxes, a blank line and `category: [x1, y1, x2, y2]` lines


def _read_numbered(path: Path, flag: str, required: dict[str, type | tuple[type, ...]], what: str) -> list[tuple[int, dict]]:
    """(line number, object) per non-blank line, each holding the required keys with the required types."""
    if not path.is_file():
        raise InputError(f"{flag} {path}: file not found")
    lines = []
    for number, value in iter_numbered_jsonl(path, f"{flag} {path}", "fix or remove that line"):
        if not isinstance(value, dict):
            raise InputError(f"{flag} {path} line {number}: not a JSON object; pass a JSONL file of {what}")
        missing = [key for key, kind in required.items() if not isinstance(value.get(key), kind)]
        if missing:
            raise InputError(f"{flag} {path} line {number}: needs {', '.join(missing)} ({_describe(required)})")
        lines.append((number, value))
    if not lines:
        # Nothing to judge is never a success: a paid run must not end quietly empty.
        raise InputError(f"{flag} {path}: the file holds no lines; pass a JSONL file of {what}")
    return lines


def _read_lines(path: Path, flag: str, required: dict[str, type | tuple[type, ...]], what: str) -> list[dict]:
    return [value for _, value in _read_numbered(path, flag, required, what)]


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


def _box_lines(boxes: object, where: str) -> list[str]:
    if not isinstance(boxes, list):
        raise InputError(f"{where}: needs a list of {{category, bbox}} objects")
    lines = []
    for box in boxes:
        corners = box.get("bbox") if isinstance(box, dict) else None
        category = box.get("category") if isinstance(box, dict) else None
        if (not isinstance(category, str) or not isinstance(corners, list) or len(corners) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in corners)):
            raise InputError(f"{where}: each box needs category (a string) and bbox [x1, y1, x2, y2] (four numbers, 0..1)")
        # The corners as the file has them, printed as Python prints the list: what LLaVA's review scripts show the judge.
        lines.append(box_line(category, tuple(corners)))  # type: ignore[arg-type]
    return lines


def context_of(line: dict, path: Path, number: int) -> tuple[str, Context]:
    """(image, context) of one context line, whichever of the three shapes it has."""
    where = f"--context {path} line {number}"
    if not isinstance(line.get("image"), str):
        raise InputError(f"{where}: needs image (a string); expected one of: {CONTEXT_SHAPES}")
    if "captions" in line:
        captions, boxes_key, shape = line["captions"], "instances", "llava_coco"
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise InputError(f"{where}: captions must be a list of strings (LLaVA-Bench COCO's caps_boxes file)")
        if "instances" not in line:
            raise InputError(f"{where}: needs instances (a list of {{category, bbox}}) beside captions, as LLaVA-Bench COCO's file has")
    elif "caption" in line:
        captions, boxes_key = line["caption"], "boxes"
        if isinstance(captions, str):
            captions = captions.splitlines()
        elif not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise InputError(f"{where}: caption must be a string or a list of strings")
        shape = "llava_wild" if isinstance(line["caption"], str) and "boxes" not in line else "ours"
    else:
        raise InputError(f"{where}: needs caption or captions; expected one of: {CONTEXT_SHAPES}")
    boxes = _box_lines(line.get(boxes_key) or [], f"{where}: {boxes_key}")
    text = "\n".join(caption.strip() for caption in captions if caption.strip())
    if boxes:
        text += "\n\n" + "\n".join(boxes)
    return line["image"], Context(shape=shape, text=text)  # type: ignore[arg-type]


def read_contexts(path: Path) -> dict[str, Context]:
    lines = _read_numbered(path, "--context", {}, "contexts (one line per image)")
    return dict(context_of(line, path, number) for number, line in lines)


def items_from_files(
    reference: Path, candidate: Path, questions: Path, context: Path, limit: int | None = None
) -> LoadedItems:
    question_id = (str, int)
    asked = _read_lines(questions, "--questions", {"question_id": question_id, "image": str, "text": str, "category": str},
                        "questions (question_id, image, text, category)")
    answers = "answers (question_id, text)"
    ref = _by_question(_read_lines(reference, "--reference", {"question_id": question_id, "text": str}, answers), reference, "--reference")
    cand = _by_question(_read_lines(candidate, "--candidate", {"question_id": question_id, "text": str}, answers), candidate, "--candidate")
    contexts = read_contexts(context)
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
            found = contexts[question["image"]]
            items.append(
                JudgeItem(
                    item_id=key, task=question["category"], context=found.text, context_shape=found.shape,
                    question=question["text"].replace(IMAGE_TOKEN, "").strip(),
                    reference=ref[key]["text"], candidate=cand[key]["text"],
                )
            )
    hashes = {name: _sha256(path) for name, path in
              (("questions", questions), ("reference", reference), ("candidate", candidate), ("context", context))}
    return LoadedItems(items=items, skipped=dict(skipped), input_hashes=hashes)
