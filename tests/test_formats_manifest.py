"""The manifest's one reader and writer (formats/manifest.py): what a run wrote reads back as the model and as
plain JSON, byte for byte as before; a broken or missing one is told apart from a good one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.formats.manifest import (
    MANIFEST_FILE, UnreadableManifest, load_manifest, manifest_or_none, read_manifest_json, write_manifest,
)


def test_a_run_manifest_reads_back_and_rewrites_to_the_same_bytes(generate_mock, tmp_path: Path):
    run = tmp_path / "run"
    generate_mock(run, "--limit", 2)
    written = (run / MANIFEST_FILE).read_bytes()
    manifest = load_manifest(run)
    assert read_manifest_json(run) == manifest_or_none(run) == json.loads(written)
    copy = tmp_path / "copy"
    copy.mkdir()
    write_manifest(copy, manifest)
    assert (copy / MANIFEST_FILE).read_bytes() == written  # what pipeline.py and merge.py wrote before
    assert load_manifest(copy).fingerprint == manifest.fingerprint


@pytest.mark.parametrize("content", [b"{broken", b"\xff\xfe", b"[1, 2]"])
def test_a_broken_manifest_is_none_to_the_lenient_reader(tmp_path: Path, content: bytes):
    (tmp_path / MANIFEST_FILE).write_bytes(content)
    assert manifest_or_none(tmp_path) is None
    if content != b"[1, 2]":
        with pytest.raises(UnreadableManifest, match="not valid JSON"):
            read_manifest_json(tmp_path)
    assert manifest_or_none(tmp_path / "missing") is None
    with pytest.raises(OSError):
        read_manifest_json(tmp_path / "missing")
