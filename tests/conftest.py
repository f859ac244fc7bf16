"""Shared fixtures: the sample data, a CliRunner for `datagen`, and a helper that runs `generate` with the mock teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
CAPTIONS = DATA / "captions.json"
INSTANCES = DATA / "instances.json"


@pytest.fixture
def captions_path() -> Path:
    return CAPTIONS


@pytest.fixture
def instances_path() -> Path:
    return INSTANCES


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A fresh output folder (not yet created) inside the test's tmp_path."""
    return tmp_path / "out"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner, monkeypatch):
    """Invoke `datagen ARGS...` in-process; OPENAI_* variables are cleared unless a test sets them."""
    from datagen.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def invoke(*args: object, env: dict[str, str] | None = None):
        return runner.invoke(app, [str(arg) for arg in args], env=env)

    return invoke


@pytest.fixture
def generate_mock(cli):
    """`datagen generate --teacher mock` on the sample data into OUT; extra flags are passed through.

    Asserts exit code 0 unless `expect` says otherwise and returns the CliRunner result.
    """

    def run(out: Path, *extra: object, expect: int = 0, captions: Path = CAPTIONS, instances: Path | None = INSTANCES, env=None):
        args: list[object] = ["generate", "--teacher", "mock", "--captions", captions, "--out", out, "--no-progress"]
        if instances is not None:
            args += ["--instances", instances]
        result = cli(*args, *extra, env=env)
        assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
        return result

    return run


@pytest.fixture
def read_jsonl():
    """Parse a JSONL file into a list of dicts."""

    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    return read
