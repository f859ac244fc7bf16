"""Jinja chat templates that render exactly what a checkpoint was trained on (data.render), for
`apply_chat_template`, `pipeline("image-text-to-text")` and TRL.

Messages may carry a string or OpenAI-style content parts ({"type": "image"}, {"type": "text",
"text": ...}). Like the trainer (data.record_turns), a user turn's images come first, each as
"<image>\\n", then its text, stripped. Answers sit inside {% generation %} so
`return_assistant_tokens_mask` marks exactly the trained tokens.
"""
from __future__ import annotations

import json

from .data import IMAGE_TOKEN, VICUNA_SYSTEM


def _lit(text: str) -> str:
    """A Jinja string literal (JSON's quoting and escapes are valid Jinja)."""
    return json.dumps(text, ensure_ascii=False)


IMG, IMG_LINE = _lit(IMAGE_TOKEN), _lit(IMAGE_TOKEN + "\n")
# `turn_text(m)`: a message's content as the trainer sees it.
_CONTENT = (
    "{%- macro turn_text(m) -%}"
    "{%- if m['content'] is string -%}"
    f"{{%- if {IMG} in m['content'] -%}}{{{{ {IMG_LINE} + (m['content'] | replace({IMG}, '') | trim) }}}}"
    "{%- else -%}{{ m['content'] }}{%- endif -%}"
    "{%- else -%}"
    f"{{%- for part in m['content'] if part['type'] == 'image' -%}}{{{{ {IMG_LINE} }}}}{{%- endfor -%}}"
    "{%- set texts = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | list -%}"
    "{{ texts | join('\\n') | trim }}"
    "{%- endif -%}"
    "{%- endmacro -%}"
)


def vicuna_v1(bos: bool) -> str:
    """`<system> USER: <q> ASSISTANT: <a></s>USER: ...`; a leading system message replaces the default line."""
    return _CONTENT + (
        ("{{ bos_token }}" if bos else "")
        + "{%- if messages[0]['role'] == 'system' -%}{{ turn_text(messages[0]) + ' ' }}"
        f"{{%- else -%}}{{{{ {_lit(VICUNA_SYSTEM + ' ')} }}}}{{%- endif -%}}"
        "{%- for m in messages if m['role'] != 'system' -%}"
        "{%- if m['role'] == 'user' -%}{{ 'USER: ' + turn_text(m) + ' ASSISTANT:' }}"
        "{%- else -%}{% generation %}{{ ' ' + turn_text(m) + eos_token }}{% endgeneration %}{%- endif -%}"
        "{%- endfor -%}"
    )


def plain(bos: bool) -> str:
    """Stage 1: the image, then the caption and a newline; instructions are not shown (LLaVA's plain)."""
    return _CONTENT + (
        ("{{ bos_token }}" if bos else "")
        + "{%- for m in messages -%}"
        f"{{%- if m['role'] == 'user' -%}}{{%- if {IMG} in turn_text(m) -%}}{{{{ {IMG} }}}}{{%- endif -%}}"
        "{%- elif m['role'] == 'assistant' -%}{% generation %}{{ turn_text(m) + '\\n' }}{% endgeneration %}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def wrapped(llm_template: str) -> str:
    """The LLM's own template, fed string contents: content parts are flattened the trainer's way first."""
    return _CONTENT + (
        "{%- set ns = namespace(flat=[]) -%}"
        "{%- for m in messages -%}"
        "{%- set ns.flat = ns.flat + [{'role': m['role'], 'content': turn_text(m)}] -%}"
        "{%- endfor -%}"
        "{%- set messages = ns.flat -%}"
    ) + llm_template


def adds_bos(tokenizer) -> bool:
    """Whether tokenising with add_special_tokens=True (what processors do with a prompt that does not
    already start with BOS) puts BOS in front; then the template must not write it as text."""
    if not tokenizer.bos_token:
        return True
    return tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def chat_template_for(template: str, tokenizer) -> str:
    """The template a checkpoint trained with (meta["template"]) as Jinja for its export."""
    if template == "vicuna_v1":
        return vicuna_v1(bos=not adds_bos(tokenizer))
    if template == "plain":
        return plain(bos=not adds_bos(tokenizer))
    if template == "chat":
        return wrapped(tokenizer.chat_template)
    raise ValueError(f"unknown template {template!r}")
