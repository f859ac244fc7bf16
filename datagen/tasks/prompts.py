"""Prompt packs (LLaVA's layout: system_message.txt and NNN_caps.txt/NNN_conv.txt few-shot pairs per task folder) and instruction lists, and how a request's messages are assembled."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from datagen.errors import InputError

BUNDLED_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


class Shot(BaseModel):
    context: str
    response: str


class PromptPack(BaseModel):
    task: str
    folder: str
    system_message: str
    shots: list[Shot]
    sha256: str


def _read(path: Path) -> str:
    # Bytes decoded as they are (no newline translation): LLaVA's system messages are sent byte for byte.
    if not path.is_file():  # a folder named like a prompt file, or a FIFO that would block the read for ever
        raise InputError(f"{path}: not a regular file; a prompt pack holds plain text files only")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; save the prompt file as UTF-8") from None


def _digest(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# The system message a vision regime (`--see image|both`) uses when the pack holds one; else the text one.
IMAGE_SYSTEM_MESSAGE = "system_message.image.txt"


def load_pack(root: Path, task: str, folders: tuple[str, ...], vision: bool = False) -> PromptPack:
    """The pack of `task` from the first of `folders` (its names as a sub-folder of `root`) that exists; with
    `vision`, its image system message when it has one (and then in the pack's hash)."""
    if not root.is_dir():
        raise InputError(f"--prompts {root}: folder not found; pass a folder holding one sub-folder per task")
    folder = next((root / name for name in folders if (root / name).is_dir()), None)
    if folder is None:
        names = " or ".join(folders)
        raise InputError(f"--prompts {root}: no prompt pack for task {task!r}; add a sub-folder named {names}")
    system_path = folder / "system_message.txt"
    if not system_path.exists():
        raise InputError(f"{system_path}: missing; every prompt pack needs a system_message.txt")
    if vision and (folder / IMAGE_SYSTEM_MESSAGE).is_file():
        system_path = folder / IMAGE_SYSTEM_MESSAGE
    shots, files = [], [system_path]
    for caps_path in sorted(folder.glob("*_caps.txt")):
        conv_path = caps_path.with_name(caps_path.name.replace("_caps.txt", "_conv.txt"))
        if not conv_path.is_file():
            raise InputError(f"{caps_path}: few-shot example without its response; add {conv_path.name}")
        shots.append(Shot(context=_read(caps_path), response=_read(conv_path)))
        files += [caps_path, conv_path]
    return PromptPack(task=task, folder=str(folder), system_message=_read(system_path), shots=shots, sha256=_digest(files, folder))


def build_messages(pack: PromptPack, context: str | list[dict[str, object]]) -> list[dict[str, object]]:
    """System message, the text-only few-shot turns, then the query: the context, or content parts with the image."""
    messages: list[dict[str, object]] = [{"role": "system", "content": pack.system_message}]
    for shot in pack.shots:
        messages.append({"role": "user", "content": shot.context})
        messages.append({"role": "assistant", "content": shot.response})
    messages.append({"role": "user", "content": context})
    return messages


class InstructionList(BaseModel):
    """Human questions a record is drawn from (detail descriptions, stage-1 brief descriptions)."""

    path: str
    lines: list[str]
    sha256: str


def load_instructions(name: str, root: Path | None = None) -> InstructionList:
    """`instructions/<name>.txt` under the user's prompts root when it has one, else ours."""
    path = BUNDLED_PROMPTS / "instructions" / f"{name}.txt"
    if root is not None and (root / "instructions" / f"{name}.txt").is_file():
        path = root / "instructions" / f"{name}.txt"
    if not path.is_file():
        raise InputError(f"{path}: instruction list not found; reinstall datagen or add the file, one instruction a line")
    lines = [line.strip() for line in _read(path).splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path}: instruction list is empty; write one instruction a line")
    return InstructionList(path=str(path), lines=lines, sha256=hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16])
