"""Synthetic COCO captions + instances files shaped like train2017, deterministic from a seed.

Full size (the default) is 118,287 images, ~591K captions and ~860K boxes with polygon or RLE
segmentations, so the instances file is about as heavy to parse as the real ~450 MB one. Files are
streamed out one entry at a time (building the whole structure first would itself need gigabytes)
and reused when they already exist for the same shape and seed.

    python bench/synth_coco.py                    # bench/work/coco-118287-s0/{captions,instances}.json
    python bench/synth_coco.py --images 2000      # a small input of the same shape
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "work"
TRAIN2017_IMAGES = 118_287
CAPTIONS_PER_IMAGE = 591_753 / TRAIN2017_IMAGES
BOXES_PER_IMAGE = 860_001 / TRAIN2017_IMAGES

# COCO's 80 categories with their real (gappy) ids; weights roughly follow train2017's box counts.
CATEGORIES = [
    (1, "person", "person", 262), (2, "bicycle", "vehicle", 7), (3, "car", "vehicle", 44), (4, "motorcycle", "vehicle", 9),
    (5, "airplane", "vehicle", 5), (6, "bus", "vehicle", 6), (7, "train", "vehicle", 5), (8, "truck", "vehicle", 10),
    (9, "boat", "vehicle", 11), (10, "traffic light", "outdoor", 13), (11, "fire hydrant", "outdoor", 2),
    (13, "stop sign", "outdoor", 2), (14, "parking meter", "outdoor", 1), (15, "bench", "outdoor", 10),
    (16, "bird", "animal", 10), (17, "cat", "animal", 5), (18, "dog", "animal", 5), (19, "horse", "animal", 7),
    (20, "sheep", "animal", 9), (21, "cow", "animal", 8), (22, "elephant", "animal", 5), (23, "bear", "animal", 1),
    (24, "zebra", "animal", 5), (25, "giraffe", "animal", 5), (27, "backpack", "accessory", 9),
    (28, "umbrella", "accessory", 11), (31, "handbag", "accessory", 12), (32, "tie", "accessory", 6),
    (33, "suitcase", "accessory", 6), (34, "frisbee", "sports", 3), (35, "skis", "sports", 7),
    (36, "snowboard", "sports", 3), (37, "sports ball", "sports", 6), (38, "kite", "sports", 9),
    (39, "baseball bat", "sports", 3), (40, "baseball glove", "sports", 4), (41, "skateboard", "sports", 6),
    (42, "surfboard", "sports", 6), (43, "tennis racket", "sports", 5), (44, "bottle", "kitchen", 24),
    (46, "wine glass", "kitchen", 8), (47, "cup", "kitchen", 20), (48, "fork", "kitchen", 5), (49, "knife", "kitchen", 8),
    (50, "spoon", "kitchen", 6), (51, "bowl", "kitchen", 14), (52, "banana", "food", 9), (53, "apple", "food", 6),
    (54, "sandwich", "food", 4), (55, "orange", "food", 6), (56, "broccoli", "food", 7), (57, "carrot", "food", 8),
    (58, "hot dog", "food", 3), (59, "pizza", "food", 6), (60, "donut", "food", 7), (61, "cake", "food", 6),
    (62, "chair", "furniture", 38), (63, "couch", "furniture", 6), (64, "potted plant", "furniture", 9),
    (65, "bed", "furniture", 4), (67, "dining table", "furniture", 16), (70, "toilet", "furniture", 4),
    (72, "tv", "electronic", 6), (73, "laptop", "electronic", 5), (74, "mouse", "electronic", 2),
    (75, "remote", "electronic", 6), (76, "keyboard", "electronic", 3), (77, "cell phone", "electronic", 6),
    (78, "microwave", "appliance", 2), (79, "oven", "appliance", 4), (80, "toaster", "appliance", 1),
    (81, "sink", "appliance", 6), (82, "refrigerator", "appliance", 3), (84, "book", "indoor", 24),
    (85, "clock", "indoor", 6), (86, "vase", "indoor", 7), (87, "scissors", "indoor", 2), (88, "teddy bear", "indoor", 5),
    (89, "hair drier", "indoor", 1), (90, "toothbrush", "indoor", 2),
]
SIZES = [(640, 480, 45), (640, 427, 25), (480, 640, 10), (640, 424, 6), (500, 375, 5), (640, 360, 4), (427, 640, 3), (612, 612, 2)]
ADJECTIVES = ["small", "large", "red", "white", "black", "young", "old", "wooden", "busy", "quiet", "bright", "dark"]
VERBS = ["sitting on", "standing next to", "parked near", "lying on", "in front of", "beside", "on top of", "under"]
PLACES = ["a street", "a table", "the grass", "a kitchen counter", "the beach", "a field", "a living room", "the snow"]


def paths(images: int, seed: int, root: Path = WORK) -> tuple[Path, Path]:
    folder = root / f"coco-{images}-s{seed}"
    return folder / "captions.json", folder / "instances.json"


def _caption(rng: random.Random, names: list[str]) -> str:
    adjective = rng.choice(ADJECTIVES)
    where = f"a {rng.choice(names)}" if rng.random() < 0.6 else rng.choice(PLACES)
    article = "An" if adjective[0] in "aeiou" else "A"
    return f"{article} {adjective} {rng.choice(names)} {rng.choice(VERBS)} {where}."


def _polygon(rng: random.Random, x: float, y: float, w: float, h: float) -> list[list[float]]:
    # Points round the box's ellipse, two decimals like COCO; real polygons average ~25 points.
    count = rng.randint(8, 40)
    cx, cy = x + w / 2, y + h / 2
    points: list[float] = []
    for index in range(count):
        angle = 6.2832 * index / count
        radius = rng.uniform(0.7, 1.0)
        points.append(round(cx + radius * w / 2 * math.cos(angle), 2))
        points.append(round(cy + radius * h / 2 * math.sin(angle), 2))
    return [points]


def _rle(rng: random.Random, width: int, height: int) -> dict:
    runs = [rng.randint(1, 400) for _ in range(rng.randint(40, 200))]
    return {"counts": runs, "size": [height, width]}


def write(images: int = TRAIN2017_IMAGES, seed: int = 0, root: Path = WORK, force: bool = False) -> tuple[Path, Path]:
    """Write (or reuse) the pair of files; returns (captions, instances)."""
    captions_path, instances_path = paths(images, seed, root)
    if captions_path.exists() and instances_path.exists() and not force:
        return captions_path, instances_path
    captions_path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(9, 581_930), images))
    category_ids = [c[0] for c in CATEGORIES]
    category_names = {c[0]: c[1] for c in CATEGORIES}
    weights = [c[3] for c in CATEGORIES]
    size_choices, size_weights = [s[:2] for s in SIZES], [s[2] for s in SIZES]
    header = {
        "info": {"description": f"datagen synthetic train2017-shaped COCO, seed {seed}", "version": "1.0", "year": 2026},
        "licenses": [{"id": i, "name": f"License {i}", "url": ""} for i in range(1, 9)],
    }
    image_entries = []
    for image_id in ids:
        width, height = rng.choices(size_choices, size_weights)[0]
        image_entries.append(
            {
                "license": rng.randint(1, 8),
                "file_name": f"{image_id:012d}.jpg",
                "coco_url": f"http://images.cocodataset.org/train2017/{image_id:012d}.jpg",
                "height": height,
                "width": width,
                "date_captured": "2013-11-14 11:18:45",
                "flickr_url": "",
                "id": image_id,
            }
        )
    temporary = [captions_path.with_suffix(".tmp"), instances_path.with_suffix(".tmp")]
    with temporary[0].open("w") as captions_file, temporary[1].open("w") as instances_file:
        for handle in (captions_file, instances_file):
            handle.write(json.dumps(header)[:-1] + ', "images": [')
            handle.write(", ".join(json.dumps(entry) for entry in image_entries))
            handle.write('], "annotations": [')
        caption_id = box_id = 0
        first_caption = first_box = True
        for entry in image_entries:
            width, height = entry["width"], entry["height"]
            box_count = min(int(rng.expovariate(1 / (BOXES_PER_IMAGE + 0.5))), 90)  # int() floors: +0.5 keeps the mean
            chosen = rng.choices(category_ids, weights, k=box_count) if box_count else []
            names = [category_names[c] for c in chosen] or ["scene"]
            for _ in range(5 if rng.random() < 0.995 else rng.choice((6, 7))):
                caption_id += 1
                line = json.dumps({"image_id": entry["id"], "id": caption_id, "caption": _caption(rng, names)})
                captions_file.write(line if first_caption else ", " + line)
                first_caption = False
            for category_id in chosen:
                box_id += 1
                w = round(rng.uniform(4, width * 0.8), 2)
                h = round(rng.uniform(4, height * 0.8), 2)
                x = round(rng.uniform(0, width - w), 2)
                y = round(rng.uniform(0, height - h), 2)
                crowd = rng.random() < 0.01
                annotation = {
                    "segmentation": _rle(rng, width, height) if crowd else _polygon(rng, x, y, w, h),
                    "area": round(w * h * 0.6, 4),
                    "iscrowd": int(crowd),
                    "image_id": entry["id"],
                    "bbox": [x, y, w, h],
                    "category_id": category_id,
                    "id": box_id,
                }
                line = json.dumps(annotation)
                instances_file.write(line if first_box else ", " + line)
                first_box = False
        captions_file.write("]}")
        categories = [{"supercategory": c[2], "id": c[0], "name": c[1]} for c in CATEGORIES]
        instances_file.write('], "categories": ' + json.dumps(categories) + "}")
    temporary[0].replace(captions_path)
    temporary[1].replace(instances_path)
    return captions_path, instances_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=TRAIN2017_IMAGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite even when the files exist")
    args = parser.parse_args()
    started = time.perf_counter()
    captions, instances = write(args.images, args.seed, force=args.force)
    took = time.perf_counter() - started
    for path in (captions, instances):
        print(f"{path} {path.stat().st_size / 1e6:.0f} MB")
    print(f"{took:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
