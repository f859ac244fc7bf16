"""Azure OpenAI deployments: OpenAI's chat wire format at a deployment's own path, the key in an `api-key` header.

Settings are read the way the openai SDK's `AzureOpenAI` reads them: AZURE_OPENAI_ENDPOINT (the resource, e.g.
https://NAME.openai.azure.com, or --base-url), AZURE_OPENAI_API_KEY and OPENAI_API_VERSION; `--model` is the
deployment name. Requests go to /openai/deployments/NAME/chat/completions?api-version=...
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

from datagen.errors import InputError
from datagen.teachers.providers.openai_chat import OpenAITeacher


def azure_base_url(endpoint: str, deployment: str, api_version: str) -> str:
    return f"{endpoint.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}?{urlencode({'api-version': api_version})}"


class AzureTeacher(OpenAITeacher):
    kind = "azure"
    key_variable = "AZURE_OPENAI_API_KEY"
    model_noun = "deployment"
    key_hint = ""
    root_ends_in_v1 = False  # the deployment's path is built from --model: a 404 names the deployment, not a missing /v1

    @classmethod
    def endpoint(cls, model: str, base_url: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
        endpoint = base_url or environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise InputError("AZURE_OPENAI_ENDPOINT is not set; export your resource's URL (https://NAME.openai.azure.com) or pass --base-url")
        api_version = environ.get("OPENAI_API_VERSION")
        if not api_version:
            raise InputError("OPENAI_API_VERSION is not set; export the Azure OpenAI API version your deployment takes, e.g. 2024-10-21")
        return azure_base_url(endpoint, model, api_version), "--base-url" if base_url else "AZURE_OPENAI_ENDPOINT"

    def _headers(self) -> dict[str, str]:
        return {"api-key": self._api_key}
