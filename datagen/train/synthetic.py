"""A synthetic shapes data set (coloured shape on a plain background) in both record formats, for
smoke tests, the test suite and the benchmark; the answers are checkable, so learning is measurable."""
from __future__ import annotations

import json
import random
from pathlib import Path

from datagen.formats.records import place_image_token

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30)}
SHAPES = ("circle", "square", "triangle")
BRIEF = ("Describe the image briefly.", "Give a short caption for the picture.", "What is in this image?")
COLOUR_Q = "What colour is the shape?"
SHAPE_Q = "What shape is shown?"


def draw(path: Path, colour: str, shape: str, rng: random.Random, size: int = 64) -> None:
    from PIL import Image, ImageDraw

    grey = rng.randint(200, 255)
    im = Image.new("RGB", (size, size), (grey, grey, grey))
    d = ImageDraw.Draw(im)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    im.save(path)


def make_shapes(folder: str | Path, n: int, seed: int = 0, prefix: str = "img") -> list[dict]:
    """Draw n images into folder; returns [{id, image, colour, shape}]."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        name = f"{prefix}_{i:05d}.png"
        draw(folder / name, colour, shape, rng)
        items.append({"id": f"{prefix}{i:05d}", "image": name, "colour": colour, "shape": shape})
    return items


def align_records(items, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": it["id"], "image": it["image"], "conversations": [
            {"from": "human", "value": place_image_token(rng.choice(BRIEF), rng)},
            {"from": "gpt", "value": f"A {it['colour']} {it['shape']}."}]}
        for it in items
    ]


def instruct_records(items, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for it in items:
        # The colour question always comes first, so every record teaches the held-out check.
        turns = [(COLOUR_Q, f"{it['colour'].capitalize()}."), (SHAPE_Q, f"A {it['shape']}.")][: rng.choice((1, 2))]
        convs = []
        for k, (q, a) in enumerate(turns):
            convs += [{"from": "human", "value": place_image_token(q, rng) if k == 0 else q}, {"from": "gpt", "value": a}]
        records.append({"id": it["id"], "image": it["image"], "conversations": convs})
    return records


def write_json(records, path: str | Path, jsonl: bool = False) -> Path:
    path = Path(path)
    text = "\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records)
    path.write_text(text)
    return path
