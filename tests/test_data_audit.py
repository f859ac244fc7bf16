"""`datagen audit` end to end on hand-made LLaVA-format files over the bundled sample annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CAPTIONS, INSTANCES


def turns(*values: str) -> list[dict]:
    return [{"from": "human" if index % 2 == 0 else "gpt", "value": value} for index, value in enumerate(values)]


# Laid out like LLaVA's released files: a JSON array, no `meta`, ids the zero-padded COCO id.
LLAVA_RECORDS = [
    {  # 0: a detail description (one pair, a description request), all objects in the image
        "id": "000000100013",
        "image": "000000100013.jpg",
        "conversations": turns(
            "<image>\nDescribe the following image in detail.",
            "Two dogs, one brown and one black, chase a red frisbee across a sunny park while their owner, a man in a "
            "gray shirt, watches from the side of the lawn.",
        ),
    },
    {  # 1: a conversation whose second answer is a refusal
        "id": "000000100027",
        "image": "000000100027.jpg",
        "conversations": turns(
            "What color is the bus?\n<image>",
            "The bus is red; it is a double-decker.",
            "What brand is the car?",
            "I'm sorry, but as an AI I cannot see images, so I am unable to tell the brand of the car.",
        ),
    },
    {  # 2: complex reasoning written for another image: the giraffe enclosure has no dogs
        "id": "000000100096",
        "image": "000000100096.jpg",
        "conversations": turns(
            "<image>\nWhy might the dogs be running so fast?",
            "The two dogs are chasing a frisbee that their owner threw, and they are racing each other to catch it first.",
        ),
    },
    {  # 3: found by the number in a COCO 2014 file name, although its id is not numeric
        "id": "kitchen-1",
        "image": "COCO_train2014_000000100042.jpg",
        "conversations": turns("<image>\nWhat fruit is in the bowl?", "The bowl on the counter holds a bunch of bananas."),
    },
    {  # 4: an image the annotations do not have
        "id": "000000999999",
        "image": "000000999999.jpg",
        "conversations": turns("<image>\nWhat is this?", "A cat on a windowsill."),
    },
    {"id": "000000100084", "image": "000000100084.jpg", "conversations": "not a list"},  # 5: malformed
]


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_audit(cli, file: Path, out: Path, *extra: object):
    return cli("audit", file, "--captions", CAPTIONS, "--instances", INSTANCES, "--out", out, *extra)


@pytest.fixture
def llava_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "llava_instruct_mini.json", LLAVA_RECORDS)


def test_audits_a_llava_release_file(cli, llava_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = run_audit(cli, llava_file, out)
    assert result.exit_code == 0, result.output
    rows = read_lines(out / "findings.jsonl")
    assert [row["index"] for row in rows] == list(range(len(LLAVA_RECORDS)))
    assert [row["status"] for row in rows] == ["checked"] * 4 + ["not_in_annotations", "malformed"]
    assert [row.get("task") for row in rows[:5]] == ["detail", "conversation", "complex_reasoning", "complex_reasoning", "complex_reasoning"]
    assert all(row["task_from"] == "inferred" for row in rows[:5])

    assert rows[0]["findings"] == [] and rows[0]["grounding"] == {"mentioned": ["dog", "frisbee", "person"], "unsupported": []}
    refusal = {finding["rule"] for finding in rows[1]["findings"]}
    assert refusal and refusal <= {"refusal", "ai_disclaimer"}
    assert all(finding["turn"] == 1 and finding["role"] == "answer" for finding in rows[1]["findings"])
    assert rows[2]["grounding"]["unsupported"] == ["dog", "frisbee"]
    assert rows[3]["grounding"] == {"mentioned": ["banana", "bowl"], "unsupported": []}
    assert "conversations" in rows[5]["problem"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 6 and summary["malformed"] == 1
    assert summary["total"]["checked"] == 4 and summary["total"]["not_in_annotations"] == 1
    assert summary["total"]["quality"]["records_with_unsupported"] == 1 and summary["total"]["quality"]["chair_s"] == 0.25
    assert summary["tasks"]["conversation"]["flagged_by_checks"] == 1
    assert set(summary["tasks"]["conversation"]["findings"]) == refusal
    assert summary["failures"] == []
    assert summary["total"]["unsupported_objects"] == {"dog": 1, "frisbee": 1}
    assert "objects named but not in the image: dog 1, frisbee 1" in result.output
    assert "complex_reasoning" in result.output and "25.0%" in result.output  # the printed table


def test_the_summary_adds_up_the_tasks_and_lists_the_most_frequent_first(cli, tmp_path: Path) -> None:
    giraffes_with_a_frisbee = {  # the giraffe enclosure again, as a conversation naming a frisbee only
        "id": "000000100096",
        "image": "000000100096.jpg",
        "conversations": turns("<image>\nWhat are they playing with?", "They are playing with a frisbee.", "Who threw it?", "A man threw the frisbee."),
    }
    file = write_json(tmp_path / "records.json", [*LLAVA_RECORDS[:4], giraffes_with_a_frisbee])
    out = tmp_path / "audit"
    assert run_audit(cli, file, out).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    tasks, total = summary["tasks"].values(), summary["total"]
    for field in ("records", "checked", "flagged_by_checks"):
        assert total[field] == sum(task[field] for task in tasks)
    assert total["quality"]["mentions"] == sum(task["quality"]["mentions"] for task in tasks)
    # frisbee is named unsupported by two records of two tasks, dog and the man by one: frisbee first, then by name.
    assert list(total["unsupported_objects"].items()) == [("frisbee", 2), ("dog", 1), ("person", 1)]


def test_thresholds_set_the_exit_code(cli, llava_file: Path, tmp_path: Path) -> None:
    failing = run_audit(cli, llava_file, tmp_path / "a", "--max-chair-s", "0.2")
    assert failing.exit_code == 1 and "FAIL: CHAIR_s 25.00% exceeds --max-chair-s 20.00%" in failing.output
    assert run_audit(cli, llava_file, tmp_path / "b", "--max-chair-s", "0.25").exit_code == 0
    flagged = run_audit(cli, llava_file, tmp_path / "c", "--max-flagged", "0.2")
    assert flagged.exit_code == 1 and "--max-flagged" in flagged.output
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["failures"]


def test_task_flag_applies_to_records_without_meta(cli, llava_file: Path, tmp_path: Path) -> None:
    assert run_audit(cli, llava_file, tmp_path / "a", "--task", "complex_reasoning").exit_code == 0
    rows = read_lines(tmp_path / "a" / "findings.jsonl")
    assert {(row["task"], row["task_from"]) for row in rows[:5]} == {("complex_reasoning", "flag")}


def test_audit_of_our_output_agrees_with_its_meta(generate_mock, cli, tmp_path: Path) -> None:
    """JSONL with meta.task: the task comes from meta, and the grounding is the one generate stored."""
    run = tmp_path / "run"
    generate_mock(run, "--tasks", "conversation,complex_reasoning")
    records = [*read_lines(run / "conversation.jsonl"), *read_lines(run / "complex_reasoning.jsonl")]
    joined = tmp_path / "ours.jsonl"
    joined.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    assert run_audit(cli, joined, tmp_path / "audit").exit_code == 0
    rows = read_lines(tmp_path / "audit" / "findings.jsonl")
    assert [row["task"] for row in rows] == [record["meta"]["task"] for record in records]
    assert {row["task_from"] for row in rows} == {"meta"}
    assert [row["grounding"] for row in rows] == [record["meta"]["grounding"] for record in records]
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    for task in ("conversation", "complex_reasoning"):
        assert summary["tasks"][task]["quality"] == manifest["quality"][task]


def test_whole_reply_rules_run_as_generate_runs_them(cli, tmp_path: Path) -> None:
    """A loop and a copy of the prompt pack's example, each in a record whose every sentence passes the text rules."""
    from datagen.tasks.prompts import BUNDLED_PROMPTS

    example = (BUNDLED_PROMPTS / "complex_reasoning" / "000_conv.txt").read_text(encoding="utf-8")
    question, answer = (part.split(":", 1)[1].strip() for part in example.split("\n===\n"))
    loop = "The cat sleeps on a white bed in a quiet room."
    records = [
        {"id": "1", "image": "000000100084.jpg", "conversations": turns("<image>\nWhat is the cat doing?", f"{loop} It looks calm. {loop}")},
        {"id": "2", "image": "000000100042.jpg", "conversations": turns(f"<image>\n{question}", answer), "meta": {"task": "complex_reasoning"}},
    ]
    file = write_json(tmp_path / "open_model.json", records)
    assert run_audit(cli, file, tmp_path / "ours").exit_code == 0
    rows = read_lines(tmp_path / "ours" / "findings.jsonl")
    assert [finding["rule"] for finding in rows[0]["findings"]] == ["repetition"]
    assert {finding["rule"] for finding in rows[1]["findings"]} >= {"copied_example"}

    # Records made with another pack are compared with that pack's examples: ours are then not copied.
    other = tmp_path / "prompts"
    for task in ("conversation", "detail", "complex_reasoning"):
        (other / task).mkdir(parents=True)
        (other / task / "system_message.txt").write_text("Write about the picture.", encoding="utf-8")
    assert run_audit(cli, file, tmp_path / "theirs", "--prompts", other).exit_code == 0
    rows = read_lines(tmp_path / "theirs" / "findings.jsonl")
    assert [finding["rule"] for finding in rows[0]["findings"]] == ["repetition"]
    assert "copied_example" not in {finding["rule"] for finding in rows[1]["findings"]}
    missing = run_audit(cli, file, tmp_path / "none", "--prompts", tmp_path / "nowhere")
    one_line_error(missing, "--prompts", "folder not found")


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_input(cli, llava_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    assert run_audit(cli, llava_file, out).exit_code == 0
    before = (out / "findings.jsonl").read_bytes()

    one_line_error(run_audit(cli, tmp_path / "missing.json", out), "missing.json", "not found")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "1", "conversations": [', encoding="utf-8")
    one_line_error(run_audit(cli, broken, out), "broken.json", "not valid JSON")
    broken_lines = tmp_path / "broken.jsonl"
    broken_lines.write_text(json.dumps(LLAVA_RECORDS[0]) + "\n{oops\n", encoding="utf-8")
    one_line_error(run_audit(cli, broken_lines, out), "broken.jsonl line 2")
    elsewhere = write_json(tmp_path / "elsewhere.json", [LLAVA_RECORDS[4]])
    one_line_error(run_audit(cli, elsewhere, out), "none of its 1 records matched")
    one_line_error(run_audit(cli, llava_file, out, "--task", "chat"), "--task")
    one_line_error(run_audit(cli, llava_file, out / "findings.jsonl"), "--out", "not a folder")
    assert (out / "findings.jsonl").read_bytes() == before  # a failed audit leaves the last good one alone


@pytest.mark.parametrize(
    ("question", "detail"),
    [
        ("Describe this photo in detail.", True),
        ("What's happening in this scene?", True),
        ("Could you give me a thorough account of the picture?", True),
        ("Explain the visual content of the image.", True),
        ("What do you see in this snapshot?", True),
        ("Walk me through everything you can see in this picture.", True),  # one of our own detail instructions
        ("Why might the man in the image be holding an umbrella?", False),
        ("Explain why the dogs in the picture are running.", False),
        ("Describe the risks a cyclist faces on this road.", False),
        ("What details suggest that it is winter?", False),
    ],
)
def test_description_requests_are_told_from_reasoning_questions(question: str, detail: bool) -> None:
    from datagen.data.audit import is_description_request
    from datagen.tasks.prompts import load_instructions

    instructions = frozenset(line.casefold() for line in load_instructions("detail").lines)
    assert is_description_request(question, instructions) is detail
