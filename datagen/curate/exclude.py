"""Decontamination: which COCO images a run must leave out, read from whatever list the user has at hand.

COCO names one image three ways (`COCO_val2014_000000123456.jpg`, `000000123456.jpg`, `123456`) and the
integer is the image id in every release, so every list is boiled down to ids. COCO train2017 is train2014 +
val2014 - val2017: about 35.5K of val2014's 40.5K images, where LLaVA-Bench (COCO) and POPE draw theirs from.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from datagen.errors import InputError
from datagen.files.jsonl import read_lines
from datagen.formats.manifest import ExcludedImages
from datagen.run.output_folder import CACHE_FILE
from datagen.tasks.registry import task_spec

SHAPES = (
    "a COCO captions or instances JSON (images[].id), LLaVA records (a JSON array or JSONL with `image`), "
    "an eval questions JSONL (POPE, LLaVA-Bench: `image`), or a text file of image ids or file names, one per line"
)

# A COCO file name, with or without a release prefix or a folder; a bare id has no extension and no padding rule.
_COCO_NAME = re.compile(r"^(?:COCO_[a-z]+\d{4}_)?(\d{12})(?:\.(?:jpg|jpeg|png))?$", re.IGNORECASE)
_BARE_ID = re.compile(r"^\d{1,12}$")

# Eval sets whose images come from COCO val2014, and the source files that hold most of them.
VAL2014_EVALS = "LLaVA-Bench (COCO) and POPE"


def coco_id(name: object) -> int | None:
    """The COCO image id a file name or id names, whatever the release's naming; None for anything else."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name if name >= 0 else None
    if not isinstance(name, str):
        return None
    base = name.strip().replace("\\", "/").rsplit("/", 1)[-1]
    if _BARE_ID.match(base):
        return int(base)
    match = _COCO_NAME.match(base)
    return int(match.group(1)) if match else None


def _parsed(path: Path) -> object | None:
    """The whole file as JSON, or None when it is not one JSON document (JSONL, or a text list)."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return None


def _jsonl_rows(path: Path) -> Iterator[object]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _ids_of_document(document: object) -> list[int] | None:
    """Ids in a JSON document of a known shape, else None."""
    if isinstance(document, dict) and isinstance(document.get("images"), list):  # COCO captions or instances
        ids = [coco_id(image.get("id")) if isinstance(image, dict) else None for image in document["images"]]
        return [i for i in ids if i is not None] if all(i is not None for i in ids) else None
    if isinstance(document, list):
        return _ids_of_rows(document)
    return None


def _ids_of_rows(rows: Iterable[object]) -> list[int] | None:
    """Ids of LLaVA records or eval questions (objects with `image`); None when a row is not an object. A mixture's
    rows of other image sets (gqa/..., text-only rows) are passed over: no COCO source holds those images."""
    ids = []
    for row in rows:
        if not isinstance(row, dict):
            return None
        found = coco_id(row.get("image"))
        if found is not None:
            ids.append(found)
    return ids


def _ids_of_text(path: Path) -> list[int] | None:
    ids = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                found = coco_id(line)
                if found is None:
                    return None
                ids.append(found)
    return ids


def read_ids(path: Path, flag: str = "--exclude-images") -> set[int]:
    """The COCO image ids one list names; an InputError naming the file and the shapes accepted otherwise."""
    if not path.is_file():
        raise InputError(f"{flag} {path}: file not found; pass {SHAPES}")
    unknown = InputError(f"{flag} {path}: not a list of images I can read; pass {SHAPES}")
    try:
        document = _parsed(path)
        ids = _ids_of_document(document) if document is not None else None
        if ids is None and document is None:
            try:
                ids = _ids_of_rows(_jsonl_rows(path))
            except ValueError:  # not JSONL: a text list, maybe
                ids = None
        if ids is None:
            ids = _ids_of_text(path)  # a list of ids parses as JSON numbers, line by line
    except UnicodeDecodeError:
        raise unknown from None
    if not ids:
        raise unknown
    return set(ids)


def list_sha256(ids: Iterable[int]) -> str:
    """The same ids give the same hash, whichever files and namings they came from."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


def load_exclusions(paths: list[Path], flag: str = "--exclude-images") -> tuple[frozenset[int], ExcludedImages]:
    """The union of the lists, and what the manifest says of it (`excluded` is counted later, against the source)."""
    ids: set[int] = set()
    for path in paths:
        ids |= read_ids(path, flag)
    return frozenset(ids), ExcludedImages(sources=[str(path) for path in paths], listed=len(ids), list_sha256=list_sha256(ids), excluded=0)


def overlap_warning(captions: Path, first_file_name: str | None = None) -> str | None:
    """One line when the source is known to hold the images of val2014-based evals; None when nothing is known.

    Judged by the names alone (the captions file's, and one of its image file names): reading the eval files
    is what --exclude-images is for."""
    name = captions.name.lower()
    if "train2017" in name:
        held = "about 35.5K of COCO val2014's 40.5K images (train2017 = train2014 + val2014 - val2017)"
    elif "val2014" in name or (first_file_name or "").startswith("COCO_val2014_"):
        held = "COCO val2014 images"
    else:
        return None
    return (
        f"warning: {captions.name} holds {held}, where {VAL2014_EVALS} draw theirs from; nothing is excluded, so "
        "a model trained on this run is evaluated on images it saw (pass --exclude-images with the eval's questions "
        "or instances file)"
    )


def written_of_excluded(out: Path, tasks: Iterable[str], exclude_ids: frozenset[int]) -> Counter[str]:
    """Per task, the records `out` already holds of images now excluded: a resume that adds --exclude-images.

    Read before the run claims the folder, so a line it cannot read (a killed run's torn tail, which the run
    repairs) is passed over here, not refused."""
    held: Counter[str] = Counter()
    for task in tasks:
        path = out / task_spec(task).file_name
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            for line in read_lines(handle):
                meta = line.value.get("meta") if line.problem is None and isinstance(line.value, dict) else None
                held[task] += isinstance(meta, dict) and meta.get("image_id") in exclude_ids
    return +held


def resume_warning(out: Path, held: Counter[str]) -> str | None:
    """One line when a resume's folder already holds records of excluded images: they stay in the task files (and
    so in `export`), though the manifest's counts leave them out; a new folder reusing the old replies drops them."""
    if not held:
        return None
    cache = out / CACHE_FILE
    again = f" and --cache {cache}: no reply is paid for twice" if cache.is_file() else ": the other images are asked again"
    total = held.total()
    return (
        f"warning: --out {out} already holds {total} record{'s' if total != 1 else ''} of images --exclude-images leaves out "
        f"({', '.join(f'{task} {n}' for task, n in held.items())}), written before; they stay in its task files and "
        f"in `export`. To drop them, generate into a new --out with the same flags{again}"
    )
