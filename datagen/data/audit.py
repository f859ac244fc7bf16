"""`datagen audit`: the answer checks and grounding over any LLaVA-format file, against COCO annotations.

Works on our output and on LLaVA's released files alike (a JSON array or JSONL of `id`/`image`/`conversations`
records); no teacher is asked anything. A record's image is found by the COCO id in its `image` file name
(`000000033471.jpg`, `COCO_train2014_000000033471.jpg`) or else in its `id`. Its task is `meta.task` when the
record has one, else `--task`, else inferred: several question/answer pairs make a conversation; a single pair is
a detail description when its question asks for a description of the picture, and complex reasoning otherwise.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from datagen.quality.checks import Finding, check_pairs
from datagen.quality.parse import boxes_masked
from datagen.quality.reply_checks import Examples, check_reply
from datagen.source.coco import CocoSource
from datagen.errors import InputError
from datagen.files.lock import lock_folder
from datagen.quality.grounding import ground
from datagen.files.jsonl import atomic_file, iter_numbered_jsonl, write_json_atomic
from datagen.tasks.prompts import BUNDLED_PROMPTS, load_instructions
from datagen.formats.records import IMAGE_TOKEN, Grounding
from datagen.formats.manifest import QualityStats
from datagen.tasks.registry import TASKS, ResponseFormat, task_spec

FINDINGS_FILE = "findings.jsonl"
SUMMARY_FILE = "summary.json"

TaskSource = Literal["meta", "flag", "inferred"]
Status = Literal["checked", "not_in_annotations", "malformed"]

# A single question asking for the picture to be described, in any wording: a description verb or noun, or
# "in detail" / "what is happening", with the picture in it. "Describe the risks the cyclist faces" has no picture
# in it and stays complex reasoning; "explain" and "analyze" count only with the picture as their object, since
# "explain why the man in the image..." is reasoning.
_DESCRIPTION_WORDS = re.compile(
    r"\b(?:describe|description|depict|portray|narrate|characteri[sz]e|rundown|walk (?:me )?through|break down|elaborate on"
    r"|in (?:great |full |rich |fine )?detail|detailed|thorough(?:ly)?|comprehensive(?:ly)?|exhaustive"
    r"|what(?:'s| is) (?:happening|going on)|what do you (?:see|think is going on)|key elements|main features|visual content)\b",
    re.IGNORECASE,
)
_PICTURE_WORDS = re.compile(r"\b(?:image|picture|photo|photograph|scene|snapshot|shown|displayed|presented|you see|here)\b", re.IGNORECASE)
_PICTURE_AS_OBJECT = re.compile(
    r"\b(?:explain|analy[sz]e|examine|illustrate|clarify)\s+(?:the |this )?(?:visual )?(?:contents?|image|picture|photo|scene|elements)\b",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d+")


class AuditedRecord(BaseModel):
    """One line of findings.jsonl."""

    index: int = Field(description="Position of the record in the audited file, from 0")
    id: str | None
    image: str | None
    task: str | None
    task_from: TaskSource | None
    status: Status
    problem: str | None = None
    findings: list[Finding] = []
    grounding: Grounding | None = None


class TaskSummary(BaseModel):
    records: int = 0
    checked: int = 0
    not_in_annotations: int = 0
    flagged_by_checks: int = Field(0, description="Checked records with at least one finding")
    findings: dict[str, int] = Field(default_factory=dict, description="Per rule: checked records it fired on, the most first")
    quality: QualityStats = Field(default_factory=QualityStats)
    unsupported_objects: dict[str, int] = Field(default_factory=dict, description="Per category: records naming it unsupported, the most first")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged_share(self) -> float | None:
        return round(self.flagged_by_checks / self.checked, 4) if self.checked else None


class _Tally:
    """A TaskSummary's counts kept as plain counters while the file is read: setting a pydantic model's fields
    once per record cost more than the counting itself. CHAIR is counted by QualityStats, as everywhere. Each
    record is counted once, for its task; the total is the tasks' tallies added up at the end."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.findings: Counter[str] = Counter()
        self.quality = QualityStats()
        self.unsupported: Counter[str] = Counter()

    def add(self, record: AuditedRecord) -> None:
        counts = self.counts
        counts["records"] += 1
        if record.status == "not_in_annotations":
            counts["not_in_annotations"] += 1
        if record.status != "checked":
            return
        counts["checked"] += 1
        if record.findings:
            counts["flagged_by_checks"] += 1
            self.findings.update({finding.rule for finding in record.findings})
        if record.grounding is not None:
            self.quality.add(record.grounding)
            self.unsupported.update(record.grounding.unsupported)

    def __iadd__(self, other: _Tally) -> _Tally:
        self.counts.update(other.counts)
        self.findings.update(other.findings)
        self.quality = self.quality + other.quality
        self.unsupported.update(other.unsupported)
        return self

    def summary(self) -> TaskSummary:
        counts = self.counts
        return TaskSummary(
            records=counts["records"],
            checked=counts["checked"],
            not_in_annotations=counts["not_in_annotations"],
            flagged_by_checks=counts["flagged_by_checks"],
            findings=_most_first(self.findings),
            quality=self.quality,
            unsupported_objects=_most_first(self.unsupported),
        )


