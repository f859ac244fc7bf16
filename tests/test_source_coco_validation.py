"""The whole COCO file is checked against a typed model at reading: a bad entry anywhere is one line naming the
file, the entry's index and the field (exit 2, before any request, no manifest left `running`); ids written as
strings of digits are normalised once, so a run over them completes and a rerun adds nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from datagen.tasks.registry import DEFAULT_TASKS
from tests.synthetic import write_coco


@pytest.fixture
def coco(tmp_path):
    captions, instances = write_coco(tmp_path, images=3)
    return json.loads(captions.read_text()), json.loads(instances.read_text())


def write(tmp_path: Path, captions: dict, instances: dict) -> tuple[Path, Path]:
    # NaN goes out as the bare NaN token, as Python's json and many exporters write it.
    (tmp_path / "c.json").write_text(json.dumps(captions))
    (tmp_path / "i.json").write_text(json.dumps(instances))
    return tmp_path / "c.json", tmp_path / "i.json"


def set_at(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    target = data
    for part in path[:-1]:
        target = target[part]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


DELETE = object()
# (file, where, new value, words the one line must hold): the hostile inputs that ended in tracebacks or wrong boxes.
BAD = {
    "bbox of strings": ("i", ("annotations", 2, "bbox"), ["a", "b", "c", "d"], ["annotations[2].bbox[0]"]),
    "bbox null": ("i", ("annotations", 1, "bbox"), None, ["annotations[1].bbox", "valid list"]),
    "bbox with NaN": ("i", ("annotations", 0, "bbox", 2), float("nan"), ["annotations[0].bbox[2]", "finite"]),
    "category without name": ("i", ("categories", 3, "name"), DELETE, ["categories[3]", "no name"]),
    "image without file_name": ("c", ("images", 1, "file_name"), DELETE, ["images[1]", "no file_name"]),
    "annotation without id": ("i", ("annotations", 1, "id"), DELETE, ["annotations[1]", "no id"]),
    "annotation without bbox": ("i", ("annotations", 2, "bbox"), DELETE, ["annotations[2]", "no bbox"]),
    "non-object entry": ("c", ("annotations", 4), "a caption", ["annotations[4]", "valid dictionary"]),
    "width as a word": ("c", ("images", 2, "width"), "wide", ["images[2].width", "integer"]),
    "id not a number": ("c", ("images", 0, "id"), "img-1", ["images[0].id", "integer"]),
    "caption a number": ("c", ("annotations", 3, "caption"), 7, ["annotations[3].caption"]),
    "duplicate image id": ("c", ("images", 2, "id"), 1, ["images[2].id", "id 1 is used twice"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_entry_anywhere_is_one_line_before_any_request(coco, tmp_path, generate_mock, case):
    which, where, value, words = BAD[case]
    captions, instances = coco
    if which == "c":
        captions = set_at(captions, where, value)
    else:
        instances = set_at(instances, where, value)
    captions_path, instances_path = write(tmp_path, captions, instances)
    result = generate_mock(tmp_path / "out", captions=captions_path, instances=instances_path, expect=2)
    assert "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    named = captions_path if which == "c" else instances_path
    flag = "--captions" if which == "c" else "--instances"
    for word in (f"{flag} {named}", *words):
        assert word in line, line
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing started, nothing left `running`


def test_string_ids_are_normalised_once_so_a_rerun_adds_nothing(coco, tmp_path, generate_mock, read_jsonl):
    captions, instances = coco
    for image in captions["images"] + instances["images"]:
        image["id"] = str(image["id"])
    for annotation in captions["annotations"] + instances["annotations"]:
        annotation["image_id"] = str(annotation["image_id"])
        annotation.setdefault("category_id", None)
        if annotation["category_id"] is None:
            del annotation["category_id"]
        else:
            annotation["category_id"] = str(annotation["category_id"])
    captions_path, instances_path = write(tmp_path, captions, instances)
    out = tmp_path / "out"
    generate_mock(out, captions=captions_path, instances=instances_path)
    first = {task: read_jsonl(out / f"{task}.jsonl") for task in DEFAULT_TASKS}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert all(len(records) == manifest["counts"][task]["written"] == 3 for task, records in first.items())
    assert all(record["meta"]["box_ids"] for record in first["detail"])  # the boxes kept their images
    generate_mock(out, captions=captions_path, instances=instances_path)
    assert {task: read_jsonl(out / f"{task}.jsonl") for task in DEFAULT_TASKS} == first
