"""An output folder under abuse: --force killed between its moves, hand-edited lines, a full disk, a folder
where a file belongs, a cache damaged while the run goes. Each ends in one line, with nothing lost."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, UTC
from pathlib import Path

import pytest

import datagen.files.jsonl
import datagen.run.output_folder
import datagen.run.pipeline
from datagen.files.lock import LOCK_FILE
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = REPO / "data" / "captions.json"
INSTANCES = REPO / "data" / "instances.json"
OUTPUTS = ("conversation.jsonl", "detail.jsonl", "complex_reasoning.jsonl", "rejects.jsonl")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    # The lock file is rewritten by every command that takes the folder: it holds no data.
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file() and path.name != LOCK_FILE}


def one_line(result, *named: str, code: int = 2) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code and len(lines) == 1 and "Traceback" not in result.output, (result.exit_code, result.output)
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines()


def assert_true_counts(out: Path, status: str) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == status
    rejects = [json.loads(line) for line in complete_lines(out / "rejects.jsonl")]
    for task, counts in manifest["counts"].items():
        assert counts["written"] == len(complete_lines(out / f"{task}.jsonl")), task
        assert sum(counts["rejected"].values()) == sum(1 for reject in rejects if reject["task"] == task)
    return manifest


def no_temp_files(folder: Path) -> None:
    assert not [path for path in folder.rglob("*") if path.name.endswith(".tmp") or ".merging-" in path.name]


def sorted_outputs(folder: Path) -> dict[str, list[bytes]]:
    return {name: sorted(complete_lines(folder / name)) for name in OUTPUTS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from datagen.cli import app

    out = tmp_path_factory.mktemp("reference") / "out"
    args = ["generate", "--teacher", "mock", "--captions", str(CAPTIONS), "--instances", str(INSTANCES), "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    return out


@pytest.fixture
def copy(reference: Path, tmp_path: Path) -> Path:
    shutil.copytree(reference, tmp_path / "copy")
    return tmp_path / "copy"


# -- --force ------------------------------------------------------------------------------------------

KILLING_DRIVER = """
import os, shutil, signal, sys
from datagen import cli
real, moved = shutil.move, []
def move(source, target, *args, **kwargs):
    if len(moved) == int(os.environ["KILL_AFTER_MOVES"]):
        os.kill(os.getpid(), signal.SIGKILL)
    moved.append(source)
    return real(source, target, *args, **kwargs)
