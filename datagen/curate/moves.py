"""Moving written records to `rejects.jsonl` (dedup, filter): nothing deleted, the folder a valid run throughout.

Order of writes: the rejects first (appended, whole lines), then each task file replaced atomically, then the
manifest. A kill between them leaves a record in both its task file and the rejects, never in neither; the
next run of the same step sees the reject is already there and does not append it twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple

from datagen.files.jsonl import JsonlAppender, atomic_file
from datagen.formats.record_lines import checked_records, record_lines
from datagen.formats.manifest import Curation, CurationStep, Manifest, QualityStats, write_manifest
from datagen.formats.records import Grounding, Reject, RejectReason, RecordMeta
from datagen.run.output_folder import REJECTS_FILE
from datagen.tasks.registry import TASKS


class Row(NamedTuple):
    task: str
    number: int  # line number in the task file
    data: dict

    @property
    def key(self) -> str:
        """`task/id`: ids repeat across tasks, never within one."""
        return f"{self.task}/{self.data.get('id')}"


class Move(NamedTuple):
    row: Row
    reason: RejectReason
    detail: str
    duplicate_of: str | None = None


def task_rows(folder: Path) -> Iterator[Row]:
    """Every written record, task by task in registry order, each file in line order: "later" means later here."""
    for task in TASKS:
        yield from _file_rows(folder, task)


def _file_rows(folder: Path, task: str) -> Iterator[Row]:
    for line in checked_records(folder / TASKS[task].file_name):
        yield Row(task, line.number, line.data)


def turns(row: Row, speaker: str) -> list[str]:
    return [str(turn.get("value", "")) for turn in row.data["conversations"] if isinstance(turn, dict) and turn.get("from") == speaker]


def _already_rejected(folder: Path) -> set[tuple[str, str, str]]:
    """(task, id, reason) of the rejects a curation step wrote before, so a rerun after a kill adds none twice."""
    return {
        (str(line.data.get("task")), str(line.data.get("id")), str(line.data.get("reason")))
        for line in record_lines(folder / REJECTS_FILE, reject=True)
        if line.data.get("reason") in ("near_duplicate", "judge_score")
    }


def _reject(move: Move) -> Reject:
    data = move.row.data
    meta = RecordMeta.model_validate(data["meta"])
    # The record's turns, whole, so a reject can be put back by hand.
    raw = json.dumps(data["conversations"], ensure_ascii=False)
    return Reject(
        id=str(data["id"]), image=str(data["image"]), task=move.row.task, reason=move.reason, detail=move.detail, raw=raw,
        finish_reason=meta.finish_reason, meta=meta, duplicate_of=move.duplicate_of,
    )


def _without_grounding(stats: QualityStats, grounding: Grounding) -> QualityStats:
    return QualityStats(
        records=stats.records - 1,
        records_with_unsupported=stats.records_with_unsupported - bool(grounding.unsupported),
        mentions=stats.mentions - len(grounding.mentioned),
        unsupported_mentions=stats.unsupported_mentions - len(grounding.unsupported),
    )


def apply_moves(
    folder: Path, manifest: Manifest, moves: list[Move], step: Literal["dedup", "filter"], command: list[str], settings: dict, examined: int,
    updated: dict[str, dict] | None = None,
) -> CurationStep:
    """Move the records to rejects and record the step; `updated` replaces the kept records' lines by `task/id`
    (the judge's scores in meta), else they are written back unchanged."""
    done = _already_rejected(folder)
    writer = JsonlAppender(folder / REJECTS_FILE)
    try:
        for move in moves:
            if (move.row.task, str(move.row.data.get("id")), move.reason) not in done:
                writer.append(_reject(move))
    finally:
        writer.close()
    moved_keys = {move.row.key for move in moves}
    for task, spec in TASKS.items():
        path = folder / spec.file_name
        if not path.is_file() or not (updated or any(move.row.task == task for move in moves)):
            continue
        with atomic_file(path) as handle:
            for row in _file_rows(folder, task):
                if row.key not in moved_keys:
                    handle.write(json.dumps((updated or {}).get(row.key, row.data), ensure_ascii=False) + "\n")
    moved = Counter(move.row.task for move in moves)
    for move in moves:
        counts = manifest.counts.get(move.row.task)
        if counts is None:
            continue
        counts.written -= 1
        counts.rejected[move.reason] = counts.rejected.get(move.reason, 0) + 1
        grounding = move.row.data["meta"].get("grounding")
        if grounding and move.row.task in manifest.quality:
            manifest.quality[move.row.task] = _without_grounding(manifest.quality[move.row.task], Grounding.model_validate(grounding))
    record = CurationStep(
        step=step,
        command=command, finished_at=datetime.now(UTC).isoformat(timespec="seconds"), settings=settings,
        examined=examined, moved={task: moved[task] for task in TASKS if moved[task]},
    )
    if manifest.curation is None:
        manifest.curation = Curation()
    manifest.curation.steps.append(record)
    write_manifest(folder, manifest)
    return record
