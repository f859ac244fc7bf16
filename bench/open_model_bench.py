"""Answer checks on real open-model text: recall and false refusals on what SmolLM2-135M-Instruct wrote for our packs.

    .venv/bin/python bench/open_model_bench.py          # writes bench/results_open_model.md

`tests/data/open_model_replies.jsonl` holds replies collected with bench/collect_open_model_replies.py (the sample
images, all three tasks, our bundled packs, temperature 0.7, 300 new tokens) and labelled by hand: `ok` (fit to be
written), the reject reason a careful reviewer would give, or `bad` (unfit, for a reason no rule names). Each
reply goes through what `datagen generate` does with it: `parse_answer` with the examples of the pack it was
asked with, then (when it parses) the record is built and grounded against its image, refusing a record about
another image. Replies of the images in HELD_OUT were labelled only after the rules were written, and are
reported apart: the rules were tuned on the others.
"""

from __future__ import annotations

import json
import platform
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from datagen.formats.records import RecordMeta, TeacherInfo, Usage  # noqa: E402  (run as a script from the repository)
from datagen.quality.grounding import ground_record  # noqa: E402
from datagen.quality.parse import Rejected  # noqa: E402
from datagen.run.items import build_record  # noqa: E402
from datagen.source.coco import CocoSource  # noqa: E402
from datagen.tasks.prompts import BUNDLED_PROMPTS, load_instructions  # noqa: E402
from datagen.tasks.registry import task_spec  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "open_model_replies.jsonl"
OUT = HERE / "results_open_model.md"
# Every third sample image (sorted ids [2::3]), chosen before any reply was read.
HELD_OUT = frozenset({100042, 100079, 100103, 100138, 100163, 100194, 100225})


def outcome(row: dict, source: CocoSource) -> str:
    """The reject reason `datagen generate` gives this reply, or "ok" when it writes the record."""
    spec = task_spec(row["task"])
    image = source.image(row["image_id"])
    assert image is not None, row["image_id"]
    try:
        content = spec.parse(row["text"], row["finish_reason"], "text", spec.examples(spec.load_pack(BUNDLED_PROMPTS)))
        meta = RecordMeta(
            task=row["task"], teacher=TeacherInfo(kind="openai", model=row["model"], mock=False), prompt_hash="", image_id=image.image_id,
            caption_ids=image.caption_ids, box_ids=[box.annotation_id for box in image.boxes], usage=Usage(), request_key="",
            finish_reason=row["finish_reason"],
        )
        instructions = load_instructions(spec.instructions) if spec.instructions else None
        ground_record(build_record(image, row["task"], content, meta, instructions, 0), image, reject_unsupported=False)
    except Rejected as rejection:
        return rejection.reason
    return "ok"


def load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def ratio(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part}/{whole})" if whole else "n/a"


def summary(pairs: list[tuple[dict, str]]) -> list[str]:
    bad = [(row, got) for row, got in pairs if row["label"] != "ok"]
    good = [got for row, got in pairs if row["label"] == "ok"]
    uncut = [(row, got) for row, got in bad if row["finish_reason"] != "length"]
    return [
        f"{len(pairs)} | {len(good)} | {ratio(sum(got != 'ok' for got in good), len(good))} | {len(bad)} "
        f"| {ratio(sum(got != 'ok' for _, got in bad), len(bad))} | {ratio(sum(got == row['label'] for row, got in bad), len(bad))} "
        f"| {ratio(sum(got != 'ok' for _, got in uncut), len(uncut))} |"
    ]


def main() -> None:
    rows = load()
    source = CocoSource(ROOT / "data" / "captions.json", ROOT / "data" / "instances.json")
    pairs = [(row, outcome(row, source)) for row in rows]
    tuned = [(row, got) for row, got in pairs if row["image_id"] not in HELD_OUT]
    held = [(row, got) for row, got in pairs if row["image_id"] in HELD_OUT]
    header = "| replies | ok | ok refused (false refusals) | bad | bad refused (recall) | for the labelled reason | bad not cut by the token limit, refused |"
    labels = Counter(row["label"] for row in rows)
    per_label = ["| label | replies | refused as labelled | refused for another reason | written |", "|---|---|---|---|---|"]
    for label, count in labels.most_common():
        mine = [got for row, got in pairs if row["label"] == label]
        if label == "ok":
            per_label.append(f"| `ok` | {count} | - | {sum(got != 'ok' for got in mine)} | {sum(got == 'ok' for got in mine)} |")
        else:
            same = sum(got == label for got in mine)
            other = sum(got not in (label, "ok") for got in mine)
            per_label.append(f"| `{label}` | {count} | {same} | {other} | {sum(got == 'ok' for got in mine)} |")
    wrong = [
        f"- {'held out' if row['image_id'] in HELD_OUT else 'tuned'} {row['image_id']} {row['task']} seed {row['seed']}: "
        f"labelled `{row['label']}`, got `{got}`"
        for row, got in pairs
        if (got == "ok") != (row["label"] == "ok")
    ]
    lines = [
        "# Answer checks on real open-model replies",
        "",
        f"`bench/open_model_bench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}.",
        "",
        f"Corpus `tests/data/open_model_replies.jsonl`: {len(rows)} replies of {', '.join(sorted({row['model'] for row in rows}))} "
        f"to datagen's own requests for the sample images ({', '.join(f'{task} {n}' for task, n in Counter(row['task'] for row in rows).items())}; "
        f"finish_reason length {sum(row['finish_reason'] == 'length' for row in rows)}), labelled by hand. Each goes through "
        "`parse_answer` with its pack's examples, then grounding, as in `datagen generate`.",
        "",
        "| part | " + header[2:],
        "|---|---|---|---|---|---|---|---|",
        "| tuned on | " + summary(tuned)[0],
        f"| held out (images {', '.join(str(image_id) for image_id in sorted(HELD_OUT))}) | " + summary(held)[0],
        "| all | " + summary(pairs)[0],
        "",
        "## Per label",
        "",
        *per_label,
        "",
        "Written although labelled bad, or refused although labelled ok:" if wrong else "Every bad reply refused, every ok reply written.",
        *wrong,
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
