"""The instances file is parsed with its segmentation masks nulled out: boxes, counts and errors stay as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.source.coco import CocoSource
from datagen.errors import InputError

IMAGES = [{"id": 1, "file_name": "000000000001.jpg", "width": 640, "height": 480}]
CAPTIONS = {"images": IMAGES, "annotations": [{"id": 1, "image_id": 1, "caption": "A dog and a cat."}]}
MASKS = [
    [[10.5, 20.25, 30.0, 40.0, 1e2, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],  # polygons
    {"counts": "PQ[\\]`a0o1", "size": [480, 640]},  # compressed RLE: brackets and backslashes inside the string
    {"counts": [3, 5, 7], "size": [480, 640]},  # uncompressed RLE
    [],
]


def instances(masks_last: bool) -> dict:
    annotations = []
    for index, mask in enumerate(MASKS, 1):
        members = {"id": index, "image_id": 1, "category_id": 18, "bbox": [10, 20, 30 + index, 40], "iscrowd": int(isinstance(mask, dict))}
        annotations.append({**members, "segmentation": mask} if masks_last else {"segmentation": mask, **members})
    categories = [{"id": 18, "name": "dog", "supercategory": "segmentation"}]
    return {"images": IMAGES, "annotations": annotations, "categories": categories}


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("masks_last", [False, True])
def test_boxes_unchanged_by_masks(tmp_path: Path, indent: int | None, masks_last: bool) -> None:
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps(CAPTIONS))
    with_masks, without = tmp_path / "with.json", tmp_path / "without.json"
    data = instances(masks_last)
    with_masks.write_text(json.dumps(data, indent=indent))
    for annotation in data["annotations"]:
        del annotation["segmentation"]
    without.write_text(json.dumps(data, indent=indent))
    source, reference = CocoSource(captions, with_masks), CocoSource(captions, without)
    assert source.image(1) == reference.image(1)
    assert source.box_count() == len(MASKS)
    assert source.hard_cases == reference.hard_cases
    assert [box.annotation_id for box in source.image(1).boxes] == [1, 4]  # the RLE ones are crowds


def test_broken_file_reports_its_own_line(tmp_path: Path) -> None:
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps(CAPTIONS))
    broken = tmp_path / "instances.json"
    text = json.dumps(instances(False), indent=1)
    broken.write_text(text[: text.rindex("]")] + ",,]}")
    with pytest.raises(InputError, match=f"line {text[: text.rindex(']')].count(chr(10)) + 1},"):
        CocoSource(captions, broken)
