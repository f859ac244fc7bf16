"""`datagen show`: a few records of a run as a person reads them, and the report's examples section.

A record is shown with what the teacher was told of its image (captions, then boxes, when the annotation files
are at hand), its turns, and the grounding verdict the run stored (the objects it names, those no annotation
supports); a reject with its reason and the raw reply that was refused. Nothing here asks a teacher.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from datagen.errors import InputError
from datagen.formats.record_lines import record_lines
from datagen.formats.records import IMAGE_TOKEN, task_file
from datagen.run.output_folder import REJECTS_FILE

SPEAKERS = {"human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class Example:
    """One record or reject of a run, with the fields a reader looks at pulled out of its JSON."""

    row: dict
    task: str
    rejected: bool

    @property
    def id(self) -> str:
        return str(self.row.get("id", "?"))

    @property
    def image(self) -> str:
        return str(self.row.get("image", "?"))

    @property
    def image_id(self) -> int | None:
        meta = self.row.get("meta")
        value = meta.get("image_id") if isinstance(meta, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return int(self.id) if self.id.isdigit() else None

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(speaker, text) per turn, the `<image>` token left out: it marks where the picture goes, not what is said."""
        turns = self.row.get("conversations")
        if not isinstance(turns, list):
            return []
        return [
            (SPEAKERS.get(str(turn.get("from")), str(turn.get("from"))), _without_image_token(str(turn.get("value", ""))))
            for turn in turns
            if isinstance(turn, dict)
        ]

    @property
    def grounding(self) -> tuple[list[str], list[str]]:
        """The objects the answer names and those of them the image's annotations do not support."""
        meta = self.row.get("meta")
        grounding = meta.get("grounding") if isinstance(meta, dict) else None
        if not isinstance(grounding, dict):
            return [], []
        return _strings(grounding.get("mentioned")), _strings(grounding.get("unsupported"))

    @property
    def reason(self) -> str:
        return f"{self.row.get('reason', '?')}: {self.row.get('detail', '')}".rstrip(": ")


def _without_image_token(text: str) -> str:
    return text.replace(IMAGE_TOKEN + "\n", "").replace("\n" + IMAGE_TOKEN, "").replace(IMAGE_TOKEN, "").strip()


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _same_id(row: dict, wanted: str) -> bool:
    # `--id 100013` finds the record written as "000000100013": COCO ids are zero-padded in LLaVA's files.
    value = str(row.get("id", ""))
    return value == wanted or (value.isdigit() and wanted.isdigit() and int(value) == int(wanted))


def pick(folder: Path, manifest: dict, task: str | None = None, n: int = 5, rejects: bool = False, record_id: str | None = None) -> list[Example]:
    """The first `n` records (or rejects) of a run, of one task or all, or every one of one id. `manifest` is the
    run's, as formats.manifest.read_run_manifest reads it: its tasks, in the order they were generated in."""
    tasks = list(manifest["counts"])
    if task is not None and task not in tasks:
        raise InputError(f"--task {task}: {folder} holds no such task; it holds {', '.join(tasks) or 'none'}")
    wanted = [task] if task else tasks
    if rejects:
        # A hand-edited line is shown as it is: show only looks.
        rows = ((str(line.data.get("task")), line.data) for line in record_lines(folder / REJECTS_FILE, reject=True) if str(line.data.get("task")) in wanted)
    else:
        rows = ((name, line.data) for name in wanted for line in record_lines(folder / task_file(name)))
    examples: list[Example] = []
    for name, row in rows:
        if record_id is not None and not _same_id(row, record_id):
            continue
        examples.append(Example(row=row, task=name, rejected=rejects))
        if record_id is None and len(examples) == n:
            break
    if record_id is not None and not examples:
        where = "rejects.jsonl" if rejects else "the task files"
        other = "without --rejects" if rejects else "with --rejects"
        raise InputError(f"--id {record_id}: no such id in {where} of {folder}; check the id, or look {other}")
    return examples


