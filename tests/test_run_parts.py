"""The parts Run is composed of, each on its own: claiming an output folder and tallying a run's outcomes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.formats.manifest import TaskCounts
from datagen.run.output_folder import claim_output_folder
from datagen.run.tally import tally
from datagen.formats.records import Grounding
from datagen.tasks.registry import ItemKey


def write_manifest(folder: Path, parts: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"settings": {"fingerprint_parts": parts}}), encoding="utf-8")


def test_a_folder_with_the_same_settings_is_resumed(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"seed": 0})
    (tmp_path / "detail.jsonl").write_text("{}\n", encoding="utf-8")
    claim_output_folder(tmp_path, {"seed": 0}, force=False, absent_means={})
    assert (tmp_path / "detail.jsonl").exists() and not list(tmp_path.glob("replaced-*"))


def test_changed_settings_are_refused_then_set_aside_with_force(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"seed": 0})
    (tmp_path / "detail.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"changed: seed"):
        claim_output_folder(tmp_path, {"seed": 1}, force=False, absent_means={})
    claim_output_folder(tmp_path, {"seed": 1}, force=True, absent_means={})
    aside = next(tmp_path.glob("replaced-*"))
    assert sorted(path.name for path in aside.iterdir()) == ["detail.jsonl", "manifest.json"]


def test_a_part_an_old_manifest_does_not_name_counts_by_its_default(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"seed": 0})  # a text run's manifest names no `see`
    (tmp_path / "detail.jsonl").write_text("{}\n", encoding="utf-8")
    claim_output_folder(tmp_path, {"seed": 0}, force=False, absent_means={"see": "text"})
    with pytest.raises(InputError, match=r"changed: see"):
        claim_output_folder(tmp_path, {"seed": 0, "see": "image"}, force=False, absent_means={"see": "text"})


def test_records_without_a_manifest_and_an_unreadable_manifest_are_refused(tmp_path: Path) -> None:
    (tmp_path / "conversation.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"conversation.jsonl but no manifest.json"):
        claim_output_folder(tmp_path, {}, force=False, absent_means={})
    (tmp_path / "manifest.json").write_text("not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"manifest.json \(unreadable\)"):
        claim_output_folder(tmp_path, {}, force=False, absent_means={})


def test_tally_counts_the_selected_images_only_and_what_was_not_reached() -> None:
    outcomes = {ItemKey(1, "detail"): "written", ItemKey(2, "detail"): "refusal", ItemKey(9, "detail"): "written"}
    skipped = {"detail": Counter({"request_failed": 1})}
    groundings = {
        ItemKey(1, "detail"): Grounding(mentioned=["dog", "cat"], unsupported=["cat"]),
        ItemKey(9, "detail"): Grounding(mentioned=["x"], unsupported=[]),
    }
    counts, quality = tally({"detail": 4}, {1, 2, 3, 4}, outcomes, skipped, groundings)
    assert counts == {"detail": TaskCounts(requested=4, written=1, rejected={"refusal": 1}, skipped={"request_failed": 1, "not_reached": 1})}
    assert (quality["detail"].records, quality["detail"].mentions, quality["detail"].chair_i) == (1, 2, 0.5)


def test_the_collector_is_set_for_the_run_and_restored_after(generate_mock, tmp_path):
    import gc

    from datagen.run.job import collector_for_a_long_run

    before = gc.get_threshold()
    with collector_for_a_long_run():
        assert gc.get_threshold() == (10_000, 20, 20)
        assert gc.get_freeze_count() > 0  # what exists before the loop starts is no longer walked
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    generate_mock(tmp_path / "run")  # a whole run in this process leaves the collector as it found it
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_folder_holding_no_record_takes_new_settings(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"model": "wrong-model"})  # a first request refused: a manifest, no record
    (tmp_path / "detail.jsonl").write_text("", encoding="utf-8")
    claim_output_folder(tmp_path, {"model": "right-model"}, force=False, absent_means={})
    assert not list(tmp_path.glob("replaced-*"))
    (tmp_path / "rejects.jsonl").write_text("{}\n", encoding="utf-8")  # a reject is a paid-for answer: it holds one
    with pytest.raises(InputError, match=r"changed: model"):
        claim_output_folder(tmp_path, {"model": "other-model"}, force=False, absent_means={})


def test_the_teacher_and_the_manifest_take_the_client_settings_from_the_settings_tree(generate_mock, tmp_path: Path, monkeypatch) -> None:
    """make_teacher and the manifest's settings copy no field by hand: every setting they share with the tree, by name."""
    from datagen.run import pipeline
    from datagen.run.options import GenerateSettings
    from datagen.teachers.factory import BackendSettings
    from datagen.teachers.teacher import MockTeacher

    built: list[BackendSettings] = []
    monkeypatch.setattr(pipeline, "build_teacher", lambda settings, mocks, environ: built.append(settings) or MockTeacher())
    options = GenerateSettings(
        captions=tmp_path / "c.json", out=tmp_path, teacher="azure", model="gpt-x", base_url="http://teacher.test/v1", concurrency=3, timeout=7.5,
        max_retries=1, rpm=60.0, tpm=1000.0, give_up_after=9.0, max_reply_bytes=4096,
    )
    pipeline.make_teacher(options)
    assert built == [
        BackendSettings(
            kind="azure", model="gpt-x", base_url="http://teacher.test/v1", concurrency=3, timeout=7.5, max_retries=1, rpm=60.0, tpm=1000.0,
            give_up_after=9.0, max_reply_bytes=4096,
        )
    ]

    out = tmp_path / "run"
    generate_mock(out, "--tasks", "detail", "--limit", "2", "--concurrency", "5", "--timeout", "12.5", "--max-retries", "2", "--rpm", "600", "--tpm", "90000",
                  "--samples-per-image", "2")
    settings = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["settings"]
    assert {key: settings[key] for key in ("tasks", "concurrency", "limit", "timeout", "max_retries", "rpm", "tpm", "samples_per_image")} == {
        "tasks": ["detail"], "concurrency": 5, "limit": 2, "timeout": 12.5, "max_retries": 2, "rpm": 600.0, "tpm": 90000.0, "samples_per_image": 2,
    }
    assert settings["prompts"] == str(GenerateSettings.model_fields["prompts"].default) and settings["cache"] == str(out / "cache.sqlite")