shutil.move = move
sys.argv = ["datagen", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.parametrize("moves_before_kill", [1, 4])
def test_kill_9_between_the_set_aside_moves_never_lets_a_new_run_adopt_old_records(copy, generate_mock, moves_before_kill):
    command = ["generate", "--teacher", "mock", "--captions", str(CAPTIONS), "--instances", str(INSTANCES), "--out", str(copy),
               "--no-progress", "--seed", "5", "--force"]
    killed = subprocess.run([sys.executable, "-c", KILLING_DRIVER, *command], env={**os.environ, "PYTHONPATH": str(REPO),
                            "KILL_AFTER_MOVES": str(moves_before_kill)}, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert (copy / "manifest.json").exists()  # moved last, so still here and still saying seed 0
    if moves_before_kill < 4:  # records are left beside it: refused, as they are another run's
        left = folder_bytes(copy)
        refused = generate_mock(copy, "--seed", "5", expect=2)
        one_line(refused, "seed", "--force")
        assert folder_bytes(copy) == left
        generate_mock(copy, "--seed", "5", "--force")
    else:  # every record and reject was moved: a folder holding none takes new settings (issue 29, item 9)
        generate_mock(copy, "--seed", "5")
    manifest = assert_true_counts(copy, "completed")
    assert manifest["settings"]["sampling"]["seed"] == 5 and manifest["requests_sent"] == 66  # nothing adopted


def test_records_without_a_manifest_are_refused_unless_force(copy, generate_mock, reference):
    (copy / "manifest.json").unlink()
    before = folder_bytes(copy)
    one_line(generate_mock(copy, "--seed", "5", expect=2), str(copy), "detail.jsonl", "no manifest.json", "--force")
    assert folder_bytes(copy) == before
    generate_mock(copy, "--seed", "5", "--force")
    assert assert_true_counts(copy, "completed")["requests_sent"] == 66
    aside = [path for path in copy.iterdir() if path.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "detail.jsonl").read_bytes() == (reference / "detail.jsonl").read_bytes()


def test_two_forces_in_the_same_second_set_aside_into_two_folders(copy, generate_mock, monkeypatch):
    class SameSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    monkeypatch.setattr(datagen.run.output_folder, "datetime", SameSecond)
    generate_mock(copy, "--seed", "1", "--force")
    generate_mock(copy, "--seed", "2", "--force")
    aside = sorted(path.name for path in copy.iterdir() if path.name.startswith("replaced-"))
    assert aside == ["replaced-20300102-030405", "replaced-20300102-030405-2"]
    seeds = [json.loads((copy / name / "manifest.json").read_text())["settings"]["sampling"]["seed"] for name in aside]
    assert seeds == [0, 1]


# -- hand-edited lines ----------------------------------------------------------------------------------

BAD_LINES = {
    "empty object": b"{}\n",
    "array": b"[1,2,3]\n",
    "non-UTF-8": b"\xff\xfe{\"id\": \"1\"}\n",
    "broken JSON": b"{\"id\": \"000000000001\", \"image\": \n",
    "image_id a list": None,  # built from a real record below
    "no meta": None,
}


def edited(line: bytes, kind: str) -> bytes:
    if BAD_LINES[kind] is not None:
        return BAD_LINES[kind]
    record = json.loads(line)
    if kind == "no meta":
        del record["meta"]
    else:
        record["meta"]["image_id"] = [record["meta"]["image_id"]]
    return (json.dumps(record) + "\n").encode()


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_hand_edited_line_stops_resume_and_export_naming_file_and_line(copy, generate_mock, cli, tmp_path, kind):
    path = copy / "detail.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = edited(lines[5], kind)
    path.write_bytes(b"".join(lines))
    before = folder_bytes(copy)
    one_line(generate_mock(copy, expect=2), str(path), "line 6")
    assert folder_bytes(copy) == before
    one_line(cli("export", copy, "--out", tmp_path / "x.json"), str(path), "line 6")
    assert folder_bytes(copy) == before and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("line", [b"{}\n", b"[1]\n", b'{"meta": {"image_id": 1, "usage": {}}, "task": ["detail"], "reason": "x"}\n'])
def test_a_hand_edited_reject_stops_resume(copy, generate_mock, line):
    (copy / "rejects.jsonl").write_bytes(line)
    before = folder_bytes(copy)
    one_line(generate_mock(copy, expect=2), str(copy / "rejects.jsonl"), "line 1")
    assert folder_bytes(copy) == before


def test_a_torn_last_line_is_still_repaired(copy, generate_mock, reference):
    path = copy / "detail.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:40])
    generate_mock(copy)
    assert path.read_bytes() == whole


# -- the disk fails -------------------------------------------------------------------------------------


REAL_WRITE = os.write


def fail_writes(monkeypatch, name: str, after: int, error: int = errno.ENOSPC) -> None:
    """os.write to the file `name` writes half its data and then fails, from the `after`-th call on."""
    real, calls = REAL_WRITE, []

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            calls.append(fd)
            if len(calls) > after:
                real(fd, data[: len(data) // 2])
                raise OSError(error, os.strerror(error))
        return real(fd, data)

    monkeypatch.setattr(datagen.files.jsonl.os, "write", write)


def test_a_full_disk_under_a_writer_ends_in_one_line_with_a_failed_manifest(tmp_path, generate_mock, reference, monkeypatch):
    out = tmp_path / "out"
    fail_writes(monkeypatch, "detail.jsonl", after=7)
    one_line(generate_mock(out, expect=1), str(out / "detail.jsonl"), "no space left", "rerun", code=1)
    manifest = assert_true_counts(out, "failed")
    assert manifest["counts"]["detail"]["written"] == 7
    assert not (out / "detail.jsonl").read_bytes().endswith(b"\n")  # the torn line the disk left ...
    no_temp_files(out)
    monkeypatch.setattr(datagen.files.jsonl.os, "write", REAL_WRITE)
    generate_mock(out)  # ... is cut by the rerun, which finishes the job (the torn item's answer from the cache)
    assert_true_counts(out, "completed")
    assert sorted_outputs(out) == sorted_outputs(reference)


def test_a_manifest_the_disk_refuses_is_left_as_it_was_without_a_temp_file(copy, generate_mock, monkeypatch):
    before = (copy / "manifest.json").read_bytes()
    real = json.dump

    def dump(data, handle, **kwargs):
        if "manifest.json" in handle.name:
            handle.write("{\"half\": ")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(data, handle, **kwargs)

    monkeypatch.setattr(datagen.files.jsonl.json, "dump", dump)
    one_line(generate_mock(copy, expect=1), str(copy / "manifest.json"), "no space left", code=1)
    assert (copy / "manifest.json").read_bytes() == before
    no_temp_files(copy)


def test_a_full_disk_and_a_refused_final_manifest_report_the_first_failure(tmp_path, generate_mock, monkeypatch):
    out = tmp_path / "out"
    fail_writes(monkeypatch, "conversation.jsonl", after=3)
    real = datagen.run.pipeline.GenerateJob.finish

    def finish(job, status, *rest):
        if status != "running":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(job.out / "manifest.json"))
        return real(job, status, *rest)

    monkeypatch.setattr(datagen.run.pipeline.GenerateJob, "finish", finish)
    one_line(generate_mock(out, expect=1), str(out / "conversation.jsonl"), "no space left", code=1)
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # left as it was
    no_temp_files(out)


@pytest.mark.parametrize("errno_code,code,words", [(errno.EACCES, 2, "permission denied"), (errno.EROFS, 2, "read-only"),
                                                   (errno.EIO, 1, "input/output")])
def test_other_write_failures_name_the_file_and_the_fix(tmp_path, generate_mock, monkeypatch, errno_code, code, words):
    out = tmp_path / "out"
    fail_writes(monkeypatch, "complex_reasoning.jsonl", after=2, error=errno_code)
    one_line(generate_mock(out, expect=code), str(out / "complex_reasoning.jsonl"), words, code=code)
    assert_true_counts(out, "failed")
    no_temp_files(out)


@pytest.mark.parametrize("name", ["detail.jsonl", "manifest.json", "source-index.bin", "cache.sqlite"])
def test_a_folder_where_a_file_belongs(tmp_path, generate_mock, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    line = one_line(generate_mock(out, expect=2), str(out / name))
    assert "folder" in line or "cache" in line
    no_temp_files(out)
    assert not (out / "manifest.json").is_file()


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("size_kib", [24, 64, 100])
def test_a_really_full_disk(tmpfs, generate_mock, reference, size_kib):
    subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(tmpfs)], check=True)
    out = tmpfs / "out"
    result = generate_mock(out, expect=1)
    one_line(result, "no space left", code=1)
    no_temp_files(tmpfs)
    if (out / "manifest.json").exists():
        assert json.loads((out / "manifest.json").read_text())["status"] in ("failed", "running")
    subprocess.run(["mount", "-o", "remount,size=4m", str(tmpfs)], check=True)
    generate_mock(out)  # the data that made it survives; the rerun repairs and finishes
    assert_true_counts(out, "completed")
    assert sorted_outputs(out) == sorted_outputs(reference)


# -- the cache is damaged while the run goes --------------------------------------------------------------


def test_a_cache_damaged_mid_run_ends_in_one_line_and_loses_nothing(tmp_path):
    captions, instances = write_coco(tmp_path, images=40)
    out = tmp_path / "out"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-test"}

    def command(folder: Path) -> list[str]:
        return [sys.executable, "-m", "datagen.cli", "generate", "--captions", str(captions), "--instances", str(instances),
                "--out", str(folder), "--model", "mock-teacher", "--no-progress", "--concurrency", "2"]

    with MockServer(MockServerConfig(latency_ms=50)) as server:
        env["OPENAI_BASE_URL"] = server.base_url
        reference = subprocess.run(command(tmp_path / "reference"), env=env, capture_output=True, text=True, timeout=300)
        assert reference.returncode == 0, reference.stderr
        process = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while sum(len(complete_lines(out / name)) for name in OUTPUTS) < 10:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        rng = random.Random(0)
        for path in out.glob("cache.sqlite*"):
            with path.open("r+b") as handle:
                handle.write(bytes(rng.getrandbits(8) for _ in range(path.stat().st_size)))
        _, stderr = process.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert str(out / "cache.sqlite") in lines[0] and "--no-cache" in lines[0]
    manifest = assert_true_counts(out, "failed")
    written = sum(counts["written"] for counts in manifest["counts"].values())
    assert 10 <= written < 120
    for name in OUTPUTS:  # what was written before the damage is kept, and is what an undisturbed run writes
        assert set(complete_lines(out / name)) <= set(complete_lines(tmp_path / "reference" / name)), name
