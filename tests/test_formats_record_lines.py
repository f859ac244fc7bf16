"""An output folder's records and rejects, read back in one place (formats/record_lines.py): a whole line reads
as it was written; a hand-edited one is refused in one line naming the file, the line, what is wrong and the
fix (exit 2) by every command that builds on it, and counted or shown as it is by report and show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.formats.record_lines import FIX, checked_records, record_lines
from datagen.formats.records import Usage
from tests.conftest import CAPTIONS

META = {"image_id": 7, "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
RECORD = {"id": "000000000007", "image": "7.jpg", "conversations": [], "meta": META}
REJECT = {"id": "000000000007", "image": "7.jpg", "task": "detail", "reason": "refusal", "meta": META}


def write(path: Path, *rows: object) -> Path:
    path.write_bytes(b"".join(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode() for row in rows))
    return path


def test_whole_lines_read_back_with_their_bytes_image_and_usage(tmp_path: Path) -> None:
    path = write(tmp_path / "detail.jsonl", RECORD, b"\n", {**RECORD, "id": "000000000008"})
    lines = list(checked_records(path))
    assert [line.number for line in lines] == [1, 3] and lines[0].raw == (json.dumps(RECORD) + "\n").encode()
    assert lines[0].data == RECORD and lines[0].image_id == 7 and lines[0].usage == Usage(prompt_tokens=3, completion_tokens=2)
    [reject] = checked_records(write(tmp_path / "rejects.jsonl", REJECT), reject=True)
    assert reject.problem is None and reject.data["reason"] == "refusal"


def test_no_file_is_no_lines(tmp_path: Path) -> None:
    assert list(record_lines(tmp_path / "detail.jsonl")) == list(checked_records(tmp_path / "missing.jsonl", reject=True)) == []


NOT_WHOLE = [
    ({k: v for k, v in RECORD.items() if k != "meta"}, False, "no meta"),
    ({**RECORD, "meta": [1]}, False, "meta is a JSON list, not an object"),
    ({**RECORD, "meta": {**META, "image_id": "7"}}, False, "meta.image_id is not an integer"),
    ({**RECORD, "meta": {**META, "image_id": True}}, False, "meta.image_id is not an integer"),
    ({**RECORD, "meta": {"image_id": 7}}, False, "no meta.usage"),
    ({**RECORD, "meta": {**META, "usage": {"prompt_tokens": "many"}}}, False, "meta.usage: "),
    ({**RECORD, "id": ["a", "list"]}, False, "id is not a string"),
    ({**RECORD, "conversations": 5}, False, "conversations is not a list"),
    ({**REJECT, "task": ["detail"]}, True, "task and reason must be strings"),
    ({k: v for k, v in REJECT.items() if k != "reason"}, True, "no reason"),
]


@pytest.mark.parametrize(("row", "reject", "problem"), NOT_WHOLE)
def test_a_line_that_is_not_whole_is_refused_by_the_checked_reader_and_kept_by_the_looking_one(tmp_path, row, reject, problem) -> None:
    path = write(tmp_path / ("rejects.jsonl" if reject else "detail.jsonl"), REJECT if reject else RECORD, row)
    [whole, edited] = record_lines(path, reject)
    assert whole.problem is None and edited.data == row and edited.problem is not None and edited.problem.startswith(problem)
    with pytest.raises(InputError) as caught:
        list(checked_records(path, reject))
    kind = "reject" if reject else "record"
    assert str(caught.value) == f"{path} line 2: not a datagen {kind} ({edited.problem}); {FIX}"


@pytest.mark.parametrize(("line", "said"), [
    (b"[1, 2]\n", "a JSON list, not an object"),
    (b"null\n", "a JSON null, not an object"),
    (b'"text"\n', "a JSON str, not an object"),
    (b'{"id": \n', "not valid JSON"),
    (b"\xff\xfe{}\n", "not UTF-8 text"),
])
def test_a_line_no_command_can_read_is_refused_by_both_readers(tmp_path: Path, line: bytes, said: str) -> None:
    path = write(tmp_path / "detail.jsonl", RECORD, line)
    for read in (record_lines, checked_records):
        with pytest.raises(InputError) as caught:
            list(read(path))
        assert str(caught.value) == f"{path} line 2: {said}; {FIX}"


@pytest.fixture
def edited_run(generate_mock, tmp_path: Path) -> Path:
    """A mock run whose second detail record lost its meta.image_id by hand."""
    run = tmp_path / "run"
    generate_mock(run, "--limit", 3)
    path = run / "detail.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["meta"]["image_id"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


BUILDERS = {
    "export": lambda run, tmp: ["export", run, "--out", tmp / "x.json"],
    "merge": lambda run, tmp: ["merge", run, "--out", tmp / "merged"],
    "dedup": lambda run, tmp: ["dedup", run],
    "judge": lambda run, tmp: ["judge", run, run, "--captions", CAPTIONS, "--out", tmp / "judged", "--judge", "mock", "--tasks", "detail"],
}


@pytest.mark.parametrize("command", list(BUILDERS))
def test_a_command_that_builds_on_records_refuses_a_hand_edited_one_in_one_line(cli, edited_run: Path, tmp_path: Path, command) -> None:
    before = (edited_run / "detail.jsonl").read_bytes()
    result = cli(*BUILDERS[command](edited_run, tmp_path))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{edited_run / 'detail.jsonl'} line 2: not a datagen record (no meta.image_id); {FIX}" in lines[0]
    assert (edited_run / "detail.jsonl").read_bytes() == before


def test_report_and_show_take_a_hand_edited_record_as_it_is(cli, edited_run: Path, tmp_path: Path) -> None:
    result = cli("report", edited_run, "--out", tmp_path / "x.html")
    assert result.exit_code == 0, result.output
    shown = cli("show", edited_run, "--task", "detail", "--n", "3")
    assert shown.exit_code == 0 and "3 records shown" in shown.output, shown.output


def test_a_hand_edited_reject_is_refused_by_merge_and_kept_by_report(cli, generate_mock, tmp_path: Path) -> None:
    run = tmp_path / "run"
    generate_mock(run, "--limit", 2)
    write(run / "rejects.jsonl", {**REJECT, "reason": None})
    result = cli("merge", run, "--out", tmp_path / "merged")
    assert result.exit_code == 2 and f"{run / 'rejects.jsonl'} line 1: not a datagen reject (task and reason must be strings)" in result.output
    assert cli("report", run, "--out", tmp_path / "x.html").exit_code == 0
