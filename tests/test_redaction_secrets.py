"""No key in any message, log, manifest or file: servers that echo the headers they were sent (plain and
base64, a long key crossing the display cut), credentials in URLs and in `--flag=value` arguments, and a
whole run's outputs grepped for every form of the key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiohttp import web

from datagen.errors import TeacherFatalError
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from datagen.redaction import redact_argv, redact_secrets
from datagen.teachers.teacher import ChatRequest, OpenAITeacher
from tests.synthetic import write_coco

REPO = Path(__file__).resolve().parent.parent
# Long, like a project key, so that it crosses the 200-character cut of an error body.
KEY = "sk-proj-" + "".join("Q7vX2mK9pL4wR8tZ"[(i * 7) % 16] + "abcdefghjkmnpqrs"[(i * 5) % 16] for i in range(160))


def traces(text: str, key: str = KEY) -> list[str]:
    """The forms of `key` found in `text`: itself, a long piece of it, or a piece of any base64 encoding of it."""
    found = [form for form in (key, key[:10], key[40:60], key[-20:]) if form in text]
    for offset in range(3):
        for alphabet in (base64.b64encode, base64.urlsafe_b64encode):
            piece = alphabet(b"x" * offset + key.encode()).decode()[4:24]  # characters that encode the key alone
            if piece in text:
                found.append(f"base64 {piece}")
    return found


class EchoServer:
    """Answers everything with 400 and a text body quoting the request's headers, plainly and in base64."""

    def __init__(self, padding: int = 150) -> None:
        self.padding = padding

    async def handle(self, request: web.Request) -> web.Response:
        headers = "".join(f"{name}: {value}\n" for name, value in request.headers.items())
        body = ("x" * self.padding + " you sent:\n" + headers + "as base64: " + base64.b64encode(headers.encode()).decode()
                + "\nurl-safe: " + base64.urlsafe_b64encode(request.headers.get("Authorization", "").encode()).decode())
        return web.Response(status=400, text=body, content_type="text/plain")

    def __enter__(self) -> EchoServer:
        ready = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def ask(base_url: str, key: str) -> str:
    async def go() -> str:
        teacher = OpenAITeacher(model="m", api_key=key, base_url=base_url, max_retries=0)
        try:
            await teacher.complete(ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=5, seed=0))
        except TeacherFatalError as error:
            return str(error)
        finally:
            await teacher.aclose()
        raise AssertionError("a 400 must stop the run")

    return asyncio.run(go())


@pytest.mark.parametrize("padding", [0, 100, 130])  # the key starts before the old 200-character cut and crosses it
def test_an_echoed_key_never_reaches_the_message(padding):
    with EchoServer(padding) as server:
        message = ask(server.base_url, KEY)
    assert "HTTP 400" in message and "you sent" in message[:300] and "\n" not in message
    assert traces(message) == [], message
    assert len(message) < 400  # still cut to display length, after the masking


def test_redact_masks_every_form_then_cuts():
    header = f"Authorization: Bearer {KEY}"
    body = (f"{'y' * 170} {header} again {base64.b64encode(header.encode()).decode()} "
            f"basic {base64.b64encode(('user:' + KEY).encode()).decode()} cut {KEY[:30]}")
    shown = redact_secrets(body, [KEY], limit=200)
    assert traces(shown) == [] and len(shown) <= 203
    assert traces(redact_secrets(body, [KEY])) == []  # the whole text, not only what is shown
    assert redact_secrets("sk-proj is a prefix", [KEY]) == "sk-proj is a prefix"  # 7 characters say nothing


def test_argv_is_redacted_in_every_form():
    argv = ["datagen", "generate", "--base-url=http://user:pa55word@example.com:8443/v1?api-key=zz", "--base-url",
            "https://bob:pw2@example.com/v1", f"--model={KEY}", "--api-key", "plain-secret", "--api-key=other-secret",
            "--max-tokens", "64", "note:ftp://carol:pw3@files.example.com/x"]
    saved = " ".join(redact_argv(argv, [KEY]))
    for secret in ("pa55word", "pw2", "pw3", "zz", "plain-secret", "other-secret", "user:", "bob:", "carol:"):
        assert secret not in saved, secret
    assert traces(saved) == []
    assert "--max-tokens 64" in saved and "http://example.com:8443/v1" in saved


