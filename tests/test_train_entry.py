"""`datagen train` and `datagen chat` in the runtime-only install (`make demo`'s, no torch): one line naming the
extra to add, exit 2, no traceback; and stage 1 never picks a 7B model on its own (issue 29, item 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The CLI as it runs where torch is not installed: `import torch` fails as it would there.
WITHOUT_TORCH = "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['datagen', *sys.argv[1:]]; runpy.run_module('datagen.cli', run_name='__main__')"


def without_torch(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["train", "pretrain", "--data", "d.json", "--image-folder", ".", "--out", "o", "--llm", "tiny"], "train pretrain"),
        (["train", "finetune", "--data", "d.json", "--image-folder", ".", "--out", "o", "--from", "."], "train finetune"),
        (["train", "export-hf", "ckpt", "--out", "o"], "train export-hf"),
        (["chat", "ckpt", "What is it?", "--image", "a.jpg"], "chat"),
    ],
)
def test_without_torch_the_train_extra_is_named_in_one_line(tmp_path, command, name):
    done = without_torch(*command)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: `datagen {name}` needs torch, which this install lacks; pip install 'datagen[train]' (or `make setup-train`)"
    ]
    assert not (REPO / "o").exists()


def test_stage_1_without_llm_is_refused_naming_the_flag(tmp_path):
    pytest.importorskip("torch", reason="the check after the extra's")
    from typer.testing import CliRunner

    from datagen.train.cli import root_app

    (tmp_path / "img").mkdir()
    (tmp_path / "d.json").write_text("[]")
    args = ["train", "pretrain", "--data", tmp_path / "d.json", "--image-folder", tmp_path / "img", "--out", tmp_path / "o", "--vision-tower", "tiny"]
    result = CliRunner().invoke(root_app(), [str(arg) for arg in args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = result.output.splitlines()
    assert line.startswith("error: --llm is required") and "lmsys/vicuna-7b-v1.5" in line and "'tiny'" in line
    (tmp_path / "recipe.yaml").write_text("llm: tiny\nvision_tower: tiny\n")
    from datagen.train.cli import _need_llm

    _need_llm("pretrain", tmp_path / "recipe.yaml", {"llm": None})  # a --config that names it is enough
    _need_llm("finetune", None, {"llm": None})  # stage 2 takes its model from --from
