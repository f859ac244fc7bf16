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


LLAVA_SYSTEM_BYTES = b"You are an AI visual assistant.\r\nYou see one image, described below.\r\n\r\nAnswer as if you see it.\n"


def write_llava_root(root: Path) -> Path:
    """A folder laid out like LLaVA's playground/data/prompts/ (detail task named detail_description)."""
    for name in ("conversation", "detail_description", "complex_reasoning"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "system_message.txt").write_bytes(LLAVA_SYSTEM_BYTES)
    qa = "Question:\n{q}\n===\nAnswer:\n{a}"
    conv = root / "conversation"
    # Written out of order on purpose: shots must come back in file-name order.
    (conv / "001_caps.txt").write_text("A cat on a mat.", encoding="utf-8")
    (conv / "001_conv.txt").write_text(qa.format(q="What animal is it?", a="A cat.") + "\n===\n" + qa.format(q="Where is it?", a="On a mat."), encoding="utf-8")
    (conv / "000_caps.txt").write_text("A dog in a park.", encoding="utf-8")
    (conv / "000_conv.txt").write_text(qa.format(q="What animal is it?", a="A dog.") + "\n===\n" + qa.format(q="Where is it?", a="In a park."), encoding="utf-8")
    detail = root / "detail_description"
    (detail / "000_caps.txt").write_text("A bus on a street.\n\nbus: [0.1, 0.2, 0.5, 0.9]", encoding="utf-8")
    (detail / "000_conv.txt").write_text("A red bus drives along a city street.\n\nPeople wait at the stop.", encoding="utf-8")
    reasoning = root / "complex_reasoning"
    (reasoning / "000_caps.txt").write_text("A man holds an umbrella.\n\nperson: [0.2, 0.1, 0.4, 0.9]", encoding="utf-8")
    (reasoning / "000_conv.txt").write_text(qa.format(q="Why the umbrella?", a="It looks like rain."), encoding="utf-8")
    return root


@pytest.fixture
def llava_prompts(tmp_path: Path) -> Path:
    """A prompt root in LLaVA's layout (`detail_description/`, `\\r\\n` in the system messages), three tasks."""
    return write_llava_root(tmp_path / "llava_prompts")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray of 2 CPUs for every Ray test of the session, shut down when the session ends.

    Yields (GCS address, session folder): the address lets a `datagen ray` subprocess join it, the folder holds
    the logs a secret must never reach. Without the [ray] extra the Ray tests skip, unless DATAGEN_REQUIRE_RAY
    (set by `make test`) says a missing Ray is a failure."""
    import os

    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        if os.environ.get("DATAGEN_REQUIRE_RAY"):
            pytest.fail("DATAGEN_REQUIRE_RAY is set but Ray is not installed; run `make setup-ray`")
        pytest.skip("needs the [ray] extra (make setup-ray)")
    # "local": this session's own Ray, never one another process on the machine started with `ray start`.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address, Path(ray._private.worker._global_node.get_session_dir_path())
    finally:
        ray.shutdown()
