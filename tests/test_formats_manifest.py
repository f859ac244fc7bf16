"""The manifest's one reader and writer (formats/manifest.py): what a run wrote reads back as the model and as
plain JSON, byte for byte as before; a folder that is not a run, or a manifest that is broken, is one line
naming the folder or file and the fix, exit 2, for every command that reads one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.formats.manifest import MANIFEST_FILE, load_run_manifest, manifest_or_none, read_run_manifest, write_manifest
from tests.conftest import CAPTIONS


def test_a_run_manifest_reads_back_and_rewrites_to_the_same_bytes(generate_mock, tmp_path: Path):
    run = tmp_path / "run"
    generate_mock(run, "--limit", 2)
    written = (run / MANIFEST_FILE).read_bytes()
    manifest = load_run_manifest(run, "merge")
    assert read_run_manifest(run, "report") == manifest_or_none(run) == json.loads(written)
    copy = tmp_path / "copy"
    copy.mkdir()
    write_manifest(copy, manifest)
    assert (copy / MANIFEST_FILE).read_bytes() == written  # what pipeline.py and merge.py wrote before
    assert load_run_manifest(copy, "merge").fingerprint == manifest.fingerprint


@pytest.mark.parametrize("content", [b"{broken", b"\xff\xfe", b"[1, 2]"])
def test_a_broken_manifest_is_none_to_the_lenient_reader(tmp_path: Path, content: bytes):
    (tmp_path / MANIFEST_FILE).write_bytes(content)
    assert manifest_or_none(tmp_path) is None
    assert manifest_or_none(tmp_path / "missing") is None


FIX_A_RUN = "pass the --out folder of a `datagen generate` or `datagen merge` run to `datagen {command}`"


def bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each way a folder can fail to be a run: the folder, and what its one line must say (what is wrong, the fix)."""
    cases: dict[str, tuple[Path, str]] = {
        "missing folder": (tmp_path / "nowhere", f"{tmp_path / 'nowhere'}: not found; {FIX_A_RUN}"),
        "a file": (tmp_path / "file.txt", f"{tmp_path / 'file.txt'}: not a folder; {FIX_A_RUN}"),
        "no manifest": (tmp_path / "empty", f"{tmp_path / 'empty'}: holds no manifest.json; {FIX_A_RUN}"),
    }
    (tmp_path / "file.txt").write_text("notes\n")
    (tmp_path / "empty").mkdir()
    for name, content, said in [
        ("broken JSON", b'{"counts": ', "not valid JSON ("),
        ("not UTF-8", b"\xff\xfe{}", "not valid JSON ("),
        ("an array", b"[1, 2]", "not a datagen manifest (no `counts` per task); " + FIX_A_RUN),
        ("no counts", b'{"status": "completed"}', "not a datagen manifest (no `counts` per task); " + FIX_A_RUN),
        ("counts a list", b'{"counts": []}', "not a datagen manifest (no `counts` per task); " + FIX_A_RUN),
    ]:
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        (folder / MANIFEST_FILE).write_bytes(content)
        cases[name] = (folder, f"{folder / MANIFEST_FILE}: {said}")
    directory = tmp_path / "manifest-a-folder"
    (directory / MANIFEST_FILE).mkdir(parents=True)
    cases["manifest a folder"] = (directory, f"{directory / MANIFEST_FILE}: cannot be read (")
    return cases


def test_every_way_a_folder_is_not_a_run_is_one_line_naming_it_and_the_fix(tmp_path: Path):
    for name, (folder, said) in bad_folders(tmp_path).items():
        for read in (read_run_manifest, load_run_manifest):
            with pytest.raises(InputError) as caught:
                read(folder, "report")
            message = str(caught.value)
            assert message.startswith(said.format(command="report")), (name, message)
            assert "\n" not in message, (name, message)
    broken = str(pytest.raises(InputError, read_run_manifest, tmp_path / "broken-JSON", "show").value)
    assert broken.endswith(f"; restore it from a copy, or rerun `datagen generate` into {tmp_path / 'broken-JSON'} with --force")


def test_a_manifest_this_version_cannot_read_names_the_field(generate_mock, tmp_path: Path):
    run = tmp_path / "run"
    generate_mock(run, "--limit", 1)
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    manifest["status"] = "half done"
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert read_run_manifest(run, "report")["status"] == "half done"  # plain JSON: taken as it is
    with pytest.raises(InputError, match=rf"^{run / MANIFEST_FILE}: not a datagen manifest \(status: .*\); restore it from a copy"):
        load_run_manifest(run, "merge")


@pytest.mark.parametrize("command", ["report", "show", "merge", "dedup", "filter", "judge"])
def test_each_command_that_reads_a_run_refuses_a_broken_manifest_in_one_line_exit_2(cli, generate_mock, tmp_path: Path, command):
    run = tmp_path / "run"
    generate_mock(run, "--limit", 1)
    (run / MANIFEST_FILE).write_text("{not json")
    args = {
        "report": [run, "--out", tmp_path / "x.html"],
        "show": [run],
        "merge": [run, "--out", tmp_path / "merged"],
        "dedup": [run],
        "filter": [run, "--judge", "mock"],
        "judge": [run, run, "--captions", CAPTIONS, "--out", tmp_path / "judged", "--judge", "mock"],
    }[command]
    result = cli(command, *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and "Traceback" not in result.output
    assert f"{run / MANIFEST_FILE}: not valid JSON" in result.output and "restore it from a copy" in result.output
