"""Source: COCO captions and instances files -> one `ImageAnnotations` per image, hard cases handled and counted.

Files are parsed once with the json module and indexed by pycocotools; per-image models are built
lazily, so a 118K-image run starts in seconds and only the images being worked on live as models.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycocotools.coco import COCO
from pydantic import BaseModel

from datagen.errors import InputError


class Box(BaseModel):
    annotation_id: int
    category: str
    x1: float
    y1: float
    x2: float
    y2: float


class ImageAnnotations(BaseModel):
    image_id: int
    file_name: str
    width: int
    height: int
    captions: list[str]
    caption_ids: list[int]
    boxes: list[Box]


# A "segmentation" member as COCO writes it: polygons [[x, y, ...], ...] (numbers only inside), [], or an RLE
# {"counts": ..., "size": [h, w]} (compressed counts use the characters 0-o, never a brace). Anything else is left alone.
_SEGMENTATION = re.compile(rb'"segmentation"\s*:\s*(?:\[\s*(?:\[[^\]]*\](?:\s*,\s*\[[^\]]*\])*\s*)?\]|\{[^{}]*\})')


def _load_json(path: Path, flag: str, skip_segmentations: bool = False) -> tuple[dict, str]:
    """The parsed file and the sha256 of its bytes (a resumed run checks its inputs did not change)."""
    if not path.is_file():
        raise InputError(f"{flag} {path}: file not found; pass the path of a COCO JSON file")
    try:
        raw = path.read_bytes()
        # hashlib lets go of the GIL on big inputs: the digest is computed on another core while this one parses.
        hashing = ThreadPoolExecutor(1)
        digest_future = hashing.submit(lambda data: hashlib.sha256(data).hexdigest(), raw)
        hashing.shutdown(wait=False)
        if skip_segmentations:
            # Masks are ~85% of train2017's instances file and we only show boxes: nulled before parsing, they
            # cost neither the parse time nor the gigabytes their float lists would take as Python objects.
            raw = _SEGMENTATION.sub(b'"segmentation":null', raw)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            if not skip_segmentations:
                raise
            # Report the error where it is in the file, not in the nulled copy.
            data = json.loads(path.read_bytes())
        del raw
        digest = digest_future.result()
    except json.JSONDecodeError as error:
        raise InputError(
            f"{flag} {path}: not valid JSON (line {error.lineno}, column {error.colno}); re-download or fix the file"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path}: not UTF-8 text; pass a COCO JSON file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise InputError(f"{flag} {path}: not a COCO file (needs 'images' and 'annotations' lists)")
    return data, digest


def _require_keys(data: dict, path: Path, flag: str, kind: str, keys: tuple[str, ...]) -> None:
    for section, required in (("images", ("id", "file_name", "width", "height")), ("annotations", keys)):
        if data[section] and not all(key in data[section][0] for key in required):
            raise InputError(
                f"{flag} {path}: not a COCO {kind} file ({section} need the keys {', '.join(required)})"
            )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing and indexing build millions of containers, none of them garbage: collector passes over them
    while they are built cost ~20% of train2017's load time and free nothing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _index(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines we do not want
        coco.createIndex()
    return coco


def normalise_caption(text: str) -> str:
    return " ".join(text.split())


def normalised_box(bbox: list[float], width: int, height: int) -> tuple[tuple[float, float, float, float], bool]:
    """COCO [x, y, w, h] in pixels -> corners in 0..1 rounded to 3 decimals; also whether it had to be clipped."""
    # Unrolled (no generators): this runs for every box of every image on the request path.
    x, y, w, h = float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])
    x1, y1, x2, y2 = x / width, y / height, (x + w) / width, (y + h) / height
    c1, c2, c3, c4 = min(1.0, max(0.0, x1)), min(1.0, max(0.0, y1)), min(1.0, max(0.0, x2)), min(1.0, max(0.0, y2))
    clipped = c1 != x1 or c2 != y1 or c3 != x2 or c4 != y2
    return (round(c1, 3), round(c2, 3), round(c3, 3), round(c4, 3)), clipped


_NO_CASES: Counter[str] = Counter()  # shared by the many images with none; only ever read


class CocoSource:
    """Both files, indexed; iterating yields images that have at least one usable caption, by id."""

    def __init__(self, captions_path: Path, instances_path: Path | None) -> None:
        self.captions_path = captions_path
        self.instances_path = instances_path
        self._instances: COCO | None = None
        self._categories: dict[int, str] = {}
        self.instances_sha256: str | None = None
        with _gc_paused():
            self._load(captions_path, instances_path)
        self.image_ids: list[int] = sorted(self._captions.imgs)
        self.hard_cases: Counter[str] = Counter()
        self._cases_of: dict[int, Counter[str]] = {}

    def _load(self, captions_path: Path, instances_path: Path | None) -> None:
        captions_data, self.captions_sha256 = _load_json(captions_path, "--captions")
        _require_keys(captions_data, captions_path, "--captions", "captions", ("image_id", "caption"))
        self._captions = _index(captions_data)
        if instances_path is not None:
            instances_data, self.instances_sha256 = _load_json(instances_path, "--instances", skip_segmentations=True)
            _require_keys(instances_data, instances_path, "--instances", "instances", ("image_id", "category_id", "bbox"))
            if not isinstance(instances_data.get("categories"), list):
                raise InputError(f"--instances {instances_path}: not a COCO instances file (no 'categories' list)")
            self._instances = _index(instances_data)
            self._categories = {cat["id"]: cat["name"] for cat in instances_data["categories"]}

    @property
    def has_boxes(self) -> bool:
        return self._instances is not None

    def caption_count(self) -> int:
        return len(self._captions.anns)

    def box_count(self) -> int:
        return len(self._instances.anns) if self._instances is not None else 0

    def count_hard_cases(self, image_ids: list[int]) -> Counter[str]:
        """The hard cases among these images, however many of them this process has built so far."""
        hard_cases: Counter[str] = Counter()
        for image_id in image_ids:
            if image_id in self._cases_of:
                hard_cases.update(self._cases_of[image_id])
            else:
                self.image(image_id, hard_cases)
        return hard_cases

    def image(self, image_id: int, hard_cases: Counter[str] | None = None) -> ImageAnnotations | None:
        """The image's annotations, cleaned; None (and counted) when it has no usable caption."""
        found: Counter[str] = Counter()
        image = self._build(image_id, found)
        # Kept per image, so the manifest's recount at the end of a run does not build every image again.
        self._cases_of[image_id] = found or _NO_CASES
        (self.hard_cases if hard_cases is None else hard_cases).update(found)
        return image

    def _build(self, image_id: int, counts: Counter[str]) -> ImageAnnotations | None:
        info = self._captions.imgs[image_id]
        captions: list[str] = []
        caption_ids: list[int] = []
        seen: set[str] = set()
        for ann in self._captions.imgToAnns.get(image_id, []):
            raw = ann["caption"] if isinstance(ann.get("caption"), str) else ""
            text = normalise_caption(raw)
            if text != raw:
                counts["captions_whitespace_fixed"] += 1
            if not text:
                counts["captions_blank"] += 1
                continue
            folded = text.casefold()
            if folded in seen:
                counts["captions_duplicate"] += 1
                continue
            seen.add(folded)
            captions.append(text)
            caption_ids.append(ann["id"])
        if not captions:
            counts["images_without_captions"] += 1
            return None
        return ImageAnnotations(
            image_id=image_id,
            file_name=info["file_name"],
            width=info["width"],
            height=info["height"],
            captions=captions,
            caption_ids=caption_ids,
            boxes=self._boxes(image_id, info["width"], info["height"], counts),
        )

    def _boxes(self, image_id: int, width: int, height: int, counts: Counter[str]) -> list[Box]:
        if self._instances is None:
            return []
        if width <= 0 or height <= 0:
            # Boxes are normalised by the image size; without one they cannot be placed.
            counts["images_without_size"] += 1
            return []
        if image_id not in self._instances.imgs:
            counts["images_missing_from_instances"] += 1
        anns = self._instances.imgToAnns.get(image_id, [])
        if not anns:
            counts["images_without_boxes"] += 1
        boxes = []
        for ann in anns:
            if ann.get("iscrowd"):
                # A crowd box covers many objects; shown as one "person" it would teach a wrong count.
                counts["boxes_crowd_skipped"] += 1
                continue
            name = self._categories.get(ann["category_id"])
            if name is None:
                counts["boxes_unknown_category"] += 1
                continue
            bbox = ann["bbox"]
            if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
                counts["boxes_degenerate_skipped"] += 1
                continue
            corners, clipped = normalised_box(bbox, width, height)
            if clipped:
                counts["boxes_clipped"] += 1
            boxes.append(Box(annotation_id=ann["id"], category=name, x1=corners[0], y1=corners[1], x2=corners[2], y2=corners[3]))
        return boxes

    def images(self, image_ids: list[int] | None = None) -> Iterator[ImageAnnotations]:
        for image_id in self.image_ids if image_ids is None else image_ids:
            image = self.image(image_id)
            if image is not None:
                yield image
