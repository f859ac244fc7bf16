"""Source: COCO captions and instances files -> one `ImageAnnotations` per image, hard cases handled and counted.

Files are parsed once with the json module and indexed by pycocotools, then kept as plain per-image tuples;
per-image models are built lazily from those, so only the images being worked on live as models. Given a
snapshot path, the tuples are saved there and a later start over the same files loads them instead of the JSON.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import marshal
import math
import operator
import re
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pycocotools.coco import COCO
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from datagen.errors import InputError
from datagen.files.jsonl import atomic_file


class Box(BaseModel):
    annotation_id: int
    category: str
    x1: float
    y1: float
    x2: float
    y2: float


class ImageSupport(NamedTuple):
    """Of an image, only what can support a claim that an object is in it."""

    captions: tuple[str, ...]
    categories: frozenset[str]


class ImageAnnotations(BaseModel):
    image_id: int
    file_name: str
    width: int
    height: int
    captions: list[str]
    caption_ids: list[int]
    boxes: list[Box]
    # Categories with a crowd box here, which `boxes` leaves out: a count of such a category is unknown.
    crowd: list[str] = Field(default_factory=list)


class ObjectStats(NamedTuple):
    """Of a whole instances file (crowd boxes included): each category's image count, and per category how many
    images show it with each other category, as POPE's popular and adversarial samplings need them."""

    images_with: Counter[str]
    together: dict[str, Counter[str]]


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


# -- the typed subset of COCO we read ---------------------------------------------------------------------
# Ids are integers; one written as a string of digits ("42") is normalised to it at reading, so every later
# comparison (records, resume, the instances file) sees one type. Anything else is refused in one line.

_Finite = Annotated[float, Field(allow_inf_nan=False)]


@with_config(ConfigDict(extra="allow"))
class _Image(TypedDict):
    id: int
    file_name: str
    width: int
    height: int


@with_config(ConfigDict(extra="allow"))
class _Caption(TypedDict):
    id: int
    image_id: int
    caption: str | None  # null counts as a blank caption (a hard case), like whitespace


@with_config(ConfigDict(extra="allow"))
class _Box(TypedDict):
    id: int
    image_id: int
    category_id: int
    bbox: list[_Finite]  # NaN or infinity would become a zero-width or inverted box; a length other than 4 is counted
    # iscrowd is read for its truth only: absent, 0 or 1 alike


@with_config(ConfigDict(extra="allow"))
class _Category(TypedDict):
    id: int
    name: str


_SECTIONS: dict[str, dict[str, type]] = {
    "captions": {"images": _Image, "annotations": _Caption},
    "instances": {"images": _Image, "annotations": _Box, "categories": _Category},
}
_ADAPTERS: dict[type, TypeAdapter[Any]] = {
    _Image: TypeAdapter(list[_Image]),
    _Caption: TypeAdapter(list[_Caption]),
    _Box: TypeAdapter(list[_Box]),
    _Category: TypeAdapter(list[_Category]),
}
def _finite_numbers(column: list) -> bool:
    # sum() refuses anything but numbers and carries NaN and infinity through: one C loop instead of three.
    return set(map(type, column)) <= {list} and math.isfinite(sum(chain.from_iterable(column)))


# Per annotation of the models above, whether a column of values (all the fields of that annotation, entry after
# entry) already has exactly that type; bool is no int.
_NORMAL_COLUMN = {
    "int": lambda column: set(map(type, column)) <= {int},
    "str": lambda column: set(map(type, column)) <= {str},
    "str | None": lambda column: set(map(type, column)) <= {str, type(None)},
    "list[_Finite]": _finite_numbers,
}


def _already_normal(entries: list, entry: type) -> bool:
    """Whether every entry already has the model's types exactly, checked a column at a time at C speed: the
    typed model costs seconds on train2017 and is needed only to normalise or to name a fault, when this fails.
    A field this check does not know is left to the model."""
    by_kind: dict[str, list[str]] = {}
    for key, annotation in entry.__annotations__.items():
        by_kind.setdefault(str(getattr(annotation, "__forward_arg__", annotation)), []).append(key)  # annotations are strings here
    try:
        for kind, keys in by_kind.items():
            check = _NORMAL_COLUMN.get(kind)
            values = map(operator.itemgetter(*keys), entries)
            if check is None or not check(list(chain.from_iterable(values) if len(keys) > 1 else values)):
                return False
    except (KeyError, TypeError, AttributeError):  # a missing field, an entry that is not an object, a non-number
        return False
    return True


