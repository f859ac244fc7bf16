"""The offline mock teacher: deterministic answers built from the request's context alone (datagen/teachers/mock.py),
labelled mock everywhere it appears; it sends nothing, so it needs no key, endpoint or retries."""

from __future__ import annotations

from collections import Counter

from datagen.formats.records import TeacherInfo, Usage
from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.interface import ChatReply, ChatRequest, Teacher
from datagen.teachers.vision import estimate_content_tokens


class MockTeacher(Teacher):
    """Offline, deterministic answers built only from the context; labelled mock everywhere it appears."""

    def __init__(self, variant: str = "default") -> None:
        # A variant is a second offline teacher with its own name, so two-teacher comparisons run offline too.
        self.variant = variant
        self.info = TeacherInfo(kind="mock", model="mock" if variant == "default" else f"mock-{variant}", mock=True)
        self.stats: Counter[str] = Counter()

    async def complete(self, request: ChatRequest) -> ChatReply:
        from datagen.teachers.mock import mock_answer

        self.stats["requests"] += 1
        text = mock_answer(request.messages, request.body().get("seed"), self.variant)
        if request.response_format is not None:
            from datagen.tasks.structured import json_reply, schema_of

            if (schema := schema_of(request.response_format)) is not None:
                text = json_reply(schema, text)
        finish_reason = "stop"
        completion_tokens = estimate_tokens(text)
        if completion_tokens > request.max_tokens:
            # Mirror a real server: cut the answer and say so, so truncation handling is exercised offline too.
            text, finish_reason, completion_tokens = text[: request.max_tokens * 4], "length", request.max_tokens
        prompt_tokens = sum(estimate_content_tokens(message["content"]) for message in request.messages)
        return ChatReply(text=text, finish_reason=finish_reason, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))

    async def aclose(self) -> None:
        return None
