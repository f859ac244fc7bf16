"""What `generate` is to leave out and to choose, worked out before the run plans a single request.

The run itself (datagen/run/pipeline.py) only drops the excluded ids and keeps the chosen ones; this module
reads the lists, picks the images and writes the manifest's account of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from datagen.curate.exclude import load_exclusions, overlap_warning
from datagen.curate.select import SELECT_METHODS, select_images
from datagen.errors import InputError
from datagen.formats.manifest import Curation
from datagen.source.coco import CocoSource


class ImagePlan(NamedTuple):
    exclude_ids: frozenset[int]
    chosen_ids: list[int] | None
    curation: Curation | None
    notes: list[str]  # one line each, said before the run starts


def plan_images(
    captions: Path, instances: Path | None, snapshot: Path | None, exclude: list[Path], select: str | None, budget: int | None,
    seed: int, category_cap: int | None = None,
) -> ImagePlan:
    if select is not None and select not in SELECT_METHODS:
        raise InputError(f"--select {select}: unknown method; choose {' or '.join(SELECT_METHODS)}")
    if (select is None) != (budget is None):
        raise InputError("--select and --budget go together: --select coverage --budget N")
    if category_cap is not None and select is None:
        raise InputError("--category-cap shapes a selection; add --select coverage --budget N")
    notes: list[str] = []
    exclude_ids, excluded = load_exclusions(exclude) if exclude else (frozenset(), None)
    if not exclude and (warning := overlap_warning(captions)) is not None:
        notes.append(warning)
    if select is None or budget is None:
        return ImagePlan(exclude_ids, None, Curation(excluded=excluded) if excluded else None, notes)
    source = CocoSource(captions, instances, snapshot=snapshot)
    kept = [image_id for image_id in source.image_ids if image_id not in exclude_ids]
    selection = select_images(source, kept, budget, seed, category_cap)
    if selection.note:
        notes.append(f"note: {selection.note}")
    return ImagePlan(exclude_ids, selection.image_ids, Curation(excluded=excluded, selection=selection.record), notes)
