"""Reading back what an output folder already holds (for a resume), and room beside it for set-aside files.

A line may have been edited by hand: anything that is not one of our records stops the run with one line
naming the file and line number, before anything in the folder is changed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from datagen.errors import InputError
from datagen.formats.manifest import MANIFEST_FILE
from datagen.files.jsonl import repair_torn_tail
from datagen.formats.record_lines import checked_records
from datagen.formats.records import Usage
from datagen.tasks.registry import TASKS

# The files of an output folder besides each task's `<task>.jsonl` (and manifest.MANIFEST_FILE).
REJECTS_FILE = "rejects.jsonl"
CACHE_FILE = "cache.sqlite"
SOURCE_SNAPSHOT_FILE = "source-index.bin"  # the inputs, indexed: a resume reads it instead of the JSON


def output_files() -> list[str]:
    """Every file a run writes its items to: each registered task's, whether or not this run asks for it, and the rejects."""
    return [*(spec.file_name for spec in TASKS.values()), REJECTS_FILE]


class DoneItem(NamedTuple):
    """What a resume needs from a written record or reject."""

    image_id: int
    task: str | None  # rejects only: records are per task file
    reason: str | None
    usage: Usage
    row: dict  # the whole line, for what only some readers need (a record's stored grounding, its id)


def read_done_items(path: Path, reject: bool = False) -> Iterator[DoneItem]:
    """Each line of a task file (or, with `reject`, the rejects file), after cutting a torn last line."""
    if not path.exists():
        return
    repair_torn_tail(path)  # only a kill's half-written tail; any other bad line is the user's to fix
    for line in checked_records(path, reject):
        assert line.usage is not None  # a checked line is whole
        task, reason = (line.data["task"], line.data["reason"]) if reject else (None, None)
        yield DoneItem(line.image_id, task, reason, line.usage, line.data)


def claim_output_folder(out: Path, fingerprint_parts: dict[str, object], force: bool, absent_means: dict[str, object]) -> None:
    """Make `out` ready for a `generate` run with these settings (claim_folder over the manifest and the item files)."""
    claim_folder(out, MANIFEST_FILE, ("settings", "fingerprint_parts"), output_files(), fingerprint_parts, force, absent_means)


def claim_folder(
    out: Path,
    settings_file: str,
    parts_at: tuple[str, ...],
    outputs: list[str],
    fingerprint_parts: dict[str, object],
    force: bool,
    absent_means: dict[str, object] | None = None,
    derived: list[str] | None = None,
) -> None:
    """Make `out` ready for a job with these settings: resume what it holds when they match, else refuse, or (with
    `force`) set the old files aside. `settings_file` records the settings of what `outputs` hold, its
    fingerprint parts under the keys `parts_at`; `absent_means` gives the value of a part it may not name;
    `derived` files (a summary) are computed from the outputs and set aside with them.

    A folder whose outputs hold nothing (a first request that failed, a wrong --model) takes new settings as they
    are: there is nothing to resume and nothing to lose."""
    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / settings_file
    held = [name for name in outputs if (out / name).is_file() and (out / name).stat().st_size]
    if held and not settings_path.exists():
        # Outputs without the file that says how they were made (a --force or merge killed midway):
        # adopting them would pass them off as this run's.
        if not force:
            raise InputError(
                f"--out {out}: holds {', '.join(held)} but no {settings_file}, so what made them is unknown; "
                "pass --force to set them aside, or pick another --out"
            )
        set_aside(out, [*outputs, *(derived or []), settings_file])
    if not held or not settings_path.exists():
        return
    before: object = None
    try:
        before = json.loads(settings_path.read_text(encoding="utf-8"))
        for key in parts_at:
            before = before[key]  # type: ignore[index]
    except (ValueError, KeyError, TypeError):
        before = None
    if not isinstance(before, dict):
        changed = [f"{settings_file} (unreadable)"]
    else:
        changed = [key for key, value in fingerprint_parts.items() if key in before and before[key] != value]
        changed += [
            key
            for key, default in (absent_means or {}).items()
            if key not in changed and before.get(key, default) != fingerprint_parts.get(key, default)
        ]
    if changed and not force:
        raise InputError(
            f"--out {out}: holds a run made with other settings (changed: {', '.join(changed)}); "
            "rerun with the original settings to resume, pick another --out, or pass --force to set the old files aside"
        )
    if changed:
        set_aside(out, [*outputs, *(derived or []), settings_file])


def set_aside(folder: Path, names: list[str]) -> Path:
    """--force keeps old outputs, moved in `names` order into a dated sub-folder, instead of deleting paid-for data.

    Name the file that says how the others were made (a manifest) last: a kill midway leaves it in place, still
    describing the old settings, so the next run refuses the folder instead of adopting what was left as its own."""
    aside = unique_folder(folder, f"replaced-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    for name in names:
        if (folder / name).exists():
            shutil.move(str(folder / name), aside / name)
    return aside


def unique_folder(parent: Path, name: str) -> Path:
    """A new folder `parent/name`, or `name-2`, `name-3`, ... when two runs pick the same name in one second."""
    candidate, number = parent / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = parent / f"{name}-{number}"
