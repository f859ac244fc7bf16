"""`datagen ray` used as a careless or hostile user would (issue 29): two commands on one results file, an --out
that is not a results file, a server that dies midway, an --address where something else listens, Ray missing,
and Ray's own lines kept off the terminal. Servers on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datagen.files.lock import lock_file
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

KEY = "sk-ray-hostile-SECRET-51c0d"
REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("ray")


def plan(cli, server: MockServer, tmp_path: Path, images: int = 4) -> Path:
    """A requests file of `images` images x 3 tasks, as `generate --requests-out` writes it."""
    captions, instances = write_coco(tmp_path, images=images)
    requests = tmp_path / "requests.jsonl"
    result = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "planned", "--model", "mock-teacher",
                 "--requests-out", requests, env=environment(server))
    assert result.exit_code == 0, result.output
    return requests


def environment(server: MockServer) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}


def ids(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]


def ray_command(requests: Path, results: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "datagen.cli", "ray", str(requests), "--out", str(results), *flags]


@contextlib.contextmanager
def midway(cli, tmp_path: Path, address: str, lines: int, *flags: str) -> Iterator[tuple[MockServer, Path, subprocess.Popen]]:
    """A slow server, 36 requests, and `datagen ray` on them in a process of its own joining the test session's
    Ray, yielded once its results file holds `lines` lines (within 90 s); killed at the end if still running."""
    with MockServer(MockServerConfig(latency_ms=300)) as server:
        requests = plan(cli, server, tmp_path, images=12)
        results = tmp_path / "results.jsonl"
        process = subprocess.Popen(ray_command(requests, results, "--address", address, "--workers", "2", "--no-progress", *flags),
                                   env={**os.environ, **environment(server)}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and process.poll() is None and len(results.read_bytes().splitlines() if results.exists() else []) < lines:
                time.sleep(0.05)
            if process.poll() is not None:
                raise AssertionError(process.communicate())
            yield server, requests, process
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


def error_line(result) -> str:
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


# -- 1. one command per results file ---------------------------------------------------------------


def test_a_results_file_held_by_another_command_is_refused_in_one_line(cli, tmp_path):
    with MockServer(MockServerConfig()) as server:
        requests = plan(cli, server, tmp_path)
        results = tmp_path / "results.jsonl"
        results.write_text("")
        with lock_file(results, "ray"):
            result = cli("ray", requests, "--out", results, "--no-progress", env=environment(server))
        sent = server.stats()["total"]
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"{results}: in use by `datagen ray`, PID {os.getpid()}" in line and "pick another file" in line
    assert sent == 0 and results.read_text() == ""
    assert not (tmp_path / ".results.jsonl.lock").exists()  # released by its holder


@pytest.mark.ray
@pytest.mark.slow
def test_two_commands_on_one_results_file_send_each_request_once(cli, tmp_path, ray_cluster):
    results = tmp_path / "results.jsonl"
    with midway(cli, tmp_path, ray_cluster[0], 1, "--concurrency", "4") as (server, requests, first):
        second = cli("ray", requests, "--out", results, "--no-progress", env=environment(server))
        output = first.communicate(timeout=180)
        sent = server.stats()["total"]
    wanted = ids(requests)
    assert second.exit_code == 2 and "in use by `datagen ray`" in error_line(second), second.output
    assert first.returncode == 0, output
    assert sorted(ids(results)) == sorted(wanted) and sent == len(wanted)  # every request once, every answer once


# -- 2. --out must be a results file of these requests ---------------------------------------------


@pytest.mark.parametrize("case", ["requests", "link", "notes", "json", "other_ids", "request_lines", "folder"])
def test_an_out_that_is_not_a_results_file_of_these_requests_is_refused_untouched(cli, tmp_path, case):
    with MockServer(MockServerConfig()) as server:
        requests = plan(cli, server, tmp_path)
        out = tmp_path / "out.jsonl"
        if case == "requests":
            out = requests
        elif case == "link":
            out.symlink_to(requests)
        elif case == "notes":
            out.write_text("remember: rerun on Monday\nand tell Ana\n")
        elif case == "json":
            out.write_text(json.dumps({"notes": [1, 2, 3]}, indent=2))
        elif case == "other_ids":
            line = {"id": "r", "custom_id": "999:detail:" + "f" * 64, "response": {"status_code": 200, "body": {}}, "error": None}
            out.write_text(json.dumps(line) + "\n")
        elif case == "request_lines":
            out.write_text(requests.read_text())
        else:
            out.mkdir()
        before = {path: path.read_bytes() for path in (requests, out) if path.is_file()}
        result = cli("ray", requests, "--out", out, "--no-progress", env=environment(server))
        sent = server.stats()["total"]
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"--out {out}" in line, line
    expected = {"requests": "is the requests file", "link": "is the requests file", "notes": "line 1: not a results line",
                "json": "line 1: not a results line", "other_ids": f"which {requests} does not ask", "request_lines": "line 1: not a results line",
                "folder": "is a folder"}[case]
    assert expected in line, line
    assert sent == 0
    assert {path: path.read_bytes() for path in before} == before  # nothing rewritten, nothing emptied
    assert not list(tmp_path.glob("*.set-aside*"))


# -- 3. a server that dies midway ends the run the way generate ends -------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_a_server_that_dies_midway_stops_the_run_as_generate_does_and_a_rerun_resumes(cli, tmp_path, ray_cluster):
    # Every request after the first answered 500: the first (the driver's probe) proves the key, then the server dies.
    dying = MockServerConfig(die_after=1)
    bounds = ["--give-up-after", "2", "--max-retries", "50", "--timeout", "5", "--no-progress"]
    with MockServer(dying) as server:
        requests = plan(cli, server, tmp_path, images=8)
        wanted = ids(requests)
        server.backend.reset()
        started = time.monotonic()
        result = cli("ray", requests, "--out", tmp_path / "results.jsonl", "--workers", "2", *bounds, env=environment(server))
        took = time.monotonic() - started
    with MockServer(dying) as server:
        captions, instances = write_coco(tmp_path, images=8)
        live = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "live", "--model", "mock-teacher", *bounds,
                   env=environment(server))
    assert live.exit_code == 1, live.output
    assert result.exit_code == live.exit_code, result.output
    line = error_line(result)
    assert "gave no answer for" in line and "the last: HTTP 500" in line and "the run stopped, rerun the same command to resume" in line, line
    assert "requests failed" not in result.output
    assert error_line(live).split(" gave no answer for ")[0].startswith("error: the teacher at ")  # the same sentence as generate's
    assert took < 60
    kept = ids(tmp_path / "results.jsonl")
    assert 1 <= len(kept) < len(wanted)
    with MockServer(MockServerConfig()) as server:
        rerun = cli("ray", requests, "--out", tmp_path / "results.jsonl", "--workers", "2", "--no-progress", env=environment(server))
    assert rerun.exit_code == 0, rerun.output
    assert sorted(ids(tmp_path / "results.jsonl")) == sorted(wanted)
    aside = tmp_path / "results.set-aside.jsonl"
    # The rows that failed before the watch stopped the run went again, their old lines kept aside and said so.
    if aside.exists():
        assert f"to {aside}" in rerun.output and all(json.loads(line)["custom_id"] in wanted for line in aside.read_text().splitlines())


# -- 4. an --address where something else listens -------------------------------------------------


def silent_listener() -> tuple[socket.socket, int]:
    """A port that takes connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:
            for conn in held:
                conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


