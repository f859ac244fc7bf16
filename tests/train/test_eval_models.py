"""`datagen eval bench`, `scienceqa`, `pope` and `chair` with a tiny random model: formats, batching, resume,
text-only problems and HF folders. The scores mean nothing here; the pipeline is what is tested."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.train import synthetic
from datagen.train.checkpoint import new_meta, save_checkpoint
from datagen.train.model import build_base

pytestmark = pytest.mark.train


def invoke(*args, expect: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """An untrained tiny checkpoint: enough to exercise loading, prompting and batched generation."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny-chat"
    model, tokenizer, processor = build_base("tiny", "tiny", "mlp2x_gelu", seed=0)
    meta = new_meta("finetune", {"vision_tower": "tiny", "llm": "tiny"}, "mlp2x_gelu", "chat", "pad")
    save_checkpoint(str(out), model, tokenizer, processor, meta)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("img")
    return folder, synthetic.make_shapes(folder, 5, seed=3)


def test_bench_answers_in_llava_format_batched_like_unbatched(tiny_ckpt, images, tmp_path):
    folder, shapes = images
    questions = tmp_path / "questions.jsonl"
    lines = [{"question_id": i, "image": s["image"], "text": "What colour is the shape?", "category": "conv"}
             for i, s in enumerate(shapes)]
    lines.append({"question_id": 99, "text": "Say something without an image.", "category": "conv"})
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    batched, single = tmp_path / "batched", tmp_path / "single"
    invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", batched,
           "--batch-size", 4, "--max-new-tokens", 6)
    invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", single,
           "--batch-size", 1, "--max-new-tokens", 6)
    answers = [json.loads(line) for line in (batched / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [0, 1, 2, 3, 4, 99]
    for answer in answers:
        assert set(answer) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
        assert answer["model_id"] == "tiny-chat" and isinstance(answer["text"], str)
    # left padding must not change a greedy answer
    assert (single / "answers.jsonl").read_text() == (batched / "answers.jsonl").read_text()


def test_bench_resumes_after_a_kill(tiny_ckpt, images, tmp_path):
    folder, shapes = images
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": s["image"], "text": "Shape?", "category": "detail"}) + "\n"
                                 for i, s in enumerate(shapes)))
    out = tmp_path / "out"
    invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", out, "--max-new-tokens", 4)
    full = (out / "answers.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (out / "answers.jsonl").write_text("".join(lines[:2]) + lines[2][:20])  # a kill -9 mid-line
    result = invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", out,
                    "--max-new-tokens", 4)
    assert "wrote 3 answers" in result.output and "(2 were already there)" in result.output
    assert (out / "answers.jsonl").read_text() == full


