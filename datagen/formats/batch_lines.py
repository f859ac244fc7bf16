"""OpenAI Batch API lines, written and read here only: the input file (one chat request a line, under a
`custom_id`) and the output and error files (one result a line), as OpenAI's Batch API, vLLM's run_batch, the
mock server, `datagen generate --requests-out/--results-in` and `datagen ray` speak them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from datagen.files.jsonl import JsonLine, json_line, read_lines

CHAT_URL = "/v1/chat/completions"


def request_line(cid: str, body: object) -> bytes:
    return json_line({"custom_id": cid, "method": "POST", "url": CHAT_URL, "body": body}).encode()


def answer_line(cid: str, body: object, request_id: str) -> str:
    """An answered row, without its newline."""
    return json_line({"id": request_id, "custom_id": cid, "response": {"status_code": 200, "request_id": request_id, "body": body},
                      "error": None})[:-1]


def error_line(cid: str, status: int | None, message: str, request_id: str) -> str:
    """A failed row, without its newline: with the HTTP status the server gave, in the body as OpenAI's Batch API
    writes it; without one (a dropped connection, a timeout, an engine error), as a top-level error."""
    if status is None:
        return json_line({"id": request_id, "custom_id": cid, "response": None, "error": {"code": "request_failed", "message": message}})[:-1]
    response = {"status_code": status, "request_id": request_id, "body": {"error": {"message": message}}}
    return json_line({"id": request_id, "custom_id": cid, "response": response, "error": None})[:-1]


@dataclass(frozen=True)
class BatchResult:
    """One output-file row: whose it is, the HTTP status and body (None when no response came), and the error."""

    custom_id: object  # a string in every row we or a server write; anything else matches no request
    status: object
    body: object
    error: object

    @property
    def answered(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def message(self) -> str:
        """A failed row's message: OpenAI puts the error object in the body, vLLM's run_batch in `error` (an error
        response, or a plain string)."""
        error = self.error or (self.body.get("error") if isinstance(self.body, dict) else None)
        if isinstance(error, dict) and isinstance(error.get("error"), dict):
            error = error["error"]
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or "no message")
        return str(error) if error else "no message"


def parse_result(value: object) -> BatchResult | None:
    """The row a parsed output line holds; None when the line is not one: not a JSON object, or an object with
    neither a response nor an error (a request line, notes)."""
    if not isinstance(value, dict) or ("response" not in value and "error" not in value):
        return None
    response = value.get("response")
    response = response if isinstance(response, dict) else {}
    return BatchResult(value.get("custom_id"), response.get("status_code"), response.get("body"), value.get("error"))


def read_batch_lines(data: bytes) -> Iterator[JsonLine]:
    """Each non-blank line of a Batch file held in memory (a download, an upload)."""
    return read_lines(io.BytesIO(data))
