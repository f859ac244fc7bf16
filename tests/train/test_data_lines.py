"""The trainer reads an exported JSONL through the one reader (issue 29 item 14): an answer holding U+2028 or
U+0085, as export writes it (ensure_ascii=False), is one record, and a BOM is no part of the data."""

from __future__ import annotations

import json

import pytest

from datagen.train.data import DataError, load_records

RECORD = {"id": "r1", "image": "a.jpg", "conversations": [
    {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A bus.\u2028It is red.\u0085Really."}]}


def test_unicode_separators_and_a_bom_keep_the_records_whole(tmp_path):
    records = [RECORD, dict(RECORD, id="r2")]
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\r\n" for record in records)
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + lines.encode())
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(records, ensure_ascii=False).encode())
    assert load_records(tmp_path / "a.jsonl") == load_records(tmp_path / "a.json") == records
    (tmp_path / "b.jsonl").write_text(lines + "\n{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match="b.jsonl: broken JSON at line 4"):  # the file's own line numbers
        load_records(tmp_path / "b.jsonl")
