"""How a request body is shaped for one server: the token-limit field's name, fields left out, extra fields.

Reasoning models take `max_completion_tokens` instead of `max_tokens` and refuse any temperature but their
default; some servers refuse `seed`; vLLM and others take extra fields (`top_k`, `chat_template_kwargs`).
The shape is part of every body and so of every cache key; the default shape sends exactly the fields datagen
always sent, so cache keys made before shaping existed still match.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from datagen.errors import InputError

TokenLimitField = Literal["max_tokens", "max_completion_tokens"]

OMITTABLE = ("seed", "temperature")
# Fields set by their own flags: --extra-body may not set them behind those flags' backs.
_OWN_FLAG = {
    "model": "--model",
    "messages": "the prompt pack (--prompts)",
    "max_tokens": "--max-tokens",
    "max_completion_tokens": "--max-completion-tokens",
    "temperature": "--temperature (or --omit-params temperature)",
    "seed": "--seed (or --omit-params seed)",
    "stream": "nothing: datagen reads whole answers",
    "n": "nothing: datagen keeps one answer per request",
}


class RequestShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    token_limit_field: TokenLimitField = "max_tokens"
    omit: tuple[str, ...] = ()
    extra_body: dict[str, object] = {}


def parse_omit_params(value: str | None) -> tuple[str, ...]:
    names = sorted({name.strip() for name in (value or "").split(",") if name.strip()})
    unknown = [name for name in names if name not in OMITTABLE]
    if unknown:
        raise InputError(f"--omit-params {value}: cannot leave out {', '.join(unknown)}; choose from {','.join(OMITTABLE)}")
    return tuple(names)


def parse_extra_body(value: str | None) -> dict[str, object]:
    if not value:
        return {}
    try:
        extra = json.loads(value)
    except json.JSONDecodeError as error:
        raise InputError(f"--extra-body: not valid JSON ({error.msg}); write a JSON object, e.g. '{{\"top_k\": 20}}'") from None
    if not isinstance(extra, dict):
        raise InputError("--extra-body: write a JSON object, e.g. '{\"top_k\": 20}'")
    for key in extra:
        if key in _OWN_FLAG:
            raise InputError(f"--extra-body: {key!r} is set by {_OWN_FLAG[key]}; take it out of --extra-body")
    return extra


def fix_for_refused_field(message: str, param: object, shape: RequestShape) -> str | None:
    """The flag that fixes a request refused for a field the server does not take, when the refusal names one."""
    named = {str(param)} if isinstance(param, str) else set()
    named |= {field for field in ("max_completion_tokens", "max_tokens", "temperature", "seed", "response_format", *shape.extra_body) if re.search(rf"\b{re.escape(field)}\b", message)}
    if "response_format" in named and "response_format" not in shape.extra_body:
        return (
            "drop --structured: this server does not take response_format (structured output) in this form; a server that"
            ' takes {"type": "json_object", "schema": ...} (llama-cpp-python\'s) needs --structured-form json_object'
        )
    if "max_completion_tokens" in named and shape.token_limit_field == "max_completion_tokens":
        return "this server takes max_tokens: drop --max-completion-tokens and pass --max-tokens N"
    if "max_tokens" in named and shape.token_limit_field == "max_tokens":
        return "pass --max-completion-tokens N (sent instead of max_tokens; reasoning models need it)"
    if "temperature" in named:
        return "pass --omit-params temperature (the model keeps its default) or another --temperature"
    if "seed" in named:
        return "pass --omit-params seed"
    extra = sorted(named & set(shape.extra_body))
    if extra:
        return f"take {', '.join(extra)} out of --extra-body"
    return None
