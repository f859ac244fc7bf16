"""The mock server's settings and their defaults, apart from the server so the command line reads them without
importing aiohttp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Quirk -> what it does. Per-item quirks pick the same requests every time (drawn from the body's hash), so a
# rerun meets them again; error200 is transient (drawn from the fault sequence), so a retry may get through.
QUIRKS = {
    "parts": "content as a list of text parts instead of a string",
    "refusal": "a structured refusal: content null, the text in `refusal`",
    "error200": "HTTP 200 whose body is an error object (transient), its message over two lines",
    "context_length": "HTTP 400 context_length_exceeded when prompt + token limit exceed --context-window",
    "too_large": "HTTP 413 (a proxy's HTML page) for bodies over --max-body-bytes",
    "content_filter": "the answer cut in half with finish_reason content_filter",
    "no_usage": "no `usage` in the answer",
    "cached": "usage.prompt_tokens_details.cached_tokens: every message but the last counted as cached",
    "null_finish": "finish_reason null",
    "reasoning": "a reasoning model's rules: HTTP 400 for max_tokens (takes max_completion_tokens) and for any temperature but 1",
    "no_seed": "HTTP 400 for a `seed` field",
    "html200": "HTTP 200 with a proxy's HTML sign-in page instead of a completion (a wrong --base-url)",
    "no_response_format": "HTTP 400 for a `response_format` field (a server without structured output)",
    "response_format_500": "HTTP 500 naming response_format for the json_schema form (llama-cpp-python's server: it takes json_object only)",
    "off_schema": "asked for structured output, answers in the pack's text form anyway (a server that takes the schema as a hint)",
}

# How a server that echoes the client's key in its error bodies (`echo_key`) writes it: the ways a key has
# leaked past masking, each a test case of datagen/redaction.py.
ECHO_FORMS = ("json", "json_60", "plain_60", "base64_76", "cut_24")


@dataclass
class MockServerConfig:
    """Every knob of the mock server; probabilities are per chat request and must sum to at most 1."""

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    p429: float = 0.0
    p500: float = 0.0
    hang: float = 0.0
    drop: float = 0.0
    malformed: float = 0.0
    p_length: float = 0.0
    p_refusal: float = 0.0
    retry_after: float = 1.0
    fail_first: int = 0
    fail_status: int = 429
    api_key: Optional[str] = None
    seed: int = 0
    models: tuple[str, ...] = ("mock-teacher",)
    accept_any_model: bool = True
    batch_delay_s: float = 0.05
    quirks: Optional[dict[str, float]] = None  # quirk name -> share of requests it applies to
    context_window: int = 4096
    max_body_bytes: int = 65536
    # Hostile servers (tests of datagen/teachers/health.py and teacher.py): every chat request answered with
    # `echo_status` and a body quoting the Authorization header in form `echo_key`; answers padded to `reply_bytes`;
    # a burst of 429s for `throttle_seconds` after the first `throttle_after` chat requests; a 500 for every chat
    # request after the first `die_after` (a server that dies mid-run, once the run's first answer came).
    echo_key: Optional[str] = None
    echo_status: int = 500
    reply_bytes: int = 0
    throttle_after: int = 0
    throttle_seconds: float = 0.0
    die_after: int = 0

    def __post_init__(self) -> None:
        rates = self.fault_rates()
        if any(not 0.0 <= p <= 1.0 for p in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities must lie in [0, 1] and sum to at most 1, got {rates}")
        self.models = tuple(self.models)
        self.quirks = dict(self.quirks or {})
        unknown = sorted(set(self.quirks) - set(QUIRKS))
        if unknown:
            raise ValueError(f"unknown quirk {', '.join(unknown)}; choose from {', '.join(QUIRKS)}")
        if self.echo_key is not None and self.echo_key not in ECHO_FORMS:
            raise ValueError(f"unknown echo_key form {self.echo_key}; choose from {', '.join(ECHO_FORMS)}")
        if any(not 0.0 <= rate <= 1.0 for rate in self.quirks.values()):
            raise ValueError(f"quirk rates must lie in [0, 1], got {self.quirks}")

    def fault_rates(self) -> dict[str, float]:
        return {
            "429": self.p429,
            "500": self.p500,
            "hang": self.hang,
            "drop": self.drop,
            "malformed": self.malformed,
            "length": self.p_length,
            "refusal": self.p_refusal,
        }


def parse_quirk(value: str) -> tuple[str, float]:
    """`NAME` (every request) or `NAME=RATE` (that share of requests)."""
    name, _, rate = value.partition("=")
    try:
        return name.strip(), float(rate) if rate else 1.0
    except ValueError:
        raise ValueError(f"--quirk {value}: write NAME or NAME=RATE with RATE in [0, 1]") from None
