"""Endpoints and keys as careless users give them (issue 29, items 10 and 11), against servers on 127.0.0.1:
a key pasted with its line end works, one with a control character inside is one line that never shows it; a base
URL without a scheme is refused at once; one without /v1 is named as such; a first request that got no answer
says how many tries it made, and suggests --timeout only when a timeout was the cause."""

from __future__ import annotations

import json
import time

import pytest

from datagen.errors import InputError
from datagen.teachers.endpoints import resolve_endpoint
from datagen.testing.mock_openai_server import MockServer, MockServerConfig
from tests.synthetic import write_coco

KEY = "sk-proj-Zq81vWm3Kd7Xe2Lr9Tb5Hn0Yc4Gf6Js"


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, images=2)


def generate(cli, coco, out, *extra, key: str | None = KEY, base_url: str | None = None):
    captions, instances = coco
    return cli("generate", "--captions", captions, "--instances", instances, "--out", out, "--model", "mock-teacher", "--no-progress",
               *extra, env={"OPENAI_API_KEY": key, "OPENAI_BASE_URL": base_url})


def one_line(result) -> str:
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.strip()]
    return line


# -- item 10: the key -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pasted", [KEY + "\n", KEY + "\r", KEY + "\r\n", f"  {KEY} ", "\t" + KEY + "\n"])
def test_a_key_with_spaces_or_line_ends_around_it_is_sent_without_them(cli, coco, tmp_path, pasted):
    with MockServer(MockServerConfig(api_key=KEY)) as server:
        result = generate(cli, coco, tmp_path / "out", "--limit", "1", "--tasks", "conversation", key=pasted, base_url=server.base_url)
        assert server.stats()["401"] == 0 and server.stats()["ok"] >= 1
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("broken", [KEY[:12] + "\n" + KEY[12:], KEY[:20] + "\r" + KEY[20:], KEY + "\x1b[0m", KEY[:8] + "\t" + KEY[8:]])
def test_a_control_character_inside_the_key_is_one_line_without_the_key(cli, coco, tmp_path, broken):
    with MockServer(MockServerConfig(api_key=KEY)) as server:
        started = time.monotonic()
        result = generate(cli, coco, tmp_path / "out", key=broken, base_url=server.base_url)
        assert server.stats()["total"] == 0  # refused before anything was sent
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    line = one_line(result)
    assert "OPENAI_API_KEY holds a control character" in line
    assert all(KEY[start : start + 8] not in result.output for start in range(len(KEY) - 7))


def test_the_key_is_cleaned_for_every_command_that_resolves_an_endpoint():
    # `ray` and `judge` resolve their endpoint here too.
    assert resolve_endpoint("openai", "m", None, {"OPENAI_API_KEY": KEY + "\r\n"})[1] == KEY
    assert resolve_endpoint("anthropic", "claude", None, {"ANTHROPIC_API_KEY": f" {KEY}\n"}) == ("https://api.anthropic.com", KEY)
    with pytest.raises(InputError, match="^AZURE_OPENAI_API_KEY holds a control character"):
        resolve_endpoint("azure", "d", "https://x.openai.azure.com", {"AZURE_OPENAI_API_KEY": "a\nb", "OPENAI_API_VERSION": "2024-10-21"})
    with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
        resolve_endpoint("openai", "m", None, {"OPENAI_API_KEY": " \r\n"})  # nothing but a line end is no key


def test_ray_refuses_a_broken_key_in_one_line_before_starting_ray(cli, tmp_path):
    pytest.importorskip("ray")
    from datagen.teachers.teacher import request_from_body

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    (tmp_path / "requests.jsonl").write_text(json.dumps({"custom_id": f"1:detail:{request_from_body(body).key()}", "body": body}) + "\n")
    result = cli("ray", tmp_path / "requests.jsonl", "--out", tmp_path / "results.jsonl", env={"OPENAI_API_KEY": KEY[:10] + "\n" + KEY[10:]})
    assert result.exit_code == 2
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "OPENAI_API_KEY holds a control character" in line and KEY[:10] not in result.output
    assert not (tmp_path / "results.jsonl").exists()


# -- item 11: the base URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "fix"), [("localhost:8765/v1", "pass http://localhost:8765/v1"), ("127.0.0.1:9/v1", "pass http://127.0.0.1:9/v1"),
                                            ("ftp://127.0.0.1/v1", "pass an http:// or https:// URL")])
@pytest.mark.parametrize("where", ["flag", "env"])
def test_a_base_url_without_http_is_refused_at_once_naming_the_flag_and_the_fix(cli, coco, tmp_path, given, fix, where):
    started = time.monotonic()
    if where == "flag":
        result = generate(cli, coco, tmp_path / "out", "--base-url", given)
    else:
        result = generate(cli, coco, tmp_path / "out", base_url=given)
    assert time.monotonic() - started < 10  # no retry loop (it took 21 s)
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith(f"error: {'--base-url' if where == 'flag' else 'OPENAI_BASE_URL'} {given}") and fix in line


def test_a_base_url_without_v1_is_named_on_its_404(cli, coco, tmp_path):
    with MockServer() as server:
        root = server.base_url.removesuffix("/v1")
        result = generate(cli, coco, tmp_path / "out", "--base-url", root)
        assert server.stats()["total"] == 0  # /chat/completions is no route of the server's: nothing reached the chat endpoint
    assert result.exit_code == 2
    line = one_line(result)
    assert "answered 404" in line and f"try --base-url {root}/v1" in line


def test_a_404_for_an_unknown_model_behind_a_v1_root_has_no_v1_hint(cli, coco, tmp_path):
    with MockServer(MockServerConfig(accept_any_model=False, models=("other",))) as server:
        result = generate(cli, coco, tmp_path / "out", base_url=server.base_url)
    line = one_line(result)
    assert result.exit_code == 2 and "answered 404 for model 'mock-teacher'" in line and "/v1:" not in line


# -- item 11: what the first request's failure says -----------------------------------------------------------


def test_a_hanging_first_request_counts_the_tries_it_made_and_suggests_timeout(cli, coco, tmp_path):
    with MockServer(MockServerConfig(hang=1.0)) as server:
        result = generate(cli, coco, tmp_path / "out", "--timeout", "0.5", "--give-up-after", "0.4", "--max-retries", "6", base_url=server.base_url)
        seen = server.stats()["total"]
    assert result.exit_code == 2
    line = one_line(result)
    # One timed-out attempt already fills the watch's window: the run stops after it, and says so.
    assert seen == 1 and "(1 try; last: no answer within --timeout 0.5 s)" in line
    assert "raise --timeout" in line


def test_a_failing_first_request_counts_its_tries_and_does_not_suggest_timeout(cli, coco, tmp_path):
    with MockServer(MockServerConfig(p500=1.0, retry_after=0.01)) as server:
        result = generate(cli, coco, tmp_path / "out", "--max-retries", "2", base_url=server.base_url)
        seen = server.stats()["total"]
    assert result.exit_code == 2
    line = one_line(result)
    assert seen == 3 and "(3 tries; last: HTTP 50" in line and "--timeout" not in line
