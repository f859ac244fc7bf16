"""docs/COMPARING_TEACHERS.md's loop on the sample data, offline: two mock teachers, the mock judge, tiny models.

generate A and B -> report both -> judge A vs B -> export, align -> one stage 1 -> a stage 2 per teacher -> eval bench both ->
judge each against the same references with a rule file -> eval pope both. The numbers mean nothing; that every step feeds the next does.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.source.coco import CocoSource
from datagen.source.context import render_context
from datagen.train import synthetic

from train_helpers import FAST

pytestmark = [pytest.mark.train, pytest.mark.slow]
DATA = Path(__file__).resolve().parents[2] / "data"
CAPTIONS, INSTANCES = DATA / "captions.json", DATA / "instances.json"


def datagen(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args[:2], result.output, result.exception)
    return result.output


def sample_images(folder: Path, source: CocoSource) -> None:
    """The sample data has no pixels: one drawn picture per file name stands in for each photo."""
    folder.mkdir()
    rng = random.Random(0)
    for image in source.images():
        synthetic.draw(folder / image.file_name, rng.choice(list(synthetic.COLOURS)), rng.choice(synthetic.SHAPES), rng)


def bench(root: Path, source: CocoSource) -> dict[str, Path]:
    """A small LLaVA-Bench-style set over three sample images: questions, context and reference answers."""
    chosen = [source.image(image_id) for image_id in source.image_ids[:3]]
    asks = (("conv", "What is happening in this picture?"), ("detail", "Describe this image in detail."),
            ("complex", "What might happen next in this scene?"))
    questions, references = [], []
    for image in chosen:
        for category, text in asks:
            question_id = len(questions)
            questions.append({"question_id": question_id, "image": image.file_name, "text": text, "category": category})
            references.append({"question_id": question_id, "text": " ".join(image.captions[:2])})
    context = [{"image": image.file_name, "caption": image.captions,
                "boxes": [{"category": b.category, "bbox": [b.x1, b.y1, b.x2, b.y2]} for b in image.boxes]} for image in chosen]
    files = {}
    for name, lines in (("questions", questions), ("references", references), ("context", context)):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(line) + "\n" for line in lines))
    # the judge is shown the context exactly as the teacher saw it
    assert render_context(chosen[0], "captions+boxes").splitlines()[0] == chosen[0].captions[0]
    return files


def test_compare_two_teachers_end_to_end(tmp_path):
    source = CocoSource(CAPTIONS, INSTANCES)
    teachers = {"A": "mock", "B": "mock-terse"}
    for name, teacher in teachers.items():
        datagen("generate", "--teacher", teacher, "--captions", CAPTIONS, "--instances", INSTANCES, "--out", tmp_path / name,
                "--no-progress")

    # 1. the data: read both side by side, then judge A (reference) against B (candidate)
    output = datagen("report", tmp_path / "A", tmp_path / "B", "--out", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "A (mock teacher)" in page and "B (mock-terse, mock teacher)" in page and "wrote" in output

    output = datagen("judge", tmp_path / "A", tmp_path / "B", "--captions", CAPTIONS, "--instances", INSTANCES,
                     "--out", tmp_path / "judge-data", "--judge", "mock", "--bootstrap", "200")
    data_summary = json.loads((tmp_path / "judge-data" / "summary.json").read_text())
    assert data_summary["mock"] and "| conversation | 22 |" in output
    assert data_summary["counts"]["judged"] == data_summary["counts"]["requested"] == 22 * 3 * 2

    # 2. the models: one stage 1, then a stage 2 on each teacher's data
    images = tmp_path / "images"
    sample_images(images, source)
    datagen("align", "--captions", CAPTIONS, "--out", tmp_path / "align.json")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr_scheduler: constant\nwarmup_ratio: 0.0\nbatch_size: 4\n")
    datagen("train", "pretrain", "--data", tmp_path / "align.json", "--image-folder", images, "--vision-tower", "tiny",
            "--llm", "tiny", "--out", tmp_path / "stage1", "--config", recipe, "--max-steps", 2, *FAST)
    files = bench(tmp_path, source)
    rules = tmp_path / "rule.json"  # rule.json's shape, our words
    rules.write_text(json.dumps({category: {"role": "Assistant", "prompt": f"Score both {category} answers; two scores first."}
                                 for category in ("conv", "detail", "complex")}))
    relative = {}
    for name in teachers:
        datagen("export", tmp_path / name, "--out", tmp_path / f"{name}.json")
        datagen("train", "finetune", "--data", tmp_path / f"{name}.json", "--image-folder", images, "--from", tmp_path / "stage1",
                "--out", tmp_path / f"model-{name}", "--config", recipe, "--max-steps", 2, *FAST)
        # 3. both models answer the same questions, and are judged against the same references
        datagen("eval", "bench", "--model", tmp_path / f"model-{name}", "--questions", files["questions"], "--images", images,
                "--out", tmp_path / f"answers-{name}", "--max-new-tokens", 8)
        answers = [json.loads(line) for line in (tmp_path / f"answers-{name}" / "answers.jsonl").read_text().splitlines()]
        assert [a["question_id"] for a in answers] == list(range(9)) and {a["model_id"] for a in answers} == {f"model-{name}"}
        datagen("judge", "--reference", files["references"], "--candidate", tmp_path / f"answers-{name}" / "answers.jsonl",
                "--questions", files["questions"], "--context", files["context"], "--out", tmp_path / f"judge-{name}",
                "--judge", "mock", "--bootstrap", "200", "--rule", rules)
        summary = json.loads((tmp_path / f"judge-{name}" / "summary.json").read_text())
        table = summary["tables"]["mock-overlap"]
        assert set(table) == {"conv", "detail", "complex", "all"} and table["all"]["pairs"] == 9
        assert summary["counts"] == {"requested": 18, "judged": 18, "failed": {}, "skipped": {}}
        relative[name] = table["all"]["relative_score"]
        # 4. object hallucination on questions built from the sample instances: the same questions for both
        datagen("eval", "pope", "--model", tmp_path / f"model-{name}", "--instances", INSTANCES, "--images", images,
                "--out", tmp_path / f"pope-{name}", "--image-count", 2, "--per-image", 1, "--max-new-tokens", 4)
        pope = json.loads((tmp_path / f"pope-{name}" / "results.json").read_text())["samplings"]
        assert {sampling: row["questions"] for sampling, row in pope.items()} == {"random": 4, "popular": 4, "adversarial": 4}
    assert (tmp_path / "pope-A" / "questions.jsonl").read_text() == (tmp_path / "pope-B" / "questions.jsonl").read_text()
    assert all(score is not None and score > 0 for score in relative.values())