def test_eval_into_a_pipe_prints_greppable_progress_lines(tiny_ckpt, images, tmp_path):
    """CI logs and Slurm see an eval's model answer: `eval bench: DONE/TOTAL` lines, the last at the end; a rerun
    with nothing left asks the model nothing and prints none; --no-progress prints none."""
    import re
    import subprocess
    import sys

    folder, shapes = images
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": s["image"], "text": "Shape?", "category": "detail"}) + "\n"
                                 for i, s in enumerate(shapes)))
    args = [sys.executable, "-m", "datagen.cli", "eval", "bench", "--model", str(tiny_ckpt), "--questions", str(questions), "--images", str(folder),
            "--max-new-tokens", "2", "--batch-size", "2"]
    every = subprocess.run([*args, "--out", str(tmp_path / "every"), "--log-every", "0.000001"], capture_output=True, text=True, timeout=300)
    assert every.returncode == 0, every.stderr
    lines = [line for line in every.stderr.splitlines() if line.startswith("eval bench: ")]
    shape = re.compile(r"^eval bench: (\d)/5 \(\d+%\) \| elapsed \d:\d\d:\d\d \| ETA (\d:\d\d:\d\d|\?) \| [\d,.]+ rec/s \| rejects 0 \| skipped 0$")
    assert all(shape.match(line) for line in lines) and [line.split()[2] for line in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5", "5/5"], lines
    quiet = subprocess.run([*args, "--out", str(tmp_path / "quiet"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "eval bench: " not in quiet.stderr
    assert (tmp_path / "quiet" / "answers.jsonl").read_text() == (tmp_path / "every" / "answers.jsonl").read_text()


def test_sigterm_ends_eval_in_one_line_and_a_rerun_resumes(tiny_ckpt, images, tmp_path, monkeypatch):
    """A preempted eval (Slurm, `timeout`) keeps the answers of the batches it finished and says how to go on."""
    import os
    import signal

    from datagen.eval import model as eval_model

    folder, shapes = images
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": s["image"], "text": "Shape?", "category": "detail"}) + "\n"
                                 for i, s in enumerate(shapes)))
    out = tmp_path / "out"
    answer = eval_model.AnswerModel.answer
    calls = []

    def answer_then_sigterm(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third batch is under way when the scheduler's signal comes
            os.kill(os.getpid(), signal.SIGTERM)
        return answer(self, *args, **kwargs)

    monkeypatch.setattr(eval_model.AnswerModel, "answer", answer_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or the handler ray.init left when Ray tests ran first
    ended = invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", out,
                   "--max-new-tokens", 4, "--batch-size", 1, expect=143)
    assert ended.output.strip().splitlines()[-1] == "error: terminated (SIGTERM); rerun the same command to resume where it stopped"
    assert signal.getsignal(signal.SIGTERM) is before
    kept = (out / "answers.jsonl").read_text().splitlines()
    assert 2 <= len(kept) < len(shapes)
    monkeypatch.setattr(eval_model.AnswerModel, "answer", answer)
    resumed = invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", out,
                     "--max-new-tokens", 4, "--batch-size", 1)
    assert f"({len(kept)} were already there)" in resumed.output


def test_bench_bad_input_is_one_line(tiny_ckpt, images, tmp_path):
    folder, _ = images
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 1, "image": "nope.png", "text": "?", "category": "conv"}\n')
    result = invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", tmp_path / "o",
                    expect=2)
    assert "no image nope.png" in result.output
    result = invoke("eval", "bench", "--model", folder, "--questions", questions, "--out", tmp_path / "o", expect=2)
    assert "--images is required" in result.output
    questions.write_text('{"question_id": 1, "text": "?", "category": "conv"}\n')
    result = invoke("eval", "bench", "--model", folder, "--questions", questions, "--out", tmp_path / "o", expect=2)
    assert "neither a datagen checkpoint" in result.output


def scienceqa_files(root: Path, shapes: list[dict]) -> dict[str, Path]:
    """Hand-made problems in ScienceQA's layout: two with images, two text-only (one with a hint)."""
    images = root / "images"
    for pid, shape in (("11", shapes[0]), ("12", shapes[1])):
        (images / "test" / pid).mkdir(parents=True)
        (images / "test" / pid / "image.png").write_bytes(Path(shape["path"]).read_bytes())
    problems = {
        "11": {"question": "Which colour is the shape?", "choices": ["red", "green", "blue", "yellow"], "answer": 0,
               "hint": "", "image": "image.png", "subject": "natural science", "grade": "grade2", "split": "test"},
        "12": {"question": "Which shape is shown?", "choices": ["circle", "square"], "answer": 1, "hint": "A drawing.",
               "image": "image.png", "subject": "language science", "grade": "grade9", "split": "test"},
        "13": {"question": "Which is a city?", "choices": ["Paris", "Tuesday"], "answer": 0, "hint": "", "image": None,
               "subject": "social science", "grade": "grade5", "split": "test"},
        "14": {"question": "Which word is a verb?", "choices": ["run", "blue", "cat"], "answer": 0,
               "hint": "Verbs name actions.", "image": None, "subject": "language science", "grade": "grade11", "split": "test"},
        "15": {"question": "not in the test split", "choices": ["a", "b"], "answer": 0, "split": "train"},
    }
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": ["11", "12", "13", "14"], "train": ["15"]}))
    return {"problems": root / "problems.json", "splits": root / "pid_splits.json", "images": images}


