"""The tally of a `generate` run: each item's outcome (written, or its reject reason), the skips by reason, the
grounding of the written records and the tokens, over what the folder held before and what this invocation did;
from it the manifest's counts, quality and metrics, and whether the run failed or is unfinished."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from datagen.formats.manifest import QualityStats, TaskCounts
from datagen.formats.metrics import METRICS
from datagen.formats.records import Grounding, SkipReason, Usage, UsageTotals
from datagen.redaction import one_line
from datagen.tasks.registry import ItemKey

# Skips a rerun can fix: no answer came back (live, or from a batch or results file). The others (no usable
# caption, a missing image) stay skipped on every rerun, so they do not leave a run unfinished.
RETRYABLE_SKIPS: frozenset[str] = frozenset(
    {"request_failed", "batch_failed", "batch_expired", "batch_cancelled", "batch_unanswered", "not_in_results"}
)


def tally(
    requested: dict[str, int],
    selected: set[int],
    outcomes: dict[ItemKey, str],
    skipped: dict[str, Counter[str]],
    groundings: dict[ItemKey, Grounding],
) -> tuple[dict[str, TaskCounts], dict[str, QualityStats]]:
    """Per task, the counts and the grounding quality of the selected images' items.

    `requested` gives the items per task, `outcomes` maps an item to "written" or a reject reason; `skipped`
    counts per task and reason."""
    counts = {task: TaskCounts(requested=total, skipped=dict(skipped[task])) for task, total in requested.items()}
    for key, outcome in outcomes.items():
        if key.image_id not in selected or key.task not in counts:
            continue
        if outcome == "written":
            counts[key.task].written += 1
        else:
            counts[key.task].rejected[outcome] = counts[key.task].rejected.get(outcome, 0) + 1
    quality = {task: QualityStats() for task in requested}
    for key, grounding in groundings.items():
        if key.image_id in selected and key.task in quality:
            quality[key.task].add(grounding)
    for task_counts in counts.values():
        # Items neither answered nor skipped for a reason: the run stopped (Ctrl-C, a fatal teacher error) first.
        not_reached = task_counts.requested - task_counts.written - task_counts.rejected_total - task_counts.skipped_total
        if not_reached > 0:
            task_counts.skipped["not_reached"] = not_reached
    return counts, quality


class Tally:
    def __init__(self, tasks: list[str]) -> None:
        self.tasks = tasks
        self.outcomes: dict[ItemKey, str] = {}  # "written" or a reject reason
        self.groundings: dict[ItemKey, Grounding] = {}  # of the written records, for the manifest's quality
        self.skipped: dict[str, Counter[str]] = {task: Counter() for task in tasks}
        self.usage = UsageTotals()
        self.counted: dict[str, Counter[str]] = {}  # per metric (formats/metrics.py) the tally counts: per task
        self.done_before = 0  # items the folder held when this invocation started
        # Hears "written", "rejected" or "skipped" as each item of this invocation ends: the progress display.
        self.listener: Callable[[str], None] = lambda outcome: None

    def has(self, key: ItemKey) -> bool:
        return key in self.outcomes

    def found(self, key: ItemKey, outcome: str, usage: Usage, grounding: Grounding | None = None) -> None:
        """An item the folder already holds: its usage counts, as its outcome does, in the manifest's totals."""
        self.outcomes[key] = outcome
        self.usage = self.usage + usage
        if grounding is not None:
            self.groundings[key] = grounding

    def opened(self) -> None:
        self.done_before = len(self.outcomes)

    def written(self, key: ItemKey, grounding: Grounding | None) -> None:
        self.outcomes[key] = "written"
        if grounding is not None:
            self.groundings[key] = grounding
        self.listener("written")

    def rejected(self, key: ItemKey, reason: str) -> None:
        self.outcomes[key] = reason
        self.listener("rejected")

    def skip(self, task: str, reason: SkipReason) -> None:
        """An item left for a later run (counted per reason in the manifest), not written anywhere now."""
        self.skipped[task][reason] += 1
        self.listener("skipped")

    def paid(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    def count(self, metric: str, task: str) -> None:
        """One more of a metric this invocation counts (formats/metrics.py names them), for the item's task."""
        if metric not in METRICS:
            raise KeyError(f"{metric}: not a metric; declare it in datagen/formats/metrics.py")
        self.counted.setdefault(metric, Counter())[task] += 1

    def metric_values(self, stats: Mapping[str, int], settings: object) -> dict[str, Any]:
        """Each metric as the manifest keeps it: from the teacher's `stats`, or counted here; None where the
        setting that turns it on (a field of `settings`) is off."""
        values: dict[str, Any] = {}
        for metric in METRICS.values():
            counted = self.counted.get(metric.name, Counter())
            if metric.only_with is not None and not getattr(settings, metric.only_with):
                values[metric.name] = None
            elif metric.stat is not None:
                values[metric.name] = stats.get(metric.stat, 0)
            else:
                values[metric.name] = dict(sorted(counted.items())) if metric.per_task else counted.total()
        return values

    def counts(self, requested: dict[str, int], selected: set[int]) -> tuple[dict[str, TaskCounts], dict[str, QualityStats]]:
        return tally(requested, selected, self.outcomes, self.skipped, self.groundings)

    def remaining(self, requested: dict[str, int], selected: set[int]) -> int:
        done = sum(1 for key in self.outcomes if key.image_id in selected and key.task in requested)
        return sum(requested.values()) - done

    def _retryable(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for counts in self.skipped.values():
            found.update({reason: n for reason, n in counts.items() if reason in RETRYABLE_SKIPS})
        return found

    def failure(self, selected: set[int], last_error: str | None) -> str | None:
        """Why a run that ended without an error still failed: no answer came back, or no record exists."""
        because = f"; the teacher's last error: {one_line(last_error)}" if last_error else ""
        failed = self._retryable()
        if failed.total() and len(self.outcomes) == self.done_before:
            # Every request failed live; a batch or a results file that answered nothing says so by its reasons.
            if set(failed) == {"request_failed"}:
                return f"every request failed ({failed.total()} items left for a rerun){because}"
        if selected and not any(outcome == "written" for key, outcome in self.outcomes.items() if key.image_id in selected):
            reasons = Counter(outcome for key, outcome in self.outcomes.items() if key.image_id in selected)
            reasons.update(reason for counts in self.skipped.values() for reason in counts.elements())
            summary = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) or "nothing was asked"
            # Every item answered and every answer refused: a teacher that cannot follow the format, not a bad night.
            every_answer_refused = bool(reasons) and not any(counts.total() for counts in self.skipped.values())
            headline = "no answer passed the checks; no record could be written" if every_answer_refused else "no record could be written"
            return f"{headline} ({summary}){because}"
        return None

    def unfinished(self, last_error: str | None) -> str | None:
        """Why a run that did write records is still not done: items no answer came back for, live, from a batch
        or from a results file. A rerun does them: the meaning of `incomplete` (exit 3) on every path."""
        failed = self._retryable()
        if not failed.total():
            return None
        because = f"; the teacher's last error: {one_line(last_error)}" if last_error else ""
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(failed.items()))
        how = "after their retries" if set(failed) == {"request_failed"} else "from the batch or results file"
        return f"{failed.total()} items got no answer {how} ({reasons}); rerun the same command to do them{because}"