@pytest.mark.parametrize("what", ["web server", "silent"])
def test_an_address_where_something_else_listens_is_one_line_in_seconds(cli, tmp_path, what):
    with MockServer(MockServerConfig()) as server:
        requests = plan(cli, server, tmp_path)
        listener = None
        if what == "web server":
            address = server.base_url.split("//")[1].split("/")[0]
        else:
            listener, port = silent_listener()
            address = f"127.0.0.1:{port}"
        try:
            started = time.monotonic()
            result = cli("ray", requests, "--out", tmp_path / "results.jsonl", "--address", address, "--no-progress", env=environment(server))
            took = time.monotonic() - started
        finally:
            if listener is not None:
                listener.close()
        sent = server.stats()["total"]
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"--address {address}: something at {address}" in line and "it is not Ray" in line, line
    assert ("answered 'HTTP/1." in line) if what == "web server" else ("sent nothing in 5 s" in line)
    assert took < 20 and sent == 0  # checked before the first request goes out
    assert not (tmp_path / "results.jsonl").exists()


# -- 5. Ray missing, a wrong key: nothing written, nothing started ---------------------------------


def test_generate_engine_ray_without_ray_writes_nothing_and_names_the_flag(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when the extra is missing
    captions, instances = write_coco(tmp_path, images=2)
    result = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "m", "--engine", "ray",
                 env={"OPENAI_API_KEY": KEY})
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "--engine ray needs Ray Data" in line and "pip install 'datagen[ray]'" in line and "`datagen ray`" not in line
    assert not (tmp_path / "out").exists()


def test_a_wrong_key_is_refused_before_ray_starts(cli, tmp_path, monkeypatch):
    import datagen.run.ray_engine as ray_engine

    started = []
    monkeypatch.setattr(ray_engine, "_connect", lambda *args: started.append(args) or False)
    with MockServer(MockServerConfig(api_key="sk-the-right-one")) as server:
        requests = plan(cli, server, tmp_path)
        result = cli("ray", requests, "--out", tmp_path / "results.jsonl", env={**environment(server), "OPENAI_API_KEY": KEY})
        sent = server.stats()["total"]
    assert result.exit_code == 2 and "rejected the API key (HTTP 401)" in error_line(result)
    assert sent == 1 and not started and not (tmp_path / "results.jsonl").exists()


# -- 6. Ray's own lines off the terminal; the manifest says where answers came from -------------------


