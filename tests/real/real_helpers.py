"""Helpers of the real-model tier (a plain module: tests/ is not a package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
# The one place the tier's run sizes live: a 3-task request is ~1,400 prompt tokens and SmolLM2 writes ~10-20
# tokens/s on two cores, so each request costs ~10-20 s.
IMAGES = 2
MAX_TOKENS = 96
TIMEOUT_S = 900  # per request: generous, a retry would only pile a second generation onto a busy server


def datagen(*args: object, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`datagen ARGS` in its own process, as a user runs it; transformers serve takes any key."""
    env = {"PATH": os.environ.get("PATH", ""), "OPENAI_API_KEY": "no-key-needed", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "datagen.cli", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]
