"""Structured output (`generate --structured`): each task's reply form as a JSON schema, sent as `response_format`,
and the JSON reply read back into the text form the task's pack asks for, so that it meets the very same checks.

OpenAI, vLLM, llama.cpp's server and Ollama constrain decoding to the schema: a small model can then no longer
lose the Question/Answer layout, run a detail on past its bound or add a second pair to a complex-reasoning reply.
What the schema cannot say (no blank line inside a detail's paragraph) and what a server that only reads the
schema as a hint lets through is checked here; such a reply `NotInSchema`, which earns one re-ask.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from datagen.formats.records import RejectReason
from datagen.quality.parse import NATURAL_FINISH, Content, Rejected, check_finish_reason, parse_qa_pairs
from datagen.quality.reply_checks import Examples
from datagen.tasks.registry import ResponseFormat, TaskSpec

# A detail is one paragraph; LLaVA's GPT-4 detailed descriptions run 400-1,100 characters.
DETAIL_MAX_CHARS = 1500
_QA_SEPARATOR = "\n===\n"


class NotInSchema(Rejected):
    """A reply that is not JSON of the task's schema: a reject (`unparseable`, or `wrong_turn_count` for a pair count
    the task does not allow) unless the one re-ask fits."""

    def __init__(self, detail: str, reason: RejectReason = "unparseable") -> None:
        super().__init__(reason, detail)


def _text(description: str) -> dict[str, Any]:
    # No minLength/maxLength: OpenAI's strict mode refuses them, and llama.cpp unrolls a maxLength of 1,500 into a
    # grammar it cannot build (its server then dies). The bounds are checked when the reply is read back instead.
    return {"type": "string", "description": description}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _pair() -> dict[str, Any]:
    return _object({"question": _text("a question about the picture"), "answer": _text("its answer")})


def reply_schema(spec: TaskSpec) -> dict[str, Any]:
    """The JSON schema of a reply to `spec`: one question/answer pair for a task of exactly one pair (complex
    reasoning), a list of pairs for any other Question/Answer task, one paragraph for a prose task."""
    if spec.response is ResponseFormat.QA_PAIRS and spec.pairs == 1:
        return _pair()
    if spec.response is ResponseFormat.QA_PAIRS:
        pairs: dict[str, Any] = {"type": "array", "items": _pair(), "minItems": spec.pairs or 1}
        if spec.pairs is not None:
            pairs["maxItems"] = spec.pairs
        return _object({"pairs": pairs})
    return _object({"description": _text(f"one paragraph of at most {DETAIL_MAX_CHARS} characters")})


# How the schema is sent: OpenAI's form, which OpenAI, vLLM, Ollama and llama.cpp's own llama-server take, or the
# older `json_object` form with the schema beside it, the only one llama-cpp-python's server (0.3) takes.
StructuredForm = Literal["json_schema", "json_object"]
STRUCTURED_FORMS: tuple[StructuredForm, ...] = ("json_schema", "json_object")


def response_format(spec: TaskSpec, form: str = "json_schema") -> dict[str, Any]:
    """The request's `response_format` field for `spec`, in the given form."""
    if form == "json_object":
        return {"type": "json_object", "schema": reply_schema(spec)}
    return {"type": "json_schema", "json_schema": {"name": f"datagen_{spec.name}", "strict": True, "schema": reply_schema(spec)}}


def schema_of(response_format: object) -> dict[str, Any] | None:
    """The reply schema a `response_format` field carries, in either form; None when it carries none."""
    if not isinstance(response_format, dict):
        return None
    schema = response_format.get("json_schema", {}).get("schema") if response_format.get("type") == "json_schema" else response_format.get("schema")
    return schema if isinstance(schema, dict) else None


def _strings(item: object, keys: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(item, dict) or set(item) != set(keys):
        raise NotInSchema(f"{where} is not an object with exactly {', '.join(keys)}")
    values = [item[key] for key in keys]
    if not all(isinstance(value, str) and value.strip() for value in values):
        raise NotInSchema(f"{where}: {' and '.join(keys)} must be non-empty strings")
    return [value.strip() for value in values]


def from_json(spec: TaskSpec, text: str) -> str:
    """The reply in the pack's text form (Question/Answer blocks, or the paragraph), or `NotInSchema`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotInSchema(f"not JSON of the {spec.name} schema ({error.msg} at character {error.pos})") from None
    if spec.response is ResponseFormat.PROSE:
        [description] = _strings(data, ("description",), "the reply")
        if "\n\n" in description.replace("\r\n", "\n"):
            raise NotInSchema(f"a {spec.name} is one paragraph; the description has blank lines")
        if len(description) > DETAIL_MAX_CHARS:
            raise NotInSchema(f"a {spec.name} is at most {DETAIL_MAX_CHARS} characters; got {len(description)}")
        return description
    if spec.pairs == 1:
        pairs = [_strings(data, ("question", "answer"), "the reply")]
    elif isinstance(data, dict) and set(data) == {"pairs"} and isinstance(data["pairs"], list) and data["pairs"]:
        pairs = [_strings(item, ("question", "answer"), f"pair {number}") for number, item in enumerate(data["pairs"], 1)]
    else:
        raise NotInSchema("the reply is not an object whose only field, pairs, is a non-empty list")
    if spec.pairs is not None and len(pairs) != spec.pairs:
        raise NotInSchema(f"{spec.name.replace('_', ' ')} needs exactly {spec.pairs} pairs, got {len(pairs)}", "wrong_turn_count")
    return _QA_SEPARATOR.join(f"Question:\n{question}{_QA_SEPARATOR}Answer:\n{answer}" for question, answer in pairs)


def fits_schema(spec: TaskSpec, text: str, finish_reason: str | None) -> bool:
    """Whether a finished reply is JSON of the task's schema; a cut or withheld one is judged as such, not re-asked."""
    if finish_reason not in NATURAL_FINISH:
        return True
    try:
        from_json(spec, text)
    except NotInSchema:
        return False
    return True


def parse_structured(spec: TaskSpec, text: str, finish_reason: str | None, see: str = "text", examples: Examples | None = None) -> Content:
    """The validated content of a JSON reply: read back into the pack's text form, then parsed and checked exactly as a
    text reply is. A reply cut by the token limit is `truncated` (its JSON is unfinished), as in a text run."""
    check_finish_reason(finish_reason)
    return spec.parse(from_json(spec, text), finish_reason, see, examples)


def json_reply(schema: dict[str, Any], text: str) -> str:
    """A text reply (Question/Answer blocks or prose) rewritten as JSON of a task's reply schema: what the mock teacher
    sends when asked for structured output."""
    if "pairs" in schema["properties"]:
        pairs = [{"question": question, "answer": answer} for question, answer in parse_qa_pairs(text)]
        return json.dumps({"pairs": pairs}, ensure_ascii=False)
    if "question" in schema["properties"]:
        [(question, answer)] = parse_qa_pairs(text)
        return json.dumps({"question": question, "answer": answer}, ensure_ascii=False)
    return json.dumps({"description": " ".join(text.split())}, ensure_ascii=False)
