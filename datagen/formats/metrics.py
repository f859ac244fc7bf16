"""The run's metrics: the counters a `generate` run keeps beside its per-task counts, usage and quality, each
declared once here with its manifest key, how shards combine it and where it is shown.

The manifest keeps each one under its name (formats/manifest.py), the tally fills it in (run/tally.py), merge
combines the shards' values (data/merge.py), and the progress display, the end-of-run summary, `datagen report`
and the dataset card show the ones that name their place, all by going through `METRICS`. A new counter is one
entry here plus the line that counts it: `tally.count(NAME, task)` in the job, or a key of the teacher's `stats`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

# Where a metric can be shown: the live bar and its plain lines, the table a finished run prints, the HTML report's
# table of runs, the dataset card's "How it was made".
Place = Literal["progress", "summary", "report", "card"]


@dataclass(frozen=True)
class Metric:
    name: str  # its key in manifest.json
    label: str  # how progress, the summary, the report and the card name it
    description: str | None = None  # the manifest schema's
    stat: str | None = None  # read from the teacher's `stats` under this key; None: counted by the job's tally
    per_task: bool = False  # a count per task ({task: n}) instead of one number; only the tally counts per task
    merge: Callable[[list[int]], int] = sum  # how merge combines the shards' numbers (per task when per_task): sum, max
    only_with: str | None = None  # the generate setting that turns it on; absent from the manifest of a run without it
    shown: frozenset[Place] = frozenset()
    row: str | None = None  # the report's row when several metrics share one (their values joined by " / "); default label

    def __post_init__(self) -> None:
        if self.per_task and self.stat is not None:
            raise ValueError(f"metric {self.name}: a teacher's stats are not kept per task; count it with the tally")

    @property
    def annotation(self) -> Any:
        kind: Any = dict[str, int] if self.per_task else int
        return kind | None if self.only_with is not None else kind

    @property
    def default(self) -> Any:
        if self.only_with is not None:
            return None
        return {} if self.per_task else 0

    def total(self, value: object) -> int | None:
        """One number for the value as the manifest holds it: a per-task count summed over its tasks."""
        if isinstance(value, dict):
            return sum(number for number in value.values() if isinstance(number, int))
        return value if isinstance(value, int) else None

    def merged(self, values: list[Any]) -> Any:
        """The shards' values as one (task by task when per task); None when no shard had it on."""
        return combine(values, self.merge)


def combine(values: list[Any], merge: Callable[[list[Any]], Any]) -> Any:
    """Values of the shards as one: `merge` of those set, dicts key by key (a key a shard lacks adds nothing), None
    where no shard set one."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    if isinstance(present[0], dict):
        keys = dict.fromkeys(key for value in present for key in value)
        return {key: combine([value[key] for value in present if key in value], merge) for key in keys}
    return merge(present)


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "requests_sent", "requests sent", "HTTP requests sent to the teacher by this invocation, retries included",
            stat="requests", shown=frozenset({"summary", "report"}), row="requests sent / cache hits",
        ),
        Metric(
            "cache_hits", "cache hits", "Answers this invocation took from the response cache instead of asking",
            stat="cache_hits", shown=frozenset({"summary", "report"}), row="requests sent / cache hits",
        ),
        Metric(
            "structured_reasks", "structured re-asks",
            "generate --structured only: per task, replies not in the task's JSON schema that were asked once more (this invocation)",
            per_task=True, only_with="structured",
        ),
    )
}


def shown(place: Place) -> list[Metric]:
    return [metric for metric in METRICS.values() if place in metric.shown]


def figures(place: Place, values: Mapping[str, Any]) -> list[str]:
    """`label N` for each metric shown at `place` that `values` (by name, as the manifest keeps them) has on."""
    return [f"{metric.label} {metric.total(values[metric.name])}" for metric in shown(place) if values.get(metric.name) is not None]


def metrics_model() -> type[BaseModel]:
    """The metrics as the fields of a model: what validates a manifest's values and documents them in its schema."""
    return _model(tuple(METRICS.values()))


@functools.cache
def _model(metrics: tuple[Metric, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {metric.name: (metric.annotation, Field(metric.default, description=metric.description)) for metric in metrics}
    return create_model("RunMetrics", **fields)
