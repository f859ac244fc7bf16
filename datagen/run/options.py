"""The settings of one `generate` run, each with its default written once: the CLI reads its defaults from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, field_validator

from datagen.source.context import ContextKind
from datagen.tasks.prompts import BUNDLED_PROMPTS
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY
from datagen.formats.records import Task
from datagen.teachers.request_shape import RequestShape, TokenLimitField
from datagen.tasks.registry import TASKS, task_spec
from datagen.tasks.structured import StructuredForm
from datagen.teachers.health import DEFAULT_GIVE_UP_AFTER
from datagen.teachers.teacher import DEFAULT_MAX_REPLY_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from datagen.teachers.vision import DEFAULT_IMAGE_MAX_SIDE, See

MAX_BATCH_REQUESTS = 50_000  # the OpenAI Batch API's cap on requests per batch
MAX_BATCH_INPUT_BYTES = 190_000_000  # OpenAI caps a batch input file at 200 MB; the margin covers either megabyte


class RayEngine(BaseModel):
    """Where `datagen ray` (and `generate --engine ray`) runs the requests: the cluster, and an endpoint's actors
    or vLLM's replicas (datagen/run/ray_engine.py)."""

    address: str | None = None  # None: start a local Ray; "auto" or ray://HOST:PORT: join a running cluster
    num_cpus: int | None = None  # of a local Ray only; None: all of the machine's
    workers: int = 2  # actors calling the endpoint
    vllm: str | None = None  # a model for vLLM in-process on the cluster's GPUs, instead of an endpoint
    replicas: int = 1
    tensor_parallel_size: int = 1
    engine_args: dict[str, object] = {}
    batch_size: int | None = None  # rows per Ray batch; None: sized from --concurrency (endpoint) or 64 (vLLM)


class GenerateOptions(BaseModel):
    captions: Path
    instances: Path | None = None
    out: Path
    tasks: list[Task]
    teacher: str = "openai"
    model: str | None = None
    base_url: str | None = None
    prompts: Path = BUNDLED_PROMPTS
    concurrency: int = DEFAULT_CONCURRENCY
    limit: int | None = None
    seed: int = 0
    temperature: float = 0.7
    max_tokens: int = 1024
    # Request shaping (datagen/teachers/request_shape.py): reasoning models, servers that refuse seed, vLLM's extra fields.
    max_completion_tokens: int | None = None
    omit_params: tuple[str, ...] = ()
    extra_body: dict[str, object] = {}
    structured: bool = False  # the reply form as a JSON schema in `response_format` (datagen/tasks/structured.py)
    structured_form: StructuredForm = "json_schema"
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    contexts: dict[str, ContextKind] = {}  # per task, where it differs from the task's default_context
    cache: Path | None = None
    use_cache: bool = True
    force: bool = False
    shard: tuple[int, int] | None = None
    rpm: float | None = None
    tpm: float | None = None
    length_retry_max_tokens: int | None = None
    reject_unsupported: bool = False
    progress: bool = True
    command: list[str] = []
    # The Batch API path (datagen/run/batch.py): answers arrive in the cache first, then this pipeline runs over them.
    batch: bool = False
    poll_interval: float = 30.0
    batch_size: int = MAX_BATCH_REQUESTS
    batch_max_bytes: int = MAX_BATCH_INPUT_BYTES
    # Nothing sent live: estimate (datagen/run/estimate.py), or hand the requests to another engine (datagen/run/handoff.py).
    dry_run: bool = False
    price_in: float | None = None
    price_out: float | None = None
    requests_out: Path | None = None
    results_in: Path | None = None
    # Through Ray Data (datagen/run/ray_engine.py): requests-out, `datagen ray`, results-in, in one command.
    ray: RayEngine | None = None
    # Vision teachers (datagen/teachers/vision.py): what the teacher is shown, and from which folder the images come.
    see: See = "text"
    images: Path | None = None
    image_max_side: int = DEFAULT_IMAGE_MAX_SIDE

    @field_validator("tasks", "contexts")
    @classmethod
    def _registered(cls, value: list[str] | dict[str, ContextKind]) -> list[str] | dict[str, ContextKind]:
        unknown = [task for task in value if task not in TASKS]
        if unknown:
            raise ValueError(f"unknown task {', '.join(unknown)}; registered: {', '.join(TASKS)}")
        return value

    def context_of(self, task: str) -> ContextKind:
        return self.contexts.get(task, task_spec(task).default_context)

    def request_shape(self) -> RequestShape:
        limit_field: TokenLimitField = "max_tokens" if self.max_completion_tokens is None else "max_completion_tokens"
        return RequestShape(token_limit_field=limit_field, omit=self.omit_params, extra_body=self.extra_body)


def default(name: str, model: type[BaseModel] = GenerateOptions) -> Any:
    """The default of a settings field (GenerateOptions' unless `model` says), for the command line's flag of it."""
    return model.model_fields[name].get_default(call_default_factory=True)
