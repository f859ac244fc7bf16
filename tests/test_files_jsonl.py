"""The one JSONL reader (through jsonlines) and writer: lines end at \\n only, a BOM is skipped, NaN is no number."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from datagen.errors import InputError
from datagen.files.jsonl import iter_input_objects, iter_numbered_jsonl, json_line, read_lines, write_jsonl

SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"]  # str.splitlines() breaks a line at each


def test_unicode_line_separators_inside_a_string_stay_in_their_line():
    rows = [{"text": f"one{sep}two"} for sep in SEPARATORS] + [{"last": True}]
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    assert len(data.decode().splitlines()) > len(rows)  # what the old readers split on
    lines = list(read_lines(io.BytesIO(data)))
    assert [line.value for line in lines] == rows
    assert [line.number for line in lines] == list(range(1, len(rows) + 1))  # later line numbers are not shifted
    assert all(line.problem is None for line in lines)


def test_a_bom_crlf_and_blank_lines_are_tolerated_and_numbers_stay_true(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n  \n{"b": 2}\r\nnot json\n')
    with pytest.raises(InputError, match=r"a.jsonl line 5: not valid JSON; fix it"):
        for _ in iter_numbered_jsonl(path, fix="fix it"):
            pass
    got = [(line.number, line.value, line.problem) for line in read_lines(path.open("rb"))]
    assert got == [(1, {"a": 1}, None), (4, {"b": 2}, None), (5, None, "not valid JSON")]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_numbers(tmp_path: Path, constant: str):
    path = tmp_path / "a.jsonl"
    path.write_text('{"ok": 1}\n' + json.dumps({"tuple": [float(constant), 5]}) + "\n")  # json.dumps writes NaN as is
    with pytest.raises(InputError) as caught:
        list(iter_input_objects(path, "REVIEWS", "a review file", "tuple"))
    assert f"REVIEWS {path} line 2: not valid JSON ({constant} is not a JSON number)" in str(caught.value)


def test_not_utf8_and_not_a_regular_file_are_one_line_each(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    assert [line.problem for line in read_lines(path.open("rb"))] == [None, "not UTF-8 text"]
    with pytest.raises(InputError, match="line 2: not UTF-8 text"):
        list(iter_input_objects(path, "--answers", "an answers file", "question_id"))
    with pytest.raises(InputError, match="not a regular file; pass an answers file"):
        list(iter_input_objects(tmp_path, "--answers", "an answers file", "question_id"))


def test_the_writer_writes_what_json_dumps_wrote_and_refuses_nan():
    rows = [{"text": "caf\u00e9 \u2028 line", "n": [1, 2.5]}, {"b": None}]
    handle = io.StringIO()
    write_jsonl(handle, rows)
    # Byte for byte the form export always wrote (json.dumps, ensure_ascii=False), so `make demo` is unchanged.
    assert handle.getvalue() == "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    assert "".join(json_line(row) for row in rows) == handle.getvalue()
    assert [line.value for line in read_lines(io.BytesIO(handle.getvalue().encode()))] == rows
    with pytest.raises(ValueError):
        json_line({"score": math.nan})
