"""Synthetic COCO files of any size for tests that need more images than the bundled sample."""

from __future__ import annotations

import json
import random
from pathlib import Path

CATEGORIES = [(1, "person"), (3, "car"), (18, "dog"), (17, "cat"), (62, "chair"), (44, "bottle"), (6, "bus"), (2, "bicycle")]
PLACES = ["in a park", "on a city street", "in a kitchen", "near a lake", "inside a small cafe", "at a train station"]


def write_coco(folder: Path, images: int, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    image_rows, captions, boxes = [], [], []
    for image_id in range(1, images + 1):
        width, height = rng.choice([(640, 480), (480, 640), (640, 427)])
        image_rows.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        objects = rng.sample(CATEGORIES, rng.randint(1, 3))
        names = " and ".join(f"a {name}" for _, name in objects)
        place = rng.choice(PLACES)
        # Worded apart, as real captions are: the mock teacher quotes them, and a long run of words said twice is a loop.
        for variant in (f"There is {names} {place}.", f"A photo taken {place}, showing {names}.", f"{place.capitalize()}: {names}."):
            captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": variant})
        for category_id, _ in objects:
            x, y = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
            w, h = rng.uniform(20, width - x), rng.uniform(20, height - y)
            boxes.append({"id": len(boxes) + 1, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
                          "area": w * h, "iscrowd": 0, "segmentation": []})
    categories = [{"id": category_id, "name": name, "supercategory": "thing"} for category_id, name in CATEGORIES]
    captions_path, instances_path = folder / "captions.json", folder / "instances.json"
    captions_path.write_text(json.dumps({"images": image_rows, "annotations": captions}))
    instances_path.write_text(json.dumps({"images": image_rows, "annotations": boxes, "categories": categories}))
    return captions_path, instances_path
