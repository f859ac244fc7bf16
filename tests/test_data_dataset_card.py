"""The README.md dataset card: typed features from the record models, so `datasets.load_dataset(FOLDER)` works."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

# datasets reads these once, at import: nothing here may reach the hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
datasets = pytest.importorskip("datasets")
yaml = pytest.importorskip("yaml")

from datagen.data.dataset_card import UntypeableField, features_of, to_yaml  # noqa: E402
from datagen.formats.records import GeneratedRecord, InstructRecord  # noqa: E402
from datagen.tasks.registry import DEFAULT_TASKS  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTIONS, INSTANCES = DATA / "captions.json", DATA / "instances.json"


@pytest.fixture(autouse=True)
def quiet_datasets():
    datasets.disable_progress_bars()


def load(path: Path, cache: Path, *args, **kwargs):
    return datasets.load_dataset(str(path), *args, cache_dir=str(cache), **kwargs)


def card_header(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from datagen.cli import app

    out = tmp_path_factory.mktemp("card") / "run"
    args = ["generate", "--teacher", "mock", "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, "--no-progress", "--seed", "3"]
    result = CliRunner().invoke(app, [str(arg) for arg in args], env={"OPENAI_API_KEY": None})
    assert result.exit_code == 0, result.output
    return out


# -- features from the models -----------------------------------------------------------------------


class Grounding(BaseModel):
    mentioned: list[str]
    unsupported: list[str]


class LaterMeta(BaseModel):
    """Fields of the kind other changes add to RecordMeta: optional models, optional scalars, nesting."""

    task: Literal["a", "b"]
    box_ids: list[int]
    grounding: Optional[Grounding] = None
    finish_reason: str | None = None
    score: float = 0.0
    grid: list[list[int]] = []


class LaterRecord(BaseModel):
    id: str
    meta: LaterMeta


def test_features_round_trip_through_datasets() -> None:
    features = datasets.Features._from_yaml_list(features_of(GeneratedRecord))
    assert features["meta"]["box_ids"] == datasets.List(datasets.Value("int64"))
    assert features["meta"]["teacher"]["mock"] == datasets.Value("bool")
    assert features["conversations"] == datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")})
    assert set(datasets.Features._from_yaml_list(features_of(InstructRecord))) == {"id", "image", "conversations"}


def test_optional_and_nested_fields_are_typed_and_load(tmp_path: Path) -> None:
    features = datasets.Features._from_yaml_list(features_of(LaterRecord))
    assert features["meta"]["grounding"] == {"mentioned": datasets.List(datasets.Value("string")), "unsupported": datasets.List(datasets.Value("string"))}
    assert features["meta"]["finish_reason"] == datasets.Value("string")
    assert features["meta"]["score"] == datasets.Value("float64")
    assert features["meta"]["grid"] == datasets.List(datasets.List(datasets.Value("int64")))
    # Rows with the optional fields missing, null and present, and an always-empty list: all load under the card.
    rows = [
        {"id": "1", "meta": {"task": "a", "box_ids": []}},
        {"id": "2", "meta": {"task": "b", "box_ids": [], "grounding": None, "finish_reason": None}},
    ]
    later = [{"id": "3", "meta": {"task": "a", "box_ids": [7], "grounding": {"mentioned": ["dog"], "unsupported": []}, "finish_reason": "stop", "grid": [[1]]}}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(row) + "\n" for row in later))
    header = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": ["a.jsonl", "b.jsonl"]}]}],
        "dataset_info": {"features": features_of(LaterRecord)},
    }
    (tmp_path / "README.md").write_text("---\n" + "\n".join(to_yaml(header)) + "\n---\n")
    loaded = load(tmp_path, tmp_path / "cache", split="train")
    assert loaded[0]["meta"]["grounding"] is None and loaded[0]["meta"]["box_ids"] == []
    assert loaded[2]["meta"]["grounding"] == {"mentioned": ["dog"], "unsupported": []}
    assert loaded[2]["meta"]["box_ids"] == [7] and loaded[2]["meta"]["finish_reason"] == "stop"


def test_a_free_form_mapping_is_refused_by_name() -> None:
    class Loose(BaseModel):
        counts: dict[str, int]

    with pytest.raises(UntypeableField, match="Loose.counts"):
        features_of(Loose)


def test_an_untypeable_record_field_costs_the_card_not_the_run(tmp_path: Path, cli, monkeypatch) -> None:
    import datagen.data.dataset_card as card

    def untypeable(model):
        raise UntypeableField("RecordMeta.extra: has no fixed column type")

    monkeypatch.setattr(card, "features_of", untypeable)
    result = cli("generate", "--teacher", "mock", "--captions", CAPTIONS, "--tasks", "conversation", "--limit", "2", "--out", tmp_path / "o", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "note: no dataset card written: RecordMeta.extra" in result.output
    assert (tmp_path / "o" / "conversation.jsonl").exists() and not (tmp_path / "o" / "README.md").exists()


def test_yaml_quotes_what_would_change_meaning() -> None:
    text = "\n".join(to_yaml({"a": "yes", "b": "x: y", "c": ["no", 3, True, None], "d": "plain_name.jsonl", "e": []}))
    assert yaml.safe_load(text) == {"a": "yes", "b": "x: y", "c": ["no", 3, True, None], "d": "plain_name.jsonl", "e": []}


# -- the card of a generate folder ------------------------------------------------------------------


def test_generate_folder_loads_three_tasks_typed(run_folder: Path, tmp_path: Path) -> None:
    loaded = load(run_folder, tmp_path / "cache")
    written = {task: counts["written"] for task, counts in manifest(run_folder)["counts"].items()}
    assert {split: len(loaded[split]) for split in loaded} == written
    for task in DEFAULT_TASKS:
        features = loaded[task].features
        # The failure this fixes: every conversation record has box_ids [], which alone types as a list of nulls.
        assert features["meta"]["box_ids"] == datasets.List(datasets.Value("int64"))
        assert features["conversations"] == datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")})
        assert loaded[task][0]["conversations"][0]["from"] == "human"
        assert {row["meta"]["task"] for row in loaded[task]} == {task}
    union = load(run_folder, tmp_path / "cache", split="+".join(DEFAULT_TASKS))
    assert len(union) == sum(written.values())


def test_without_the_card_the_tasks_do_not_load_together(run_folder: Path, tmp_path: Path) -> None:
    files = [str(run_folder / f"{task}.jsonl") for task in ("conversation", "detail")]
    with pytest.raises(Exception, match="generating the dataset"):
        datasets.load_dataset("json", data_files={"train": files}, cache_dir=str(tmp_path / "cache"))


def test_card_names_teacher_mock_flag_prompts_seed_and_counts(run_folder: Path) -> None:
    text = (run_folder / "README.md").read_text(encoding="utf-8")
    run = manifest(run_folder)
    assert "Teacher: `mock` (kind `mock`), **mock: true**" in text
    for task, digest in run["prompt_hashes"].items():
        assert f"| {task} | `{digest}` |" in text
    assert "- Seed 3," in text
    assert f"| {run['counts']['detail']['requested']} | {run['counts']['detail']['written']} |" in text
    quality = run.get("quality") or {}  # present once grounding is measured
    for task in DEFAULT_TASKS:
        chair = [(quality.get(task) or {}).get(key) for key in ("chair_i", "chair_s")]
        cells = " | ".join("n/a" if value is None else f"{value:.4f}" for value in chair)
        assert f"| {cells} |\n" in text.split(f"| {task} |", 1)[1].split("\n", 1)[0] + "\n"
    assert ("Grounding (CHAIR) was not measured" in text) == (not quality)
    header = card_header(run_folder)
    assert [config["config_name"] for config in header["configs"]] == ["default"]
    assert [entry["path"] for entry in header["configs"][0]["data_files"]] == [f"{task}.jsonl" for task in DEFAULT_TASKS]


def test_quality_figures_appear_when_the_manifest_has_them(run_folder: Path, tmp_path: Path) -> None:
    from datagen.data.dataset_card import write_run_card

    folder = tmp_path / "with_quality"
    folder.mkdir()
    run = manifest(run_folder)
    run["quality"] = {"detail": {"records": 22, "chair_i": 0.0312, "chair_s": 0.125}}
    (folder / "manifest.json").write_text(json.dumps(run))
    text = write_run_card(folder).read_text(encoding="utf-8")
    assert "| 0.0312 | 0.1250 |" in text
    assert "| n/a | n/a |" in text  # conversation: no quality block for it
    assert "not measured" not in text


def test_rejects_get_their_own_config(run_folder: Path, tmp_path: Path, cli) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_folder, folder)
    reject = json.loads((folder / "detail.jsonl").read_text().splitlines()[0])
    row = {"id": reject["id"], "image": reject["image"], "task": "detail", "reason": "refusal", "detail": "d", "raw": "I cannot", "meta": reject["meta"]}
    (folder / "rejects.jsonl").write_text(json.dumps(row) + "\n")
    from datagen.data.dataset_card import write_run_card

    write_run_card(folder)
    loaded = load(folder, tmp_path / "cache", "rejects", split="train")
    assert loaded[0]["reason"] == "refusal" and loaded[0]["finish_reason"] is None
    assert loaded.features["meta"]["box_ids"] == datasets.List(datasets.Value("int64"))


def test_a_task_with_nothing_written_is_left_out_of_the_splits(run_folder: Path, tmp_path: Path) -> None:
    import shutil

    from datagen.data.dataset_card import write_run_card

    folder = tmp_path / "run"
    shutil.copytree(run_folder, folder)
    (folder / "detail.jsonl").write_text("")  # every detail answer rejected: datasets refuses an empty split
    write_run_card(folder)
    assert set(load(folder, tmp_path / "cache")) == {"conversation", "complex_reasoning"}


# -- export -----------------------------------------------------------------------------------------


def test_export_elsewhere_gets_its_own_card(run_folder: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "exported" / "llava_instruct.json"
    result = cli("export", run_folder, "--out", out)
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    loaded = load(out.parent, tmp_path / "cache", split="train")
    assert len(loaded) == len(records) and set(loaded.features) == {"id", "image", "conversations"}
    assert loaded[0]["conversations"] == records[0]["conversations"]
    text = (out.parent / "README.md").read_text(encoding="utf-8")
    assert "**mock: true**" in text and "without the provenance field `meta`" in text and "JSON array" in text

    kept = tmp_path / "kept" / "all.jsonl"
    assert cli("export", run_folder, "--out", kept, "--jsonl", "--keep-meta", "--shuffle", "--seed", "5").exit_code == 0
    loaded = load(kept.parent, tmp_path / "cache", split="train")
    assert loaded.features["meta"]["box_ids"] == datasets.List(datasets.Value("int64"))
    assert sorted(loaded["id"]) == sorted(json.loads(line)["id"] for line in kept.read_text().splitlines())
    assert "shuffled with seed 5" in (kept.parent / "README.md").read_text(encoding="utf-8")


def test_export_into_the_run_folder_adds_a_config_and_survives_a_rerun(run_folder: Path, tmp_path: Path, cli, generate_mock) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_folder, folder)
    assert cli("export", folder, "--out", folder / "llava_instruct.json", "--tasks", "detail").exit_code == 0
    generate_mock(folder, "--seed", "3")  # a resume rewrites the card; the export stays listed
    header = card_header(folder)
    assert [config["config_name"] for config in header["configs"]] == ["default", "llava_instruct"]
    tasks = load(folder, tmp_path / "cache")
    assert set(tasks) == set(DEFAULT_TASKS)
    exported = load(folder, tmp_path / "cache", "llava_instruct", split="train")
    assert len(exported) == len(tasks["detail"])
    assert "## Export `llava_instruct.json`" in (folder / "README.md").read_text(encoding="utf-8")
    # A file named like a config already there gets a name of its own rather than shadowing the run's splits.
    assert cli("export", folder, "--out", folder / "default.json").exit_code == 0
    assert [config["config_name"] for config in card_header(folder)["configs"]] == ["default", "llava_instruct", "default_export"]
    assert set(load(folder, tmp_path / "cache")) == set(DEFAULT_TASKS)


def test_someone_elses_readme_is_left_alone(tmp_path: Path, cli) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    result = cli("generate", "--teacher", "mock", "--captions", CAPTIONS, "--tasks", "conversation", "--limit", "2", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "README.md").read_text() == "my own notes\n"
    assert "was not written by datagen; left it alone" in result.output


def test_merge_writes_the_card(tmp_path: Path, cli, generate_mock) -> None:
    shards = [tmp_path / f"shard{index}" for index in range(2)]
    for index, shard in enumerate(shards):
        generate_mock(shard, "--tasks", "conversation", "--limit", "3", "--shard", f"{index}/2")
    assert cli("merge", *shards, "--out", tmp_path / "merged").exit_code == 0
    loaded = load(tmp_path / "merged", tmp_path / "cache")
    assert list(loaded) == ["conversation"]
    assert len(loaded["conversation"]) == manifest(tmp_path / "merged")["counts"]["conversation"]["written"]