def test_scienceqa_end_to_end_with_text_only_problems(tiny_ckpt, images, tmp_path):
    folder, shapes = images
    files = scienceqa_files(tmp_path, [dict(s, path=folder / s["image"]) for s in shapes])
    out = tmp_path / "sqa"
    result = invoke("eval", "scienceqa", "--model", tiny_ckpt, "--problems", files["problems"], "--split-file", files["splits"],
                    "--split", "test", "--images", files["images"], "--out", out, "--max-new-tokens", 4, "--batch-size", 2)
    results = json.loads((out / "results.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["pid"] for p in predictions) == ["11", "12", "13", "14"]
    assert results["overall"]["total"] == 4
    assert results["overall"]["correct"] == sum(p["correct"] for p in predictions)
    assert {name: results["categories"][name]["total"] for name in ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")} == \
        {"NAT": 1, "SOC": 1, "LAN": 2, "TXT": 2, "IMG": 2, "NO": 1, "G1-6": 2, "G7-12": 2}
    assert next(p for p in predictions if p["pid"] == "14")["prompt"].startswith("Context: Verbs name actions.\nQuestion:")
    assert "| accuracy % |" in result.output
    # the model's progress ends in one plain line (no terminal here); a rerun answers nothing again (so shows no progress) and reports the same table
    progress = [line for line in result.output.splitlines(keepends=True) if line.startswith("eval scienceqa: ")]
    assert len(progress) == 1 and progress[0].startswith("eval scienceqa: 4/4 (100%)")
    again = invoke("eval", "scienceqa", "--model", tiny_ckpt, "--problems", files["problems"], "--split-file", files["splits"],
                   "--images", files["images"], "--out", out)
    assert again.output == result.output.replace(progress[0], "")
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4


def test_hf_llava_folder_answers_like_the_checkpoint(tiny_ckpt, images, tmp_path):
    folder, shapes = images
    hf = tmp_path / "hf"
    invoke("train", "export-hf", tiny_ckpt, "--out", hf)
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": s["image"], "text": "Colour?", "category": "conv"}) + "\n"
                                 for i, s in enumerate(shapes[:2])))
    invoke("eval", "bench", "--model", hf, "--questions", questions, "--images", folder, "--out", tmp_path / "a",
           "--max-new-tokens", 5, "--model-id", "m")
    invoke("eval", "bench", "--model", tiny_ckpt, "--questions", questions, "--images", folder, "--out", tmp_path / "b",
           "--max-new-tokens", 5, "--model-id", "m")
    assert (tmp_path / "a" / "answers.jsonl").read_text() == (tmp_path / "b" / "answers.jsonl").read_text()


def batched_like_single(common: list, tmp_path: Path, batch_size: int):
    """Run an eval command batched and one by one; left padding must not change a greedy answer."""
    batched, single = tmp_path / "batched", tmp_path / "single"
    result = invoke(*common, "--out", batched, "--batch-size", batch_size)
    invoke(*common, "--out", single, "--batch-size", 1)
    assert (batched / "answers.jsonl").read_text() == (single / "answers.jsonl").read_text()
    return batched, result


def test_pope_with_a_model_batched_and_resumed(tiny_ckpt, images, tmp_path):
    """POPE over the shapes images (their instances made up): answers in LLaVA's format, one per question, batched
    like unbatched, a killed run resumed; the metrics are those of the answers written."""
    from datagen.eval.pope import metrics

    folder, shapes = images
    categories = ["circle", "square", "triangle", "star", "heart"]
    annotations = [{"id": 10 * i + j, "image_id": i, "category_id": 1 + (i + j) % 5, "bbox": [1, 1, 5, 5], "iscrowd": 0}
                   for i in range(len(shapes)) for j in range(2)]
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({
        "images": [{"id": i, "file_name": s["image"], "width": 64, "height": 64} for i, s in enumerate(shapes)],
        "annotations": annotations, "categories": [{"id": k + 1, "name": name} for k, name in enumerate(categories)],
    }))
    common = ["eval", "pope", "--model", tiny_ckpt, "--instances", instances, "--images", folder, "--image-count", 2,
              "--per-image", 1, "--max-new-tokens", 2]
    batched, result = batched_like_single(common, tmp_path, 8)
    questions = [json.loads(line) for line in (batched / "questions.jsonl").read_text().splitlines()]
    answers = [json.loads(line) for line in (batched / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [q["question_id"] for q in questions] == list(range(12))
    assert answers[0]["prompt"] == questions[0]["text"] and answers[0]["prompt"].endswith("\nAnswer the question using a single word or phrase.")
    results = json.loads((batched / "results.json").read_text())["samplings"]
    for sampling in ("random", "popular", "adversarial"):
        asked = [(q["label"], a["text"]) for q, a in zip(questions, answers) if q["category"] == sampling]
        expected = metrics([label for label, _ in asked], [text for _, text in asked])
        assert results[sampling] == {**expected, "missing": 0}
    assert "| random | 4 |" in result.output
    # a kill mid-file: the rerun answers only what is missing and ends with the same file
    full = (batched / "answers.jsonl").read_text()
    (batched / "answers.jsonl").write_text("".join(full.splitlines(keepends=True)[:5]) + full.splitlines()[5][:15])
    invoke(*common, "--out", batched, "--batch-size", 8)
    assert (batched / "answers.jsonl").read_text() == full


# -- eval chair --------------------------------------------------------------------------------------


def coco_files(root: Path, shapes: list[dict]) -> tuple[Path, Path]:
    """A COCO captions and instances pair over the shapes images (a made-up dog or cat box on each)."""
    images = [{"id": i + 1, "file_name": s["image"], "width": 64, "height": 64} for i, s in enumerate(shapes)]
    captions = root / "captions.json"
    captions.write_text(json.dumps({"images": images, "annotations": [
        {"id": i + 1, "image_id": i + 1, "caption": f"A {s['colour']} {s['shape']}."} for i, s in enumerate(shapes)]}))
    instances = root / "instances.json"
    instances.write_text(json.dumps({"images": images, "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}], "annotations": [
        {"id": 100 + i, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [4, 4, 40, 40], "iscrowd": 0, "area": 1600}
        for i in range(len(shapes))]}))
    return captions, instances


def test_chair_with_a_model_batched_and_resumed(tiny_ckpt, tmp_path):
    """`eval chair --model`: descriptions in LLaVA's answer format, batched like unbatched, a killed run resumed, and
    figures equal to those of the descriptions written."""
    from datagen.eval.chair import ChairQuestion, score
    from datagen.source.coco import CocoSource

    folder = tmp_path / "img"
    shapes = synthetic.make_shapes(folder, 4, seed=5)
    captions, instances = coco_files(tmp_path, shapes)
    common = ["eval", "chair", "--model", tiny_ckpt, "--captions", captions, "--instances", instances, "--images", folder,
              "--image-count", 3, "--max-new-tokens", 6]
    batched, result = batched_like_single(common, tmp_path, 3)
    questions = [ChairQuestion.model_validate_json(line) for line in (batched / "questions.jsonl").read_text().splitlines()]
    answers = [json.loads(line) for line in (batched / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [q.question_id for q in questions]
    assert answers[0]["prompt"] == questions[0].text and answers[0]["metadata"]["max_new_tokens"] == 6
    stored = json.loads((batched / "results.json").read_text())
    expected = score(questions, {str(a["question_id"]): a["text"] for a in answers}, CocoSource(captions, instances))
    assert {key: stored[key] for key in expected} == expected
    assert stored["descriptions"] == 3 and "| 3 |" in result.output
    # A kill mid-file: the rerun describes only what is missing and ends with the same file.
    full = (batched / "answers.jsonl").read_text()
    (batched / "answers.jsonl").write_text(full.splitlines(keepends=True)[0] + full.splitlines()[1][:10])
    invoke(*common, "--out", batched, "--batch-size", 3)
    assert (batched / "answers.jsonl").read_text() == full


def test_spatial_with_a_model_batched(tiny_ckpt, tmp_path):
    """`eval spatial --model`: the prompts answered in LLaVA's format, batched like unbatched, scored as written."""
    from datagen.eval.spatial import SpatialQuestion, score

    folder = tmp_path / "img"
    shapes = synthetic.make_shapes(folder, 3, seed=6)
    captions, instances = coco_files(tmp_path, shapes)
    # A second object on each image's right, so that a relation can be asked too.
    data = json.loads(instances.read_text())
    data["annotations"] += [{"id": 200 + i, "image_id": i + 1, "category_id": 2 - i % 2, "bbox": [46, 2, 18, 60], "iscrowd": 0, "area": 1080}
                            for i in range(len(shapes))]
    instances.write_text(json.dumps(data))
    common = ["eval", "spatial", "--model", tiny_ckpt, "--captions", captions, "--instances", instances, "--images", folder,
              "--image-count", 3, "--max-new-tokens", 3]
    batched, result = batched_like_single(common, tmp_path, 4)
    questions = [SpatialQuestion.model_validate_json(line) for line in (batched / "questions.jsonl").read_text().splitlines()]
    answers = [json.loads(line) for line in (batched / "answers.jsonl").read_text().splitlines()]
    assert {q.task for q in questions} == {"Count", "Relation"}
    assert [a["question_id"] for a in answers] == [q.idx for q in questions] and answers[0]["prompt"] == questions[0].prompt
    stored = json.loads((batched / "results.json").read_text())
    assert stored["tasks"] == score(questions, {str(a["question_id"]): a["text"] for a in answers})["tasks"]
    assert "| Count |" in result.output
