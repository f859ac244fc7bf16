"""A model that cannot be loaded (offline and not in the Hugging Face cache) ends stage 1 in one line, not in
transformers' traceback (issue 29, item 16)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_an_offline_model_load_failure_is_one_line(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "d.json").write_text(json.dumps([{"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "datagen.cli", "train", "pretrain", "--data", tmp_path / "d.json", "--image-folder", tmp_path / "img",
               "--out", tmp_path / "o", "--vision-tower", "tiny", "--llm", "datagen-tests/not-a-cached-model"]
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: a model could not be loaded (") and "--llm" in errors[0], done.stderr
    assert not [line for line in done.stderr.splitlines() if not line.startswith("error:") and "WARNING" not in line and "INFO" not in line], done.stderr
