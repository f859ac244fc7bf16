"""Source (datagen/source/coco.py) and context (datagen/source/context.py): rendering, hard cases, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.source.coco import Box, CocoSource, ImageAnnotations, normalise_caption, normalised_box
from datagen.source.context import render_context
from datagen.tasks.registry import DEFAULT_TASKS, TASKS
from datagen.errors import InputError


@pytest.fixture(scope="module")
def source() -> CocoSource:
    root = Path(__file__).resolve().parent.parent / "data"
    return CocoSource(root / "captions.json", root / "instances.json")


def fresh_source(captions_path: Path, instances_path: Path | None) -> CocoSource:
    return CocoSource(captions_path, instances_path)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# -- rendering ------------------------------------------------------------------------------------


def hand_built() -> ImageAnnotations:
    return ImageAnnotations(
        image_id=7,
        file_name="000000000007.jpg",
        width=640,
        height=480,
        captions=["A dog on a sofa.", "A brown dog naps."],
        caption_ids=[1, 2],
        boxes=[
            Box(annotation_id=10, category="dog", x1=0.63, y1=0.0, x2=1.0, y2=0.5),
            Box(annotation_id=11, category="couch", x1=0.0, y1=0.125, x2=0.9, y2=1.0),
        ],
    )


def test_render_captions_and_boxes_golden() -> None:
    assert render_context(hand_built(), "captions+boxes") == (
        "A dog on a sofa.\nA brown dog naps.\n\ndog: [0.63, 0.0, 1.0, 0.5]\ncouch: [0.0, 0.125, 0.9, 1.0]"
    )


def test_render_captions_only_golden() -> None:
    assert render_context(hand_built(), "captions") == "A dog on a sofa.\nA brown dog naps."


def test_render_without_boxes_has_no_trailing_blank_line() -> None:
    image = hand_built().model_copy(update={"boxes": []})
    text = render_context(image, "captions+boxes")
    assert text == "A dog on a sofa.\nA brown dog naps."
    assert not text.endswith("\n")


def test_default_contexts_follow_llava() -> None:
    assert {name: TASKS[name].default_context for name in DEFAULT_TASKS} == {"conversation": "captions", "detail": "captions+boxes", "complex_reasoning": "captions+boxes"}


def test_normalised_box_rounds_to_three_decimals_and_reports_clipping() -> None:
    assert normalised_box([0.0, 88.6, 298.4, 250.2], 640, 427) == ((0.0, 0.207, 0.466, 0.793), False)
    corners, clipped = normalised_box([470.3, -6.2, 185.9, 420.0], 640, 480)
    assert corners == (0.735, 0.0, 1.0, 0.862) and clipped
    # Touching the border is not crossing it.
    assert normalised_box([452.7, 230.1, 187.3, 120.5], 640, 427)[1] is False


def test_real_image_golden_border_touching(source: CocoSource) -> None:
    image = source.image(100027)
    assert render_context(image, "captions+boxes") == (
        "A red double-decker bus pulls up at a busy city intersection.\n"
        "A city street with a bus on the left and a silver car on the right.\n"
        "A pedestrian waits at the crosswalk as a bus and a car pass by.\n"
        "Traffic moving through a downtown junction under a traffic light.\n"
        "A large red bus and a small car share a street in the city.\n"
        "\n"
        "bus: [0.0, 0.207, 0.466, 0.793]\n"
        "car: [0.707, 0.539, 1.0, 0.821]\n"
        "traffic light: [0.547, 0.048, 0.583, 0.189]\n"
        "person: [0.501, 0.492, 0.564, 0.798]"
    )
    assert [box.annotation_id for box in image.boxes] == [700005, 700006, 700007, 700008]  # annotation order
    assert image.file_name == "000000100027.jpg" and (image.width, image.height) == (640, 427)


def test_real_image_golden_clipped_box(source: CocoSource) -> None:
    image = source.image(100096)
    assert render_context(image, "captions+boxes").split("\n\n")[1] == (
        "giraffe: [0.735, 0.0, 1.0, 0.862]\ngiraffe: [0.188, 0.126, 0.438, 0.918]"
    )
    for box in image.boxes:
        for value in (box.x1, box.y1, box.x2, box.y2):
            assert 0.0 <= value <= 1.0
    assert (image.boxes[0].y1, image.boxes[0].x2) == (0.0, 1.0)  # exactly, not -0.013 or 1.025


def test_every_sample_box_is_in_unit_square_and_ordered(source: CocoSource) -> None:
    for image in source.images():
        for box in image.boxes:
            assert 0.0 <= box.x1 <= box.x2 <= 1.0 and 0.0 <= box.y1 <= box.y2 <= 1.0
            assert round(box.x1, 3) == box.x1 and round(box.y2, 3) == box.y2


# -- hard cases of the sample -------------------------------------------------------------------


def test_sample_hard_case_counts(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    images = list(src.images())
    assert len(images) == 22
    assert dict(src.hard_cases) == {
        "captions_whitespace_fixed": 5,
        "captions_duplicate": 2,
        "boxes_crowd_skipped": 1,
        "boxes_degenerate_skipped": 1,
        "boxes_clipped": 1,
        "images_without_boxes": 2,  # 100061 (no annotations) and 100117 (absent from instances)
        "images_missing_from_instances": 1,
    }


def test_whitespace_fixed(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100042)
    assert image.captions == [
        "A small kitchen with a white refrigerator and a microwave on the counter.",
        "A kitchen counter with a bowl of bananas and a toaster.",
        "A tidy kitchen with a fridge, an oven and a sink.",
        "A bright kitchen with white appliances and a fruit bowl.",
        "The corner of a home kitchen, seen from the doorway.",
    ]
    assert src.hard_cases["captions_whitespace_fixed"] == 4
    assert normalise_caption("\t a  b \n") == "a b"


def test_duplicates_dropped_including_case_and_space_variants(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100084)
    assert image.captions == [
        "A gray cat curled up on a white bed.",
        "A sleepy cat naps on a neatly made bed next to a teddy bear.",
        "A cat sleeping on the bedspread beside a stuffed bear.",
    ]
    assert image.caption_ids == [500030, 500033, 500034]  # the first occurrence is kept
    assert src.hard_cases["captions_duplicate"] == 2


def test_crowd_box_skipped(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100058)
    ids = [box.annotation_id for box in image.boxes]
    assert 700018 not in ids and ids == [700019, 700020, 700021, 700022, 700023, 700024]
    assert "person: [0.0, 0.0, 1.0, 0.397]" not in render_context(image, "captions+boxes")
    assert src.hard_cases["boxes_crowd_skipped"] == 1


def test_degenerate_box_skipped(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100103)
    assert [box.category for box in image.boxes] == ["person", "tennis racket"]
    assert "sports ball" not in render_context(image, "captions+boxes")
    assert src.hard_cases == {"boxes_degenerate_skipped": 1}


def test_clipped_box_counted(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    src.image(100096)
    assert src.hard_cases == {"boxes_clipped": 1}
    src2 = fresh_source(captions_path, instances_path)
    src2.image(100027)  # touching the border is not clipping
    assert "boxes_clipped" not in src2.hard_cases


def test_image_without_boxes_renders_captions_only(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100061)
    assert image.boxes == []
    text = render_context(image, "captions+boxes")
    assert text == "\n".join(image.captions) and "\n\n" not in text and not text.endswith("\n")
    assert src.hard_cases == {"images_without_boxes": 1}


def test_image_missing_from_instances(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100117)
    assert image is not None and image.boxes == [] and len(image.captions) == 4
    assert src.hard_cases["images_missing_from_instances"] == 1


def test_non_ascii_kept_intact(captions_path: Path, instances_path: Path) -> None:
    src = fresh_source(captions_path, instances_path)
    image = src.image(100079)
    text = render_context(image, "captions+boxes")
    for word in ("café", "São Paulo", "naïve", "—"):
        assert word in text
    assert "\\u" not in text


def test_captions_only_source_has_no_boxes(captions_path: Path) -> None:
    src = CocoSource(captions_path, None)
    assert not src.has_boxes and src.box_count() == 0
    assert all(image.boxes == [] for image in src.images())
    assert src.caption_count() == 94 and len(src.image_ids) == 22


def test_image_ids_sorted(source: CocoSource) -> None:
    assert source.image_ids == sorted(source.image_ids)


def test_support_is_what_image_gives_grounding_built_once_per_image(source: CocoSource) -> None:
    for image_id in source.image_ids:
        image, support = source.image(image_id), source.support(image_id)
        if image is None:
            assert support is None
            continue
        assert support is not None and support.captions == tuple(image.captions)
        assert support.categories == frozenset(box.category for box in image.boxes)
        assert source.support(image_id) is support  # kept: an image's records share it


def test_tiny_coco_edge_cases(tmp_path: Path) -> None:
    captions = write_json(
        tmp_path / "caps.json",
        {
            "images": [
                {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50},
                {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
                {"id": 3, "file_name": "c.jpg", "width": 100, "height": 50},
            ],
            "annotations": [
                {"id": 11, "image_id": 1, "caption": "A cat."},
                {"id": 12, "image_id": 2, "caption": "   "},  # blank once cleaned
                {"id": 13, "image_id": 1, "caption": "A CAT. "},  # duplicate by case and space
            ],
        },
    )
    instances = write_json(
        tmp_path / "inst.json",
        {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
            "annotations": [
                {"id": 21, "image_id": 1, "category_id": 1, "bbox": [-10, -10, 200, 100], "iscrowd": 0},
                {"id": 22, "image_id": 1, "category_id": 99, "bbox": [0, 0, 10, 10], "iscrowd": 0},
                {"id": 23, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, -1], "iscrowd": 0},
                {"id": 24, "image_id": 1, "category_id": 1, "bbox": [25, 10, 50, 20], "iscrowd": 0},
            ],
            "categories": [{"id": 1, "name": "cat"}],
        },
    )
    src = CocoSource(captions, instances)
    assert src.image_ids == [1, 2, 3]
    images = list(src.images())
    assert [image.image_id for image in images] == [1]  # 2 only has a blank caption, 3 none at all
    assert images[0].captions == ["A cat."]
    assert render_context(images[0], "captions+boxes") == "A cat.\n\ncat: [0.0, 0.0, 1.0, 1.0]\ncat: [0.25, 0.2, 0.75, 0.6]"
    assert src.hard_cases["boxes_clipped"] == 1
    assert src.hard_cases["boxes_unknown_category"] == 1
    assert src.hard_cases["boxes_degenerate_skipped"] == 1
    assert src.hard_cases["captions_blank"] == 1
    assert src.hard_cases["images_without_captions"] == 2
    assert src.hard_cases["captions_duplicate"] == 1


# -- bad input ------------------------------------------------------------------------------------


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path: Path, instances_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(InputError) as error:
        CocoSource(missing, instances_path)
    assert_one_line_naming(error, missing, "--captions", "not found")


def test_broken_json_names_file_and_line(tmp_path: Path, captions_path: Path) -> None:
    broken = tmp_path / "inst.json"
    broken.write_text('{\n  "images": [],\n  "annotations": [,]\n}\n', encoding="utf-8")
    with pytest.raises(InputError) as error:
        CocoSource(captions_path, broken)
    assert_one_line_naming(error, broken, "--instances", "line 3")


@pytest.mark.parametrize(
    "content",
    [[1, 2, 3], {"info": {}}, {"images": {}, "annotations": []}, "just a string"],
    ids=["list", "no-sections", "images-not-list", "string"],
)
def test_json_that_is_not_coco(tmp_path: Path, content: object) -> None:
    path = write_json(tmp_path / "other.json", content)
    with pytest.raises(InputError) as error:
        CocoSource(path, None)
    assert_one_line_naming(error, path, "not a COCO")


def test_captions_file_without_caption_key(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "caps.json",
        {"images": [{"id": 1, "file_name": "a.jpg", "width": 1, "height": 1}], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]},
    )
    with pytest.raises(InputError) as error:
        CocoSource(path, None)
    assert_one_line_naming(error, path, "caption")


def test_instances_file_without_categories(tmp_path: Path, captions_path: Path) -> None:
    path = write_json(
        tmp_path / "inst.json",
        {"images": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]},
    )
    with pytest.raises(InputError) as error:
        CocoSource(captions_path, path)
    assert_one_line_naming(error, path, "--instances", "categories")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"images": [], "annotations": [{"caption": "caf\xe9"}]}')
    with pytest.raises(InputError) as error:
        CocoSource(path, None)
    assert_one_line_naming(error, path, "UTF-8")


def test_swapped_files_are_named(captions_path: Path, instances_path: Path) -> None:
    with pytest.raises(InputError) as error:
        CocoSource(captions_path, captions_path)  # a captions file where the instances file belongs
    assert_one_line_naming(error, captions_path, "--instances", "bbox")
    with pytest.raises(InputError) as error:
        CocoSource(instances_path, None)  # an instances file where the captions file belongs
    assert_one_line_naming(error, instances_path, "--captions", "caption")
