"""OpenAI Batch lines, written and read in formats/batch_lines.py only: the bytes every writer produced before,
the two error shapes (OpenAI's in the body, vLLM's at the top), and lines whose text holds U+2028."""

from __future__ import annotations

import json

from datagen.formats.batch_lines import CHAT_URL, answer_line, error_line, parse_result, read_batch_lines, request_line
from datagen.run.batch import read_results
from datagen.testing.mock_openai_server import MockBackend


def completion(text: str) -> dict:
    return {"id": "c", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def test_request_lines_are_the_bytes_the_handoff_file_always_held():
    body = {"model": "m", "messages": [{"role": "user", "content": "caf\u00e9\u2028bar"}]}
    before = (json.dumps({"custom_id": "1:detail:k", "method": "POST", "url": CHAT_URL, "body": body}, ensure_ascii=False) + "\n").encode()
    assert request_line("1:detail:k", body) == before


def test_answer_and_error_lines_read_back_with_their_message():
    answered = parse_result(json.loads(answer_line("1:detail:a", completion("A bus."), "r1")))
    assert answered is not None and answered.answered and answered.custom_id == "1:detail:a" and answered.status == 200
    refused = parse_result(json.loads(error_line("2:detail:b", 400, "too long", "r2")))
    assert refused is not None and not refused.answered and (refused.status, refused.message) == (400, "too long")
    dropped = parse_result(json.loads(error_line("3:detail:c", None, "ServerDisconnectedError", "r3")))
    assert dropped is not None and (dropped.status, dropped.message) == (None, "ServerDisconnectedError")
    vllm = parse_result({"custom_id": "4:detail:d", "response": None, "error": "engine died"})  # run_batch's plain string
    assert vllm is not None and vllm.message == "engine died"
    assert parse_result(["not", "a", "row"]) is None
    # A request line (what `--out requests.jsonl` by mistake would hold) answers nothing: no response, no error.
    assert parse_result(json.loads(request_line("1:detail:k", {"model": "m"}))) is None
    assert parse_result({"custom_id": "5:detail:e", "response": {"status_code": 500, "body": {}}}).message == "no message"


def test_a_reply_with_unicode_separators_is_one_line_of_an_output_file():
    text = "First line\u2028second\u2029third\u0085end."
    data = "".join(line + "\n" for line in [answer_line("1:detail:a", completion(text), "r1"), error_line("2:detail:b", 400, "no", "r2")])
    data = "\ufeff" + data + "not json\n"
    assert len(data.splitlines()) > 3  # what the old reader split on
    assert [line.number for line in read_batch_lines(data.encode())] == [1, 2, 3]
    results = read_results(data.encode(), {"1:detail:a": "a", "2:detail:b": "b"})
    assert results.answers["a"].text == text and set(results.refused) == {"b"} and results.unreadable == 1


def test_the_mock_server_accepts_a_batch_input_line_holding_u2028():
    body = {"model": "m", "messages": [{"role": "user", "content": "a\u2028b"}]}
    content = request_line("1:detail:a", body) + b"\n" + request_line("2:detail:b", body) + b"{broken\n"
    requests, problems = MockBackend._validate_batch_input(content)
    assert [item["custom_id"] for item in requests] == ["1:detail:a", "2:detail:b"]
    assert problems == [{"code": "invalid_request", "message": "Not a valid chat completions batch line.", "param": None, "line": 4}]
