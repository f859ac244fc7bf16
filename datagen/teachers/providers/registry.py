"""The HTTP providers by --teacher (and --judge) name; a new wire format is its own file plus one entry here."""

from __future__ import annotations

from datagen.teachers.providers.anthropic import AnthropicTeacher
from datagen.teachers.providers.azure import AzureTeacher
from datagen.teachers.providers.base import HTTPTeacher
from datagen.teachers.providers.openai_chat import OpenAITeacher

PROVIDERS: dict[str, type[HTTPTeacher]] = {provider.kind: provider for provider in (OpenAITeacher, AzureTeacher, AnthropicTeacher)}
