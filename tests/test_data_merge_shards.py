"""`--shard i/n` splits the images; `datagen merge` joins the shards into what one unsharded run writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from datagen.source.coco import CocoSource
from datagen.run.pipeline import select_image_ids
from datagen.tasks.registry import DEFAULT_TASKS

from tests.conftest import CAPTIONS, INSTANCES

OUTPUT_FILES = [*(f"{task}.jsonl" for task in DEFAULT_TASKS), "rejects.jsonl"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One unsharded mock run and its three shards, made once for the module."""
    from typer.testing import CliRunner

    from datagen.cli import app

    root = tmp_path_factory.mktemp("runs")
    base = ["generate", "--teacher", "mock", "--captions", str(CAPTIONS), "--instances", str(INSTANCES), "--no-progress"]
    for name, extra in [("full", []), *((f"s{i}", ["--shard", f"{i}/3"]) for i in range(3)), ("seed1", ["--shard", "1/3", "--seed", "1"])]:
        result = CliRunner().invoke(app, [*base, "--out", str(root / name), *extra])
        assert result.exit_code == 0, result.output
    return root


def sorted_bytes(path: Path) -> bytes:
    return b"".join(line + b"\n" for line in sorted(path.read_bytes().splitlines()))


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]


def test_shards_partition_the_images():
    image_ids = CocoSource(CAPTIONS, INSTANCES).image_ids
    shards = [select_image_ids(image_ids, (index, 3), None) for index in range(3)]
    assert sorted(image_id for shard in shards for image_id in shard) == sorted(image_ids)
    assert all(not set(a) & set(b) for i, a in enumerate(shards) for b in shards[i + 1 :])
    assert all(shard for shard in shards)


def test_merged_shards_equal_one_unsharded_run(runs, cli, tmp_path):
    merged = tmp_path / "merged"
    result = cli("merge", runs / "s0", runs / "s1", runs / "s2", "--out", merged)
    assert result.exit_code == 0, result.output
    for name in OUTPUT_FILES:
        assert (merged / name).read_bytes() == sorted_bytes(runs / "full" / name), name
    records = [json.loads(line) for line in (merged / "conversation.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == sorted(record["id"] for record in records)

    full = json.loads((runs / "full" / "manifest.json").read_text())
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["counts"] == full["counts"] and manifest["usage"] == full["usage"] and manifest["source"] == full["source"]
    assert manifest["fingerprint"] == full["fingerprint"]  # so an unsharded rerun into it resumes
    assert [shard["shard"] for shard in manifest["settings"]["shards"]] == [[0, 3], [1, 3], [2, 3]]
    assert manifest["status"] == "completed"
    assert not list(tmp_path.glob(".merged.merging-*"))


def test_the_merged_cache_answers_a_rerun(runs, cli, tmp_path):
    merged = tmp_path / "merged"
    assert cli("merge", runs / "s0", runs / "s1", runs / "s2", "--out", merged).exit_code == 0
    again = tmp_path / "again"
    args = ["generate", "--teacher", "mock", "--captions", CAPTIONS, "--instances", INSTANCES, "--no-progress"]
    result = cli(*args, "--out", again, "--cache", merged / "cache.sqlite")
    assert result.exit_code == 0, result.output
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["requests_sent"] == 0 and manifest["cache_hits"] == 66
    for name in OUTPUT_FILES:
        assert sorted_bytes(again / name) == (merged / name).read_bytes()


def test_merge_refuses_shards_of_another_seed(runs, cli, tmp_path):
    result = cli("merge", runs / "s0", runs / "seed1", runs / "s2", "--out", tmp_path / "merged")
    one_line_error(result, "seed", str(runs / "s0"), str(runs / "seed1"))
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_shards_of_another_model(runs, cli, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(runs / "s1", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["settings"]["fingerprint_parts"]["model"] = "another-model"
    (other / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(cli("merge", runs / "s0", other, "--out", tmp_path / "merged"), "model", "another-model")


def test_merge_refuses_overlapping_shards(runs, cli, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(runs / "s0", twin)
    one_line_error(cli("merge", runs / "s0", twin, "--out", tmp_path / "merged"), "both hold image", str(twin))
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.merging-*"))


def test_merge_refuses_a_folder_without_manifest_and_a_used_out(runs, cli, tmp_path):
    one_line_error(cli("merge", runs / "s0", tmp_path, "--out", tmp_path / "merged"), str(tmp_path), "manifest.json")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    one_line_error(cli("merge", runs / "s0", runs / "s1", "--out", tmp_path / "used"), "not empty")
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"


def test_merge_refuses_an_unreadable_cache_and_can_leave_caches_out(runs, cli, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs / "s1", broken)
    for path in broken.glob("cache.sqlite*"):
        path.unlink()
    (broken / "cache.sqlite").write_bytes(b"not a database at all" * 100)
    one_line_error(cli("merge", runs / "s0", broken, "--out", tmp_path / "merged"), str(broken / "cache.sqlite"), "--no-cache")
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.merging-*"))

    result = cli("merge", runs / "s0", broken, "--out", tmp_path / "merged", "--no-cache")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "merged" / "cache.sqlite").exists()
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["settings"]["cache"] is None


def test_merge_says_how_it_combines_every_manifest_field() -> None:
    """A new manifest metric must be summed (or said to be shared or derived), never copied from shard 0 by default."""
    from datagen.data.merge import DERIVED, SHARED, SUMMED
    from datagen.formats.manifest import Manifest

    assert not (SUMMED & SHARED or SUMMED & DERIVED or SHARED & DERIVED)
    assert set(Manifest.model_fields) == SUMMED | SHARED | DERIVED


def test_summed_fields_add_up_typed_values() -> None:
    from datagen.data.merge import _sum
    from datagen.formats.records import UsageTotals
    from datagen.formats.manifest import QualityStats, TaskCounts

    counts = _sum([{"detail": TaskCounts(requested=2, written=1, rejected={"refusal": 1})}, {"detail": TaskCounts(requested=3, written=3), "x": TaskCounts(written=1)}])
    assert counts == {"detail": TaskCounts(requested=5, written=4, rejected={"refusal": 1}), "x": TaskCounts(written=1)}
    assert _sum([UsageTotals(prompt_tokens=1, unreported=1), UsageTotals(prompt_tokens=2)]) == UsageTotals(prompt_tokens=3, unreported=1)
    assert _sum([{"d": QualityStats(records=1, mentions=2)}, {"d": QualityStats(records=2, unsupported_mentions=1)}])["d"].records == 3
    assert _sum([4, 5]) == 9
    assert _sum([None, None]) is None and _sum([{"detail": 1}, None, {"detail": 2}]) == {"detail": 3}