def test_judges_take_the_client_settings_from_the_settings_tree(generate_mock, tmp_path: Path, monkeypatch) -> None:
    """judge and filter build their teachers as make_teacher does: every client setting they share with the tree."""
    from datagen.curate import judge_filter
    from datagen.judge import run as judge_run
    from datagen.teachers.factory import BackendSettings

    built: list[BackendSettings] = []
    monkeypatch.setattr(judge_run, "build_teacher", lambda settings, mocks, **flags: built.append(settings))
    options = judge_run.JudgeOptions(
        out=tmp_path / "judged", judge="openai", judge_models=["a", "b"], base_url="http://judge.test/v1", concurrency=3, timeout=7.5, max_retries=1,
        rpm=60.0, tpm=1000.0,
    )
    judge_run.make_judges(options)
    shared = dict(base_url="http://judge.test/v1", concurrency=3, timeout=7.5, max_retries=1, rpm=60.0, tpm=1000.0)
    assert built == [BackendSettings(kind="openai", model=name, **shared) for name in ("a", "b")]

    class Built(Exception):
        pass

    def refuse(settings, mocks, **flags):
        built.append(settings)
        raise Built

    monkeypatch.setattr(judge_filter, "build_teacher", refuse)
    folder = tmp_path / "run"
    generate_mock(folder, "--limit", "1", "--tasks", "detail")
    with pytest.raises(Built):
        judge_filter.filter_run(folder, judge_filter.FilterSettings(judge="openai", judge_model="c", **shared), ["filter"])
    assert built[-1] == BackendSettings(kind="openai", model="c", **shared)
