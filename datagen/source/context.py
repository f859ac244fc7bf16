"""Context: what the teacher is shown of an image: its captions, one a line, then (captions+boxes) one
`category: [x1, y1, x2, y2]` line per object, corners normalised to 0-1 as LLaVA's prompts show them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # for the annotation only: loading COCO's reader (pycocotools, numpy) is a run's cost, not `--help`'s
    from datagen.source.coco import ImageAnnotations

ContextKind = Literal["captions", "captions+boxes"]
CONTEXT_KINDS: tuple[ContextKind, ...] = get_args(ContextKind)


def box_line(category: str, corners: tuple[float, float, float, float]) -> str:
    # str() of a list of floats is Python's repr of each: 0.63, 0.0, 1.0 — the convention LLaVA's prompts show.
    return f"{category}: {list(corners)}"


def render_context(image: ImageAnnotations, kind: ContextKind) -> str:
    text = "\n".join(image.captions)
    if kind == "captions+boxes" and image.boxes:
        text += "\n\n" + "\n".join(box_line(box.category, (box.x1, box.y1, box.x2, box.y2)) for box in image.boxes)
    return text
