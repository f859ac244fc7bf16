"""Which server a run talks to and with which key: any OpenAI-compatible base URL, or an Azure OpenAI deployment.

Azure settings are read the way the openai SDK's `AzureOpenAI` reads them: AZURE_OPENAI_ENDPOINT (the
resource, e.g. https://NAME.openai.azure.com), AZURE_OPENAI_API_KEY and OPENAI_API_VERSION; `--model` is the
deployment name. Requests then go to /openai/deployments/NAME/chat/completions?api-version=... with the key in
an `api-key` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

from datagen.errors import InputError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
HTTP_TEACHERS = ("openai", "azure")


def azure_base_url(endpoint: str, deployment: str, api_version: str) -> str:
    return f"{endpoint.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}?{urlencode({'api-version': api_version})}"


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
    if teacher not in HTTP_TEACHERS:
        raise InputError(f"{kind_flag} {teacher}: unknown backend; use mock, openai or azure")
    if not model:
        what = "deployment name" if teacher == "azure" else "model name your endpoint serves"
        raise InputError(f"{model_flag} is required with {kind_flag} {teacher}; pass the {what}")
    if teacher == "azure":
        endpoint = base_url or environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise InputError("AZURE_OPENAI_ENDPOINT is not set; export your resource's URL (https://NAME.openai.azure.com) or pass --base-url")
        api_version = environ.get("OPENAI_API_VERSION")
        if not api_version:
            raise InputError("OPENAI_API_VERSION is not set; export the Azure OpenAI API version your deployment takes, e.g. 2024-10-21")
        key_variable, url = "AZURE_OPENAI_API_KEY", azure_base_url(endpoint, model, api_version)
    else:
        key_variable, url = "OPENAI_API_KEY", base_url or environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    api_key = environ.get(key_variable)
    if need_key and not api_key:
        hint = " (local servers that ignore keys accept any value)" if teacher == "openai" else ""
        raise InputError(f"{key_variable} is not set; export it{hint}, or use {kind_flag} mock for an offline run")
    return url, api_key
