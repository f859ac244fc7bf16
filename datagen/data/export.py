"""Exports: merged LLaVA-Instruct files (or chat `messages`) from a generate folder, and stage-1 alignment records from captions."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError

from datagen.source.coco import CocoSource
from datagen.errors import InputError
from datagen.files.lock import lock_folder
from datagen.formats.messages import to_messages
from datagen.files.jsonl import atomic_file, write_json_atomic, write_jsonl
from datagen.formats.record_lines import checked_records
from datagen.tasks.prompts import load_instructions
from datagen.formats.records import GeneratedRecord, InstructRecord, Turn, place_image_token, record_id, task_file
from datagen.run.items import item_seed


FORMATS = ("llava", "messages")


def write_records(records: Sequence[BaseModel], out: Path, jsonl: bool, keep_meta: bool = True) -> None:
    exclude = None if keep_meta else {"meta"}
    write_rows([record.model_dump(mode="json", by_alias=True, exclude=exclude) for record in records], out, jsonl)


def write_rows(rows: list[dict], out: Path, jsonl: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if not jsonl:
        write_json_atomic(out, rows, indent=None)
        return
    with atomic_file(out) as handle:
        write_jsonl(handle, rows)


def read_task_records(path: Path) -> list[GeneratedRecord]:
    records, seen = [], set()
    for line in checked_records(path):
        try:
            record = GeneratedRecord.model_validate(line.data)
        except ValidationError as error:
            first = error.errors()[0]
            raise line.refusal(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if record.id in seen:
            raise InputError(f"{path} line {line.number}: id {record.id} appears twice; remove one (ids are unique within a task)")
        seen.add(record.id)
        records.append(record)
    return records


def export(folder: Path, out: Path, tasks: list[str], jsonl: bool, keep_meta: bool, shuffle: bool, seed: int,
           fmt: str = "llava") -> dict[str, int]:
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the --out folder of a `datagen generate` run")
    merged: list[GeneratedRecord] = []
    counts: dict[str, int] = {}
    with lock_folder(folder, "export", shared=True):  # never read a folder a generate is writing
        for task in tasks:
            path = folder / task_file(task)
            if not path.exists():
                raise InputError(f"{path}: not found; generate task {task} first or drop it from --tasks")
            records = sorted(read_task_records(path), key=lambda record: record.id)
            counts[task] = len(records)
            merged += records
    if shuffle:
        random.Random(seed).shuffle(merged)
    if fmt == "messages":
        write_rows([to_messages(r, r.meta.model_dump(mode="json") if keep_meta else None) for r in merged], out, jsonl)
    else:
        write_records(merged, out, jsonl, keep_meta)
    return counts


def align(captions: Path, out: Path, limit: int | None, seed: int, jsonl: bool, prompts: Path | None = None) -> int:
    """LLaVA-Pretrain-style records: a brief-description instruction and one of the image's own captions."""
    instructions = load_instructions("brief", prompts)
    source = CocoSource(captions, None)
    image_ids = source.image_ids if limit is None else source.image_ids[:limit]
    records = []
    for image in source.images(image_ids):
        rng = random.Random(item_seed(seed, image.image_id, "align", "record"))
        caption = rng.choice(image.captions)
        question = place_image_token(rng.choice(instructions.lines), rng)
        records.append(
            InstructRecord(
                id=record_id(image.image_id),
                image=image.file_name,
                conversations=[Turn(speaker="human", value=question), Turn(speaker="gpt", value=caption)],
            )
        )
    write_records(records, out, jsonl)
    return len(records)
