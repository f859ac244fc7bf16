"""The teacher as task and run code see it: one small interface (`complete`), with the providers beneath it.

The request, the reply and the Teacher protocol live in interface.py; each wire format is a provider of its own
(providers/: OpenAI chat, Azure OpenAI, Anthropic Messages, the offline mock) over one base that owns retries,
backoff, rate limits, the dead-server watch and the first-request probe, invisible to the task code. This module
is where the rest of datagen imports them from.
"""

from __future__ import annotations

from datagen.redaction import redact_url
from datagen.teachers.interface import ChatReply, ChatRequest, Teacher, request_from_body
from datagen.teachers.providers.base import DEFAULT_MAX_REPLY_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, MAX_CHARS_PER_TOKEN, HTTPTeacher
from datagen.teachers.providers.mock import MockTeacher
from datagen.teachers.providers.openai_chat import OpenAITeacher, parse_completion, parse_usage
from datagen.teachers.providers.retry import RequestRefused, RetryableError, parse_retry_after
from datagen.teachers.providers.retry import retry_delay as _retry_delay

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_CHARS_PER_TOKEN",
    "ChatReply",
    "ChatRequest",
    "HTTPTeacher",
    "MockTeacher",
    "OpenAITeacher",
    "RequestRefused",
    "RetryableError",
    "Teacher",
    "_retry_delay",
    "parse_completion",
    "parse_retry_after",
    "parse_usage",
    "redact_url",
    "request_from_body",
]
