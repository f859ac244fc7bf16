"""bench/realtext_bench.py: real teacher answers gathered outside the repository go through the same checks as
`datagen generate`, and the per-rule refusal counts and refused excerpts are printed for judging by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "realtext_bench.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_counts_refusals_per_rule_and_shows_the_refused_excerpt(tmp_path: Path) -> None:
    write_rows(tmp_path / "teacher.jsonl", [
        {"task": "conversation", "question": "What is the dog holding?", "answer": "The dog holds a red frisbee in its mouth."},
        {"task": "detail", "answer": "According to the captions, a man waits at a bus stop with an umbrella."},
        {"task": "complex", "question": "Why is the road wet?", "answer": "It has probably just rained, since puddles cover the asphalt."},
    ])
    write_rows(tmp_path / "records.jsonl", [
        {"task": "conv", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the bus?"}, {"from": "gpt", "value": "The bus is yellow."},
            {"from": "human", "value": "Is it moving?"}, {"from": "gpt", "value": "I'm sorry, but I cannot see the image."},
        ]},
    ])
    result = run(str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 answers (conversation 3, detail 1, complex_reasoning 1)" in out
    assert "refused: 2 (conversation 1, detail 1, complex_reasoning 0)" in out
    assert "| `reveals_text_source` | 1 |" in out
    assert "| `refusal` | 1 |" in out
    assert "teacher.jsonl:2 [detail] `reveals_text_source`" in out and "According to the captions" in out
    assert "records.jsonl:1 [conversation] `refusal`: answer 2:" in out


def test_a_question_kept_with_the_answer_is_checked_too(tmp_path: Path) -> None:
    write_rows(tmp_path / "a.jsonl", [
        {"task": "conversation", "question": "Based on the captions, what is the man doing?", "answer": "He is fixing a bicycle tire."},
    ])
    out = run(str(tmp_path)).stdout
    assert "`reveals_text_source`: question 1:" in out


def test_bad_input_names_the_problem_and_exits_2(tmp_path: Path) -> None:
    missing = run(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr and "Traceback" not in missing.stderr
    assert run(str(tmp_path)).returncode == 2  # no *.jsonl files
    (tmp_path / "broken.jsonl").write_text('{"task": "detail", "answer": "A cat."}\n{not json\n', encoding="utf-8")
    broken = run(str(tmp_path))
    assert broken.returncode == 2 and "broken.jsonl:2 is not JSON" in broken.stderr
    write_rows(tmp_path / "broken.jsonl", [{"task": "poem", "answer": "A cat."}])
    wrong_task = run(str(tmp_path))
    assert wrong_task.returncode == 2 and "has task 'poem'" in wrong_task.stderr


def test_swapped_serves_each_answer_for_the_other_images_and_counts_default_refusals(tmp_path: Path) -> None:
    park = {"captions": ["An old man reads on a park bench."], "categories": ["person", "bench"]}
    beach = {"captions": ["A man throws a frisbee for his dog on the beach."], "categories": ["person", "dog", "frisbee"]}
    kitchen = {"captions": ["A small kitchen with a white refrigerator and a microwave."], "categories": ["refrigerator", "microwave"]}
    window = {"captions": ["A gray cat curls up on a windowsill."], "categories": ["cat"]}
    write_rows(tmp_path / "grounded.jsonl", [
        {"task": "detail", "answer": "An old man sits on a wooden bench and reads a newspaper in the shade.", **park},
        {"task": "detail", "answer": "A man throws a frisbee across the sand, and his dog leaps to catch it.", **beach},
        {"task": "detail", "answer": "A white refrigerator stands in the corner, and a microwave sits on the counter.", **kitchen},
        {"task": "conv", "question": "What color is the cat?", "answer": "The cat is gray with darker stripes.", **window},
    ])
    result = run(str(tmp_path), "--swapped")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "kept on their own images: 100.0% (4/4" in out
    # The park answer served for the beach (a man there, no bench) and the beach answer for the park (a man there, no
    # dog or frisbee) are refused too: a person the image shows does not keep a record about another picture.
    assert "| two or more objects, image lacks one or more | 9 | 100.0% (9) | 0.0% (0) | 0.0% (0) |" in out
    assert "|   of which it lacks some | 2 | 100.0% (2) |" in out
    assert "| one object, image lacks it | 3 | 0.0% (0) | 100.0% (3) | 0.0% (0) |" in out  # flagged, as one stray object


def test_swapped_needs_two_grounded_images(tmp_path: Path) -> None:
    write_rows(tmp_path / "a.jsonl", [{"task": "detail", "answer": "A cat sleeps.", "captions": ["A cat."], "categories": ["cat"]}])
    result = run(str(tmp_path), "--swapped")
    assert result.returncode == 2 and "--swapped needs rows of two or more images" in result.stderr
