"""Hostile images for `generate --see image` and the trainer's loader: 1-bit PNGs of 144 Mpx (110 KB each, gigabytes
decoded) are refused from their header and counted, with the run's peak memory measured in a subprocess; a captions
file naming a path outside --images never has that file read or sent."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from datagen.teachers.vision import MAX_IMAGE_PIXELS

REPO = Path(__file__).resolve().parent.parent
SIDE = 12_000  # 144 Mpx
PEAK_LIMIT_MB = 1536


def write_png_bomb(path: Path, side: int = SIDE) -> None:
    """A valid 1-bit greyscale PNG of side x side, all black, written row by row (the test never holds its pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def write_captions(folder: Path, names: list[str]) -> Path:
    images = [{"id": index, "file_name": name, "width": 640, "height": 480} for index, name in enumerate(names, 1)]
    captions = [{"id": index, "image_id": index, "caption": f"A picture number {index} of a red square."} for index in range(1, len(names) + 1)]
    path = folder / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": captions}))
    return path


def peak_rss_mb(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command` under a fresh Python that reports its child's peak resident memory (ru_maxrss, in MB)."""
    wrapper = (
        "import resource, subprocess, sys, json; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(json.dumps([done.returncode, done.stdout, done.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, timeout=120, cwd=REPO)
    code, stdout, stderr, peak = json.loads(result.stdout)
    return subprocess.CompletedProcess(command, code, stdout, stderr), peak


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # this test opens the bomb itself, to check it
def test_image_bombs_are_refused_from_their_header_and_counted_within_the_memory_bound(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_png_bomb(images / "bomb.png")
    assert (images / "bomb.png").stat().st_size < 200_000
    with Image.open(images / "bomb.png") as opened:
        assert opened.size == (SIDE, SIDE) and SIDE * SIDE > MAX_IMAGE_PIXELS
    names = [f"bomb{index}.png" for index in range(8)]
    for name in names:
        (images / name).write_bytes((images / "bomb.png").read_bytes())
    captions = write_captions(tmp_path, names)
    out = tmp_path / "out"
    done, peak = peak_rss_mb([sys.executable, "-m", "datagen.cli", "generate", "--teacher", "mock", "--captions", str(captions),
                              "--out", str(out), "--see", "image", "--images", str(images), "--concurrency", "16", "--no-progress"])
    assert peak < PEAK_LIMIT_MB, peak
    assert done.returncode == 1 and "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert "no record could be written (image_unreadable 24)" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(counts["skipped"] == {"image_unreadable": 8} for counts in manifest["counts"].values())


def test_paths_outside_the_images_folder_are_never_read(tmp_path):
    images, outside = tmp_path / "images", tmp_path / "outside"
    images.mkdir()
    outside.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(images / "inside.jpg")
    Image.new("RGB", (64, 48), (30, 30, 200)).save(outside / "x.jpg")
    (images / "link.jpg").symlink_to(outside / "x.jpg")
    captions = write_captions(tmp_path, ["inside.jpg", "../outside/x.jpg", str(outside / "x.jpg"), "link.jpg"])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", "--teacher", "mock", "--captions", str(captions),
                           "--out", str(out), "--see", "image", "--images", str(images), "--no-progress", "--tasks", "detail"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["detail"]["written"] == 1
    assert manifest["counts"]["detail"]["skipped"] == {"image_outside_folder": 3}
    [record] = [json.loads(line) for line in (out / "detail.jsonl").read_text().splitlines()]
    assert record["image"] == "inside.jpg" and "red" in record["conversations"][1]["value"]
