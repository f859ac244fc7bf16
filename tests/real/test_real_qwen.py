"""Qwen2.5-Coder-1.5B-Instruct as teacher, behind llama.cpp's OpenAI-compatible server: a model that writes
readable records, so here (unlike with SmolLM2) a run is expected to write some. One image per task: a request
takes about a minute on this machine. Run by `make test-real` (DATAGEN_QWEN=1), not by `make test`."""

from __future__ import annotations

import json
import os

import pytest

from datagen.tasks.registry import DEFAULT_TASKS, task_spec
from datagen.testing.gguf_models import DEFAULT_ROOT, MODELS, require_built, serve
from datagen.testing.real_model import RealModelMissing
from real_helpers import DATA, REPO, TIMEOUT_S, datagen, read_jsonl

pytestmark = [pytest.mark.real, pytest.mark.qwen, pytest.mark.slow]

IMAGES = 1
MAX_TOKENS = 400  # the 1.5B's answers to our packs are 60-250 tokens; room to finish, so cut answers are rare


@pytest.fixture(scope="module")
def qwen_server(tmp_path_factory):
    if not os.environ.get("DATAGEN_QWEN"):
        pytest.skip("the Qwen 1.5B tier runs in `make test-real` (DATAGEN_QWEN=1)")
    try:
        gguf = require_built(MODELS["qwen-1.5b"], REPO / DEFAULT_ROOT)
    except RealModelMissing as missing:
        pytest.fail(str(missing))
    with serve(gguf, log=tmp_path_factory.mktemp("qwen") / "server.log") as base_url:
        yield base_url


def _generate(out, base_url, *extra):
    return datagen("generate", "--captions", DATA / "captions.json", "--instances", DATA / "instances.json", "--out", out,
                   "--base-url", base_url, "--model", "qwen2.5-coder-1.5b", "--limit", IMAGES, "--max-tokens", MAX_TOKENS,
                   "--concurrency", 1, "--timeout", TIMEOUT_S, "--max-retries", 1, "--seed", 0, "--no-progress", *extra)


def test_the_1_5b_writes_records_that_pass_the_audit(qwen_server, tmp_path):
    out = tmp_path / "qwen"
    result = _generate(out, qwen_server)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"] == {"kind": "openai", "model": "qwen2.5-coder-1.5b", "mock": False}
    written = 0
    for task in DEFAULT_TASKS:
        counts = manifest["counts"][task]
        records = read_jsonl(out / task_spec(task).file_name)
        assert counts["skipped"] == {} and counts["written"] == len(records)
        assert counts["written"] + sum(counts["rejected"].values()) == IMAGES
        written += len(records)
    # The 1.5B wrote 8 of 9 sample requests when tried; none of three would be a regression, not bad luck.
    assert written >= 1 and result.returncode == 0, result.stderr
    for task in DEFAULT_TASKS:
        path = out / task_spec(task).file_name
        if read_jsonl(path):
            audit = datagen("audit", path, "--captions", DATA / "captions.json", "--instances", DATA / "instances.json",
                            "--out", tmp_path / f"audit-{task}", "--max-flagged", 0)
            assert audit.returncode == 0, audit.stdout + audit.stderr
    assert manifest["usage"]["prompt_tokens"] > 1000 * len(DEFAULT_TASKS) and manifest["usage"]["completion_tokens"] > 0


def test_the_1_5b_answers_in_the_schema_through_llama_cpp(qwen_server, tmp_path):
    """llama.cpp turns the schema into a grammar: the reply is JSON of it, read back into a one-pair record."""
    out = tmp_path / "structured"
    result = _generate(out, qwen_server, "--tasks", "complex_reasoning", "--structured", "--structured-form", "json_object")
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]["complex_reasoning"]
    assert result.returncode in (0, 1) and "error: the teacher" not in result.stderr, result.stderr  # the field was taken
    assert set(manifest["structured_reasks"]) <= {"complex_reasoning"} and counts["skipped"] == {}
    assert counts["written"] + sum(counts["rejected"].values()) == IMAGES
    # Decoding held to the schema cannot lose the layout: no reply is unparseable or has the wrong number of pairs.
    assert not {"unparseable", "wrong_turn_count"} & set(counts["rejected"]), counts
    for record in read_jsonl(out / "complex_reasoning.jsonl"):
        assert len(record["conversations"]) == 2 and record["meta"]["teacher"]["mock"] is False
