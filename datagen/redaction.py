"""Taking secrets out of text before it reaches a message, a log or a file.

A server may echo what it was sent: the key itself, `Bearer <key>`, the whole header block base64-encoded,
wrapped, or a cut-off copy of any of these. `redact_secrets` takes every piece of a known secret out of the
whole text and only then cuts it to display length; cutting first can split a secret so that neither half
matches and most of it goes out. `server_message` goes further for what a server says: it keeps only the first
line and drops every token-like run, known or not.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# A cut-off copy this long is still too much of a key to show; shorter pieces ("sk-") say nothing.
MIN_PIECE = 8
# Flags whose values are secrets by name, whatever the value is (`--api-key X`, `--api-key=X`).
_SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd"}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
_USERINFO = re.compile(r"(?<=://)[^/?#@\s]*@")


def _is_secret_flag(argument: str) -> bool:
    return argument.startswith("-") and bool(_SECRET_WORDS & set(argument.lstrip("-").lower().replace("_", "-").split("-")))


def environment_secrets(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The secrets a run is given through the environment."""
    # Stripped as the teachers strip them (datagen/teachers/endpoints.py): the key sent is the one to hide.
    return [value for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY") if (value := environ.get(name, "").strip())]


def _base64_cores(secret: bytes) -> set[str]:
    """The base64 text every encoding of a longer string that contains `secret` must contain.

    base64 turns 3 bytes into 4 characters, so what `secret` encodes to depends on its offset mod 3 in the
    encoded whole; for each offset, keep the characters that depend on the secret's bytes alone.
    """
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode().rstrip("=")
        lead = (0, 2, 3)[offset]  # characters that depend on the padding bytes before the secret
        end = (offset + len(secret)) * 8 // 6  # characters made only of whole secret bits
        core = encoded[lead:end]
        if len(core) >= MIN_PIECE:
            cores |= {core, core.replace("+", "-").replace("/", "_")}  # standard and URL-safe alphabets
    return cores


def _forms(secret: str) -> list[str]:
    forms = {secret, *_base64_cores(secret.encode())}
    return sorted(forms, key=len, reverse=True)


def _mask_pieces(text: str, forms: list[str]) -> str:
    """Mask every copy of a form and every piece of one at least MIN_PIECE characters long: cut at the start,
    the end or both, a copy is still too much of a key to show."""
    windows = {form[start : start + MIN_PIECE] for form in forms if len(form) >= MIN_PIECE for start in range(len(form) - MIN_PIECE + 1)}
    for form in forms:
        if len(form) < MIN_PIECE:
            text = text.replace(form, MASK)
    if not windows:
        return text
    hidden = bytearray(len(text))
    for start in range(len(text) - MIN_PIECE + 1):
        if text[start : start + MIN_PIECE] in windows:
            hidden[start : start + MIN_PIECE] = b"\1" * MIN_PIECE
    if not any(hidden):
        return text
    out, position = [], 0
    while (found := hidden.find(1, position)) >= 0:
        end = hidden.find(0, found)
        end = len(text) if end < 0 else end
        out += [text[position:found], MASK]
        position = end
    return "".join(out) + text[position:]


def one_line(message: str, limit: int | None = 300) -> str:
    """A server's message as one line (whitespace runs made single spaces), cut to `limit` for a summary or a log."""
    line = " ".join(message.split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def redact_secrets(text: str, secrets: Iterable[str | None], limit: int | None = None, fold: bool = False) -> str:
    """`text` with every secret masked (plain, base64-encoded, or a piece of either), and only then cut to
    `limit` — with `fold`, as `one_line` folds and cuts a body quoted in an error line."""
    forms = sorted({form for secret in secrets if secret for form in _forms(secret)}, key=len, reverse=True)
    if forms:
        text = _mask_pieces(text, forms)
    if fold:
        return one_line(text, limit)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text


# Characters of keys and of their base64 forms; a line break between two of them may be a wrap inside one key.
_TOKEN_CHARS = "A-Za-z0-9+/=_-"
_WRAP = re.compile(rf"(?<=[{_TOKEN_CHARS}])[ \t]*\r?\n[ \t]*(?=[{_TOKEN_CHARS}])")
_RUN = re.compile(rf"[{_TOKEN_CHARS}]+")
_SEGMENTS = re.compile(r"[+/=_-]+")
_WORD = re.compile(r"[a-z]{1,24}|[A-Z][a-z]{1,23}|[A-Z]{1,11}")
# A run of token characters this long may be a secret or enough of one to matter (12 base64 characters
# decode to 9 bytes), unless it is made of words ("rate_limit_exceeded", "com/account/api-keys").
SECRET_RUN = 12


def _remove_token_runs(text: str) -> str:
    def keep_words(match: re.Match[str]) -> str:
        run = match.group()
        if len(run) < SECRET_RUN or all(_WORD.fullmatch(segment) for segment in _SEGMENTS.split(run) if segment):
            return run
        return MASK

    return _RUN.sub(keep_words, text)


def server_message(text: str, secrets: Iterable[str | None], limit: int = 200, first_line: bool = True) -> str:
    """What an error line may quote from a server's text (a JSON error's message whole, other text by its first
    line), lines wrapped inside a long token joined back first, with the known secrets masked in every form and
    every other run that could be a secret or a piece of one taken out. Masking known forms alone always misses
    one (a wrap, a cut, an encoding); a message needs its words, not its tokens."""
    joined = _WRAP.sub("", text)
    if first_line:
        joined = next((line for line in joined.splitlines() if line.strip()), "")
    return one_line(_remove_token_runs(redact_secrets(joined, secrets)), limit)


def redact_url(url: str) -> str:
    """A URL without user:password, query and fragment (Azure-style keys travel in the query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
    except ValueError:  # a malformed URL (bad port, unclosed [IPv6]): keep it, minus any userinfo
        return _USERINFO.sub("", url.split("?", 1)[0].split("#", 1)[0])
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def url_has_credentials(url: str) -> bool:
    return bool(_USERINFO.search(url))


def redact_argument(argument: str, secrets: Iterable[str | None]) -> str:
    """One command-line argument as it may be saved: secrets, URL credentials and queries taken out anywhere
    in it, including the `--flag=value` form."""
    argument = redact_secrets(argument, secrets)
    flag, equals, _ = argument.partition("=")
    if equals and _is_secret_flag(flag):
        return f"{flag}={MASK}"
    return _URL.sub(lambda match: redact_url(match.group()), argument)


def redact_argv(argv: list[str], secrets: Iterable[str | None]) -> list[str]:
    secrets = list(secrets)
    redacted = []
    for position, argument in enumerate(argv):
        after_secret_flag = position > 0 and _is_secret_flag(argv[position - 1]) and not argument.startswith("-")
        redacted.append(MASK if after_secret_flag else redact_argument(argument, secrets))
    return redacted
