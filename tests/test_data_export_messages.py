"""`datagen export --format messages`: the same records as OpenAI/TRL-style chat messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.formats.messages import content_parts

REPO = Path(__file__).resolve().parent.parent
NO_KEY = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}


def invoke(*args: object, expect: int = 0):
    result = CliRunner().invoke(app, [str(arg) for arg in args], env=NO_KEY)
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("msg")
    invoke("generate", "--teacher", "mock", "--captions", REPO / "data" / "captions.json",
           "--instances", REPO / "data" / "instances.json", "--out", root / "gen", "--no-progress")
    invoke("export", root / "gen", "--out", root / "llava.json", "--keep-meta")
    invoke("export", root / "gen", "--out", root / "messages.jsonl", "--format", "messages", "--jsonl", "--keep-meta")
    text = (root / "messages.jsonl").read_text(encoding="utf-8")
    return {"llava": json.loads((root / "llava.json").read_text()),
            "messages": [json.loads(line) for line in text.splitlines()]}


def test_image_part_stands_where_the_image_token_stood():
    assert content_parts("<image>\nWhat is this?") == [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    assert content_parts("What is this?\n<image>") == [{"type": "text", "text": "What is this?"}, {"type": "image"}]
    assert content_parts("A plain answer.") == [{"type": "text", "text": "A plain answer."}]


def test_messages_export_holds_the_same_records(exports):
    llava, messages = exports["llava"], exports["messages"]
    assert len(messages) == len(llava) > 0
    placements = set()
    for record, row in zip(llava, messages):
        assert row["id"] == record["id"] and row["images"] == [record["image"]]
        assert row["meta"] == record["meta"]
        turns = record["conversations"]
        assert [m["role"] for m in row["messages"]] == ["user" if t["from"] == "human" else "assistant" for t in turns]
        for turn, message in zip(turns, row["messages"]):
            # Text parts are the turn's text with the image token and its newline taken out, nothing else.
            text = "\n".join(p["text"] for p in message["content"] if p["type"] == "text")
            assert text == turn["value"].replace("<image>\n", "").replace("\n<image>", "")
            assert all(set(p) <= {"type", "text"} and p["type"] in ("image", "text") for p in message["content"])
        images = [(i, k) for i, m in enumerate(row["messages"]) for k, p in enumerate(m["content"]) if p["type"] == "image"]
        assert len(images) == 1 and images[0][0] == 0
        placements.add(images[0][1])
    assert placements == {0, 1}  # both LLaVA placements (before and after the question) occur and survive


def test_unknown_format_is_one_line_exit_2(tmp_path):
    (tmp_path / "gen").mkdir()
    result = invoke("export", tmp_path / "gen", "--out", tmp_path / "x.json", "--format", "sharegpt", expect=2)
    assert "--format sharegpt" in result.output and "Traceback" not in result.output
