"""`datagen eval` without a model: ScienceQA prompts, letter extraction, per-category arithmetic, input checks,
and the benchmark question/answer formats."""

from __future__ import annotations

import json

import pytest

from datagen.errors import InputError
from datagen.eval.bench import BenchAnswer, answer_id, answered, image_path, load_questions
from datagen.eval.model import batches
from datagen.eval.scienceqa import Problem, build_prompt, categories, extract_letter, load_problems, problem_image, score, table

CHOICES = ["a cat", "a dog", "a bird"]


def test_prompt_holds_context_question_and_lettered_options():
    problem = Problem(question="Which animal barks?", choices=CHOICES, answer=1, hint="Look at the yard.")
    assert build_prompt(problem) == (
        "Context: Look at the yard.\nQuestion: Which animal barks?\nOptions:\nA. a cat\nB. a dog\nC. a bird\n"
        "Reply with the letter of the correct option."
    )


def test_prompt_without_hint_has_no_context_line():
    assert build_prompt(Problem(question="Q?", choices=["x", "y"], answer=0)).startswith("Question: Q?\nOptions:\nA. x\nB. y")


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("The answer is B.", "B"),
        ("the answer is (c)", "C"),
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        (" [A] ", "A"),
        ("C. a bird", "C"),
        ("(A) because cats meow", "A"),
        ("a dog", "B"),
        ("It is a bird, clearly.", "C"),
        ("A dog, since it barks.", "B"),  # "A" here is the article
        ("I do not know.", None),
        ("D", None),  # no fourth option
        ("a cat or a dog", None),  # two options named
        ("", None),
    ],
)
def test_letter_extraction(reply, letter):
    assert extract_letter(reply, CHOICES) == letter


def problem(subject, grade, hint="", image=None, answer=0):
    return Problem(question="q", choices=["x", "y"], answer=answer, hint=hint, image=image, subject=subject, grade=grade)


def test_categories_follow_scienceqa():
    assert categories(problem("natural science", "grade3")) == ["NAT", "NO", "G1-6"]
    assert categories(problem("social science", "grade7", hint="h", image="image.png")) == ["SOC", "TXT", "IMG", "G7-12"]
    assert categories(problem("language science", "grade12", image="image.png")) == ["LAN", "IMG", "G7-12"]


def test_per_category_accuracy_on_known_answers():
    problems = {
        "1": problem("natural science", "grade2", image="image.png", answer=0),
        "2": problem("natural science", "grade8", hint="h", answer=1),
        "3": problem("social science", "grade5", answer=0),
        "4": problem("language science", "grade10", hint="h", image="image.png", answer=1),
        "5": problem("language science", "grade1", answer=0),
    }
    replies = {"1": "A", "2": "A", "3": "A", "4": "B", "5": None}  # None: no reply at all
    results = score(problems, replies)
    assert results["overall"] == {"correct": 3, "total": 5, "accuracy": 60.0}
    got = {name: (row["correct"], row["total"]) for name, row in results["categories"].items()}
    assert got == {"NAT": (1, 2), "SOC": (1, 1), "LAN": (1, 2), "TXT": (1, 2), "IMG": (2, 2), "NO": (1, 2),
                   "G1-6": (2, 3), "G7-12": (1, 2)}
    assert results["missing"] == 1 and results["unextracted"] == 0
    rendered = table(results)
    assert "| accuracy % | 60.00 | 50.00 | 100.00 | 50.00 | 50.00 | 100.00 | 50.00 | 66.67 | 50.00 |" in rendered
    assert "| correct/total | 3/5 |" in rendered


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_problems_are_read_in_scienceqa_layout(tmp_path):
    problems = write(tmp_path / "problems.json", {
        "7": {"question": "q", "choices": ["x", "y"], "answer": 1, "hint": "", "image": "image.png", "subject": "natural science",
              "grade": "grade4", "topic": "biology", "lecture": "", "solution": "", "split": "test"},
        "9": {"question": "q", "choices": ["x", "y"], "answer": 0, "hint": "", "image": None, "subject": "social science",
              "grade": "grade9", "split": "test"},
    })
    splits = write(tmp_path / "pid_splits.json", {"test": ["7", "9"], "train": []})
    loaded = load_problems(problems, splits, "test")
    assert list(loaded) == ["7", "9"] and loaded["7"].answer == 1
    (tmp_path / "images" / "test" / "7").mkdir(parents=True)
    (tmp_path / "images" / "test" / "7" / "image.png").write_bytes(b"png")
    assert problem_image(tmp_path / "images", "test", "7", loaded["7"]) == tmp_path / "images" / "test" / "7" / "image.png"
    assert problem_image(None, "test", "9", loaded["9"]) is None  # text-only problems need no image folder
    with pytest.raises(InputError, match="--split val: not in"):
        load_problems(problems, splits, "val")
    # a split that is there but is no list: named as such, not as missing
    with pytest.raises(InputError) as raised:
        load_problems(problems, write(tmp_path / "s3.json", {"test": "7,9"}), "test")
    assert str(raised.value) == (
        f"--split-file {tmp_path / 's3.json'}: split 'test' is a str, not a list of problem ids; pass ScienceQA's pid_splits.json"
    )
    write(tmp_path / "bad.json", {"7": {"question": "q", "choices": ["x"], "answer": 3}})
    with pytest.raises(InputError, match="answer index 3"):
        load_problems(tmp_path / "bad.json", write(tmp_path / "s.json", {"test": ["7"]}), "test")
    with pytest.raises(InputError, match="problem 8 of split test is not in"):
        load_problems(problems, write(tmp_path / "s2.json", {"test": ["8"]}), "test")


