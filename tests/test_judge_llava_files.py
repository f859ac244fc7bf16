"""`datagen judge` on files shaped like LLaVA's own: the three context shapes, `--rule` (LLaVA's request layout and
score reading), `judge summarize` of LLaVA review files, and empty or unpairable inputs failing loudly.

The files here are small ones written for the tests in the shapes of LLaVA's (qa90_questions.jsonl,
qa90_gpt4_answer.jsonl, caps_boxes_coco2014_val_80.jsonl, in-the-wild context.jsonl, rule.json, review files)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.formats.records import TeacherInfo, Usage
from datagen.judge.inputs import items_from_files
from datagen.judge.run import JudgeOptions, parse_llava_scores, run_judge
from datagen.teachers.teacher import ChatReply, Teacher


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


COCO_CONTEXT = [  # caps_boxes_coco2014_val_80.jsonl's shape
    {"id": "000000000139", "image": "000000000139.jpg", "captions": ["A room with a table.", "Chairs around a table."],
     "instances": [{"category": "chair", "bbox": [0.1, 0.5, 0.3, 0.9]}, {"category": "dining table", "bbox": [0.25, 0.4, 0.75, 1.0]}]},
    {"id": "000000000285", "image": "000000000285.jpg", "captions": ["A big brown bear."], "instances": []},
]
WILD_CONTEXT = [{"id": "001", "image": "001.jpg", "caption": "A ramen bowl with an egg and pork slices."}]
OURS_CONTEXT = [{"image": "x.jpg", "caption": ["A cat.", "A cat on a mat."], "boxes": [{"category": "cat", "bbox": [0, 0, 1, 1]}]}]


def coco_files(tmp_path: Path) -> dict[str, Path]:
    """qa90-shaped questions, GPT-4-shaped references and a model's answers (model_vqa's fields) over COCO_CONTEXT."""
    questions = [
        {"question_id": 0, "image": "000000000139.jpg", "text": "How many chairs are there?", "category": "conv"},
        {"question_id": 1, "image": "000000000139.jpg", "text": "Describe the room in detail.", "category": "detail"},
        {"question_id": 2, "image": "000000000285.jpg", "text": "What might the bear do next?", "category": "complex"},
    ]
    references = [{"question_id": i, "text": text, "category": q["category"]} for i, (text, q) in
                  enumerate(zip(["There is one chair.", "A room with a dining table and a chair.", "It may walk away."], questions))]
    answers = [{"question_id": i, "prompt": q["text"], "text": f"Answer {i}.", "answer_id": f"a{i}", "model_id": "m", "metadata": {}}
               for i, q in enumerate(questions)]
    return {
        "questions": write_jsonl(tmp_path / "qa90_questions.jsonl", questions),
        "reference": write_jsonl(tmp_path / "qa90_gpt4_answer.jsonl", references),
        "candidate": write_jsonl(tmp_path / "answers.jsonl", answers),
        "context": write_jsonl(tmp_path / "caps_boxes_coco2014_val_80.jsonl", COCO_CONTEXT),
    }


def file_args(files: dict[str, Path]) -> list:
    return [arg for name in ("questions", "reference", "candidate", "context") for arg in (f"--{name}", files[name])]


RULES = {  # rule.json's shape; our own words
    "conv": {"role": "Assistant", "prompt": "Rate both for the conversation question. First line: two scores."},
    "detail": {"role": "Assistant", "prompt": "Rate both descriptions. First line: two scores."},
    "complex": {"role": "Helper", "prompt": "Rate both reasoning answers. First line: two scores."},
    "llava_bench_conv": {"role": "Assistant", "prompt": "In-the-wild rule. First line: two scores."},
}


# -- contexts --------------------------------------------------------------------------------------


def test_the_three_context_shapes_render_as_llava_shows_them(tmp_path):
    files = coco_files(tmp_path)
    loaded = items_from_files(files["reference"], files["candidate"], files["questions"], files["context"])
    by_id = {item.item_id: item for item in loaded.items}
    assert by_id["0"].context == (
        "A room with a table.\nChairs around a table.\n\nchair: [0.1, 0.5, 0.3, 0.9]\ndining table: [0.25, 0.4, 0.75, 1.0]"
    )
    assert by_id["0"].context_shape == "llava_coco" and by_id["0"].task == "conv"
    assert by_id["2"].context == "A big brown bear."  # no instances: no box block
    assert by_id["0"].reference == "There is one chair." and by_id["0"].candidate == "Answer 0."

    write_jsonl(files["context"], WILD_CONTEXT + OURS_CONTEXT)
    write_jsonl(files["questions"], [{"question_id": 0, "image": "001.jpg", "text": "What is in the bowl?", "category": "conv"},
                                     {"question_id": 1, "image": "x.jpg", "text": "What animal?", "category": "conv"}])
    loaded = items_from_files(files["reference"], files["candidate"], files["questions"], files["context"])
    wild, ours = loaded.items
    assert (wild.context_shape, wild.context) == ("llava_wild", "A ramen bowl with an egg and pork slices.")
    # bbox corners as the file has them (ints stay ints), printed as LLaVA's scripts print the list
    assert (ours.context_shape, ours.context) == ("ours", "A cat.\nA cat on a mat.\n\ncat: [0, 0, 1, 1]")


@pytest.mark.parametrize(
    "line, message",
    [
        ({"image": "a.jpg"}, "line 1: needs caption or captions"),
        ({"caption": "x"}, "line 1: needs image"),
        ({"image": "a.jpg", "captions": "one string"}, "captions must be a list of strings"),
        ({"image": "a.jpg", "captions": ["x"]}, "needs instances"),
        ({"image": "a.jpg", "captions": ["x"], "instances": [{"category": "dog", "bbox": [0, 0, 1]}]}, "instances: each box needs category"),
        ({"image": "a.jpg", "caption": "x", "boxes": [{"bbox": [0, 0, 1, 1]}]}, "boxes: each box needs category"),
        ([1, 2], "line 1: not a JSON object"),
    ],
)
def test_a_context_line_that_fits_no_shape_is_one_line(cli, tmp_path, line, message):
    files = coco_files(tmp_path)
    write_jsonl(files["context"], [line])
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 2 and f"--context {files['context']}" in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["questions", "reference", "candidate", "context"])
def test_an_empty_input_file_is_refused(cli, tmp_path, name):
    files = coco_files(tmp_path)
    files[name].write_text("\n")
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 2 and f"--{name} {files[name]}: the file holds no lines" in result.output
    assert not (tmp_path / "o").exists()


def test_nothing_paired_is_a_failure_not_an_empty_success(cli, tmp_path):
    files = coco_files(tmp_path)
    write_jsonl(files["context"], WILD_CONTEXT)  # names none of the questions' images
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge", "mock")
    assert result.exit_code == 1 and "nothing to judge" in result.output and "no_context 3" in result.output


def test_no_judgement_with_two_scores_exits_1(cli, tmp_path, monkeypatch):
    """A judge whose every reply lacks scores: the run counts them, ends failed and the command says why in one line."""
    import datagen.judge.run as judge_run

    monkeypatch.setattr(judge_run, "make_judges", lambda options: [RecordingJudge(reply="I cannot score these.")])
    files = coco_files(tmp_path)
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge-model", "x", "--no-cache")
    assert result.exit_code == 1 and "no pair was scored in both orders" in result.output and "no_scores 6" in result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["counts"]["judged"] == 0 and summary["counts"]["failed"] == {"no_scores": 6}


# -- --rule: LLaVA's layout and score reading -----------------------------------------------------------


class RecordingJudge(Teacher):
    def __init__(self, reply: str = "8 6\nreasons") -> None:
        self.info = TeacherInfo(kind="openai", model="recording", mock=False)
        self.stats: Counter[str] = Counter()
        self.requests: list = []
        self.reply = reply

    async def complete(self, request):
        self.requests.append(request)
        return ChatReply(text=self.reply, finish_reason="stop", usage=Usage())

    async def aclose(self):
        return None


@pytest.mark.parametrize(
    "reply, scores",
    [
        ("8 6\nThe first is better.", (8.0, 6.0)),
        ("8,6", (8.0, 6.0)),
        ("7.5 9", (7.5, 9.0)),
        ("8, 6", None),  # LLaVA: the comma becomes a space, "8  6" splits into three parts -> [-1, -1]
        ("Assistant 1: 8\nAssistant 2: 6", None),
        ("8 6 7", None),
        ("eight six", None),
        ("", None),
        ("nan 4", None),  # a number LLaVA would take and average into nothing useful
    ],
)
def test_scores_are_read_from_the_first_line_as_llava_reads_them(reply, scores):
    parsed = parse_llava_scores(reply)
    assert (parsed[0] if parsed else None) == scores


def test_rule_requests_are_laid_out_as_llava_lays_them_out(tmp_path):
    files = coco_files(tmp_path)
    rules = tmp_path / "rule.json"
    rules.write_text(json.dumps(RULES))
    judge = RecordingJudge()
    loaded = items_from_files(files["reference"], files["candidate"], files["questions"], files["context"])
    options = JudgeOptions(out=tmp_path / "o", judge="openai", judge_models=["recording"], rule=rules, resamples=0, concurrency=1)
    summary, text = run_judge(options, loaded, [judge])
    users = [request.messages[-1]["content"] for request in judge.requests]
    assert users[0] == (
        "[Context]\nA room with a table.\nChairs around a table.\n\nchair: [0.1, 0.5, 0.3, 0.9]\ndining table: [0.25, 0.4, 0.75, 1.0]\n\n"
        "[Question]\nHow many chairs are there?\n\n"
        "[Assistant 1]\nThere is one chair.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nAnswer 0.\n\n[End of Assistant 2]\n\n"
        "[System]\nRate both for the conversation question. First line: two scores.\n\n"
    )
    # the second order shows the candidate first; the complex question uses its rule's role
    assert "[Assistant 1]\nAnswer 0.\n\n[End of Assistant 1]\n\n[Assistant 2]\nThere is one chair." in users[1]
    assert "[Helper 1]\nIt may walk away.\n\n[End of Helper 1]" in users[4]
    reviews = [json.loads(line) for line in (tmp_path / "o" / "reviews.jsonl").read_text().splitlines()]
    assert [r["rule"] for r in reviews] == ["conv", "conv", "detail", "detail", "complex", "complex"]
    # "8 6" read in both orders: the first-shown answer gets 8, so each side averages 7
    assert summary["tables"]["recording"]["all"]["relative_score"] == 100.0
    assert summary["tables"]["recording"]["all"]["order_flip_rate"] == 1.0  # the judge always prefers the first shown
    assert "left out of the means (LLaVA's scripts average it in as -1, -1)" in text
    assert summary["rule"] == str(rules)


def test_in_the_wild_questions_look_up_llava_bench_rules(tmp_path):
    files = coco_files(tmp_path)
    write_jsonl(files["context"], WILD_CONTEXT)
    write_jsonl(files["questions"], [{"question_id": 0, "image": "001.jpg", "text": "What is in the bowl?", "category": "conv"},
                                     {"question_id": 1, "image": "001.jpg", "text": "Describe it.", "category": "detail"}])
    rules = tmp_path / "rule.json"
    rules.write_text(json.dumps(RULES))
    judge = RecordingJudge()
    loaded = items_from_files(files["reference"], files["candidate"], files["questions"], files["context"])
    run_judge(JudgeOptions(out=tmp_path / "o", judge="openai", judge_models=["recording"], rule=rules, resamples=0), loaded, [judge])
    reviews = [json.loads(line) for line in (tmp_path / "o" / "reviews.jsonl").read_text().splitlines()]
    # conv finds llava_bench_conv as LLaVA's bench script does; detail has none and falls back to the plain key
    assert sorted({(r["item_id"], r["rule"]) for r in reviews}) == [("0", "llava_bench_conv"), ("1", "detail")]
    assert judge.requests[0].messages[-1]["content"].startswith("[Context]\nA ramen bowl with an egg and pork slices.\n\n[Question]\n")


def test_a_rule_file_without_a_question_category_names_both(cli, tmp_path):
    files = coco_files(tmp_path)
    rules = tmp_path / "rule.json"
    rules.write_text(json.dumps({key: value for key, value in RULES.items() if key != "complex"}))
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge", "mock", "--rule", rules)
    assert result.exit_code == 2 and f"--rule {rules}: no rule for category 'complex' of question 2" in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was written or asked
    rules.write_text(json.dumps({"conv": {"role": "Assistant"}}))
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge", "mock", "--rule", rules)
    assert result.exit_code == 2 and "category 'conv' needs prompt" in result.output
    result = cli("judge", *file_args(files), "--out", tmp_path / "o", "--judge", "mock", "--rule", tmp_path / "none.json")
    assert result.exit_code == 2 and "--rule" in result.output and "file not found" in result.output


def test_rule_run_through_the_cli_with_the_mock_judge(cli, tmp_path):
    files = coco_files(tmp_path)
    rules = tmp_path / "rule.json"
    rules.write_text(json.dumps(RULES))
    out = tmp_path / "judged"
    result = cli("judge", *file_args(files), "--out", out, "--judge", "mock", "--rule", rules, "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tables"]["mock-overlap"]) == {"conv", "detail", "complex", "all"}
    assert summary["counts"]["requested"] == 6 and summary["counts"]["judged"] == 6
    settings = json.loads((out / "judge.json").read_text())
    assert settings["fingerprint_parts"]["rule"] is not None
    # another rule file is another judgement: refused without --force
    rules.write_text(json.dumps({**RULES, "conv": {"role": "Assistant", "prompt": "Changed."}}))
    again = cli("judge", *file_args(files), "--out", out, "--judge", "mock", "--rule", rules)
    assert again.exit_code == 2 and "changed: rule" in again.output


# -- judge summarize -------------------------------------------------------------------------------------


def test_summarize_llava_reviews_by_hand(cli, tmp_path):
    reviews = write_jsonl(tmp_path / "gpt4_text_model.jsonl", [
        {"id": 1, "question_id": 1, "category": "conv", "content": "8 6\n...", "tuple": [8, 6]},
        {"id": 2, "question_id": 2, "category": "conv", "content": "6 6\n...", "tuple": [6, 6]},
        {"id": 3, "question_id": 3, "category": "detail", "content": "10 5\n...", "tuple": [10, 5]},
        {"id": 4, "question_id": 4, "category": "detail", "content": "Assistant 1 ...", "tuple": [-1, -1]},
        {"id": 5, "question_id": 5, "category": "complex", "content": "7 7\n...", "tuple": [7, 7]},
    ])
    out = tmp_path / "summary"
    result = cli("judge", "summarize", reviews, "--bootstrap", "100", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())["files"][0]
    tables = summary["tables"]
    # ours, the unread review left out:
    #   conv    ref (8+6)/2 = 7, cand (6+6)/2 = 6       -> 6/7   = 85.714...
    #   detail  ref 10, cand 5                          -> 50.0
    #   complex 7 / 7                                   -> 100.0
    #   all     ref 8+6+10+7 = 31, cand 6+6+5+7 = 24    -> 24/31 = 77.419...
    assert tables["conv"]["relative_score"] == pytest.approx(600 / 7)
    assert tables["detail"]["relative_score"] == 50.0 and tables["detail"]["pairs"] == 1
    assert tables["complex"]["relative_score"] == 100.0
    assert tables["all"]["relative_score"] == pytest.approx(2400 / 31) and tables["all"]["pairs"] == 4
    assert tables["all"]["ci95"] is not None and tables["all"]["order_flip_rate"] is None
    assert (tables["all"]["wins"], tables["all"]["ties"], tables["all"]["losses"]) == (0, 2, 2)
    # LLaVA's summarize_gpt_review.py, [-1, -1] averaged in (ratio of column means, 1 decimal):
    #   detail  ref (10-1)/2 = 4.5, cand (5-1)/2 = 2    -> 2/4.5 = 44.4
    #   all     ref (31-1)/5 = 6,   cand (24-1)/5 = 4.6 -> 4.6/6 = 76.7
    assert summary["llava_relative"] == {"complex": 100.0, "conv": 85.7, "detail": 44.4, "all": 76.7}
    assert summary["unread"] == 1 and summary["reviews"] == 5
    assert "| all | 4 |" in result.output and "prints: complex 100.0, conv 85.7, detail 44.4, all 76.7" in result.output
    assert (out / "summary.md").read_text().strip() == result.output.strip()


def test_summarize_bad_files_are_one_line(cli, tmp_path):
    result = cli("judge", "summarize")
    assert result.exit_code == 2 and "pass one or more review files" in result.output
    bad = write_jsonl(tmp_path / "r.jsonl", [{"question_id": 1, "category": "conv", "tuple": [8]}])
    result = cli("judge", "summarize", bad)
    assert result.exit_code == 2 and f"REVIEWS {bad} line 1: needs tuple" in result.output
    bad.write_text("\n")
    result = cli("judge", "summarize", bad)
    assert result.exit_code == 2 and "holds no reviews" in result.output
    result = cli("judge", "summarize", tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "file not found" in result.output


def test_judging_still_needs_out(cli, tmp_path):
    files = coco_files(tmp_path)
    result = cli("judge", *file_args(files), "--judge", "mock")
    assert result.exit_code == 2 and "--out" in result.output and "is required" in result.output


def test_rule_is_refused_with_generate_folders(cli, tmp_path):
    result = cli("judge", tmp_path, tmp_path, "--captions", tmp_path / "c.json", "--out", tmp_path / "o", "--rule", tmp_path / "r.json")
    assert result.exit_code == 2 and "--rule" in result.output


def test_rule_loader_names_bad_json(tmp_path):
    from datagen.judge.run import load_rules

    path = tmp_path / "rule.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON file"):
        load_rules(path)
    path.write_text("[]")
    with pytest.raises(InputError, match="expected an object of categories"):
        load_rules(path)
