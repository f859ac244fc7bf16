"""The run's metrics (datagen/formats/metrics.py): one declaration each, which the manifest, the tally, merge, the
progress display, the summary, `datagen report` and the dataset card all go by."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from datagen.data.dataset_card import run_summary, render_card
from datagen.data.merge import merged_manifest
from datagen.data.report import RunReport, read_run, run_rows
from datagen.formats.manifest import load_run_manifest
from datagen.formats.metrics import METRICS, Metric
from datagen.run.tally import Tally

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTIONS, INSTANCES = DATA / "captions.json", DATA / "instances.json"
EVERYWHERE = frozenset({"progress", "summary", "report", "card"})


def manifest_json(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_a_metric_declared_once_is_kept_merged_and_shown_everywhere(cli, tmp_path: Path, monkeypatch) -> None:
    """The proof for issue 26: a throwaway metric, one entry in the registry and no other line, read from a count the
    teacher already keeps, reaches each shard's manifest, is summed by merge, and shows in the progress lines, the
    summary, the report and the card."""
    monkeypatch.setitem(METRICS, "asked_here", Metric("asked_here", "asked here", "Requests, once more", stat="requests", shown=EVERYWHERE))

    shards = [tmp_path / "s0", tmp_path / "s1"]
    outputs = []
    for index, shard in enumerate(shards):  # no terminal here: plain progress lines, one per item
        result = cli("generate", "--teacher", "mock", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", shard, "--shard", f"{index}/2", "--log-every", "0.000001")
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    manifests = [manifest_json(shard) for shard in shards]
    for output, manifest in zip(outputs, manifests):
        asked = manifest["asked_here"]
        assert asked == manifest["requests_sent"] > 0
        assert f"| asked here {asked} | tokens" in output  # the progress line
        assert f"| requests sent {asked} | cache hits 0 | asked here {asked}" in " ".join(output.split())  # the summary, wrapped at 80
        # Metrics every run keeps follow usage, in the order they are declared.
        keys = list(manifest)
        assert keys[keys.index("usage") + 1 : keys.index("usage") + 4] == ["requests_sent", "cache_hits", "asked_here"]

    result = cli("merge", *shards, "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged = manifest_json(tmp_path / "merged")
    total = sum(manifest["asked_here"] for manifest in manifests)
    assert merged["asked_here"] == total == merged["requests_sent"]

    rows = run_rows([read_run(tmp_path / "merged"), read_run(shards[0])], prices=None)
    assert ["asked here", str(total), str(manifests[0]["asked_here"])] in rows
    assert f"- Asked here: {total}\n" in (tmp_path / "merged" / "README.md").read_text(encoding="utf-8")


def test_a_metric_counted_per_task_by_the_tally_round_trips_merges_and_shows(tmp_path: Path, monkeypatch) -> None:
    metric = Metric("kept_twice", "kept twice", per_task=True, merge=max, only_with="structured", shown=frozenset({"report", "card"}))
    monkeypatch.setitem(METRICS, metric.name, metric)
    tally = Tally(["detail", "conversation"])
    for task in ("detail", "conversation", "detail"):
        tally.count("kept_twice", task)
    with pytest.raises(KeyError, match="declare it in datagen/formats/metrics.py"):
        tally.count("never_declared", "detail")

    on = tally.metric_values({"requests": 4}, settings=SimpleNamespace(structured=True))
    assert on["kept_twice"] == {"conversation": 1, "detail": 2} and on["requests_sent"] == 4 and on["cache_hits"] == 0
    off = tally.metric_values({}, settings=SimpleNamespace(structured=False))
    assert off["kept_twice"] is None and off["structured_reasks"] is None

    # A manifest of a run without the setting leaves it out; loaded back, it is None, and merge keeps the other's.
    assert metric.merged([{"detail": 2, "conversation": 1}, {"detail": 5}, None]) == {"detail": 5, "conversation": 1}
    assert metric.merged([None, None]) is None
    assert metric.total({"detail": 2, "conversation": 1}) == 3

    report_value = "3: detail 2, conversation 1"
    run = RunReport(folder=tmp_path, manifest={"counts": {}, "kept_twice": {"detail": 2, "conversation": 1}}, tasks={})
    assert ["kept twice", report_value] in run_rows([run], prices=None)
    card = render_card(tmp_path, run_summary({"kept_twice": {"detail": 2, "conversation": 1}}), [])
    assert "- Kept twice: 3 (conversation 1, detail 2)\n" in card


def test_the_manifest_checks_each_metric_and_documents_it(generate_mock, cli, tmp_path: Path) -> None:
    from datagen.formats.schemas import schema_documents

    out = tmp_path / "run"
    generate_mock(out, "--limit", "1", "--tasks", "detail")
    manifest = manifest_json(out)
    assert "structured_reasks" not in manifest  # off without --structured: the manifest it always had
    loaded = load_run_manifest(out, "merge")
    assert loaded.metrics == {"requests_sent": 1, "cache_hits": 0, "structured_reasks": None}
    assert loaded.requests_sent == 1  # type: ignore[attr-defined]  # read as the field it is in the file
    assert json.loads(loaded.model_dump_json()) == manifest

    # A manifest written before a metric existed reads as its default; one with a wrong value is refused by name.
    del manifest["cache_hits"]
    (out / "manifest.json").write_text(json.dumps({**manifest, "requests_sent": "many"}), encoding="utf-8")
    result = cli("merge", out, "--out", tmp_path / "merged")
    assert result.exit_code == 2 and "requests_sent: Input should be a valid integer" in result.output
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert load_run_manifest(out, "merge").metrics["cache_hits"] == 0

    properties = json.loads(schema_documents()["manifest.schema.json"])["properties"]
    assert {"requests_sent", "cache_hits", "structured_reasks"} <= set(properties) and properties["requests_sent"]["type"] == "integer"


def test_merge_combines_each_metric_as_declared(generate_mock, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(METRICS, "most_asked", Metric("most_asked", "most asked", stat="requests", merge=max))
    shards = [tmp_path / "s0", tmp_path / "s1"]
    for index, shard in enumerate(shards):
        generate_mock(shard, "--shard", f"{index}/2", "--tasks", "detail")
    manifests = [load_run_manifest(shard, "merge") for shard in shards]
    merged = merged_manifest(shards, manifests, None, ["merge"])
    asked = [manifest.metrics["most_asked"] for manifest in manifests]
    assert merged.metrics["most_asked"] == max(asked) and merged.metrics["requests_sent"] == sum(asked)


def test_a_teacher_count_cannot_be_declared_per_task() -> None:
    with pytest.raises(ValueError, match="not kept per task"):
        Metric("per_task_requests", "requests", stat="requests", per_task=True)