def _most_first(counts: Counter[str]) -> dict[str, int]:
    """The counts as summary.json lists them: the most frequent first, ties by name."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


class AuditSummary(BaseModel):
    file: str
    captions: str
    instances: str
    records: int
    malformed: int
    tasks: dict[str, TaskSummary]
    total: TaskSummary
    max_chair_s: float | None
    max_flagged: float | None
    failures: list[str] = Field(description="Thresholds exceeded; `datagen audit` exits 1 when there are any")


def read_records(path: Path) -> Iterator[object]:
    """The file's records: a JSON array (LLaVA's releases) or one JSON value per line (ours)."""
    if not path.is_file():
        raise InputError(f"{path}: file not found; pass a LLaVA-format JSON array or JSONL file")
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        try:
            data = json.loads(path.read_bytes())
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}); fix or re-download the file") from None
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text; pass a LLaVA-format JSON or JSONL file") from None
        yield from data
        return
    for _, row in iter_numbered_jsonl(path, fix="fix or delete that line (a JSON array must start with '[')"):
        yield row


def qa_pairs(record: object) -> list[tuple[str, str]]:
    """(question, answer) pairs of a LLaVA record, `<image>` taken out of the first question; ValueError if malformed."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
        raise ValueError("'conversations' must be a list of human/gpt turns in pairs")
    pairs = []
    for index in range(0, len(turns), 2):
        human, gpt = turns[index], turns[index + 1]
        if not all(isinstance(turn, dict) and isinstance(turn.get("value"), str) for turn in (human, gpt)):
            raise ValueError(f"turn {index} or {index + 1} has no text 'value'")
        if (human.get("from"), gpt.get("from")) != ("human", "gpt"):
            raise ValueError(f"turns {index} and {index + 1} are not a human question and a gpt answer")
        question = human["value"]
        if index == 0:
            question = question.replace(IMAGE_TOKEN, "", 1).strip()
        pairs.append((question, gpt["value"]))
    return pairs


def is_description_request(question: str, instructions: frozenset[str]) -> bool:
    if question.strip().casefold() in instructions:
        return True
    if _PICTURE_AS_OBJECT.search(question):
        return True
    return bool(_DESCRIPTION_WORDS.search(question) and _PICTURE_WORDS.search(question))


def choose_task(record: dict, pairs: list[tuple[str, str]], task: str | None, instructions: frozenset[str]) -> tuple[str, TaskSource]:
    meta = record.get("meta")
    if isinstance(meta, dict) and meta.get("task") in TASKS:
        return meta["task"], "meta"
    if task is not None:
        return task, "flag"
    if len(pairs) > 1:
        return "conversation", "inferred"
    return ("detail" if is_description_request(pairs[0][0], instructions) else "complex_reasoning"), "inferred"


def image_id_of(record: dict, known: set[int]) -> int | None:
    """The COCO id in the image file name (its last number), else in the record id."""
    for field in (Path(str(record.get("image") or "")).stem, str(record.get("id") or "")):
        numbers = _DIGITS.findall(field)
        if numbers and int(numbers[-1]) in known:
            return int(numbers[-1])
    return None


def audit_record(
    index: int, record: object, source: CocoSource, known: set[int], task: str | None, instructions: frozenset[str], examples: PackExamples
) -> AuditedRecord:
    identity: dict[str, str | None] = {"id": None, "image": None}
    if isinstance(record, dict):
        identity = {"id": str(record["id"]) if "id" in record else None, "image": str(record["image"]) if "image" in record else None}
    try:
        pairs = qa_pairs(record)
    except ValueError as error:
        return AuditedRecord(index=index, **identity, task=None, task_from=None, status="malformed", problem=str(error))
    assert isinstance(record, dict)
    chosen, task_from = choose_task(record, pairs, task, instructions)
    image_id = image_id_of(record, known)
    image = source.support(image_id) if image_id is not None else None
    if image is None:
        problem = "no image with this id in --captions" if image_id is None else "the image has no usable caption"
        return AuditedRecord(index=index, **identity, task=chosen, task_from=task_from, status="not_in_annotations", problem=problem)
    # A detail record's question is one of a fixed list of instructions, not teacher text: only its answer is checked.
    prose = chosen in TASKS and TASKS[chosen].response is ResponseFormat.PROSE
    checked = [("", answer) for _, answer in pairs] if prose else pairs
    # As `generate` checks a reply: each question and answer, then the whole reply (loops, copied examples).
    if chosen in TASKS and TASKS[chosen].boxes_in_text:
        checked = boxes_masked(checked)
    findings = check_pairs("prose" if prose else "qa_pairs", checked) + check_reply(checked, examples[chosen] if chosen in TASKS else None)
    return AuditedRecord(
        index=index,
        **identity,
        task=chosen,
        task_from=task_from,
        status="checked",
        findings=findings,
        grounding=ground([answer for _, answer in pairs], image),
    )


