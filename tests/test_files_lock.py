"""One writer per output folder: a second `generate` (or merge, or export) is refused at once, naming the
holder's PID; a killed holder leaves no stale lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.files.lock import LOCK_FILE, FolderBusyError, lock_folder
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

REPO = Path(__file__).resolve().parent.parent


def generate_command(captions: Path, instances: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datagen.cli", "generate", "--captions", str(captions), "--instances", str(instances),
            "--out", str(out), "--model", "mock-teacher", "--no-progress", *extra]


def environment(server: MockServer) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url, "PYTHONPATH": str(REPO)}


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def written_lines(out: Path) -> int:
    return sum(len((out / f"{task}.jsonl").read_bytes().splitlines()) for task in ("conversation", "detail", "complex_reasoning")
               if (out / f"{task}.jsonl").exists())


def test_a_second_generate_on_the_same_folder_is_refused_at_once(tmp_path):
    captions, instances = write_coco(tmp_path, images=20)
    out = tmp_path / "out"
    with MockServer(MockServerConfig(latency_ms=250)) as server:  # ~8 s of work: room for the second start under load
        first = subprocess.Popen(generate_command(captions, instances, out, "--concurrency", "2"), env=environment(server),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: written_lines(out) >= 2)
            second = subprocess.run(generate_command(captions, instances, out, "--concurrency", "2"), env=environment(server),
                                    capture_output=True, text=True, timeout=120)
            still_running = first.poll() is None
        finally:
            stdout, stderr = first.communicate(timeout=300)
        requests = server.stats()["total"]
    assert still_running
    assert second.returncode == 2
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and f"PID {first.pid}" in lines[0] and "generate" in lines[0], second.stderr
    assert first.returncode == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["requests_sent"] == requests == 60  # nobody paid twice
    for task, counts in manifest["counts"].items():
        lines = (out / f"{task}.jsonl").read_bytes().splitlines()
        assert len(lines) == len(set(lines)) == counts["written"]
    assert not (out / LOCK_FILE).exists()


def test_kill_9_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from datagen.files.lock import lock_folder\n"
         "with lock_folder(__import__('pathlib').Path(sys.argv[1]), 'generate'):\n print('held', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusyError, match=f"PID {holder.pid}"):
        with lock_folder(out, "generate"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_FILE).exists()  # the file stays, but the kernel dropped the lock with the process
    with lock_folder(out, "generate"):
        assert (out / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (out / LOCK_FILE).exists()


def test_readers_share_and_writers_exclude(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with lock_folder(folder, "export", shared=True), lock_folder(folder, "merge", shared=True):
        with pytest.raises(FolderBusyError, match=str(folder)):
            with lock_folder(folder, "generate"):
                pass
    with lock_folder(folder, "generate"):
        with pytest.raises(FolderBusyError, match="generate"):
            with lock_folder(folder, "export", shared=True):
                pass
    assert folder.is_dir() and not list(folder.iterdir())  # an existing folder stays, the lock file goes


def test_a_refused_writer_leaves_no_folder_behind(tmp_path):
    with pytest.raises(InputError):
        with lock_folder(tmp_path / "new", "generate"):
            raise InputError("bad flag")
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="not found"):
        with lock_folder(tmp_path / "missing", "export", shared=True):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with lock_folder(tmp_path / "file", "generate"):
            pass


def test_generate_merge_and_export_refuse_a_held_folder(generate_mock, cli, tmp_path):
    out = tmp_path / "out"
    generate_mock(out, "--limit", "2")
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    with lock_folder(out, "generate"):
        for result in (
            cli("generate", "--teacher", "mock", "--captions", REPO / "data" / "captions.json", "--instances",
                REPO / "data" / "instances.json", "--out", out, "--limit", "2", "--no-progress"),
            cli("export", out, "--out", tmp_path / "x.json"),
            cli("merge", out, "--out", tmp_path / "merged"),
        ):
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 1, result.output
            assert str(out) in lines[0] and f"PID {os.getpid()}" in lines[0]
        target = tmp_path / "target"
        with lock_folder(target, "judge"):
            result = cli("merge", out, "--out", target)
            assert result.exit_code == 2 and str(target) in result.output
        assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file() and path.name != LOCK_FILE} == before
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "merged").exists()
    assert cli("export", out, "--out", tmp_path / "x.json").exit_code == 0


def test_a_reader_of_a_read_only_folder_reads_unlocked(tmp_path, monkeypatch):
    import errno

    import datagen.files.lock

    folder = tmp_path / "dataset"
    folder.mkdir()
    real_open = os.open

    def read_only_open(path, flags, *args):
        if str(path).endswith(LOCK_FILE):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(datagen.files.lock.os, "open", read_only_open)
    with lock_folder(folder, "export", shared=True):
        pass
    with pytest.raises(OSError):
        with lock_folder(folder, "generate"):
            pass
