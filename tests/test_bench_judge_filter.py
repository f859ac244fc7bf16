"""bench/judge_filter_bench.py with `--good FILE` on the scripted judge: rows gathered outside the repository are judged
against their own captions and categories, the corpus's `ok` replies form their own group, and the AUCs printed are
the ones the scores give."""

import json
from pathlib import Path

import pytest

from bench import judge_filter_bench as bench


# Written for this test: an answer that names only what its image shows, and one that names an object it lacks.
ROWS = [
    {"task": "conv", "question": "What is the cat doing?", "answer": "The cat is lying on the sofa next to a remote control.",
     "captions": ["A cat sleeps on a sofa.", "A grey cat naps beside a remote."], "categories": ["cat", "couch", "remote"]},
    {"task": "detail", "question": "Describe the image.", "answer": "A giraffe stands beside a bus on a city street.",
     "captions": ["A kitchen with a stove and a sink."], "categories": ["oven", "sink"]},
]


def test_good_rows_are_judged_against_their_own_captions_and_categories(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    items = bench.good_from_file(good)
    assert [item.row.task for item in items] == ["conversation", "detail"]
    assert items[0].context == "A cat sleeps on a sofa.\nA grey cat naps beside a remote.\n\ncat\ncouch\nremote"
    # The scripted judge takes the listed categories as the image's objects: the invented giraffe and bus cost accuracy.
    scores = bench.asyncio.run(bench.score_all(bench.build_teacher(bench.BackendSettings(kind="mock"), bench.MOCK_JUDGES, kind_flag="--judge"), items, 48))
    assert scores[0] is not None and scores[1] is not None and scores[0] > scores[1]

    out = tmp_path / "results.md"
    bench.main(["--good", str(good), "--sample", "5", "--seed", "1", "--out", str(out)])
    text = out.read_text()
    replies = [json.loads(line) for line in bench.REPLIES.read_text().splitlines()]
    ok = min(5, sum(reply["label"] == "ok" for reply in replies))
    assert "- good (2):" in text and "- bad (5):" in text and f"- ok open-model ({ok}):" in text
    assert "| good | 2 | 0 |" in text and f"| ok open-model | {ok} | 0 |" in text
    # The sampled records are the same for the same seed, so the file is reproducible.
    again = tmp_path / "again.md"
    bench.main(["--good", str(good), "--sample", "5", "--seed", "1", "--out", str(again)])
    assert again.read_text().split("\n", 3)[3] == text.split("\n", 3)[3]


def test_auc_counts_ties_half_and_needs_both_groups() -> None:
    assert bench.auc([3.0, 5.0], [1.0, 3.0]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert bench.auc([], [1.0]) is None
    assert bench.bins([1.0, 9.5, 10.0, 10.0, 4.33]) == "1 0 0 1 0 0 0 0 1 2"


def test_a_good_file_row_without_captions_is_one_line_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"task": "conv", "answer": "x"}) + "\n")
    with pytest.raises(SystemExit, match=r"good\.jsonl:1: not a row with task, answer and captions"):
        bench.good_from_file(good)


def test_a_larger_sample_extends_a_smaller_one() -> None:
    items = [bench.Item(str(number), bench.record("detail", f"text {number}"), group) for number in range(20) for group in bench.GROUPS]
    small, large = bench.sample(items, 3, 7), bench.sample(items, 6, 7)
    for group in bench.GROUPS:
        assert [i.context for i in small if i.group == group] == [i.context for i in large if i.group == group][:3]
    assert len(bench.sample(items, None, 7)) == len(items)
