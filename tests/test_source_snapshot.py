"""The source snapshot: a later start over unchanged files reads it instead of the JSON; anything off means a full load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.source import coco
from datagen.cli import app
from datagen.source.coco import CocoSource

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the sample files, free to be touched and rewritten."""
    captions, instances = tmp_path / "captions.json", tmp_path / "instances.json"
    shutil.copy(DATA / "captions.json", captions)
    shutil.copy(DATA / "instances.json", instances)
    return captions, instances


def refuse_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on any parse or index of the inputs fails the test: what loads came from the snapshot."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the JSON was read")

    for name in ("_load", "_load_json", "_index", "COCO"):
        monkeypatch.setattr(coco, name, refuse)


def everything(source: CocoSource) -> dict:
    return {
        "images": [source.image(image_id) for image_id in source.image_ids],
        "image_ids": source.image_ids,
        "hard_cases": source.count_hard_cases(source.image_ids),
        "sha256": (source.captions_sha256, source.instances_sha256),
        "counts": (source.caption_count(), source.box_count()),
        "has_boxes": source.has_boxes,
    }


@pytest.mark.parametrize("with_instances", [True, False])
def test_second_start_reads_the_snapshot(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_instances: bool
) -> None:
    captions, instances = inputs[0], inputs[1] if with_instances else None
    snapshot = tmp_path / "out" / "source-index.bin"  # the folder does not exist yet
    first = CocoSource(captions, instances, snapshot=snapshot)
    assert not first.loaded_from_snapshot and snapshot.is_file()
    expected = everything(first)
    assert expected == everything(CocoSource(captions, instances))  # writing a snapshot changes nothing loaded
    refuse_json(monkeypatch)
    second = CocoSource(captions, instances, snapshot=snapshot)
    assert second.loaded_from_snapshot
    assert everything(second) == expected
    assert sum(image is not None for image in expected["images"]) == 22 and expected["hard_cases"]


def test_other_inputs_do_not_use_it(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    snapshot = tmp_path / "source-index.bin"
    CocoSource(*inputs, snapshot=snapshot)
    without_boxes = CocoSource(inputs[0], None, snapshot=snapshot)
    assert not without_boxes.loaded_from_snapshot and not without_boxes.has_boxes and without_boxes.box_count() == 0


def test_touched_file_means_a_full_load_and_a_new_snapshot(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "source-index.bin"
    expected = everything(CocoSource(*inputs, snapshot=snapshot))
    stat = inputs[1].stat()
    os.utime(inputs[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = CocoSource(*inputs, snapshot=snapshot)
    assert not touched.loaded_from_snapshot and everything(touched) == expected
    refuse_json(monkeypatch)
    assert CocoSource(*inputs, snapshot=snapshot).loaded_from_snapshot  # rewritten for the new mtime


def test_changed_content_is_seen(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    snapshot = tmp_path / "source-index.bin"
    captions = inputs[0]
    before = CocoSource(*inputs, snapshot=snapshot)
    text = captions.read_text(encoding="utf-8")
    stat = captions.stat()
    captions.write_text(text.replace("refrigerator", "REFRIGERATOR"), encoding="utf-8")  # same size
    os.utime(captions, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    after = CocoSource(*inputs, snapshot=snapshot)
    assert not after.loaded_from_snapshot and after.captions_sha256 != before.captions_sha256
    assert any("REFRIGERATOR" in caption for caption in after.image(100042).captions)
    again = CocoSource(*inputs, snapshot=snapshot)
    assert again.loaded_from_snapshot and again.captions_sha256 == after.captions_sha256


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # torn
        lambda data: data[:-40] + bytes(b ^ 0xFF for b in data[-40:]),  # bits flipped in the body
        lambda data: b"not a snapshot at all",
        lambda data: b"",
    ],
    ids=["torn", "flipped", "foreign", "empty"],
)
def test_damaged_snapshot_means_a_full_load(inputs: tuple[Path, Path], tmp_path: Path, damage) -> None:
    snapshot = tmp_path / "source-index.bin"
    expected = everything(CocoSource(*inputs, snapshot=snapshot))
    snapshot.write_bytes(damage(snapshot.read_bytes()))
    source = CocoSource(*inputs, snapshot=snapshot)
    assert not source.loaded_from_snapshot and everything(source) == expected
    assert CocoSource(*inputs, snapshot=snapshot).loaded_from_snapshot


def test_snapshot_of_another_format_is_ignored(inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "source-index.bin"
    CocoSource(*inputs, snapshot=snapshot)
    monkeypatch.setattr(coco, "_SNAPSHOT_FORMAT", ("another", *coco._SNAPSHOT_FORMAT[1:]))
    assert not CocoSource(*inputs, snapshot=snapshot).loaded_from_snapshot


def generate(out: Path, inputs: tuple[Path, Path], limit: int) -> None:
    args = ["generate", "--teacher", "mock", "--captions", str(inputs[0]), "--instances", str(inputs[1]),
            "--out", str(out), "--no-progress", "--limit", str(limit)]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})
    assert result.exit_code == 0, (result.output, result.exception)


def test_resumed_generate_uses_the_snapshot_and_writes_the_same_records(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    generate(whole, inputs, 12)
    generate(resumed, inputs, 5)
    assert (resumed / "source-index.bin").is_file()
    refuse_json(monkeypatch)
    generate(resumed, inputs, 12)
    names = sorted(path.name for path in whole.glob("*.jsonl"))
    assert names == sorted(path.name for path in resumed.glob("*.jsonl")) and "detail.jsonl" in names
    for name in names:
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
