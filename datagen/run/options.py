"""The settings tree: each setting of a run declared once, with its type, default, range, checks and flag.

The command line builds its flags from these fields (datagen/cli_settings.py reads each field's `Flag`), the
Python API takes the same models (datagen/api.py), and the manifest's fingerprint names the fields marked
`fingerprint`. Adding an option is one field here; a field without a `Flag` is not on the command line.
Values may come in the command line's text form too ("a,b" for a list, "0/4" for a shard): the validators read
both, and a wrong value raises InputError naming the flag, from the CLI and the API alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from datagen.errors import InputError
from datagen.formats.manifest import Curation
from datagen.run.panels import ENGINES, INPUT, LIMITS, OUTPUT, SAMPLING, TEACHER, VISION
from datagen.run.panels import PANELS as PANELS
from datagen.formats.records import Task
from datagen.source.context import CONTEXT_KINDS, ContextKind
from datagen.tasks.prompts import BUNDLED_PROMPTS
from datagen.teachers.health import DEFAULT_GIVE_UP_AFTER
from datagen.teachers.ratelimit import DEFAULT_CONCURRENCY
from datagen.teachers.request_shape import RequestShape, TokenLimitField, parse_extra_body, parse_omit_params
from datagen.teachers.teacher import DEFAULT_MAX_REPLY_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from datagen.teachers.vision import DEFAULT_IMAGE_MAX_SIDE, See

MAX_BATCH_REQUESTS = 50_000  # the OpenAI Batch API's cap on requests per batch
MAX_BATCH_INPUT_BYTES = 190_000_000  # OpenAI caps a batch input file at 200 MB; the margin covers either megabyte



@dataclass(frozen=True)
class Flag:
    """How a field shows on the command line. `decls` names the flag where it is not --field-name; `cli_type` is
    what the flag parses where the field holds something richer (text the field's validator reads); `invert`
    makes a switch that sets the field False (--no-cache); `shown_default` replaces a default too long to show;
    `cli_default` is the flag's default in its own form where the field's would not do (None: not given, so the
    field's default); `fingerprint` puts the field into the manifest's fingerprint (a resume must match it)."""

    help: str
    panel: str
    decls: tuple[str, ...] = ()
    cli_type: Any = None
    invert: bool = False
    shown_default: str | None = None
    cli_default: Any = None
    fingerprint: bool = False
    argument: bool = False  # a positional argument instead of a flag

    @property
    def name(self) -> str:
        return self.decls[0] if self.decls else ""


def flag_of(model: type[BaseModel], name: str) -> Flag | None:
    return next((item for item in model.model_fields[name].metadata if isinstance(item, Flag)), None)


def flag_name(model: type[BaseModel], name: str) -> str:
    flag = flag_of(model, name)
    return flag.name if flag is not None and flag.decls else "--" + name.replace("_", "-")


# -- settings more than one command takes, each declared once -------------------------------------------------

Temperature = Annotated[float, Field(ge=0.0, le=2.0), Flag("Sampling temperature", SAMPLING, fingerprint=True)]
MaxTokens = Annotated[int, Field(ge=1), Flag("Largest reply, in tokens", SAMPLING)]
Seed = Annotated[int, Flag("Seeds every per-item choice and the teacher's sampling", SAMPLING, fingerprint=True)]
GiveUpAfter = Annotated[
    float, Field(ge=0.1), Flag("Stop the run (exit 1) when the server has answered nothing for this many seconds (only 429s: 5x as long)", LIMITS)
]
Tasks = Annotated[list[Task], BeforeValidator(lambda value: parse_tasks(value)), Flag("Comma-separated tasks", INPUT, cli_type=str)]
Progress = Annotated[bool, Flag("Show the live progress bar (in a terminal) or progress lines (elsewhere)", OUTPUT)]
# Seconds between plain progress lines where no bar is shown; 0: none. The command line's flag defaults to 30 and
# passes 0 in a terminal, where the bar shows progress instead.
LogEvery = Annotated[
    float,
    Field(ge=0.0),
    Flag("Without a terminal (CI logs, nohup, Slurm): a plain progress line every S seconds and at the end; 0: none", OUTPUT, cli_default=30.0),
]

# USD per million tokens, for --dry-run's estimate, the cost shown while a run goes and in its summary; left out, the
# model's list price where datagen/run/prices.py knows it.
PriceIn = Annotated[
    float | None, Field(ge=0.0), Flag("USD per million prompt tokens, for the costs shown; default the model's list price, where datagen/run/prices.py has it", OUTPUT)
]
PriceOut = Annotated[
    float | None, Field(ge=0.0), Flag("USD per million completion tokens, for the costs shown; default the model's list price, where datagen/run/prices.py has it", OUTPUT)
]


class EndpointSettings(BaseModel, defer_build=True):
    """How a client reaches an OpenAI-compatible endpoint: generate, judge and ray all take these.

    The tree's models build their validators on first use (defer_build), not when `datagen --help` reads them."""

    base_url: Annotated[str | None, Flag("OpenAI-compatible endpoint; default $OPENAI_BASE_URL or OpenAI", TEACHER)] = None
    concurrency: Annotated[int, Field(ge=1), Flag("Requests in flight at most", LIMITS)] = DEFAULT_CONCURRENCY
    rpm: Annotated[float | None, Field(ge=0.001), Flag("Requests per minute at most", LIMITS)] = None
    timeout: Annotated[float, Field(ge=0.1), Flag("Seconds per request before it is retried", LIMITS)] = DEFAULT_TIMEOUT
    max_retries: Annotated[
        int, Field(ge=0), Flag("Retries per request on 5xx, timeouts and dropped connections (429s are waited out by time)", LIMITS)
    ] = DEFAULT_MAX_RETRIES


class ClientSettings(EndpointSettings):
    """A resumable run over an output folder that asks a model: generate and judge."""

    tpm: Annotated[float | None, Field(ge=1), Flag("Tokens per minute at most (prompt estimate + max_tokens)", LIMITS)] = None
    cache: Annotated[Path | None, Flag("Response cache file to share across runs; default OUT/cache.sqlite", OUTPUT)] = None
    use_cache: Annotated[bool, Flag("Neither read nor write the response cache", OUTPUT, decls=("--no-cache",), invert=True)] = True
    force: Annotated[bool, Flag("Start over in an --out made with other settings (old files are set aside)", OUTPUT)] = False
    command: list[str] = []  # the command line as typed, secrets taken out, for the manifest


class ProgressSettings(BaseModel, defer_build=True):
    """How a command shows its progress: `datagen eval ...` takes these two flags, which generate and judge have too."""

    progress: Progress = True
    log_every: LogEvery = 0.0


def registered_tasks() -> list[str]:
    # The registry loads its tasks' reply parsers, whose patterns take a while to compile: loaded when a setting
    # is checked, not when `datagen --help` lists the commands.
    from datagen.tasks.registry import TASKS

    return list(TASKS)


def default_tasks() -> list[str]:
    """What --tasks means when not given: LLaVA-Instruct-150K's three tasks (the grounded ones only on request)."""
    from datagen.tasks.registry import DEFAULT_TASKS

    return list(DEFAULT_TASKS)


def parse_tasks(value: object, flag: str = "--tasks") -> object:
    """"a,b" into ["a", "b"], each a registered task, duplicates dropped; a list is checked the same way."""
    if not isinstance(value, (str, list, tuple)):
        return value
    registered = registered_tasks()
    names = [task.strip() for task in value.split(",")] if isinstance(value, str) else [str(task) for task in value]
    tasks = [task for task in names if task]
    unknown = [task for task in tasks if task not in registered]
    if unknown or not tasks:
        raise InputError(f"{flag}: unknown task {', '.join(unknown) or '(none)'}; choose from {','.join(registered)}")
    return list(dict.fromkeys(tasks))


def parse_engine_args(values: list[str]) -> dict[str, object]:
    """`--engine-arg k=v` values for vLLM's engine: v read as JSON where it is (numbers, true, lists), else as text."""
    args: dict[str, object] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--engine-arg {value!r}: write NAME=VALUE, e.g. max_model_len=8192")
        try:
            args[name.strip().replace("-", "_")] = json.loads(text)
        except ValueError:
            args[name.strip().replace("-", "_")] = text
    return args


class RayEngine(BaseModel, defer_build=True):
    """Where `datagen ray` (and `generate --engine ray`) runs the requests: the cluster, and an endpoint's actors
    or vLLM's replicas (datagen/run/ray_engine.py)."""

    workers: Annotated[int, Field(ge=1), Flag("Ray actors calling the endpoint", ENGINES)] = 2
    vllm: Annotated[
        str | None, Flag("Run MODEL (a Hugging Face id or a local folder) on vLLM replicas on the cluster's GPUs instead of calling an endpoint", ENGINES)
    ] = None
    replicas: Annotated[int, Field(ge=1), Flag("vLLM engines (--vllm)", ENGINES)] = 1
    tensor_parallel_size: Annotated[int, Field(ge=1), Flag("GPUs per vLLM engine (--vllm)", ENGINES)] = 1
    engine_args: Annotated[
        dict[str, object],
        Flag("NAME=VALUE for vLLM's engine, repeatable, e.g. max_model_len=8192 (--vllm)", ENGINES, decls=("--engine-arg",), cli_type=list[str]),
    ] = {}
    address: Annotated[str | None, Flag("auto or ray://HOST:PORT: a running Ray cluster; default a local one started for the command", ENGINES)] = None
    num_cpus: Annotated[int | None, Field(ge=1), Flag("CPUs of the local Ray (without --address); default all", ENGINES)] = None
    batch_size: int | None = None  # rows per Ray batch; None: sized from --concurrency (endpoint) or 64 (vLLM)

    @field_validator("engine_args", mode="before")
    @classmethod
    def _engine_args(cls, value: object) -> object:
        return parse_engine_args(list(value)) if isinstance(value, (list, tuple)) else value

    @staticmethod
    def flags_given(values: dict[str, Any]) -> list[str]:
        """The flags among `values` set away from their defaults."""
        values = {**values, "engine_args": RayEngine._engine_args(values.get("engine_args", {}))}
        return [flag_name(RayEngine, name) for name in _RAY_FLAGS if name in values and values[name] != RayEngine.model_fields[name].get_default()]

    @model_validator(mode="after")
    def _one_kind_of_worker(self) -> RayEngine:
        given = self.flags_given(dict(self))
        if self.vllm is None:
            named = [name for name in ("--replicas", "--tensor-parallel-size", "--engine-arg") if name in given]
            if named:
                raise InputError(f"{named[0]} sets up vLLM engines; add --vllm MODEL, or drop it to call an endpoint")
        elif "--workers" in given:
            raise InputError("--workers counts the actors calling an endpoint; with --vllm, --replicas counts the engines")
        if self.address is not None and self.num_cpus is not None:
            raise InputError("--num-cpus sizes a local Ray; a cluster joined with --address has its own")
        return self


_RAY_FLAGS = ("workers", "vllm", "replicas", "tensor_parallel_size", "engine_args", "address", "num_cpus")


class RayRunSettings(EndpointSettings):
    """`datagen ray`: a requests file answered through Ray Data, by an endpoint's actors or vLLM's replicas. The
    endpoint's limits count across all workers; `engine` brings RayEngine's flags beside these."""

    requests: Annotated[Path, Flag("The requests file `generate --requests-out` wrote (OpenAI Batch input lines)", INPUT, argument=True)]
    out: Annotated[Path, Flag("Results file (OpenAI Batch output lines) for `generate --results-in`; rerunning resumes it", OUTPUT)]
    model: Annotated[str | None, Flag("Send this model name instead of the one the requests carry", TEACHER)] = None
    qps: Annotated[float | None, Field(ge=0.001), Flag("Requests per second at most (instead of --rpm)", LIMITS)] = None
    max_retries: Annotated[
        int, Field(ge=0), Flag("Retries per request on 429, 5xx, timeouts and dropped connections", LIMITS)
    ] = DEFAULT_MAX_RETRIES
    give_up_after: GiveUpAfter = DEFAULT_GIVE_UP_AFTER
    progress: Progress = True
    log_every: LogEvery = 0.0
    engine: RayEngine = RayEngine()

    @model_validator(mode="before")
    @classmethod
    def _engine_flags(cls, data: Any) -> Any:
        """The command line gives the engine's flags flat, beside the endpoint's."""
        if isinstance(data, dict) and "engine" not in data:
            data = dict(data)
            data["engine"] = RayEngine(**{name: data.pop(name) for name in (*_RAY_FLAGS, "batch_size") if name in data})
        return data

    @model_validator(mode="after")
    def _one_source_of_answers(self) -> RayRunSettings:
        if self.engine.vllm is not None and (self.base_url is not None or self.model is not None):
            raise InputError(f"--vllm and {'--base-url' if self.base_url is not None else '--model'} do not go together; --vllm runs the model itself")
        if self.rpm is not None and self.qps is not None:
            raise InputError("--rpm and --qps set the same limit; pass one")
        return self


class GenerateSettings(ClientSettings):
    """Everything one `generate` run takes: `datagen generate`'s flags, and `datagen.generate(settings)`."""

    captions: Annotated[Path, Flag("COCO captions file (captions_train2017.json)", INPUT)]
    out: Annotated[Path, Flag("Output folder; rerunning into it resumes", OUTPUT)]
    instances: Annotated[Path | None, Flag("COCO instances file (boxes); needed by detail and complex_reasoning", INPUT)] = None
    tasks: Tasks = Field(default_factory=default_tasks)
    teacher: Annotated[
        str,
        Flag("openai (any OpenAI-compatible server), azure (an Azure OpenAI deployment), anthropic (Messages API, $ANTHROPIC_API_KEY), mock or mock-terse (offline, labelled; two for comparisons)", TEACHER),
    ] = "openai"
    model: Annotated[str | None, Flag("Teacher model name (required with --teacher openai; the deployment with azure)", TEACHER)] = None
    prompts: Annotated[Path, Flag("Prompt-pack root (ours or LLaVA's playground/data/prompts)", INPUT, shown_default="ours")] = BUNDLED_PROMPTS
    limit: Annotated[int | None, Field(ge=1), Flag("Only the first N images", INPUT)] = None
    # Items per image of each whole-image task, each with its own seed and id; in the manifest only when not 1.
    samples_per_image: Annotated[
        int, Field(ge=1), Flag("Items per image of each task, each with its own seed and id (grows a set; resumable)", SAMPLING)
    ] = 1
    seed: Seed = 0
    temperature: Temperature = 0.7
    max_tokens: MaxTokens = 1024
    # Request shaping (datagen/teachers/request_shape.py): reasoning models, servers that refuse seed, vLLM's extra fields.
    max_completion_tokens: Annotated[
        int | None, Field(ge=1), Flag("Send max_completion_tokens=N instead of max_tokens (reasoning models need it)", TEACHER)
    ] = None
    omit_params: Annotated[tuple[str, ...], Flag("Comma-separated request fields to leave out: seed,temperature", TEACHER, cli_type=str | None)] = ()
    extra_body: Annotated[
        dict[str, object], Flag("JSON object merged into every request body (top_k, chat_template_kwargs...)", TEACHER, cli_type=str | None)
    ] = {}
    # Structured output (datagen/tasks/structured.py): the reply form as a JSON schema in `response_format`. In the
    # fingerprint only when on (fingerprint_parts), so other runs keep the fingerprint they had.
    structured: Annotated[
        bool,
        Flag("Ask for the task's reply form as a JSON schema (response_format); one re-ask for a reply not in it", SAMPLING, decls=("--structured",)),
    ] = False
    structured_form: Annotated[
        str,
        Flag("How --structured sends the schema: json_schema (OpenAI, vLLM, Ollama, llama-server) or json_object (llama-cpp-python's server)", SAMPLING),
    ] = "json_schema"
    give_up_after: GiveUpAfter = DEFAULT_GIVE_UP_AFTER
    max_reply_bytes: Annotated[
        int, Field(ge=1024), Flag("Largest reply body read; a bigger one is rejected as oversized_reply", LIMITS)
    ] = DEFAULT_MAX_REPLY_BYTES
    # per task, where it differs from the task's default_context
    contexts: Annotated[
        dict[str, ContextKind],
        Flag("TASK=captions|captions+boxes, repeatable; LLaVA's defaults otherwise", INPUT, decls=("--context",), cli_type=list[str]),
    ] = {}
    shard: Annotated[tuple[int, int] | None, Flag("i/n: this machine's share of the images", INPUT, cli_type=str | None, fingerprint=True)] = None
    length_retry_max_tokens: Annotated[
        int | None,
        Field(ge=1),
        Flag("On finish_reason=length, ask once more with this larger max_tokens before rejecting", SAMPLING, decls=("--retry-length",), fingerprint=True),
    ] = None
    reject_unsupported: Annotated[
        bool,
        Flag(
            "Reject records naming an object neither the boxes nor the captions show (default: flag in meta.grounding)",
            OUTPUT, decls=("--reject-unsupported",), fingerprint=True,
        ),
    ] = False
    progress: Progress = True
    log_every: LogEvery = 0.0
    # The Batch API path (datagen/run/batch.py): answers arrive in the cache first, then this pipeline runs over them.
    batch: Annotated[
        bool, Flag("Send the requests through the OpenAI Batch API (--teacher openai); rerun to re-attach after a kill", ENGINES, decls=("--batch",))
    ] = False
    poll_interval: Annotated[float, Field(ge=0.001), Flag("Seconds between batch status checks (--batch)", ENGINES)] = 30.0
    batch_size: Annotated[
        int, Field(ge=1, le=MAX_BATCH_REQUESTS), Flag(f"Requests per batch at most (--batch; OpenAI allows {MAX_BATCH_REQUESTS:,})", ENGINES)
    ] = MAX_BATCH_REQUESTS
    batch_max_bytes: int = MAX_BATCH_INPUT_BYTES
    # Nothing sent live: estimate (datagen/run/estimate.py), or hand the requests to another engine (datagen/run/handoff.py).
    dry_run: Annotated[
        bool, Flag("Print the request count and estimated tokens; send nothing (no API key needed)", OUTPUT, decls=("--dry-run",))
    ] = False
    price_in: PriceIn = None
    price_out: PriceOut = None
    requests_out: Annotated[Path | None, Flag("Write the pending requests as an OpenAI Batch input file; send nothing", ENGINES)] = None
    results_in: Annotated[
        Path | None, Flag("Ingest an OpenAI-Batch-format results file (e.g. vLLM run_batch's) instead of asking live", ENGINES)
    ] = None
    # Through Ray Data (datagen/run/ray_engine.py): requests-out, `datagen ray`, results-in, in one command. On the
    # command line `--engine ray` sets it, with RayEngine's own flags beside it.
    ray: Annotated[
        RayEngine | None,
        Flag(
            "live (this process asks the teacher) or ray (Ray Data runs the requests: `datagen ray`'s flags below; needs datagen\\[ray])",
            ENGINES, decls=("--engine",), cli_type=str, cli_default="live",
        ),
    ] = None
    # Vision teachers (datagen/teachers/vision.py): what the teacher is shown, and from which folder the images come.
    see: Annotated[
        See,
        Flag("What the teacher is shown: text (captions+boxes, LLaVA's recipe), image, or both (needs --images)", VISION, cli_type=str, cli_default="text",
             fingerprint=True),
    ] = "text"
    images: Annotated[Path | None, Flag("Folder of the images named in the captions file (--see image|both)", VISION)] = None
    image_max_side: Annotated[
        int, Field(ge=16), Flag("Longer side of the JPEG sent to the teacher, in pixels (--see image|both)", VISION, fingerprint=True)
    ] = DEFAULT_IMAGE_MAX_SIDE
    # Curation before generating (datagen/curate/plan.py): images left out, a budget of images chosen; the API's
    # generate works out the three fields below from these before the run plans a request.
    exclude_images: Annotated[
        list[Path],
        Flag(
            "Leave out the images this file names (repeatable): a COCO captions/instances file, LLaVA records, POPE or LLaVA-Bench questions, "
            "or ids/file names one per line", INPUT,
        ),
    ] = []
    select: Annotated[
        str | None, Flag("coverage: pick --budget images covering COCO categories and caption words, before any request", INPUT)
    ] = None
    budget: Annotated[int | None, Field(ge=1), Flag("Images --select picks (deterministic per --seed)", INPUT)] = None
    category_cap: Annotated[
        int | None, Field(ge=1), Flag("--select: at most this many images per category while others remain (default: a quarter of --budget)", INPUT)
    ] = None
    exclude_ids: frozenset[int] = frozenset()
    chosen_ids: list[int] | None = None
    curation: Curation | None = None  # the manifest's account of both

    @model_validator(mode="before")
    @classmethod
    def _engine_flags(cls, data: Any) -> Any:
        """The command line's form of `ray`: --engine live|ray, with the Ray engine's flags given flat beside it."""
        if not isinstance(data, dict) or not isinstance(data.get("ray"), str):
            return data
        data = dict(data)
        engine = data.pop("ray")
        flat = {name: data.pop(name) for name in _RAY_FLAGS if name in data}
        if engine not in ("live", "ray"):
            raise InputError(f"--engine {engine!r}: choose live or ray")
        if engine == "live":
            named = RayEngine.flags_given(flat)
            if named:
                raise InputError(f"{named[0]} is a Ray flag; add --engine ray")
            return data
        data["ray"] = RayEngine(**flat)
        if data["ray"].vllm is not None and data.get("model") is None:
            data["model"] = data["ray"].vllm  # the requests name the model the engine runs
        return data

    @field_validator("contexts", mode="before")
    @classmethod
    def _contexts(cls, value: object) -> object:
        """Only the tasks named: the others keep their task's default context."""
        pairs = [str(item).partition("=")[::2] for item in value] if isinstance(value, (list, tuple)) else list(dict(value).items())  # type: ignore[call-overload]
        for task, kind in pairs:
            if task not in registered_tasks() or kind not in CONTEXT_KINDS:
                kinds = " or ".join(f"TASK={kind}" for kind in CONTEXT_KINDS)
                raise InputError(f"--context {task}={kind}: write {kinds}, TASK one of {','.join(registered_tasks())}")
        return dict(pairs)

    @field_validator("shard", mode="before")
    @classmethod
    def _shard(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                index, count = (int(part) for part in value.split("/"))
            except ValueError:
                index, count = -1, 0
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            index, count = value
        else:
            return value
        if not 0 <= index < count:
            raise InputError(f"--shard {value!r}: write i/n with 0 <= i < n, e.g. 0/4")
        return index, count

    @field_validator("omit_params", mode="before")
    @classmethod
    def _omit_params(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        return parse_omit_params(value if isinstance(value, str) else None)

    @field_validator("extra_body", mode="before")
    @classmethod
    def _extra_body(cls, value: object) -> object:
        return parse_extra_body(value if isinstance(value, str) or value is None else json.dumps(value))

    @field_validator("see", mode="before")
    @classmethod
    def _see(cls, value: object) -> object:
        if value not in ("text", "image", "both"):
            raise InputError(f"--see {value!r}: choose text, image or both")
        return value

    @field_validator("structured_form", mode="before")
    @classmethod
    def _structured_form(cls, value: object) -> object:
        # The forms are listed beside the schemas, which load the task registry: read when a setting is checked.
        from datagen.tasks.structured import STRUCTURED_FORMS

        if value not in STRUCTURED_FORMS:
            raise InputError(f"--structured-form {value!r}: choose {' or '.join(STRUCTURED_FORMS)}")
        return value

    @model_validator(mode="after")
    def _flags_that_go_together(self) -> GenerateSettings:
        offline = [flag for flag, on in (("--dry-run", self.dry_run), ("--requests-out", self.requests_out), ("--results-in", self.results_in), ("--batch", self.batch)) if on]
        if len(offline) > 1:
            raise InputError(f"{offline[0]} and {offline[1]} do not go together; pick one")
        if self.force and offline[:1] in (["--dry-run"], ["--requests-out"]):
            raise InputError(f"--force with {offline[0]}: nothing is set aside when nothing is sent; drop --force or pick a fresh --out")
        if (self.requests_out or self.results_in) and self.teacher != "openai":
            raise InputError(f"{offline[0]} needs --teacher openai (the requests name --model for an OpenAI-compatible batch engine)")
        if self.ray is not None and offline:
            raise InputError(f"--engine ray and {offline[0]} do not go together; --engine ray does requests-out, the Ray run and results-in itself")
        self._check_structured(offline)
        if self.batch and self.teacher != "openai":
            raise InputError(f"--batch needs --teacher openai (the OpenAI Batch API), not {self.teacher}; drop --batch for a {self.teacher} run")
        if self.ray is not None and self.teacher != "openai" and self.ray.vllm is None:
            raise InputError(f"--engine ray needs --teacher openai (an endpoint) or --vllm MODEL, not --teacher {self.teacher}")
        # Answers that come back from elsewhere reach the records through the response cache.
        through_cache = [*(["--batch"] if self.batch else []), *(["--results-in"] if self.results_in else []), *(["--engine ray"] if self.ray else [])]
        if through_cache and not self.use_cache:
            raise InputError(f"{through_cache[0]} needs the response cache (answers are ingested through it); drop --no-cache")
        return self

    def _check_structured(self, offline: list[str]) -> None:
        if self.structured_form != "json_schema" and not self.structured:
            raise InputError("--structured-form says how --structured sends its schema; add --structured")
        if not self.structured:
            return
        if offline[:1] in (["--batch"], ["--results-in"]) or self.ray is not None:
            # Its one re-ask is a live request; these ways get each answer once, from elsewhere.
            raise InputError(f"--structured asks a reply not in the schema once more, live; drop {offline[0] if offline else '--engine ray'} or --structured")
        if self.teacher == "anthropic":
            raise InputError("--structured sends OpenAI's response_format, which the Messages API (--teacher anthropic) does not take; drop --structured")

    def context_of(self, task: str) -> ContextKind:
        from datagen.tasks.registry import task_spec

        return self.contexts.get(task, task_spec(task).default_context)

    def request_shape(self) -> RequestShape:
        limit_field: TokenLimitField = "max_tokens" if self.max_completion_tokens is None else "max_completion_tokens"
        return RequestShape(token_limit_field=limit_field, omit=self.omit_params, extra_body=self.extra_body)

    def fingerprint_parts(self, resolved: dict[str, object]) -> dict[str, object]:
        """The manifest's fingerprint parts: what the run `resolved` (file hashes, the teacher's model), the fields
        marked `fingerprint` and the request's shape. Only vision runs name see and image_max_side, so a text
        run's fingerprint is the one it always had."""
        marked = {name for name in type(self).model_fields if (flag := flag_of(type(self), name)) is not None and flag.fingerprint}
        if self.see == "text":
            marked -= {"see", "image_max_side"}
        parts = {**resolved, **self.model_dump(mode="json", include=marked), "request_shape": self.request_shape().model_dump(mode="json")}
        if self.structured:
            parts["structured"] = self.structured_form  # named only when on: a run without it keeps its fingerprint
        # The order manifests have always listed them in: the hash sorts its keys, the file does not.
        return {**{key: parts.pop(key) for key in _FINGERPRINT_ORDER if key in parts}, **parts}


_FINGERPRINT_ORDER = (
    "captions_sha256", "instances_sha256", "teacher", "model", "temperature", "max_tokens", "length_retry_max_tokens",
    "reject_unsupported", "seed", "detail_instructions", "shard", "request_shape", "structured", "see", "image_max_side",
)

class ExportSettings(BaseModel, defer_build=True):
    """`datagen export` and `datagen.export(settings)`: a generate folder's task files merged into one file."""

    folder: Annotated[Path, Flag("The --out folder of a generate run", INPUT, argument=True)]
    out: Annotated[Path, Flag("File to write (JSON array, or JSONL with --jsonl)", OUTPUT)]
    tasks: Tasks = Field(default_factory=default_tasks)
    jsonl: Annotated[bool, Flag("One record per line instead of a JSON array", OUTPUT, decls=("--jsonl",))] = False
    keep_meta: Annotated[bool, Flag("Keep the provenance field `meta`", OUTPUT, decls=("--keep-meta",))] = False
    shuffle: Annotated[bool, Flag("Shuffle the merged records (seeded)", OUTPUT, decls=("--shuffle",))] = False
    seed: Annotated[int, Flag("Seed of --shuffle", OUTPUT)] = 0
    # Checked by datagen/data/export.py, which knows the formats, in the one line every bad flag gets.
    format: Annotated[str, Flag("llava (LLaVA-Instruct records) or messages (OpenAI/TRL-style chat messages)", OUTPUT)] = "llava"


class AuditSettings(BaseModel, defer_build=True):
    """`datagen audit` and `datagen.audit(settings)`: answer checks and grounding over a data set, no teacher."""

    file: Annotated[Path, Flag("LLaVA-format records: a JSON array (llava_instruct_150k.json...) or JSONL (ours)", INPUT, argument=True)]
    captions: Annotated[Path, Flag("COCO captions file of the images the records are about", INPUT)]
    instances: Annotated[Path, Flag("COCO instances file (boxes) of those images", INPUT)]
    out: Annotated[Path | None, Flag("Folder for findings.jsonl and summary.json; default FILE-STEM-audit/", OUTPUT)] = None
    task: Annotated[str | None, Flag("Task of records without meta.task; inferred from their turns otherwise", INPUT)] = None
    max_chair_s: Annotated[
        float | None, Field(ge=0.0, le=1.0), Flag("Exit 1 when the share of records naming an absent object exceeds this", LIMITS)
    ] = None
    max_flagged: Annotated[float | None, Field(ge=0.0, le=1.0), Flag("Exit 1 when the share of records with check findings exceeds this", LIMITS)] = None
    prompts: Annotated[
        Path,
        Flag("Prompt-pack root the records were made with; copied_example looks for its few-shot examples", INPUT, shown_default="ours"),
    ] = BUNDLED_PROMPTS

    @field_validator("task")
    @classmethod
    def _task(cls, value: str | None) -> str | None:
        if value is not None and value not in registered_tasks():
            raise InputError(f"--task {value!r}: unknown task; choose one of {', '.join(registered_tasks())}")
        return value

    def out_folder(self) -> Path:
        return self.out or Path(f"{self.file.stem}-audit")


class JudgeSettings(ClientSettings):
    """`datagen judge` and `datagen.judge(settings)`: two generate folders over the same images (A = reference),
    or LLaVA's four answer files, scored pairwise by a judge model in both orders."""

    folders: list[Path] = []  # A_DIR B_DIR: the command line's arguments, beside its `summarize` word
    out: Annotated[Path | None, Flag("Output folder (reviews.jsonl, summary.json, summary.md); rerunning into it resumes", OUTPUT)] = None
    captions: Annotated[Path | None, Flag("With A_DIR B_DIR: the COCO captions file both runs used", INPUT)] = None
    instances: Annotated[Path | None, Flag("With A_DIR B_DIR: the COCO instances file (boxes in the judge's context)", INPUT)] = None
    tasks: Tasks = Field(default_factory=default_tasks)
    reference: Annotated[Path | None, Flag("LLaVA answers JSONL (question_id, text) scored as the reference", INPUT)] = None
    candidate: Annotated[Path | None, Flag("LLaVA answers JSONL (question_id, text) scored as the candidate", INPUT)] = None
    questions: Annotated[Path | None, Flag("Questions JSONL (question_id, image, text, category)", INPUT)] = None
    context: Annotated[
        Path | None, Flag("Context JSONL, one line per image: LLaVA-Bench COCO's caps_boxes file, in-the-wild's context.jsonl, or ours", INPUT)
    ] = None
    rule: Annotated[
        Path | None, Flag("LLaVA's rule.json: per-category judge prompts, requests laid out as LLaVA's scripts do", INPUT)
    ] = None  # per category {"role", "prompt"}
    limit: Annotated[int | None, Field(ge=1), Flag("Only the first N items (per task with A_DIR B_DIR)", INPUT)] = None
    judge: Annotated[str, Flag("openai (any OpenAI-compatible server), azure, anthropic, or mock (offline heuristic, for CI)", TEACHER, decls=("--judge",))] = "openai"
    judge_models: Annotated[
        list[str], Flag("Judge model; give it twice to use two judges and report their agreement", TEACHER, decls=("--judge-model",))
    ] = []
    judge_prompt: Annotated[Path | None, Flag("File replacing the system message (prompts/judge/)", TEACHER)] = None
    temperature: Temperature = 0.2
    max_tokens: MaxTokens = 512
    seed: Annotated[int, Flag("Seeds the judge's sampling and the bootstrap", SAMPLING)] = 0
    price_in: PriceIn = None
    price_out: PriceOut = None
    resamples: Annotated[int, Field(ge=0), Flag("Bootstrap resamples of the 95% interval (0: none)", OUTPUT, decls=("--bootstrap",))] = 1000
    progress: Progress = True
    log_every: LogEvery = 0.0


GenerateOptions = GenerateSettings  # the name the run's modules have always used


def default(name: str, model: type[BaseModel] = GenerateSettings) -> Any:
    """The default of a settings field (GenerateSettings' unless `model` says), for a flag declared outside the tree."""
    return model.model_fields[name].get_default(call_default_factory=True)


M = TypeVar("M", bound=BaseModel)


def taken_from(settings: BaseModel, target: type[M], /, **given: Any) -> M:
    """`target` with the settings' fields of the same name (as they serialise to JSON) and `given` for the others: a
    setting declared once in this tree reaches the teacher and the manifest without being listed where they are built."""
    shared = (set(target.model_fields) & set(type(settings).model_fields)) - set(given)
    return target(**settings.model_dump(mode="json", include=shared), **given)
