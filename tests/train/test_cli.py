"""The CLI contract: fast import, one clear line + exit 2 on bad input, shipped configs parse."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datagen.train.config import FIELDS, load_yaml
from train_helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_cli_module_imports_no_torch_or_transformers():
    code = "import sys, datagen.train.cli; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert out.strip() == "[]"


def clear_error(result, *needles):
    assert "Traceback" not in result.output
    # typer draws BadParameter in a box; compare the words, not the frame.
    text = " ".join(result.output.replace("│", " ").split())
    for needle in needles:
        assert needle in text, result.output


@pytest.fixture
def files(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "broken.json").write_text('[{"id": "1", "image": ')
    (tmp_path / "ok.json").write_text(json.dumps([{"id": "t", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}]))
    (tmp_path / "bad.yaml").write_text("learning_rate: 1\n")
    return tmp_path


def pretrain(files, *extra):
    return ["train", "pretrain", "--image-folder", files / "img", "--vision-tower", "tiny", "--llm", "tiny",
            "--out", files / "out", *extra]


def test_missing_data_file(files):
    clear_error(run_cli(*pretrain(files, "--data", files / "nope.json"), expect=2), "--data", "file not found")


def test_broken_json(files):
    clear_error(run_cli(*pretrain(files, "--data", files / "broken.json"), expect=2), "broken JSON at line 1")


def test_data_that_is_not_utf8(files):
    (files / "latin1.jsonl").write_bytes(b'{"id": "caf\xe9"}\n')
    clear_error(run_cli(*pretrain(files, "--data", files / "latin1.jsonl"), expect=2), "latin1.jsonl", "not UTF-8", "byte 11")


def test_broken_jsonl_names_the_files_own_line(files):
    good = json.dumps({"id": "t", "conversations": []})
    (files / "broken.jsonl").write_text(f"{good}\n\n{good}\n{{\"id\": \"x\",\n{good}\n")
    clear_error(run_cli(*pretrain(files, "--data", files / "broken.jsonl"), expect=2), "broken.jsonl: broken JSON at line 4")


def test_unknown_yaml_key(files):
    clear_error(run_cli(*pretrain(files, "--data", files / "ok.json", "--config", files / "bad.yaml"), expect=2),
                   "bad.yaml", "learning_rate")


def test_bad_projector(files):
    clear_error(run_cli(*pretrain(files, "--data", files / "ok.json", "--projector", "mlp3x"), expect=2),
                   "--projector")


def test_finetune_needs_a_real_stage1_checkpoint(files):
    base = ["train", "finetune", "--data", files / "ok.json", "--image-folder", files / "img", "--out", files / "o"]
    clear_error(run_cli(*base, expect=2), "--from is required")
    clear_error(run_cli(*base, "--from", files / "missing", expect=2), "--from", "does not exist")
    clear_error(run_cli(*base, "--from", files / "img", expect=2), "not a datagen checkpoint")


def test_chat_missing_image(files):
    clear_error(run_cli("chat", files, "What?", "--image", files / "none.png", expect=2), "--image")


def test_shipped_configs_parse():
    recipes = sorted((REPO / "configs").glob("llava_*.yaml"))
    assert len(recipes) == 4
    for path in recipes:
        assert set(load_yaml(str(path))) <= set(FIELDS)
    for path in sorted((REPO / "configs" / "deepspeed").glob("*.json")):
        assert "zero_optimization" in json.loads(path.read_text())
    launch = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    assert {p.stem for p in launch} >= {"zero2", "zero3", "fsdp"}
    for path in launch:
        assert yaml.safe_load(path.read_text())["distributed_type"] in ("DEEPSPEED", "FSDP")