def test_bench_questions_and_answer_format(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 0, "image": "a.jpg", "text": "What?", "category": "conv"}\n'
                    '{"question_id": "t1", "text": "No image here?", "category": "conv"}\n')
    questions = load_questions(path)
    assert [q.question_id for q in questions] == [0, "t1"] and questions[1].image is None
    line = json.loads(BenchAnswer(question_id=0, prompt="What?", text="A cat.", answer_id=answer_id("m", 0, "A cat."),
                                  model_id="m").model_dump_json())
    assert set(line) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert line["answer_id"] == answer_id("m", 0, "A cat.") != answer_id("m", 0, "A dog.")
    path.write_text('{"question_id": 0, "text": "a"}\n{"question_id": 0, "text": "b"}\n')
    with pytest.raises(InputError, match="question_id 0 appears twice"):
        load_questions(path)
    with pytest.raises(InputError, match="no image a.jpg"):
        image_path(tmp_path, "a.jpg")
    with pytest.raises(InputError, match="no image"):
        image_path(tmp_path, "../q.jsonl")  # nothing outside --images


def test_answers_of_another_model_are_not_mixed(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "model_id": "m1", "text": "x"}\n{"question_id": 2, "mod')  # torn by a kill
    assert answered(answers, "m1") == {"1"}
    with pytest.raises(InputError, match="holds answers of model 'm1'"):
        answered(answers, "m2")


def test_batches_never_mix_image_and_text_questions():
    items = [1, 2, 3, 10, 11, 4, 5, 6, 7]
    assert batches(items, 3, lambda n: n < 10) == [[1, 2, 3], [10, 11], [4, 5, 6], [7]]


def test_eval_bad_input_is_one_line_before_any_model_loads(cli, tmp_path):
    result = cli("eval", "scienceqa", "--model", tmp_path, "--problems", tmp_path / "problems.json", "--split-file",
                 tmp_path / "pid_splits.json", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--problems" in result.output and "file not found" in result.output
    (tmp_path / "q.jsonl").write_text("not json\n")
    result = cli("eval", "bench", "--model", tmp_path, "--questions", tmp_path / "q.jsonl", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--questions" in result.output and "line 1" in result.output


def test_bench_takes_an_external_answers_file(cli, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": "a.jpg", "text": "?", "category": "conv"}) + "\n" for i in (3, 1, 2)))
    answers = tmp_path / "llava_answers.jsonl"
    lines = [{"question_id": i, "prompt": "?", "text": f"answer {i}", "answer_id": f"x{i}", "model_id": "llava-v1.5-13b", "metadata": {}}
             for i in (1, 2, 3)]
    answers.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "bench"
    result = cli("eval", "bench", "--questions", questions, "--answers", answers, "--out", out)
    assert result.exit_code == 0, result.output
    taken = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert taken == [lines[2], lines[0], lines[1]]  # unchanged, in the questions' order
    # an answer to no question is refused; an unanswered question is taken but fails the command
    answers.write_text(json.dumps({"question_id": 9, "text": "?"}) + "\n")
    result = cli("eval", "bench", "--questions", questions, "--answers", answers, "--out", tmp_path / "o2")
    assert result.exit_code == 2 and "question_id 9 is not in --questions" in result.output
    answers.write_text(json.dumps({"question_id": 1, "text": "only one"}) + "\n")
    result = cli("eval", "bench", "--questions", questions, "--answers", answers, "--out", tmp_path / "o3")
    assert result.exit_code == 1 and "2 questions have no answer" in result.output and "(3, 2)" in result.output
    result = cli("eval", "bench", "--questions", questions, "--answers", answers, "--out", out)
    assert result.exit_code == 2 and "already holds other answers" in result.output
