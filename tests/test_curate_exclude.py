"""`generate --exclude-images`: lists of every shape users hold, matched by COCO id whatever the naming."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datagen.curate.exclude import coco_id, list_sha256, overlap_warning, read_ids, resume_warning
from datagen.errors import InputError

# Two of the sample images (data/captions.json names them the 2017 way).
FIRST, SECOND = 100013, 100027


@pytest.mark.parametrize(
    "name, expected",
    [
        ("COCO_val2014_000000123456.jpg", 123456),
        ("COCO_train2014_000000123456.jpg", 123456),
        ("000000123456.jpg", 123456),
        ("coco/train2017/000000123456.jpg", 123456),
        ("123456", 123456),
        (" 000000123456 \n", 123456),
        (123456, 123456),
        ("001.jpg", None),  # LLaVA-Bench in-the-wild: not a COCO image
        ("gqa/images/2354786.jpg", None),
        ("COCO_val2014_123.jpg", None),
        (True, None),
    ],
)
def test_one_image_one_id_whatever_the_naming(name: object, expected: int | None) -> None:
    assert coco_id(name) == expected


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_every_accepted_shape_names_the_same_images(tmp_path: Path) -> None:
    coco = {"images": [{"id": FIRST, "file_name": f"COCO_val2014_{FIRST:012d}.jpg"}, {"id": SECOND, "file_name": f"{SECOND:012d}.jpg"}], "annotations": []}
    llava = [{"id": "a", "image": f"{FIRST:012d}.jpg", "conversations": []}, {"id": "b", "image": f"coco/train2017/{SECOND:012d}.jpg", "conversations": []}]
    pope = [{"question_id": 1, "image": f"COCO_val2014_{FIRST:012d}.jpg", "text": "Is there a dog in the image?", "label": "no"},
            {"question_id": 2, "image": f"COCO_val2014_{SECOND:012d}.jpg", "text": "Is there a cat in the image?", "label": "yes"}]
    bench = [{"question_id": 0, "image": f"{FIRST:012d}.jpg", "text": "What?", "category": "conv"},
             {"question_id": 1, "image": f"{SECOND:012d}.jpg", "text": "Why?", "category": "complex"}]
    files = [
        write(tmp_path / "instances_val2014.json", json.dumps(coco)),
        write(tmp_path / "llava.json", json.dumps(llava)),
        write(tmp_path / "llava.jsonl", "\n".join(json.dumps(row) for row in llava)),
        write(tmp_path / "pope_coco_random.json", "\n".join(json.dumps(row) for row in pope)),  # POPE's .json is JSONL
        write(tmp_path / "qa90_questions.jsonl", "\n".join(json.dumps(row) for row in bench) + "\n"),
        write(tmp_path / "ids.txt", f"{FIRST}\nCOCO_val2014_{SECOND:012d}.jpg\n\n"),
    ]
    for path in files:
        assert read_ids(path) == {FIRST, SECOND}, path.name


def test_a_mixture_passes_over_rows_of_other_image_sets(tmp_path: Path) -> None:
    rows = [{"id": "1", "image": f"coco/train2017/{FIRST:012d}.jpg"}, {"id": "2", "image": "gqa/images/2354786.jpg"}, {"id": "3"}]
    assert read_ids(write(tmp_path / "mix665k.json", json.dumps(rows))) == {FIRST}


@pytest.mark.parametrize(
    "text",
    ['{"info": {}}', "[1, 2]", "hello\nworld\n", "", '{"image": "001.jpg"}\n{"image": "002.jpg"}\n'],
)
def test_an_unknown_shape_is_one_line_naming_the_file_and_the_shapes(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "odd.json", text)
    with pytest.raises(InputError) as caught:
        read_ids(path)
    message = str(caught.value)
    assert message.startswith(f"--exclude-images {path}: not a list of images") and "COCO captions or instances" in message
    assert "\n" not in message


def test_the_list_hash_depends_on_the_ids_only() -> None:
    assert list_sha256([SECOND, FIRST]) == list_sha256({FIRST, SECOND}) != list_sha256([FIRST])


def test_overlap_warning_names_the_known_leak() -> None:
    warning = overlap_warning(Path("coco/annotations/captions_train2017.json"))
    assert warning is not None and "val2014" in warning and "POPE" in warning and "\n" not in warning
    assert overlap_warning(Path("captions_val2014.json")) is not None
    assert overlap_warning(Path("data/captions.json")) is None


def test_generate_leaves_the_listed_images_out_and_says_so(generate_mock, out_dir: Path, tmp_path: Path, read_jsonl) -> None:
    ids = write(tmp_path / "eval_ids.txt", f"COCO_val2014_{FIRST:012d}.jpg\n{SECOND}\n999999999\n")
    generate_mock(out_dir, "--exclude-images", ids)
    written = {row["meta"]["image_id"] for task in ("conversation", "detail", "complex_reasoning") for row in read_jsonl(out_dir / f"{task}.jsonl")}
    assert written and not written & {FIRST, SECOND}
    manifest = json.loads((out_dir / "manifest.json").read_text())
    excluded = manifest["curation"]["excluded"]
    assert excluded == {"sources": [str(ids)], "listed": 3, "list_sha256": list_sha256([FIRST, SECOND, 999999999]), "excluded": 2}
    assert manifest["counts"]["conversation"]["requested"] == manifest["source"]["images"] - 2
    card = (out_dir / "README.md").read_text()
    assert "- Excluded: 2 source images named by 3 ids" in card


def test_generate_refuses_an_unknown_list_with_exit_2(generate_mock, out_dir: Path, tmp_path: Path) -> None:
    odd = write(tmp_path / "odd.csv", "a,b\n1,2\n")
    result = generate_mock(out_dir, "--exclude-images", odd, expect=2)
    assert f"--exclude-images {odd}: not a list of images" in result.output and "Traceback" not in result.output
    assert not out_dir.exists()


def test_a_train2017_source_without_exclusion_warns_once(generate_mock, out_dir: Path, tmp_path: Path, captions_path: Path) -> None:
    train = tmp_path / "captions_train2017.json"
    train.write_bytes(captions_path.read_bytes())
    result = generate_mock(out_dir, "--tasks", "conversation", captions=train, instances=None)
    assert result.output.count("warning: captions_train2017.json holds") == 1
    ids = write(tmp_path / "ids.txt", f"{FIRST}\n")
    quiet = generate_mock(tmp_path / "out2", "--tasks", "conversation", "--exclude-images", ids, captions=train, instances=None)
    assert "warning" not in quiet.output


def test_a_manifest_without_curation_keeps_its_old_shape(generate_mock, out_dir: Path) -> None:
    generate_mock(out_dir, "--tasks", "conversation")
    assert "curation" not in json.loads((out_dir / "manifest.json").read_text())


def test_a_resume_that_adds_an_exclusion_says_which_written_records_it_keeps(generate_mock, out_dir: Path, tmp_path: Path, read_jsonl) -> None:
    generate_mock(out_dir, "--tasks", "conversation,detail")
    ids = write(tmp_path / "eval_ids.txt", f"{FIRST}\n{SECOND}\n")
    resumed = generate_mock(out_dir, "--tasks", "conversation,detail", "--exclude-images", ids)
    warnings = [line for line in resumed.output.splitlines() if "records of images --exclude-images leaves out" in line]
    assert len(warnings) == 1
    assert f"--out {out_dir} already holds 4 records" in warnings[0] and "(conversation 2, detail 2)" in warnings[0]
    assert f"--cache {out_dir / 'cache.sqlite'}" in warnings[0]
    kept = {row["meta"]["image_id"] for row in read_jsonl(out_dir / "conversation.jsonl")}
    assert {FIRST, SECOND} <= kept  # said, not silently dropped: nothing written is lost
    # The way out the line gives: a new folder, the same flags and the old cache: no excluded image, nothing asked twice.
    fresh = tmp_path / "fresh"
    generate_mock(fresh, "--tasks", "conversation,detail", "--exclude-images", ids, "--cache", out_dir / "cache.sqlite")
    assert not {row["meta"]["image_id"] for row in read_jsonl(fresh / "conversation.jsonl")} & {FIRST, SECOND}
    assert json.loads((fresh / "manifest.json").read_text())["requests_sent"] == 0
    quiet = generate_mock(fresh, "--tasks", "conversation,detail", "--exclude-images", ids, "--cache", out_dir / "cache.sqlite")
    assert "records of images --exclude-images leaves out" not in quiet.output


def test_the_resume_warning_without_a_cache_says_the_images_are_asked_again(tmp_path: Path) -> None:
    assert resume_warning(tmp_path, Counter()) is None
    warning = resume_warning(tmp_path, Counter({"detail": 1}))
    assert warning is not None and "holds 1 record of images" in warning and "asked again" in warning and "--cache" not in warning
