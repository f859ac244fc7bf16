"""Answer checks on real open-model text: recall and false refusals on what SmolLM2-135M-Instruct wrote for our packs.

    .venv/bin/python bench/open_model_bench.py          # writes bench/results_open_model.md

`tests/data/open_model_replies.jsonl` holds real replies of SmolLM2-135M-Instruct to datagen's requests for the
sample images (`datagen generate` against `transformers serve`, or bench/collect_open_model_replies.py), each
labelled by hand twice: `label`, the outcome datagen must give it (`truncated` for a reply cut by the token
limit, else `ok` or the reject reason a careful reviewer would give, or `bad`: unfit for a reason no rule
names), and `content`, the same judgement of its text alone, as if the model had stopped at the last full
sentence before the cut. Nearly every reply of so small a model loops until the token limit, so `content`
is what measures the content rules on real loops. Each reply goes through what `datagen generate` does with it:
`parse_answer` with the examples of the pack it was asked with, then (when it parses) the record is built and
grounded against its image, refusing a record about another image. Replies of the images in HELD_OUT were to be
labelled only after the rules were written, and are reported apart.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.formats.manifest import QualityStats  # noqa: E402  (run as a script from the repository)
from datagen.formats.records import Grounding, RecordMeta, TeacherInfo, Usage  # noqa: E402
from datagen.quality.grounding import ground_record  # noqa: E402
from datagen.quality.parse import Rejected  # noqa: E402
from datagen.run.items import build_record  # noqa: E402
from datagen.source.coco import CocoSource  # noqa: E402
from datagen.tasks.prompts import BUNDLED_PROMPTS, load_instructions  # noqa: E402
from datagen.tasks.registry import task_spec  # noqa: E402
from datagen.tasks.structured import parse_structured  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "open_model_replies.jsonl"
OUT = HERE / "results_open_model.md"
# Every third sample image (sorted ids [2::3]), chosen before any reply was read.
HELD_OUT = frozenset({100042, 100079, 100103, 100138, 100163, 100194, 100225})


def outcome(row: dict, source: CocoSource) -> str:
    """The reject reason `datagen generate` gives this reply, or "ok" when it writes the record."""
    return judged(row, source)[0]


def judged(row: dict, source: CocoSource) -> tuple[str, Grounding | None]:
    """The outcome, and the grounding of the record when it is written (for CHAIR). A reply asked for with
    `--structured` (`structured: true`) is JSON, read back as `datagen generate --structured` reads it."""
    spec = task_spec(row["task"])
    image = source.image(row["image_id"])
    assert image is not None, row["image_id"]
    examples = spec.examples(spec.load_pack(BUNDLED_PROMPTS))
    try:
        if row.get("structured"):
            content = parse_structured(spec, row["text"], row["finish_reason"], "text", examples)
        else:
            content = spec.parse(row["text"], row["finish_reason"], "text", examples)
        meta = RecordMeta(
            task=row["task"], teacher=TeacherInfo(kind="openai", model=row["model"], mock=False), prompt_hash="", image_id=image.image_id,
            caption_ids=image.caption_ids, box_ids=[box.annotation_id for box in image.boxes], usage=Usage(), request_key="",
            finish_reason=row["finish_reason"],
        )
        instructions = load_instructions(spec.instructions) if spec.instructions else None
        record = build_record(image, row["task"], content, meta, instructions, 0)
        ground_record(record, image, reject_unsupported=False)
    except Rejected as rejection:
        return rejection.reason, None
    return "ok", record.meta.grounding


_LAST_SENTENCE_END = re.compile(r"[.!?][\"”’)]*(?=\s|$)")


def content_outcome(row: dict, source: CocoSource) -> str:
    """The outcome of a reply's text alone: a reply cut by the token limit is judged up to its last full sentence
    (and, when that leaves a question without its answer, up to its last full answer), as if the model had
    stopped there."""
    if row["finish_reason"] != "length":
        return outcome(row, source)
    ends = list(_LAST_SENTENCE_END.finditer(row["text"]))
    text = row["text"][: ends[-1].end()] if ends else row["text"]
    got = outcome({**row, "text": text, "finish_reason": "stop"}, source)
    if got == "unparseable" and "\n===\n" in text:  # cut after a question: the reply up to its last full answer
        got = outcome({**row, "text": text[: text.rindex("\n===\n")], "finish_reason": "stop"}, source)
    return got


def load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def ratio(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part}/{whole})" if whole else "n/a"


def summary(pairs: list[tuple[dict, str]], key: str) -> str:
    """ok replies and how many were refused; replies labelled with a reason some rule names (truncated included),
    refused and refused for that reason; replies `bad` for a reason no rule names, refused for any."""
    good = [got for row, got in pairs if row[key] == "ok"]
    named = [(row, got) for row, got in pairs if row[key] not in ("ok", "bad")]
    unnamed = [got for row, got in pairs if row[key] == "bad"]
    return (
        f"{len(pairs)} | {len(good)} | {ratio(sum(got != 'ok' for got in good), len(good))} | {len(named)} "
        f"| {ratio(sum(got != 'ok' for _, got in named), len(named))} | {ratio(sum(got == row[key] for row, got in named), len(named))} "
        f"| {len(unnamed)} | {ratio(sum(got != 'ok' for got in unnamed), len(unnamed))} |"
    )


def per_model(rows: list[dict], source: CocoSource) -> list[str]:
    """Per model, as sent: false refusals on `ok` replies, recall on those a rule names, the `bad` ones no rule names
    that are written (slips only a reader or a judge catches), and CHAIR of the records written."""
    table = [
        "| model | replies | ok | ok refused (false refusals) | a rule's reason | refused (recall) | bad, no rule's reason | of those written "
        "| ok with a slip, written | written | CHAIR-i of written | CHAIR-s of written |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in sorted({row["model"] for row in rows}):
        mine = [(row, *judged(row, source)) for row in rows if row["model"] == model]
        good = [got for row, got, _ in mine if row["label"] == "ok"]
        named = [got for row, got, _ in mine if row["label"] not in ("ok", "bad")]
        unnamed = [got for row, got, _ in mine if row["label"] == "bad"]
        slipped = sum(1 for row, got, _ in mine if row["label"] == "ok" and row.get("slip") and got == "ok")
        kept = QualityStats()
        for grounding in (found for _, _, found in mine if found is not None):
            kept.add(grounding)
        chair = (f"{kept.chair_i:.1%} ({kept.unsupported_mentions}/{kept.mentions})" if kept.chair_i is not None else "n/a",
                 f"{kept.chair_s:.1%} ({kept.records_with_unsupported}/{kept.records})" if kept.chair_s is not None else "n/a")
        table.append(
            f"| {model} | {len(mine)} | {len(good)} | {ratio(sum(got != 'ok' for got in good), len(good))} | {len(named)} "
            f"| {ratio(sum(got != 'ok' for got in named), len(named))} | {len(unnamed)} | {ratio(sum(got == 'ok' for got in unnamed), len(unnamed))} "
            f"| {slipped} | {kept.records} | {chair[0]} | {chair[1]} |"
        )
    return table


def main() -> None:
    rows = load()
    source = CocoSource(ROOT / "data" / "captions.json", ROOT / "data" / "instances.json")
    results = {"label": [(row, outcome(row, source)) for row in rows], "content": [(row, content_outcome(row, source)) for row in rows]}
    table = [
        "| model | judged | part | replies | ok | ok refused (false refusals) | a rule's reason | refused (recall) | for that reason | bad, no rule's reason | refused |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in sorted({row["model"] for row in rows}, reverse=True):
        for key, pairs in results.items():
            what = "as sent (`label`)" if key == "label" else "text alone (`content`)"
            for part, mine in (
                ("tuned on", [(row, got) for row, got in pairs if row["model"] == model and row["image_id"] not in HELD_OUT]),
                ("held out", [(row, got) for row, got in pairs if row["model"] == model and row["image_id"] in HELD_OUT]),
            ):
                table.append(f"| {model} | {what} | {part} | {summary(mine, key)}")
    per_label = ["| content label | replies | refused as labelled | refused for another reason | written |", "|---|---|---|---|---|"]
    for label, count in Counter(row["content"] for row in rows).most_common():
        mine = [got for row, got in results["content"] if row["content"] == label]
        same = sum(got == label for got in mine)
        per_label.append(f"| `{label}` | {count} | {same if label != 'ok' else '-'} | {sum(got not in (label, 'ok') for got in mine)} | {sum(got == 'ok' for got in mine)} |")
    wrong = [
        f"- {row['model']}{' (structured)' if row.get('structured') else ''} {'held out' if row['image_id'] in HELD_OUT else 'tuned'} "
        f"{row['image_id']} {row['task']} seed {row['seed']}: {key} `{row[key]}`, got `{got}` ({row.get('note', '')})"
        for key, pairs in results.items()
        for row, got in pairs
        if got != row[key] and not (row[key] == "bad" and got != "ok") and not (key == "content" and row["finish_reason"] == "stop")
    ]
    lines = [
        "# Answer checks on real open-model replies",
        "",
        f"`bench/open_model_bench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}.",
        "",
        f"Corpus `tests/data/open_model_replies.jsonl`: {len(rows)} replies of {', '.join(sorted({row['model'] for row in rows}))} "
        f"({sum(bool(row.get('structured')) for row in rows)} of them asked for with `--structured`, JSON) "
        f"to datagen's own requests for the sample images ({', '.join(f'{task} {n}' for task, n in Counter(row['task'] for row in rows).items())}; "
        f"cut by the token limit: {sum(row['finish_reason'] == 'length' for row in rows)}), labelled by hand. Each goes through "
        "`parse_answer` with its pack's examples, then grounding, as in `datagen generate`; `content` judges a cut reply "
        "up to its last full sentence with finish_reason stop.",
        "",
        *table,
        "",
        f"Held out: the replies for the images {sorted(HELD_OUT)} (every third sample image, fixed before any reply was read),"
        " labelled by a reader who did not see the checks' verdicts, and not looked at while the rules were changed. `bad`: unfit"
        " for a reason no rule names (incoherent, invented, not answering its question); only a reader catches those."
        + (" No reply is labelled ok, so this corpus measures recall only; false refusals on real text are measured on GPT-4's"
           " answers (bench/realtext_bench.py) and on our own corpus (bench/checks_bench.py)." if not any(row["label"] == "ok" for row in rows) else ""),
        "",
        "## Per model (as sent)",
        "",
        *per_model(rows, source),
        "",
        "Slips no rule names, both written by the checks and left for a judge filter to take on: replies labelled `bad` (a"
        " reader finds them unfit: mostly invented, nonsense, not answering) and `ok` replies with a `slip` (kept by a reader,"
        " but with one or two errors no rule names: a frisbee called a ball, a man counted as an animal). CHAIR over the"
        " written records: COCO objects named that neither the boxes nor the captions show.",
        "",
        "## Per content label",
        "",
        *per_label,
        "",
        "Outcomes other than the label:" if wrong else "Every reply gets its labelled outcome, as sent and as text alone.",
        *wrong,
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
