"""Answer checks on real teacher text: how often the rules of datagen/quality/checks.py refuse answers a real
teacher (GPT-4 for LLaVA, or any other) wrote, which the repository does not ship.

    .venv/bin/python bench/realtext_bench.py FOLDER [--show N]

FOLDER holds `*.jsonl` files you gathered yourself (third-party text stays outside the repository).
Each line is one answer, or one whole LLaVA record:

    {"task": "conversation", "question": "What is the man holding?", "answer": "...", "source": "..."}
    {"task": "detail", "answer": "..."}
    {"task": "conversation", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}

`task` is conversation, detail or complex_reasoning (LLaVA's `conv`/`complex` are accepted too). A row may also
carry its image's `captions` (list) and box `categories` (list of COCO category names), as LLaVA's
`caps_boxes_coco2014_val_80.jsonl` gives them for its GPT-4 evaluation answers: its answer is then grounded too,
and the counts of records flagged, refused by default (about another image) and refused with
--reject-unsupported are printed. With `--swapped`, each such answer is also served for every other image of
the folder that lacks one of its objects (an image is its captions and categories), and the share of those
records refused by default is printed: a record about another image, as a weak teacher writes one.
Every answer goes through the checks as in `datagen generate`: a description through `parse_answer`,
a question and its answer wrapped into the teacher's `Question:`/`Answer:` reply (a LLaVA record as one
reply of all its turns) and parsed by `parse_answer`; an answer whose question was not kept is checked
alone with `check_pairs`, as an empty detail instruction is. Real teacher data is nearly all good, so
every refusal printed is a candidate false refusal to judge by hand. Replies are also compared with the
few-shot examples of the packs under `--prompts` (ours by default), as `datagen generate` compares them with
the pack it sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from datagen.quality.checks import RULE_NAMES, check_pairs  # noqa: E402  (run as a script from the repository)
from datagen.formats.records import Grounding  # noqa: E402
from datagen.quality.grounding import claimed_categories, ground  # noqa: E402
from datagen.quality.parse import Rejected  # noqa: E402
from datagen.quality.reply_checks import REPLY_RULE_NAMES, Examples, names_another_image  # noqa: E402
from datagen.source.coco import ImageSupport  # noqa: E402
from datagen.tasks.prompts import BUNDLED_PROMPTS  # noqa: E402
from datagen.tasks.registry import DEFAULT_TASKS, TASKS, parse_answer  # noqa: E402

_TASK_ALIASES = {"conv": "conversation", "complex": "complex_reasoning", "detail_description": "detail"}
_IMAGE_TOKEN = "<image>"


class BadRow(ValueError):
    pass


def fail(message: str) -> None:
    """One line naming the file or argument and the fix, exit status 2, as the datagen CLI does."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def as_pairs(row: dict) -> list[tuple[str, str]]:
    """(question, answer) pairs of a row, the `<image>` token a finished LLaVA record carries removed."""
    if "conversations" in row:
        turns = row["conversations"]
        humans = [turn["value"] for turn in turns if turn["from"] in ("human", "user")]
        answers = [turn["value"] for turn in turns if turn["from"] in ("gpt", "assistant")]
        if len(humans) != len(answers):
            raise BadRow("conversations do not alternate human/gpt")
        return [(question.replace(_IMAGE_TOKEN, "").strip(), answer) for question, answer in zip(humans, answers)]
    if not isinstance(row.get("answer"), str):
        raise BadRow("no 'answer' or 'conversations'")
    return [((row.get("question") or "").replace(_IMAGE_TOKEN, "").strip(), row["answer"])]


def reject_reason(
    task: str, pairs: list[tuple[str, str]], finish_reason: str | None = "stop", examples: dict[str, Examples] | None = None
) -> tuple[str, str] | None:
    """(rule, detail) of the first refusal, or None when the answer would be written."""
    examples = examples or {}
    if task == "detail":
        texts = [answer for _, answer in pairs]
        try:
            parse_answer(task, "\n\n".join(texts), finish_reason, examples=examples.get(task))
        except Rejected as rejection:
            return rejection.reason, rejection.detail
        return None
    if all(question for question, _ in pairs):
        reply = "\n===\n".join(f"Question:\n{question}\n===\nAnswer:\n{answer}" for question, answer in pairs)
        parsed_as = task if len(pairs) == 1 else "conversation"
        try:
            parse_answer(parsed_as, reply, finish_reason, examples=examples.get(parsed_as))
        except Rejected as rejection:
            return rejection.reason, rejection.detail
        return None
    findings = check_pairs(TASKS[task].response.value, pairs)
    if findings:
        first = findings[0]
        return first.rule, f"{first.role} {first.turn + 1}: {first.excerpt!r}"
    return None


def image_of(row: dict) -> ImageSupport:
    """What supports an object claim for the row's image: its captions and box categories."""
    return ImageSupport(captions=tuple(row["captions"]), categories=frozenset(row.get("categories", [])))


def outcome_of(grounding: Grounding) -> str:
    """"refused" (about another image: refused by default), "flagged" (refused only with --reject-unsupported) or "clean"."""
    return "refused" if names_another_image(grounding) else "flagged" if grounding.unsupported else "clean"


def grounding_outcome(row: dict, pairs: list[tuple[str, str]]) -> str:
    return outcome_of(ground([answer for _, answer in pairs], image_of(row)))