def audit(
    file: Path,
    captions: Path,
    instances: Path,
    out: Path,
    task: str | None = None,
    max_chair_s: float | None = None,
    max_flagged: float | None = None,
    prompts: Path = BUNDLED_PROMPTS,
) -> AuditSummary:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; pick a folder for findings.jsonl and summary.json")
    with lock_folder(out, "audit"):  # two audits into one folder would interleave their findings
        return _audit_into(file, captions, instances, out, task, max_chair_s, max_flagged, PackExamples(prompts))


class PackExamples(dict[str, Examples]):
    """The few-shot examples of each task's pack under a prompts root, loaded when a record of the task comes."""

    def __init__(self, prompts: Path) -> None:
        super().__init__()
        self.prompts = prompts

    def __missing__(self, task: str) -> Examples:
        spec = task_spec(task)
        self[task] = spec.examples(spec.load_pack(self.prompts))
        return self[task]


def _audit_into(
    file: Path,
    captions: Path,
    instances: Path,
    out: Path,
    task: str | None,
    max_chair_s: float | None,
    max_flagged: float | None,
    examples: PackExamples,
) -> AuditSummary:
    source = CocoSource(captions, instances)
    known = set(source.image_ids)
    instructions = frozenset(line.casefold() for line in load_instructions("detail").lines)
    tasks: dict[str, _Tally] = {}
    counts: Counter[str] = Counter()
    with atomic_file(out / FINDINGS_FILE) as handle:
        for index, record in enumerate(read_records(file)):
            audited = audit_record(index, record, source, known, task, instructions, examples)
            counts[audited.status] += 1
            if audited.task is not None:
                if audited.task not in tasks:  # (not setdefault: it would build a tally for every record)
                    tasks[audited.task] = _Tally()
                tasks[audited.task].add(audited)
            handle.write(audited.model_dump_json(exclude_none=True) + "\n")
        if not counts:
            raise InputError(f"{file}: holds no records; pass a LLaVA-format file with id, image and conversations")
        if not counts["checked"]:
            raise InputError(
                f"{file}: none of its {sum(counts.values())} records matched an image of --captions {captions}; "
                "pass the COCO annotations of the split the file was made from"
            )
    total = _Tally()
    for tally in tasks.values():
        total += tally
    summary_of_all = total.summary()
    summary = AuditSummary(
        file=str(file),
        captions=str(captions),
        instances=str(instances),
        records=sum(counts.values()),
        malformed=counts["malformed"],
        tasks={name: tasks[name].summary() for name in TASKS if name in tasks},
        total=summary_of_all,
        max_chair_s=max_chair_s,
        max_flagged=max_flagged,
        failures=failures(summary_of_all, max_chair_s, max_flagged),
    )
    write_json_atomic(out / SUMMARY_FILE, summary.model_dump(mode="json"))
    return summary


def failures(total: TaskSummary, max_chair_s: float | None, max_flagged: float | None) -> list[str]:
    found = []
    chair_s = total.quality.chair_s
    if max_chair_s is not None and chair_s is not None and chair_s > max_chair_s:
        found.append(f"CHAIR_s {chair_s:.2%} exceeds --max-chair-s {max_chair_s:.2%}")
    if max_flagged is not None and total.flagged_share is not None and total.flagged_share > max_flagged:
        found.append(f"{total.flagged_share:.2%} of records have check findings, more than --max-flagged {max_flagged:.2%}")
    return found


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_summary(summary: AuditSummary) -> str:
    header = ("task", "records", "checked", "no image", "flagged", "CHAIR_s", "CHAIR_i")
    rows = [header]
    for name, part in [*summary.tasks.items(), ("all", summary.total)]:
        rows.append((name, str(part.records), str(part.checked), str(part.not_in_annotations),
                     f"{part.flagged_by_checks} ({_share(part.flagged_share)})", _share(part.quality.chair_s), _share(part.quality.chair_i)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if summary.malformed:
        lines.append(f"malformed records (not LLaVA turns): {summary.malformed}")
    for name, part in summary.tasks.items():
        if part.findings:
            reasons = ", ".join(f"{rule} {count}" for rule, count in sorted(part.findings.items(), key=lambda item: (-item[1], item[0])))
            lines.append(f"{name} findings: {reasons}")
    if summary.total.unsupported_objects:
        common = sorted(summary.total.unsupported_objects.items(), key=lambda item: (-item[1], item[0]))[:10]
        lines.append("objects named but not in the image: " + ", ".join(f"{category} {count}" for category, count in common))
    lines += [f"FAIL: {failure}" for failure in summary.failures]
    return "\n".join(lines)