def source_paths(manifest: dict, captions: Path | None, instances: Path | None) -> tuple[Path | None, Path | None]:
    """The annotation files to show contexts from: the ones given, else the ones the run read, if still there."""
    if captions is not None:
        return captions, instances
    source = manifest.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("captions_file"), str):
        return None, None
    found = Path(source["captions_file"])
    boxes = Path(source["instances_file"]) if isinstance(source.get("instances_file"), str) else None
    if not found.is_file():
        return None, None
    return found, boxes if boxes is not None and boxes.is_file() else None


def contexts(examples: list[Example], captions: Path | None, instances: Path | None) -> dict[int, str]:
    """The context each shown image's teacher was given, as LLaVA's prompts lay it out (captions, then boxes)."""
    if captions is None:
        return {}
    from datagen.source.coco import CocoSource
    from datagen.source.context import render_context

    source = CocoSource(captions, instances)
    shown: dict[int, str] = {}
    for example in examples:
        image_id = example.image_id
        if image_id is None or image_id in shown:
            continue
        image = source.image(image_id)
        if image is not None:
            shown[image_id] = render_context(image, "captions+boxes")
    return shown


def render_terminal(examples: list[Example], shown_contexts: dict[int, str]) -> list:
    """One rich panel per example: context (dim), turns, and the grounding or reject verdict at the foot."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    panels = []
    for example in examples:
        parts: list[Text] = []
        context = shown_contexts.get(example.image_id) if example.image_id is not None else None
        if context:
            parts.append(Text("what the teacher was told\n", style="bold dim") + Text(context, style="dim"))
        if example.rejected:
            parts.append(Text(f"rejected: {example.reason}", style="bold red"))
            parts.append(Text("raw reply\n", style="bold") + Text(str(example.row.get("raw", "")).strip()))
        if example.turns:
            parts.append(Text("\n").join(Text(f"{speaker}: ", style="bold cyan" if speaker == "user" else "bold green") + Text(text) for speaker, text in example.turns))
        mentioned, unsupported = example.grounding
        if mentioned:
            verdict = Text("objects named: " + ", ".join(mentioned), style="dim")
            if unsupported:
                verdict += Text("   not in the annotations: " + ", ".join(unsupported), style="bold yellow")
            parts.append(verdict)
        title = f"{example.id} · {example.task} · {example.image}" + (" · REJECTED" if example.rejected else "")
        panels.append(Panel(Group(*_spaced(parts)), title=title, title_align="left", border_style="red" if example.rejected else "blue"))
    return panels


def _spaced(parts: list) -> list:
    from rich.text import Text

    spaced: list = []
    for part in parts:
        if spaced:
            spaced.append(Text(""))
        spaced.append(part)
    return spaced


def render_html(examples: list[Example]) -> str:
    """The report's examples: each record's turns and its verdict, escaped; nothing is shown unescaped."""
    blocks = []
    for example in examples:
        head = f"{html.escape(example.id)} ({html.escape(example.image)})"
        lines = []
        if example.rejected:
            lines.append(f'<p class="reject">rejected: {html.escape(example.reason)}</p>')
            lines.append(f"<pre>{html.escape(str(example.row.get('raw', '')).strip())}</pre>")
        lines += [f'<p class="turn"><b>{html.escape(speaker)}</b>: {html.escape(text)}</p>' for speaker, text in example.turns]
        mentioned, unsupported = example.grounding
        if mentioned:
            flags = f"objects named: {html.escape(', '.join(mentioned))}"
            if unsupported:
                flags += f'; <span class="reject">not in the annotations: {html.escape(", ".join(unsupported))}</span>'
            lines.append(f'<p class="note">{flags}</p>')
        blocks.append(f'<div class="example"><p><b>{head}</b></p>{"".join(lines)}</div>')
    return "\n".join(blocks)