def swapped(grounded: list[tuple[list[str], ImageSupport]]) -> list[str]:
    """Each (answers, image) record served for every other image of the folder that lacks one of its objects.

    An answer's objects are those it claims (by our reading) that its own image's boxes or captions show: a stray
    object of its own is not one of them. An image lacks an object when no box of it has its category and none of
    its captions claims it. Answers of two or more objects are the measure (a record about another image, refused
    by default); one-object answers are counted apart, since one absent object alone is a claim to flag."""
    shows = {image: image.categories | {category for found in claimed_categories(image.captions) for category in found} for _, image in grounded}
    counts: Counter[tuple[str, str]] = Counter()  # (kind, outcome)
    for answers, own in grounded:
        mine = ground(answers, own)
        objects = set(mine.mentioned) - set(mine.unsupported)
        if not objects:
            continue
        for other, present in shows.items():
            if other == own or objects <= present:
                continue
            kind = "one object" if len(objects) == 1 else "lacks all" if not objects & present else "lacks some"
            counts[kind, outcome_of(ground(answers, other))] += 1
    lines = ["| answers served for another image | pairs | refused by default | flagged only | clean |", "|---|---|---|---|---|"]
    groups = {"two or more objects, image lacks one or more": ("lacks all", "lacks some"), "  of which it lacks all": ("lacks all",),
              "  of which it lacks some": ("lacks some",), "one object, image lacks it": ("one object",)}
    for label, kinds in groups.items():
        total = sum(counts[kind, outcome] for kind in kinds for outcome in ("refused", "flagged", "clean"))
        shares = [sum(counts[kind, outcome] for kind in kinds) for outcome in ("refused", "flagged", "clean")]
        lines.append(f"| {label} | {total} | " + " | ".join(f"{share / total:.1%} ({share})" if total else "n/a" for share in shares) + " |")
    return lines


def load(folder: Path) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = []
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        fail(f"no *.jsonl files in {folder}; give a folder of gathered teacher answers")
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                fail(f"{path}:{number} is not JSON ({error.msg}); fix or remove that line")
            rows.append((f"{path.name}:{number}", row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of *.jsonl teacher answers (not shipped)")
    parser.add_argument("--show", type=int, default=200, help="print at most this many refused excerpts")
    parser.add_argument("--prompts", type=Path, default=BUNDLED_PROMPTS, help="prompt packs whose examples replies must not copy")
    parser.add_argument("--swapped", action="store_true", help="also serve each grounded answer for every other image of the folder")
    args = parser.parse_args()
    if not args.folder.is_dir():
        fail(f"{args.folder} is not a folder; give the folder holding your *.jsonl files")
    examples = {name: spec.examples(spec.load_pack(args.prompts)) for name, spec in TASKS.items()}
    grounded: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    refused_by_task: Counter[str] = Counter()
    refused_by_rule: Counter[str] = Counter()
    refusals: list[str] = []
    grounded_rows: list[tuple[list[str], ImageSupport]] = []
    kept = 0
    for where, row in load(args.folder):
        task = _TASK_ALIASES.get(row.get("task", ""), row.get("task", ""))
        if task not in TASKS:
            fail(f"{where} has task {row.get('task')!r}; use one of {', '.join(TASKS)}")
        try:
            pairs = as_pairs(row)
        except (BadRow, KeyError, TypeError) as error:
            fail(f"{where}: {error}; see the row format at the top of bench/realtext_bench.py")
        answers[task] += len(pairs)
        outcome = reject_reason(task, pairs, row.get("finish_reason", "stop"), examples)
        if "captions" in row:
            grounded_rows.append(([answer for _, answer in pairs], image_of(row)))
            grounded_as = grounding_outcome(row, pairs)
            grounded[grounded_as] += 1
            kept += outcome is None and grounded_as != "refused"
        if outcome is None:
            continue
        rule, detail = outcome
        refused_by_task[task] += 1
        refused_by_rule[rule] += 1
        refusals.append(f"- {where} [{task}] `{rule}`: {detail}")
    total = sum(answers.values())
    shown = [task for task in TASKS if task in DEFAULT_TASKS or answers[task]]  # LLaVA's three, and any other task present
    print(f"{total} answers ({', '.join(f'{task} {answers[task]}' for task in shown)}) from {args.folder}")
    print(f"refused: {sum(refused_by_task.values())} ({', '.join(f'{task} {refused_by_task[task]}' for task in shown)})")
    print("| rule | refusals |\n|---|---|")
    for name in (*RULE_NAMES, *REPLY_RULE_NAMES):
        print(f"| `{name}` | {refused_by_rule[name]} |")
    for name in sorted(set(refused_by_rule) - set(RULE_NAMES) - set(REPLY_RULE_NAMES)):  # parse-level reasons (unparseable, ...)
        print(f"| `{name}` | {refused_by_rule[name]} |")
    if grounded:
        total_grounded = sum(grounded.values())
        print(
            f"\ngrounded against their captions and boxes: {total_grounded}; flagged (unsupported objects) {grounded['flagged'] + grounded['refused']},"
            f" refused by default (about another image) {grounded['refused']}, refused with --reject-unsupported"
            f" {grounded['flagged'] + grounded['refused']}"
        )
        print(f"kept on their own images: {kept / total_grounded:.1%} ({kept}/{total_grounded}; text rules and default grounding)")
    if args.swapped:
        if len(set(image for _, image in grounded_rows)) < 2:
            fail(f"--swapped needs rows of two or more images with 'captions' in {args.folder}")
        print("\nServed for another image of the folder (`--swapped`):\n")
        print("\n".join(swapped(grounded_rows)))
    if refusals:
        print("\nRefused (judge each by hand: a real leak, refusal or cut-off, or a false refusal):")
        print("\n".join(refusals[: args.show]))


if __name__ == "__main__":
    main()