def run_ray_process(requests: Path, results: Path, server: MockServer, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(ray_command(requests, results, *flags), env={**os.environ, **environment(server)}, cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_ray_run_prints_only_its_own_lines(cli, tmp_path):
    """A Ray of the command's own (token-auth warning, the core worker's constructor-arguments line): stderr holds
    nothing with --no-progress, stdout the one summary line naming where Ray's output went."""
    with MockServer(MockServerConfig()) as server:
        requests = plan(cli, server, tmp_path)
        done = run_ray_process(requests, tmp_path / "results.jsonl", server, "--num-cpus", "1", "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    log = tmp_path / "results.ray.log"
    [summary] = done.stdout.splitlines()
    assert "12 answered" in summary and f"Ray's own output: {log}" in summary
    text = log.read_text()
    assert "the local Ray's session logs: " in text  # where a local Ray's own session folder is
    assert KEY not in text


@pytest.mark.ray
@pytest.mark.slow
def test_without_a_terminal_ray_prints_the_progress_lines_generate_prints(cli, tmp_path, ray_cluster):
    """Ray's own output goes to its log; ours (fd 2 as the command found it) gets `ray: DONE/TOTAL ...` lines."""
    address, _ = ray_cluster
    with MockServer(MockServerConfig()) as server:
        requests = plan(cli, server, tmp_path)
        done = run_ray_process(requests, tmp_path / "results.jsonl", server, "--address", address, "--workers", "2", "--log-every", "30")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()  # the line at the end; the run is shorter than 30 s
    assert re.fullmatch(r"ray: (\d+)/\1 \(100%\) \| elapsed \d:\d\d:\d\d \| ETA 0:00:00 \| [\d.,]+ rec/s \| rejects 0 \| skipped 0", line), line
    assert "12 answered" in done.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_a_failure_through_a_joined_cluster_is_one_line(cli, tmp_path, ray_cluster):
    address, _ = ray_cluster
    with MockServer(MockServerConfig(die_after=1)) as server:
        requests = plan(cli, server, tmp_path, images=6)
        server.backend.reset()
        done = run_ray_process(requests, tmp_path / "results.jsonl", server, "--address", address, "--workers", "2", "--give-up-after", "2",
                               "--max-retries", "50", "--no-progress")
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: the teacher at ") and "rerun the same command to resume" in line


@pytest.mark.ray
@pytest.mark.slow
def test_engine_ray_honours_no_progress_and_the_manifest_names_the_endpoint(cli, tmp_path, ray_cluster):
    with MockServer(MockServerConfig()) as server:
        captions, instances = write_coco(tmp_path, images=4)
        result = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "mock-teacher",
                     "--engine", "ray", "--workers", "2", "--no-progress", env=environment(server))
        sent = server.stats()["total"]
    assert result.exit_code == 0, result.output
    assert not re.search(r"^ray: \d+/\d+ ", result.output, re.M)  # no progress line
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["base_url"] == server.base_url
    assert manifest["requests_sent"] == sent == 12 and manifest["cache_hits"] == 0


# -- SIGTERM (timeout, docker stop, Kubernetes, Slurm) ends `ray` as Ctrl-C does -------------------


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_ends_the_command_in_one_line_and_a_rerun_resumes(cli, tmp_path, ray_cluster):
    import signal

    results = tmp_path / "results.jsonl"
    with midway(cli, tmp_path, ray_cluster[0], 4, "--concurrency", "2", "--rows-per-batch", "2") as (server, requests, first):
        first.send_signal(signal.SIGTERM)
        stderr = first.communicate(timeout=60)[1]
        wanted = ids(requests)
        assert first.returncode == 143, stderr  # generate's exit code for SIGTERM
        assert stderr.splitlines() == ["error: terminated (SIGTERM); rerun the same command to resume where it stopped"]
        kept = ids(results)  # every line whole
        assert 0 < len(kept) < len(wanted)
        assert not (tmp_path / ".results.jsonl.lock").exists()
        rerun = cli("ray", requests, "--out", results, "--no-progress", env=environment(server))
    assert rerun.exit_code == 0, rerun.output
    assert sorted(ids(results)) == sorted(wanted)


@pytest.mark.ray
def test_engine_ray_resumes_a_results_file_whose_answers_its_cache_already_took(cli, tmp_path, ray_cluster):
    """A kill during the ingest: the cache holds some answers, so the next plan leaves their requests out, and
    their lines in OUT/ray/results.jsonl are no longer the plan's; the rerun keeps them and goes on."""
    from datagen.run.ray_engine import answer_line

    ingested = answer_line("1:detail:" + "0" * 64, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A bus."}, "finish_reason": "stop"}]}, "r0")
    (tmp_path / "out" / "ray").mkdir(parents=True)
    (tmp_path / "out" / "ray" / "results.jsonl").write_text(ingested + "\n")
    with MockServer(MockServerConfig()) as server:
        captions, instances = write_coco(tmp_path, images=2)
        result = cli("generate", "--captions", captions, "--instances", instances, "--out", tmp_path / "out", "--model", "mock-teacher",
                     "--engine", "ray", "--workers", "1", "--no-progress", env=environment(server))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "completed"
