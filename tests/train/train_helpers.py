"""Helpers shared by the trainer tests (a plain module: tests/ is not a package)."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from datagen.train.cli import root_app

FAST = ["--num-workers", "0", "--no-gradient-checkpointing", "--save-steps", "1000", "--logging-steps", "5"]


def run_cli(*args: str, expect: int = 0):
    result = CliRunner().invoke(root_app(), [str(a) for a in args])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code} (wanted {expect}): {result.output}\n{result.exception!r}")
    return result


def losses(ckpt: Path) -> list[float]:
    state = json.loads((Path(ckpt) / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]
