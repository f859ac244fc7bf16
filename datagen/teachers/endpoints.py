"""Which server a run talks to and with which key, for any provider in the registry (providers/registry.py):
checked before anything is sent, so a wrong URL or a key pasted with its line break is one line, not a retry loop."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from datagen.errors import InputError
from datagen.redaction import redact_url, url_has_credentials
from datagen.teachers.providers.registry import PROVIDERS

HTTP_TEACHERS = tuple(PROVIDERS)


def resolve_endpoint(
    teacher: str,
    model: str | None,
    base_url: str | None,
    environ: Mapping[str, str],
    need_key: bool = True,
    kind_flag: str = "--teacher",
    model_flag: str = "--model",
) -> tuple[str, str | None]:
    """(base URL, API key) for an HTTP teacher; the key is None when not needed (nothing will be sent).

    The flags are named in the errors, so `judge` (--judge, --judge-model) says its own."""
    provider = PROVIDERS.get(teacher)
    if provider is None:
        raise InputError(f"{kind_flag} {teacher}: unknown backend; use mock, {', '.join(HTTP_TEACHERS)}")
    if not model:
        what = f"{provider.model_noun} name" if provider.model_noun != "model" else "model name your endpoint serves"
        raise InputError(f"{model_flag} is required with {kind_flag} {teacher}; pass the {what}")
    url, source = provider.endpoint(model, base_url, environ)
    check_base_url(url, source)
    api_key = clean_key(environ.get(provider.key_variable), provider.key_variable) if need_key else None
    if need_key and not api_key:
        raise InputError(f"{provider.key_variable} is not set; export it{provider.key_hint}, or use {kind_flag} mock for an offline run")
    return url, api_key


def check_base_url(url: str, source: str) -> None:
    """Refuse a base URL no request can reach (`localhost:8765/v1`, `ftp://...`) or one holding a password;
    `source` names the flag or variable it came from."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:
        problem: str | None = f"is not a URL ({error})"
    else:
        if "://" not in url:
            problem = "has no scheme"
        elif parts.scheme not in ("http", "https"):
            problem = f"uses {parts.scheme}://"
        else:
            problem = None if host else "names no host"
    shown = redact_url(url) if "://" in url else url.split("?", 1)[0]
    if problem is not None:
        fix = f"pass http://{shown} (or https://)" if "://" not in url else "pass an http:// or https:// URL with a host"
        raise InputError(f"{source} {shown}: {problem}; {fix}")
    if url_has_credentials(url):
        # aiohttp refuses userinfo beside the key header, and the password would be one more secret to keep.
        raise InputError(f"{source} {shown}: holds user:password@; drop them from the URL and pass the key in the API key variable")


def clean_key(value: str | None, variable: str) -> str | None:
    """The key without the spaces and line ends a copy-paste or `echo` leaves around it; one that still holds a
    control character cannot go into a header and is refused (the key itself is never shown)."""
    if value is None:
        return None
    key = value.strip()
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in key):
        raise InputError(f"{variable} holds a control character (a line break, tab or escape) inside the key; set it to the key alone, on one line")
    return key
