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
import re
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
from datagen.quality.reply_checks import _sentences, _stutter  # noqa: E402
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


def _eager_grounding(texts: list[str], image) -> list[list[str]]:
    """Grounding as first written: every mention judged, the captions read up front."""
    boxed = {box.category for box in image.boxes}
    supported = boxed | {category for caption in image.captions for mention in mentions(caption) if mention.claimed for category in mention.categories}
    mentioned: set[str] = set()
    unsupported: set[str] = set()
    for text in texts:
        for mention in mentions(text):
            if mention.claimed:
                present = [category for category in mention.categories if category in supported]
                mentioned.add(present[0] if present else mention.categories[0])
                if not present:
                    unsupported.add(mention.categories[0])
    return [sorted(mentioned), sorted(unsupported)]


def test_grounding_several_answers_skips_no_verdict_that_counts(recorded: list[dict]) -> None:
    """`ground` leaves later words of a category already claimed unjudged: records of several recorded texts
    get the grounding that judging every word gives."""
    texts = [row["text"] for row in recorded if row["kind"] == "text" and row["verdict"]["mentions"]]
    source = CocoSource(CAPTIONS, INSTANCES)
    images = [source.image(image_id) for image_id in source.image_ids]
    rng = random.Random(18)
    records = [rng.sample(texts, rng.randint(2, 5)) for _ in range(2000)]
    differing = []
    for index, record in enumerate(records):
        grounding = ground(record, images[index % len(images)])
        if [grounding.mentioned, grounding.unsupported] != _eager_grounding(record, images[index % len(images)]):
            differing.append(record)
    assert not differing, f"{len(differing)} records differ, e.g. {differing[:1]}"


def test_the_stutter_rule_finds_what_its_regex_found(recorded: list[dict]) -> None:
    """The stutter rule compares word lists; it once searched the answer's words joined, one line per sentence."""
    old = re.compile(r"(?<!\S)((?:\S+ ){1,4})\1\1")
    rng = random.Random(18)
    texts = [row["text"] for row in recorded if row["kind"] == "text"]
    for text in texts[:3000]:  # a unit of 1 to 5 words said 2 to 4 times somewhere
        words = text.split()
        if len(words) > 6:
            start, size = rng.randrange(len(words) - 5), rng.randint(1, 5)
            texts.append(" ".join(words[:start] + words[start : start + size] * rng.randint(2, 4) + words[start:]))
    found = 0
    for text in texts:
        sentences = _sentences(text)
        match = old.search("\n".join(" ".join(words) + " " for words in sentences))
        assert _stutter(sentences) == (tuple(match.group(1).split()) if match else None), text
        found += match is not None
    assert found > 1000


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