def _where(section: str, loc: tuple) -> str:
    return section + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _validate(data: dict, path: Path, flag: str, kind: str) -> None:
    """Every entry of the sections a `kind` file must have, checked against the typed model and normalised in
    place; the first fault is one line naming the file, the entry and the field."""
    for section, entry in _SECTIONS[kind].items():
        entries = data.get(section)
        if not isinstance(entries, list):
            raise InputError(f"{flag} {path}: not a COCO {kind} file (no '{section}' list)")
        if _already_normal(entries, entry):
            continue
        try:
            data[section] = _ADAPTERS[entry].validate_python(entries)
        except ValidationError as error:
            faults = error.errors()
            first = faults[0]
            if first["type"] == "missing":
                # Every field the entry lacks, so a file of the other kind shows as one ("caption" vs "bbox").
                missing = [str(fault["loc"][-1]) for fault in faults if fault["type"] == "missing" and fault["loc"][:-1] == first["loc"][:-1]]
                problem = f"{_where(section, first['loc'][:-1])}: no {', '.join(missing)}"
            else:
                problem = f"{_where(section, first['loc'])}: {first['msg']}"
            raise InputError(f"{flag} {path}: not a valid COCO {kind} file: {problem} (fix that entry or pass the right file)") from None
    for section in _SECTIONS[kind]:
        ids = list(map(operator.itemgetter("id"), data[section]))
        if len(set(ids)) != len(ids):
            first_at: dict[int, int] = {}
            for index, value in enumerate(ids):
                if first_at.setdefault(value, index) != index:
                    raise InputError(f"{flag} {path}: {section}[{index}].id: id {value} is used twice; each {section[:-1]} needs its own id")


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


def _clean_captions(texts: tuple[tuple[int, str], ...], counts: Counter[str]) -> tuple[list[str], list[int]]:
    """An image's captions with whitespace fixed, blank and repeated ones (ignoring case) left out, and their ids."""
    captions: list[str] = []
    caption_ids: list[int] = []
    seen: set[str] = set()
    for annotation_id, raw in texts:
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
        caption_ids.append(annotation_id)
    return captions, caption_ids


# Per image of the captions file, all that `image()` reads: file_name, width, height, captions as
# (annotation id, text), boxes as (annotation id, category id, bbox, iscrowd), both in file order, and
# whether the instances file lists the image. Marshal-able as it is: the snapshot stores these rows.
_Row = tuple[str, int, int, tuple[tuple[int, str], ...], tuple[tuple[int, int, list, bool], ...], bool]


def _rows(captions: COCO, instances: COCO | None) -> dict[int, _Row]:
    rows: dict[int, _Row] = {}
    caption_anns = captions.imgToAnns
    box_anns = instances.imgToAnns if instances is not None else {}
    listed = instances.imgs if instances is not None else {}
    for image_id, info in captions.imgs.items():
        texts = tuple(
            (ann["id"], ann["caption"] if isinstance(ann.get("caption"), str) else "") for ann in caption_anns.get(image_id, ())
        )
        boxes = tuple(
            (ann["id"], ann["category_id"], ann["bbox"], bool(ann.get("iscrowd"))) for ann in box_anns.get(image_id, ())
        )
        rows[image_id] = (info["file_name"], info["width"], info["height"], texts, boxes, image_id in listed)
    return rows


def _load(captions_path: Path, instances_path: Path | None) -> dict:
    """Both files parsed and indexed, boiled down to what a source keeps (the snapshot's body)."""
    captions_data, captions_sha256 = _load_json(captions_path, "--captions")
    _validate(captions_data, captions_path, "--captions", "captions")
    captions = _index(captions_data)
    instances, instances_sha256, categories = None, None, {}
    if instances_path is not None:
        instances_data, instances_sha256 = _load_json(instances_path, "--instances", skip_segmentations=True)
        _validate(instances_data, instances_path, "--instances", "instances")
        instances = _index(instances_data)
        categories = {cat["id"]: cat["name"] for cat in instances_data["categories"]}
    return {
        "captions_sha256": captions_sha256,
        "instances_sha256": instances_sha256,
        "caption_count": len(captions.anns),
        "box_count": len(instances.anns) if instances is not None else 0,
        "categories": categories,
        "rows": _rows(captions, instances),
    }


# -- the snapshot: MAGIC, header size, header, body; header and body marshalled ---------------------------

# marshal's format may change between Python versions and the rows' layout with this module: either bumps the key.
_SNAPSHOT_FORMAT = (1, marshal.version, sys.version_info[:2])
_MAGIC = b"datagen source index\n"
_SIZE = struct.Struct("<Q")


