"""The answer checks and the grounding give the same verdicts as the slower implementation they replaced.

`tests/data/quality_verdicts.jsonl.gz` holds texts and the verdicts recorded for them before the speed-up
(issue 18): every finding of every rule (rule and excerpt, so the matched place as well), every object form and
mention, and the grounding of each hand-written answer against each sample image. The texts are the labelled
answer corpus, the grounding cases, the sample captions, the mock teacher's records for the sample and for 1,000
synthetic images, and mixtures of their sentences in changed case, hyphenation and apostrophes, which move the
words a pre-filter looks for into unusual places.

To re-record after a deliberate change of a rule or of the word list (and say so in the commit):

    .venv/bin/python tests/test_quality_same_verdicts.py --record
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datagen.quality.checks import check_text  # noqa: E402
from datagen.quality.grounding import ground, mentions  # noqa: E402
from datagen.quality.object_words import find_forms  # noqa: E402
from datagen.quality.parse import Rejected  # noqa: E402
from datagen.source.coco import CocoSource  # noqa: E402
from datagen.tasks.registry import parse_answer  # noqa: E402

VERDICTS = ROOT / "tests" / "data" / "quality_verdicts.jsonl.gz"
CAPTIONS = ROOT / "data" / "captions.json"
INSTANCES = ROOT / "data" / "instances.json"


def text_verdict(text: str) -> dict:
    def findings(role: str, form: str) -> list[list[str]]:
        return [[finding.rule, finding.excerpt] for finding in check_text(text, role, 0, form)]  # type: ignore[arg-type]

    return {
        "answer": findings("answer", "qa_pairs"),
        "prose": findings("answer", "prose"),
        "question": findings("question", "qa_pairs"),
        "forms": [[start, end, list(categories)] for start, end, categories in find_forms(text)],
        "mentions": [[mention.text, list(mention.categories), mention.claimed] for mention in mentions(text)],
    }


def reply_verdict(task: str, text: str, finish_reason: str | None) -> str | None:
    try:
        parse_answer(task, text, finish_reason)
    except Rejected as rejection:
        return f"{rejection.reason}: {rejection.detail}"
    return None


def grounding_verdict(answer: str, image_id: int, source: CocoSource) -> list[list[str]]:
    grounding = ground([answer], source.image(image_id))
    return [grounding.mentioned, grounding.unsupported]


def load() -> list[dict]:
    with gzip.open(VERDICTS, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def recorded() -> list[dict]:
    return load()


def test_the_recorded_corpus_is_broad(recorded: list[dict]) -> None:
    texts = [row for row in recorded if row["kind"] == "text"]
    fired = {finding[0] for row in texts for finding in row["verdict"]["answer"] + row["verdict"]["question"]}
    assert len(texts) > 5000
    assert {"control_string", "refusal", "reveals_text_source", "box_coordinates", "chat_preamble", "incomplete_sentence"} <= fired
    assert sum(bool(row["verdict"]["mentions"]) for row in texts) > 4000
    assert sum(row["kind"] == "grounding" for row in recorded) > 2000


def test_every_text_gets_the_recorded_findings_forms_and_mentions(recorded: list[dict]) -> None:
    differing = [row["text"][:80] for row in recorded if row["kind"] == "text" and text_verdict(row["text"]) != row["verdict"]]
    assert not differing, f"{len(differing)} texts differ, e.g. {differing[:3]}"


def test_every_reply_gets_the_recorded_reject_reason(recorded: list[dict]) -> None:
    differing = [row["text"][:80] for row in recorded if row["kind"] == "reply" and reply_verdict(row["task"], row["text"], row["finish_reason"]) != row["verdict"]]
    assert not differing, f"{len(differing)} replies differ, e.g. {differing[:3]}"


def test_every_answer_and_image_pair_gets_the_recorded_grounding(recorded: list[dict]) -> None:
    source = CocoSource(CAPTIONS, INSTANCES)
    differing = [row for row in recorded if row["kind"] == "grounding" and grounding_verdict(row["text"], row["image_id"], source) != row["verdict"]]
    assert not differing, f"{len(differing)} groundings differ, e.g. {differing[:2]}"


# -- recording ------------------------------------------------------------------------------------------------------


def _mock_records(captions: Path, instances: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "datagen.cli", "generate", "--teacher", "mock", "--captions", str(captions),
                   "--instances", str(instances), "--out", folder, "--seed", "0", "--no-progress"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        return [json.loads(line) for path in sorted(Path(folder).glob("*.jsonl")) if path.name != "rejects.jsonl" for line in path.open()]


def _variants(sentences: list[str], count: int) -> list[str]:
    """Mixtures of corpus sentences, some re-cased, re-hyphenated or with typographic apostrophes."""
    rng = random.Random(18)
    changes = [str.upper, str.lower, str.title, lambda s: s.replace(" ", "-"), lambda s: s.replace("'", "’"),
               lambda s: s.replace("’", "'"), lambda s: s.replace(". ", ".\n"), lambda s: "İ" + s, lambda s: s]  # fmt: skip
    return [rng.choice(changes)(" ".join(rng.sample(sentences, rng.randint(1, 6)))) for _ in range(count)]


def record() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import synth_coco

    corpus = [json.loads(line) for line in (ROOT / "tests" / "data" / "answer_corpus.jsonl").open() if line.strip()]
    cases = [json.loads(line) for line in (ROOT / "tests" / "data" / "grounding_cases.jsonl").open() if line.strip()]
    captions = [entry["caption"] for entry in json.loads(CAPTIONS.read_text())["annotations"]]
    records = _mock_records(CAPTIONS, INSTANCES) + _mock_records(*synth_coco.write(1000))
    texts = [row["text"] for row in corpus] + [case["answer"] for case in cases] + captions
    texts += [turn["value"] for record in records for turn in record["conversations"]]
    sentences = sorted({sentence for text in texts for sentence in text.replace("\n", " ").split(". ") if sentence.strip()})
    texts += _variants(sentences, 3000)
    rows = [{"kind": "text", "text": text, "verdict": text_verdict(text)} for text in dict.fromkeys(texts)]
    rows += [{"kind": "reply", "task": row["task"], "text": row["text"], "finish_reason": row["finish_reason"],
              "verdict": reply_verdict(row["task"], row["text"], row["finish_reason"])} for row in corpus]  # fmt: skip
    source = CocoSource(CAPTIONS, INSTANCES)
    rows += [{"kind": "grounding", "text": case["answer"], "image_id": image_id, "verdict": grounding_verdict(case["answer"], image_id, source)}
             for case in cases for image_id in source.image_ids]  # fmt: skip
    with gzip.GzipFile(VERDICTS, "wb", mtime=0) as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    print(f"wrote {len(rows)} verdicts to {VERDICTS.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: tests/test_quality_same_verdicts.py --record")
    record()
