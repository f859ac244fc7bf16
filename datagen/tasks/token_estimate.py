"""A rough token count for text, where no tokenizer is at hand: dry-run estimates, the mock teacher's usage."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """Rough token count (about four characters per token), never below one."""
    return max(1, (len(text) + 3) // 4)