def test_manifest_command_drops_url_credentials_in_the_equals_form(cli, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["datagen", "generate", "--teacher", "mock", "--captions", str(REPO / "data" / "captions.json"), "--instances",
            str(REPO / "data" / "instances.json"), "--out", str(out), "--limit", "1", "--no-progress",
            "--base-url=http://user:hunter2@127.0.0.1:9/v1"]
    monkeypatch.setattr(sys, "argv", argv)
    assert cli(*argv[1:]).exit_code == 0
    command = json.loads((out / "manifest.json").read_text())["command"]
    assert "hunter2" not in " ".join(command) and "--base-url=http://127.0.0.1:9/v1" in command


@pytest.mark.parametrize("where", ["flag", "env"])
def test_credentials_in_the_base_url_are_refused_in_one_line(cli, tmp_path, where):
    url = "http://user:hunter2@127.0.0.1:9/v1"
    args = ["generate", "--captions", REPO / "data" / "captions.json", "--instances", REPO / "data" / "instances.json",
            "--out", tmp_path / "out", "--model", "m", "--no-progress"]
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url if where == "env" else None}
    result = cli(*args, *(["--base-url", url] if where == "flag" else []), env=env)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "user:password" in lines[0] and ("--base-url" if where == "flag" else "OPENAI_BASE_URL") in lines[0]
    assert "hunter2" not in result.output and traces(result.output) == []


# -- the whole run, grepped ---------------------------------------------------------------------------


def datagen(*args: object, key: str = KEY, base_url: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "OPENAI_API_KEY": key}
    if base_url:
        env["OPENAI_BASE_URL"] = base_url
    return subprocess.run([sys.executable, "-m", "datagen.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def test_no_form_of_the_key_anywhere_after_a_run_through_the_error_paths(tmp_path):
    (tmp_path / "coco").mkdir()
    captions, instances = write_coco(tmp_path / "coco", images=12)
    common = ["--captions", captions, "--instances", instances, "--model", "mock-teacher", "--no-progress", "--max-retries", "2"]
    results = []
    faults = MockServerConfig(api_key=KEY, p500=0.2, malformed=0.1, p429=0.1, retry_after=0.01, p_refusal=0.1, seed=4)
    with MockServer(faults) as server, MockServer(MockServerConfig(api_key=KEY, batch_delay_s=0.01)) as calm, EchoServer(100) as echo:
        host_port = server.base_url.split("://")[1]
        results.append((datagen("generate", *common, "--out", tmp_path / "userinfo", f"--base-url=http://me:{KEY}@{host_port}"), 2))
        # 0, or 3 when an item still got no answer after its 2 retries (status incomplete)
        results.append((datagen("generate", *common, "--out", tmp_path / "run", f"--base-url={server.base_url}"), {0, 3}))
        results.append((datagen("generate", *common, "--out", tmp_path / "run", "--seed", "3", base_url=server.base_url), 2))
        results.append((datagen("generate", *common, "--out", tmp_path / "run", "--seed", "3", "--force", base_url=server.base_url), {0, 3}))
        results.append((datagen("generate", *common, "--out", tmp_path / "echoed", base_url=echo.base_url), 2))
        results.append((datagen("generate", *common, "--out", tmp_path / "wrong", key=KEY[::-1], base_url=server.base_url), 2))
        results.append((datagen("generate", *common, "--out", tmp_path / "batch", "--batch", "--poll-interval", "0.05",
                                "--max-retries", "0", base_url=calm.base_url), 0))
        results.append((datagen("generate", *common, "--out", tmp_path / "shard", "--shard", "0/2", f"--api-key={KEY}",
                                base_url=server.base_url), 2))  # an unknown flag, quoted back by the usage error
        results.append((datagen("export", tmp_path / "run", "--out", tmp_path / "run.json"), 0))
        results.append((datagen("merge", tmp_path / "run", "--out", tmp_path / "merged"), 0))
    for result, expected in results:
        assert result.returncode in (expected if isinstance(expected, set) else {expected}), (result.args, result.stderr)
    assert "holds user:password@" in results[0][0].stderr and "HTTP 400" in results[4][0].stderr
    assert "rejected the API key" in results[5][0].stderr
    checked = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and "coco" not in path.parts:
            text = path.read_bytes().decode("latin-1")
            assert traces(text) == [] and traces(text, KEY[::-1]) == [], path
            checked += 1
    assert checked >= 20 and (tmp_path / "run" / "cache.sqlite").exists() and (tmp_path / "batch" / "batch").is_dir()
    for result, _ in results:
        assert traces(result.stdout + result.stderr) == [] and traces(result.stdout + result.stderr, KEY[::-1]) == [], result.args
