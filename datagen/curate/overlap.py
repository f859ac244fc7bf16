"""Eval images a model was trained on (`eval pope|bench --train-data`): counted, and left out of the score unless
`--allow-overlap`. A score over images the model saw in training measures memory as much as the model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from datagen.curate.exclude import coco_id, read_ids
from datagen.errors import InputError
from datagen.formats.record_lines import record_lines
from datagen.tasks.registry import TASKS

T = TypeVar("T")
FLAG = "--train-data"


def training_ids(path: Path) -> set[int]:
    """The COCO images a training set holds: a generate (or merge) folder's task files, or any list --exclude-images reads."""
    if not path.is_dir():
        return read_ids(path, FLAG)
    ids: set[int] = set()
    files = [path / spec.file_name for spec in TASKS.values() if (path / spec.file_name).is_file()]
    if not files:
        raise InputError(f"{FLAG} {path}: holds no task file ({', '.join(spec.file_name for spec in TASKS.values())}); pass a generate --out folder or an exported file")
    for file in files:
        for line in record_lines(file):
            found = coco_id(line.data.get("image"))
            if found is not None:
                ids.add(found)
    return ids


class Overlap(BaseModel):
    """How many eval images the training data holds, and what was scored."""

    train_data: str
    eval_images: int
    held: int = 0
    allow_overlap: bool = False

    def line(self) -> str:
        scored = f"all {self.eval_images} scored (--allow-overlap)" if self.allow_overlap else f"scoring the {self.eval_images - self.held} clean ones only (--allow-overlap to score all)"
        return f"{FLAG} {self.train_data} holds {self.held} of the {self.eval_images} eval images; {scored}"


class TrainingData(BaseModel):
    """The images a model was trained on, read once, for the eval commands to split their items by."""

    path: Path
    ids: frozenset[int]
    allow_overlap: bool = False

    @classmethod
    def read(cls, path: Path, allow_overlap: bool) -> TrainingData:
        return cls(path=path, ids=frozenset(training_ids(path)), allow_overlap=allow_overlap)

    def split(self, items: list[T], image_of: Callable[[T], object]) -> tuple[list[T], Overlap]:
        """The items to score (those whose image the training data lacks, or all with allow_overlap), and the count."""
        images = {found for item in items if (found := coco_id(image_of(item))) is not None}
        held = images & self.ids
        overlap = Overlap(train_data=str(self.path), eval_images=len(images), held=len(held), allow_overlap=self.allow_overlap)
        kept = items if self.allow_overlap else [item for item in items if coco_id(image_of(item)) not in held]
        return kept, overlap
