"""What a vision teacher is shown (`generate --see`): the image as an OpenAI-style `image_url` part.

Images are resized (longer side at most `max_side`) and re-encoded as baseline JPEG with fixed settings and no
metadata, so one file gives the same bytes on every run: the request stays a pure function of its inputs and
the response cache and resume keep working. PIL is imported only when an image is actually encoded or read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from datagen.formats.records import SkipReason
from datagen.tasks.token_estimate import estimate_tokens

See = Literal["text", "image", "both"]
SEE_CHOICES: tuple[See, ...] = ("text", "image", "both")
DEFAULT_IMAGE_MAX_SIDE = 768
JPEG_QUALITY = 90
DATA_URL_PREFIX = "data:image/jpeg;base64,"
# A photo of 50 Mpx is a large DSLR frame; a file claiming more is a decompression bomb (a 110 KB 1-bit PNG can
# claim 144 Mpx and take gigabytes decoded). Refused from its header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 50_000_000
# Decodes at once, whatever the run's concurrency (the caller's thread pool has this many threads): each may hold
# ~6 bytes per pixel (the file's mode, a copy, then RGB) for a format without reduced-size decoding, and each
# thread's malloc arena keeps its high-water mark, so this bounds a run's image memory (~0.6 GB at the limit).
DECODES_AT_ONCE = 2


class ImageProblem(Exception):
    """This item's image cannot be shown; `reason` is the skip reason counted in the manifest."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class EncodedImage:
    data_url: str
    sha256: str  # of the JPEG bytes sent: what records name as their provenance, never the bytes themselves
    width: int
    height: int

    def part(self) -> dict[str, object]:
        return {"type": "image_url", "image_url": {"url": self.data_url}}


def image_path(folder: Path, name: str) -> Path:
    """The file `name` names under `folder` (resolved, links followed); ImageProblem when that lies outside it
    (`../x.jpg`, an absolute path, a link out): a captions file must not make a run read and send any file."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ImageProblem("image_outside_folder", f"{name!r} lies outside --images {folder}")
    return path


def open_image(path: Path | str):
    """PIL's Image.open (the header read, no pixel decoded yet), refusing an image over MAX_IMAGE_PIXELS with a
    ValueError that says so. Our limit replaces PIL's own bomb warning, which would only clutter the console."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    opened = Image.open(path)
    if opened.width * opened.height > MAX_IMAGE_PIXELS:
        opened.close()
        raise ValueError(f"{opened.width}x{opened.height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit")
    return opened


def encode_image(path: Path, max_side: int = DEFAULT_IMAGE_MAX_SIDE) -> EncodedImage:
    try:
        status = path.stat()
    except OSError:
        raise ImageProblem("image_missing", f"{path}: no such image file") from None
    if not path.is_file():
        raise ImageProblem("image_missing", f"{path}: not a file")
    # A file rewritten in place is a new image: its size or modification time is part of the memo's key.
    return _encode_cached(str(path), status.st_size, status.st_mtime_ns, max_side)


# Each image serves up to three tasks, asked one after another: a few recent encodings spare the repeats
# while memory stays bounded however big the run.
@lru_cache(maxsize=16)
def _encode_cached(path: str, size: int, mtime_ns: int, max_side: int) -> EncodedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with open_image(path) as opened:
            longer = max(opened.size)
            if longer > max_side:
                # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale when that still covers the target (libjpeg's
                # DCT scaling): several times faster on big photos, less memory, and as deterministic as a full decode.
                scale = max_side / longer
                opened.draft("RGB", (math.ceil(opened.width * scale), math.ceil(opened.height * scale)))
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageProblem("image_unreadable", f"{path}: cannot be read as an image ({error})") from None
    longer = max(picture.size)
    if longer > max_side:
        scale = max_side / longer
        dimensions = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(dimensions, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # Fixed quality and chroma subsampling, no optimisation passes, no EXIF/ICC: the bytes depend on the pixels only.
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False, progressive=False)
    data = buffer.getvalue()
    return EncodedImage(
        data_url=DATA_URL_PREFIX + base64.b64encode(data).decode("ascii"),
        sha256=hashlib.sha256(data).hexdigest(),
        width=picture.width,
        height=picture.height,
    )


def user_content(see: See, context: str, image: EncodedImage | None) -> str | list[dict[str, object]]:
    """The last user message's content: the context as a string (text, unchanged), or parts with the image."""
    if see == "text" or image is None:
        return context
    if see == "image":
        return [image.part()]
    return [image.part(), {"type": "text", "text": context}]


def image_parts(content: object) -> list[str]:
    """The image URLs in a message's content (none for plain-string content)."""
    if not isinstance(content, list):
        return []
    return [
        part["image_url"]["url"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict) and "url" in part["image_url"]
    ]


def decode_data_url(url: str):
    """A `data:` URL's image, opened (size known, pixels read lazily); None for anything else."""
    from PIL import Image, UnidentifiedImageError

    if not url.startswith("data:") or ";base64," not in url:
        return None
    try:
        return Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1], validate=True)))
    except (ValueError, UnidentifiedImageError, OSError):
        return None


def image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's published estimate for GPT-4o-class models: 85 tokens at detail=low; at high (and auto, for
    images this size), the image scaled to fit 2048x2048, then its shorter side to 768, costs 85 + 170 per
    512-px tile. Other servers (Qwen2-VL, InternVL under vLLM) count differently; their usage is what is recorded."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    fitted_width, fitted_height = width * scale, height * scale
    scale = min(1.0, 768 / min(fitted_width, fitted_height))
    fitted_width, fitted_height = fitted_width * scale, fitted_height * scale
    return 85 + 170 * math.ceil(fitted_width / 512) * math.ceil(fitted_height / 512)


def estimate_content_tokens(content: object) -> int:
    """Rough prompt tokens of one message's content: text at about four characters a token, images by `image_tokens`."""
    return content_text_tokens(content) + content_image_tokens(content)


def content_text_tokens(content: object) -> int:
    if isinstance(content, str):
        return estimate_tokens(content)
    if not isinstance(content, list):
        return 0
    return sum(estimate_tokens(part["text"]) for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))


def content_image_tokens(content: object) -> int:
    """`image_tokens` of each image in the content; 85 (the low-detail price) for one that cannot be decoded."""
    tokens = 0
    for url in image_parts(content):
        picture = decode_data_url(url)
        tokens += image_tokens(*picture.size) if picture is not None else 85
    return tokens


_COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (200, 30, 30),
    "green": (30, 160, 30),
    "blue": (30, 30, 200),
    "yellow": (230, 220, 40),
    "orange": (240, 140, 20),
    "purple": (130, 40, 160),
    "brown": (120, 80, 40),
}


def describe_image(url: str) -> str | None:
    """What the mock teacher 'sees': the image's size and the colour nearest its mean (tests check it arrived)."""
    picture = decode_data_url(url)
    if picture is None:
        return None
    from PIL import ImageStat

    mean = ImageStat.Stat(picture.convert("RGB")).mean
    colour = min(_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(_COLOURS[name], mean)))
    return f"A mostly {colour} picture of {picture.width} by {picture.height} pixels"
