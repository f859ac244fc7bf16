"""Taking secrets out of text before it reaches a message, a log or a file.

A server may echo what it was sent: the key itself, `Bearer <key>`, the whole header block base64-encoded,
or a cut-off copy of any of these. `redact_secrets` takes them all out of the whole text and only then cuts
it to display length; cutting first can split a secret so that neither half matches and most of it goes out.
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
    return [value for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY") if (value := environ.get(name))]


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


def _mask_prefixes(text: str, form: str) -> str:
    """Mask whole copies of `form` and copies cut short (a prefix of at least MIN_PIECE characters)."""
    text = text.replace(form, MASK)
    if len(form) < MIN_PIECE:
        return text
    head = form[:MIN_PIECE]
    out, position = [], 0
    while (found := text.find(head, position)) >= 0:
        length = MIN_PIECE
        while found + length < len(text) and length < len(form) and text[found + length] == form[length]:
            length += 1
        out += [text[position:found], MASK]
        position = found + length
    return "".join(out) + text[position:]


def one_line(message: str, limit: int | None = 300) -> str:
    """A server's message as one line (whitespace runs made single spaces), cut to `limit` for a summary or a log."""
    line = " ".join(message.split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def redact_secrets(text: str, secrets: Iterable[str | None], limit: int | None = None, fold: bool = False) -> str:
    """`text` with every secret masked (plain, base64-encoded, or cut short), and only then cut to `limit` —
    with `fold`, as `one_line` folds and cuts a body quoted in an error line."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        for form in _forms(secret):
            text = _mask_prefixes(text, form)
    if fold:
        return one_line(text, limit)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text


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
