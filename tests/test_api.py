"""The Python API as a notebook user calls it: `from datagen import ...`, settings in, results out, exceptions on
bad input, and the same files the commands write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CAPTIONS, INSTANCES, REPO


def test_generate_export_audit_in_a_notebook(tmp_path: Path) -> None:
    from datagen import AuditSettings, ExportSettings, GenerateSettings, audit, export, generate

    run = generate(GenerateSettings(captions=CAPTIONS, instances=INSTANCES, out=tmp_path / "run", teacher="mock", progress=False))
    assert run.status == "completed" and run.failure is None
    manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    assert {task: counts.written for task, counts in run.counts.items()} == {task: c["written"] for task, c in manifest["counts"].items()}
    assert run.written == 66 and run.rejected == 0  # the sample data's 22 images, three tasks
    for task, path in run.files.items():
        assert sum(1 for _ in path.open(encoding="utf-8")) == run.counts[task].written
    assert run.rejects.is_file() and (run.out / "README.md").is_file()  # the dataset card, as the command writes it

    exported = export(ExportSettings(folder=run.out, out=tmp_path / "llava.json"))
    assert exported.counts == {"conversation": 22, "detail": 22, "complex_reasoning": 22} and exported.records == 66
    assert exported.card == tmp_path / "README.md" and exported.card.is_file()  # the card beside the exported file
    records = json.loads(exported.path.read_text(encoding="utf-8"))
    assert len(records) == 66 and "meta" not in records[0]

    audited = audit(AuditSettings(file=exported.path, captions=CAPTIONS, instances=INSTANCES, out=tmp_path / "audit"))
    assert audited.summary.records == 66 and audited.failures == []
    assert (audited.out / "findings.jsonl").is_file() and (audited.out / "summary.json").is_file()


def test_a_second_call_resumes_and_asks_nothing(tmp_path: Path) -> None:
    from datagen import GenerateSettings, generate

    settings = GenerateSettings(captions=CAPTIONS, instances=INSTANCES, out=tmp_path / "run", teacher="mock", progress=False, limit=3)
    first = generate(settings)
    again = generate(settings)
    assert again.counts == first.counts and again.written == 9
    assert json.loads(again.manifest.read_text(encoding="utf-8"))["requests_sent"] == 0


def test_settings_take_the_command_lines_text_forms_too(tmp_path: Path) -> None:
    from datagen import GenerateSettings

    typed = GenerateSettings(captions=CAPTIONS, out=tmp_path, tasks="detail, conversation,detail", shard="1/4", contexts=["detail=captions"],
                             omit_params="seed", extra_body='{"top_k": 20}')
    listed = GenerateSettings(captions=CAPTIONS, out=tmp_path, tasks=["detail", "conversation"], shard=(1, 4), contexts={"detail": "captions"},
                              omit_params=("seed",), extra_body={"top_k": 20})
    assert typed == listed and typed.tasks == ["detail", "conversation"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tasks": "detail,nope"}, "--tasks: unknown task nope"),
        ({"shard": "4/4"}, "--shard '4/4'"),
        ({"dry_run": True, "batch": True}, "--dry-run and --batch do not go together"),
        ({"ray": "live", "workers": 3}, "--workers is a Ray flag; add --engine ray"),
        ({"ray": {"replicas": 2}}, "--replicas sets up vLLM engines"),
        ({"results_in": Path("r.jsonl"), "teacher": "mock"}, "--results-in needs --teacher openai"),
    ],
)
def test_bad_settings_raise_input_error_naming_the_flag(tmp_path: Path, changes: dict, named: str) -> None:
    from datagen import GenerateSettings, InputError

    with pytest.raises(InputError, match=named.replace("(", r"\(")):
        GenerateSettings(captions=CAPTIONS, out=tmp_path, **changes)


def test_errors_are_exceptions_not_exits(tmp_path: Path) -> None:
    from datagen import ExportSettings, GenerateSettings, InputError, RunFailed, export, generate

    with pytest.raises(InputError, match="instances"):  # detail shows boxes: the instances file is required
        generate(GenerateSettings(captions=CAPTIONS, out=tmp_path / "run", teacher="mock", progress=False))
    with pytest.raises(InputError, match="not a folder"):
        export(ExportSettings(folder=tmp_path / "missing", out=tmp_path / "x.json"))
    (tmp_path / "empty.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                                                     "annotations": []}), encoding="utf-8")
    with pytest.raises(RunFailed) as failed:  # an image without a caption gets no record
        generate(GenerateSettings(captions=tmp_path / "empty.json", out=tmp_path / "empty", teacher="mock", tasks="conversation", progress=False))
    assert failed.value.result.written == 0 and failed.value.result.manifest.is_file()


def test_judge_two_runs(tmp_path: Path) -> None:
    from datagen import GenerateSettings, JudgeSettings, generate, judge_answers

    runs = [generate(GenerateSettings(captions=CAPTIONS, instances=INSTANCES, out=tmp_path / teacher, teacher=teacher, limit=2, progress=False))
            for teacher in ("mock", "mock-terse")]
    result = judge_answers(JudgeSettings(folders=[run.out for run in runs], captions=CAPTIONS, instances=INSTANCES, out=tmp_path / "judged",
                                 judge="mock", resamples=0))
    assert result.status == "completed" and (result.out / "summary.md").read_text(encoding="utf-8").strip() == result.table.strip()
    assert set(next(iter(result.summary["tables"].values()))) >= {"conversation", "detail", "complex_reasoning"}


def test_import_datagen_loads_no_layer() -> None:
    code = "import sys, datagen; print(sorted(name for name in sys.modules if name.startswith(('datagen.', 'pydantic'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert loaded == "[]"


def test_curation_settings_choose_the_images_from_the_api_too(tmp_path: Path) -> None:
    from datagen import GenerateSettings, generate

    ids = sorted(image["id"] for image in json.loads(CAPTIONS.read_text(encoding="utf-8"))["images"])
    listed = tmp_path / "eval_ids.txt"
    listed.write_text(f"{ids[0]}\n{ids[1]}\n", encoding="utf-8")
    run = generate(GenerateSettings(captions=CAPTIONS, instances=INSTANCES, out=tmp_path / "run", teacher="mock", tasks="conversation",
                                    exclude_images=[listed], select="coverage", budget=5, progress=False))
    written = {json.loads(line)["meta"]["image_id"] for line in run.files["conversation"].open(encoding="utf-8")}
    assert len(written) == 5 and not written & {ids[0], ids[1]}
    assert run.curation is not None and run.curation.selection is not None and run.curation.selection.chosen == 5
    curation = json.loads(run.manifest.read_text(encoding="utf-8"))["curation"]
    assert curation["excluded"]["excluded"] == 2 and curation["selection"]["budget"] == 5
    heard: list[str] = []  # the plan's warnings, said before the run (a train2017 captions file, nothing excluded)
    train = tmp_path / "captions_train2017.json"
    train.write_bytes(CAPTIONS.read_bytes())
    generate(GenerateSettings(captions=train, out=tmp_path / "warned", teacher="mock", tasks="conversation", limit=1, progress=False), say=heard.append)
    assert len(heard) == 1 and heard[0].startswith("warning: captions_train2017.json")
