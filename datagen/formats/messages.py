"""LLaVA records as OpenAI/TRL-style chat `messages`, for chat-format trainers (TRL's SFTTrainer,
`apply_chat_template`): `human`/`gpt` become `user`/`assistant`, and each turn's text becomes content
parts with {"type": "image"} where `<image>` stood."""

from __future__ import annotations

from datagen.formats.records import CHAT_ROLES, IMAGE_TOKEN, InstructRecord



def content_parts(value: str) -> list[dict]:
    parts: list[dict] = []
    for k, text in enumerate(value.split(IMAGE_TOKEN)):
        if k:
            parts.append({"type": "image"})
        # The newline joining <image> to the question belongs to LLaVA's layout, not to the question.
        if text.strip():
            parts.append({"type": "text", "text": text.strip()})
    return parts


def to_messages(record: InstructRecord, meta: dict | None = None) -> dict:
    row: dict[str, object] = {
        "id": record.id,
        "images": [record.image],
        "messages": [{"role": CHAT_ROLES[turn.speaker], "content": content_parts(turn.value)} for turn in record.conversations],
    }
    if meta is not None:
        row["meta"] = meta
    return row