def _identity(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _identities(paths: list[Path | None]) -> list | None:
    """Each file's resolved path, size and mtime: equal ones are taken as the same file, unread."""
    try:
        return [None if path is None else _identity(path) for path in paths]
    except OSError:
        return None  # the full load reports the missing file


def _read_snapshot(path: Path, inputs: list) -> dict | None:
    """The snapshot's body when it was made from these very inputs by this code, else None."""
    try:
        with path.open("rb") as handle:
            if handle.read(len(_MAGIC)) != _MAGIC:
                return None
            (header_size,) = _SIZE.unpack(handle.read(_SIZE.size))
            header = marshal.loads(handle.read(header_size))
            if header["format"] != _SNAPSHOT_FORMAT or header["inputs"] != inputs:
                return None
            body = handle.read()
        if len(body) != header["body_size"] or zlib.crc32(body) != header["body_crc32"]:
            return None
        return marshal.loads(body)
    except (OSError, ValueError, EOFError, TypeError, KeyError, struct.error):
        return None  # missing, torn or foreign: a full load rewrites it


def _write_snapshot(path: Path, inputs: list, state: dict) -> None:
    body = marshal.dumps(state)
    header = marshal.dumps({"format": _SNAPSHOT_FORMAT, "inputs": inputs, "body_size": len(body), "body_crc32": zlib.crc32(body)})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:  # a reader sees the old snapshot or the whole new one, never half of it
        handle.write(_MAGIC + _SIZE.pack(len(header)) + header)
        handle.write(body)


_NO_CASES: Counter[str] = Counter()  # shared by the many images with none; only ever read


class CocoSource:
    """Both files, indexed; iterating yields images that have at least one usable caption, by id.

    With `snapshot`, a file path, the indexed form is saved there after a full load and read back instead of
    the JSON when both input files still have the path, size and mtime they had then.
    """

    def __init__(self, captions_path: Path, instances_path: Path | None, snapshot: Path | None = None) -> None:
        self.captions_path = captions_path
        self.instances_path = instances_path
        with _gc_paused():
            # Identities are taken before reading: a file changed during the load then never matches its snapshot.
            inputs = _identities([captions_path, instances_path]) if snapshot is not None else None
            state = _read_snapshot(snapshot, inputs) if snapshot is not None and inputs is not None else None
            self.loaded_from_snapshot = state is not None
            if state is None:
                state = _load(captions_path, instances_path)
                if snapshot is not None and inputs is not None:
                    _write_snapshot(snapshot, inputs, state)
        self.captions_sha256: str = state["captions_sha256"]
        self.instances_sha256: str | None = state["instances_sha256"]
        self._caption_count: int = state["caption_count"]
        self._box_count: int = state["box_count"]
        self._categories: dict[int, str] = state["categories"]
        self._rows: dict[int, _Row] = state["rows"]
        self.image_ids: list[int] = sorted(self._rows)
        self.hard_cases: Counter[str] = Counter()
        self._cases_of: dict[int, Counter[str]] = {}
        self._support: dict[int, ImageSupport | None] = {}
        self._object_stats: ObjectStats | None = None

    @property
    def has_boxes(self) -> bool:
        return self.instances_path is not None

    def caption_count(self) -> int:
        return self._caption_count

    def box_count(self) -> int:
        return self._box_count

    def count_hard_cases(self, image_ids: list[int]) -> Counter[str]:
        """The hard cases among these images, however many of them this process has built so far."""
        hard_cases: Counter[str] = Counter()
        for image_id in image_ids:
            if image_id in self._cases_of:
                hard_cases.update(self._cases_of[image_id])
            else:
                self.image(image_id, hard_cases)
        return hard_cases

    def file_name(self, image_id: int) -> str:
        """The image's file name, without building its annotations."""
        return self._rows[image_id][0]

    def image(self, image_id: int, hard_cases: Counter[str] | None = None) -> ImageAnnotations | None:
        """The image's annotations, cleaned; None (and counted) when it has no usable caption."""
        found: Counter[str] = Counter()
        image = self._build(image_id, found)
        # Kept per image, so the manifest's recount at the end of a run does not build every image again.
        self._cases_of[image_id] = found or _NO_CASES
        (self.hard_cases if hard_cases is None else hard_cases).update(found)
        return image

    def _build(self, image_id: int, counts: Counter[str]) -> ImageAnnotations | None:
        file_name, width, height, texts, boxes, listed = self._rows[image_id]
        captions, caption_ids = _clean_captions(texts, counts)
        if not captions:
            counts["images_without_captions"] += 1
            return None
        return ImageAnnotations(
            image_id=image_id,
            file_name=file_name,
            width=width,
            height=height,
            captions=captions,
            caption_ids=caption_ids,
            boxes=self._boxes(boxes, listed, width, height, counts),
            crowd=sorted({self._categories[cat] for _, cat, _, crowd in boxes if crowd and cat in self._categories}),
        )

    def object_stats(self) -> ObjectStats:
        """Counted once per source, on first use: only tasks that sample absent objects need it."""
        if self._object_stats is None:
            images_with: Counter[str] = Counter()
            together: dict[str, Counter[str]] = {name: Counter() for name in self._categories.values()}
            for _, _, _, _, boxes, _ in self._rows.values():
                present = {self._categories[cat] for _, cat, _, _ in boxes if cat in self._categories}
                images_with.update(present)
                for name in present:
                    together[name].update(present - {name})
            self._object_stats = ObjectStats(images_with, together)
        return self._object_stats

    def support(self, image_id: int) -> ImageSupport | None:
        """What grounding needs of an image, its cleaned captions and the categories of the boxes `image()` keeps,
        without placing the boxes (an audit of a whole released file needs no more); None when it has no usable
        caption. Nothing is counted: the hard cases belong to the images a run sends. Kept per image, a few
        hundred bytes each: an image's records share it (LLaVA's files hold two or three per image)."""
        if image_id in self._support:
            return self._support[image_id]
        self._support[image_id] = support = self._find_support(image_id)
        return support

    def _find_support(self, image_id: int) -> ImageSupport | None:
        file_name, width, height, texts, boxes, listed = self._rows[image_id]
        ignored: Counter[str] = Counter()
        captions, _ = _clean_captions(texts, ignored)
        if not captions:
            return None
        categories = frozenset(name for _, name, _ in self._kept_boxes(boxes, listed, width, height, ignored))
        return ImageSupport(tuple(captions), categories)

    def _boxes(self, anns: tuple, listed: bool, width: int, height: int, counts: Counter[str]) -> list[Box]:
        boxes = []
        for annotation_id, name, bbox in self._kept_boxes(anns, listed, width, height, counts):
            corners, clipped = normalised_box(bbox, width, height)
            if clipped:
                counts["boxes_clipped"] += 1
            boxes.append(Box(annotation_id=annotation_id, category=name, x1=corners[0], y1=corners[1], x2=corners[2], y2=corners[3]))
        return boxes

    def _kept_boxes(self, anns: tuple, listed: bool, width: int, height: int, counts: Counter[str]) -> Iterator[tuple[int, str, list]]:
        """(annotation id, category name, COCO bbox) of the boxes an image shows, the others counted by why."""
        if not self.has_boxes:
            return
        if width <= 0 or height <= 0:
            # Boxes are normalised by the image size; without one they cannot be placed.
            counts["images_without_size"] += 1
            return
        if not listed:
            counts["images_missing_from_instances"] += 1
        if not anns:
            counts["images_without_boxes"] += 1
        for annotation_id, category_id, bbox, crowd in anns:
            if crowd:
                # A crowd box covers many objects; shown as one "person" it would teach a wrong count.
                counts["boxes_crowd_skipped"] += 1
                continue
            name = self._categories.get(category_id)
            if name is None:
                counts["boxes_unknown_category"] += 1
                continue
            if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
                counts["boxes_degenerate_skipped"] += 1
                continue
            yield annotation_id, name, bbox

    def images(self, image_ids: list[int] | None = None) -> Iterator[ImageAnnotations]:
        for image_id in self.image_ids if image_ids is None else image_ids:
            image = self.image(image_id)
            if image is not None:
                yield image


class ImageObjects(BaseModel):
    """One image of an instances file, as object-presence evals (POPE) see it: the distinct categories annotated."""

    image_id: int
    file_name: str
    objects: list[str]  # distinct category names, in the order of their first annotation


def image_objects(instances_path: Path, flag: str = "--instances") -> tuple[list[ImageObjects], str]:
    """Every image of a COCO instances file with its object categories, by id; and the file's sha256.
    Crowd boxes count (a crowd of people shows a person); annotations of unknown categories do not."""
    with _gc_paused():
        data, digest = _load_json(instances_path, flag, skip_segmentations=True)
        _validate(data, instances_path, flag, "instances")
        names = {category["id"]: category["name"] for category in data["categories"]}
        coco = _index(data)
    images = []
    for image_id in sorted(coco.imgs):
        found = dict.fromkeys(names[ann["category_id"]] for ann in coco.imgToAnns.get(image_id, ()) if ann["category_id"] in names)
        images.append(ImageObjects(image_id=image_id, file_name=coco.imgs[image_id]["file_name"], objects=list(found)))
    return images, digest
