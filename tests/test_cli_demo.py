"""`make demo` installs the runtime only: its commands must run without the dev and train extras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What `pip install -e .` leaves out: the dev extra (tests, lint, report plots) and the train extra.
NOT_INSTALLED = ("pytest", "_pytest", "mypy", "ruff", "datasets", "matplotlib", "torch", "transformers", "accelerate", "peft", "trl")

# Runs the demo's commands in one process in which importing any of NOT_INSTALLED fails as in a runtime-only venv.
DEMO = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
from datagen.cli import main
out, data = sys.argv[2], sys.argv[3]
for args in (
    ["generate", "--teacher", "mock", "--captions", f"{data}/captions.json", "--instances", f"{data}/instances.json", "--out", out, "--seed", "0", "--no-progress"],
    ["export", out, "--out", f"{out}/llava_instruct.json"],
    ["align", "--captions", f"{data}/captions.json", "--out", f"{out}/llava_pretrain.json"],
):
    sys.argv = ["datagen", *args]
    try:
        main()
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
print("loaded:", ",".join(sorted(name for name in sys.modules if name.split(".")[0] in blocked)))
"""


def test_demo_commands_run_without_the_dev_and_train_extras(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    command = [sys.executable, "-c", DEMO, ",".join(NOT_INSTALLED), str(out), str(ROOT / "data")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("loaded:"), result.stdout[-500:]
    for name in ("conversation.jsonl", "detail.jsonl", "complex_reasoning.jsonl", "manifest.json", "llava_instruct.json", "llava_pretrain.json"):
        assert (out / name).stat().st_size > 0, name
