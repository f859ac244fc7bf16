"""`generate --select coverage --budget N`: images picked before any request, covering categories, per seed."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.curate.select import Candidate, choose, histogram


def pool() -> list[Candidate]:
    # Forty images of people, a few of rare animals, and caption words that tell some apart.
    people = [Candidate(i, frozenset({"person"}), frozenset({"street", f"word{i}"})) for i in range(1, 41)]
    rare = [
        Candidate(100, frozenset({"giraffe"}), frozenset({"savanna"})),
        Candidate(101, frozenset({"zebra", "giraffe"}), frozenset({"savanna"})),
        Candidate(102, frozenset({"elephant"}), frozenset({"river"})),
        Candidate(103, frozenset(), frozenset({"sunset", "harbour"})),  # no boxes: only its caption words count
    ]
    return people + rare


def test_rare_categories_come_before_more_of_a_common_one() -> None:
    chosen, cap = choose(pool(), budget=5, seed=0)
    counts = histogram(chosen)
    assert {"giraffe", "zebra", "elephant", "person"} <= counts.keys()
    assert counts["person"] <= cap == 2


def test_the_cap_holds_while_other_images_remain_then_the_budget_is_filled() -> None:
    chosen, cap = choose(pool(), budget=10, seed=0, cap=3)
    assert len(chosen) == 10
    # Four images avoid the person category; the cap then gives way so the budget is met.
    assert histogram(chosen)["person"] == 6


def test_the_same_seed_picks_the_same_images_another_seed_may_not() -> None:
    first = [c.image_id for c in choose(pool(), 6, seed=1)[0]]
    assert first == [c.image_id for c in choose(pool(), 6, seed=1)[0]]
    assert first == sorted(first)
    picks = {tuple(c.image_id for c in choose(pool(), 6, seed=seed)[0]) for seed in range(8)}
    assert len(picks) > 1


def test_a_budget_over_the_pool_takes_everything() -> None:
    assert len(choose(pool(), 1000, seed=0)[0]) == len(pool())


def test_generate_selects_records_the_selection_and_dry_run_shows_the_histogram(generate_mock, out_dir: Path, tmp_path: Path, read_jsonl) -> None:
    dry = generate_mock(tmp_path / "dry", "--select", "coverage", "--budget", "5", "--dry-run", "--price-in", "1", "--price-out", "2")
    assert "selection: 5 of" in dry.output and "category" in dry.output and "person" in dry.output
    assert "15 requests would be sent" in dry.output and "estimated cost" in dry.output
    generate_mock(out_dir, "--select", "coverage", "--budget", "5", "--tasks", "conversation")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    selection = manifest["curation"]["selection"]
    assert selection["method"] == "coverage" and selection["chosen"] == 5 and selection["budget"] == 5
    assert manifest["counts"]["conversation"]["requested"] == 5
    ids = sorted(row["meta"]["image_id"] for row in read_jsonl(out_dir / "conversation.jsonl"))
    again = tmp_path / "again"
    generate_mock(again, "--select", "coverage", "--budget", "5", "--tasks", "conversation")
    assert sorted(row["meta"]["image_id"] for row in read_jsonl(again / "conversation.jsonl")) == ids
    assert "- Selected: 5 of" in (out_dir / "README.md").read_text()


def test_a_budget_over_the_images_is_said_and_all_are_taken(generate_mock, out_dir: Path) -> None:
    result = generate_mock(out_dir, "--select", "coverage", "--budget", "500", "--tasks", "conversation")
    assert "--budget 500 is not less than the" in result.output and "taking them all" in result.output
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["curation"]["selection"]["chosen"] == manifest["curation"]["selection"]["candidates"]


def test_select_without_budget_is_refused(generate_mock, out_dir: Path) -> None:
    result = generate_mock(out_dir, "--select", "coverage", expect=2)
    assert "--select and --budget go together" in result.output
