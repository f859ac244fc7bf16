"""`datagen report`: generate output folders side by side, as one self-contained HTML page and a terminal table.

Everything is read from what a run leaves behind (manifest.json, the task files, rejects.jsonl) as plain JSON,
so folders written by other datagen versions, with fields this one does not know, still report; a figure a
folder does not hold shows as n/a. Plots are PNGs embedded in the page: it opens offline, from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, UTC
from functools import cached_property
from pathlib import Path

from datagen import __version__
from datagen.errors import InputError
from datagen.formats.manifest import read_run_manifest
from datagen.formats.metrics import shown
from datagen.files.jsonl import atomic_file
from datagen.formats.record_lines import record_lines
from datagen.run.output_folder import REJECTS_FILE
from datagen.run.prices import Prices
from datagen.formats.records import IMAGE_TOKEN, task_file
from datagen.data.show import Example, render_html as render_examples
from datagen.tasks.registry import TASKS

NEAR_DUPLICATE_JACCARD = 0.8
EXAMPLES_PER_TASK = 2  # kept records, and as many rejects, shown per task and run
QUESTION_TYPES = ("what", "where", "how many", "how", "why", "which", "who", "yes/no", "describe", "other")

# -- per-record measures ------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_QUESTION_WORDS = {
    "what": "what", "what's": "what", "whats": "what", "where": "where", "why": "why", "which": "which",
    "who": "who", "whom": "who", "whose": "who", "who's": "who", "how": "how",
    "describe": "describe", "explain": "describe", "tell": "describe", "analyze": "describe", "analyse": "describe",
    "give": "describe", "provide": "describe", "write": "describe", "share": "describe", "summarize": "describe",
    "illustrate": "describe", "list": "describe", "discuss": "describe", "walk": "describe",
}  # fmt: skip
_YES_NO_OPENERS = {
    "is", "are", "was", "were", "does", "do", "did", "can", "could", "has", "have", "had", "will", "would",
    "should", "may", "might", "isn't", "aren't", "doesn't", "don't",
}  # fmt: skip
_POLITE_OPENERS = ("can you ", "could you ", "would you ", "will you ", "please ", "can we ", "could we ")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def question_text(value: str) -> str:
    return value.replace(IMAGE_TOKEN, " ").strip()


def question_type(question: str) -> str:
    """What a question asks for, by its question word: "How many dogs...?" is `how many`, "Is it...?" `yes/no`."""
    text = " ".join(words(question))
    for opener in _POLITE_OPENERS:  # "Can you describe ...?" asks for a description, not a yes or a no
        if text.startswith(opener):
            text = text[len(opener) :]
            break
    tokens = text.split()
    if not tokens:
        return "other"
    if tokens[0] in _YES_NO_OPENERS:
        return "yes/no"
    for position, token in enumerate(tokens[:8]):  # "In the image, what is ...?" still asks what
        if token in _QUESTION_WORDS:
            if token == "how" and tokens[position + 1 : position + 2] in (["many"], ["much"]):
                return "how many"
            return _QUESTION_WORDS[token]
    return "other"


def normalise_question(question: str) -> str:
    return " ".join(words(question))


class DistinctNGrams:
    """Distinct-n (Li et al., 2016): distinct word n-grams over all n-grams of the texts added; None before any."""

    def __init__(self, n: int) -> None:
        self.n, self.seen, self.total = n, set[tuple[str, ...]](), 0

    def add(self, tokens: list[str]) -> None:
        grams = list(zip(*(tokens[offset:] for offset in range(self.n))))
        self.seen.update(grams)
        self.total += len(grams)

    @property
    def value(self) -> float | None:
        return len(self.seen) / self.total if self.total else None


def near_duplicate_count(questions: Iterable[str], threshold: float = NEAR_DUPLICATE_JACCARD) -> int:
    """How many of these distinct questions have another whose word set has Jaccard similarity >= threshold.

    Exact, without comparing every pair (the AllPairs similarity join): with words ranked rarest first, two
    sets that similar share a word among the first |set| - ceil(threshold * |set|) + 1 of each, so only
    questions sharing such a word are compared; taken smallest first, a set can only match one at least
    threshold times its size, so shorter ones drop out of the word lists for good.
    """
    sets = sorted({frozenset(question.split()) for question in questions}, key=len)
    repeats = Counter(frozenset(question.split()) for question in dict.fromkeys(questions))
    frequency = Counter(token for tokens in sets for token in tokens)
    index: dict[str, list[int]] = defaultdict(list)
    start: Counter[str] = Counter()  # per word, where its list's entries stop being too short
    has_partner = [repeats[tokens] > 1 for tokens in sets]  # different wording, same words: Jaccard 1
    for number, tokens in enumerate(sets):
        ranked = sorted(tokens, key=lambda token: (frequency[token], token))
        needed = math.ceil(threshold * len(ranked) - 1e-9)
        candidates: set[int] = set()
        for token in ranked[: len(ranked) - needed + 1]:
            entries = index[token]
            while start[token] < len(entries) and len(sets[entries[start[token]]]) < needed:
                start[token] += 1
            candidates.update(entries[start[token] :])
            entries.append(number)
        for other in candidates:
            shared = len(tokens & sets[other])
            if shared / (len(tokens) + len(sets[other]) - shared) >= threshold:
                has_partner[number] = has_partner[other] = True
    return sum(repeats[tokens] for tokens, partnered in zip(sets, has_partner) if partnered)


# -- one run --------------------------------------------------------------------------------------------


@dataclass
class TaskStats:
    """Everything the report shows about one task of one run, gathered in one pass over its files."""

    counts: dict
    quality: dict | None
    records: int = 0
    answer_words: list[int] = field(default_factory=list)
    rounds: Counter = field(default_factory=Counter)
    question_types: Counter = field(default_factory=Counter)
    questions: Counter = field(default_factory=Counter)
    distinct_1: DistinctNGrams = field(default_factory=lambda: DistinctNGrams(1))
    distinct_2: DistinctNGrams = field(default_factory=lambda: DistinctNGrams(2))
    usage: Counter = field(default_factory=Counter)
    finish_reasons: Counter = field(default_factory=Counter)
    ids: set = field(default_factory=set)
    unsupported_objects: Counter = field(default_factory=Counter)
    grounded_records: int = 0
    records_with_unsupported: int = 0
    mentions: int = 0
    unsupported_mentions: int = 0
    examples: list[Example] = field(default_factory=list)

    def add_record(self, row: dict, task: str) -> None:
        self.records += 1
        if len(self.examples) < EXAMPLES_PER_TASK:
            self.examples.append(Example(row=row, task=task, rejected=False))
        record_id = row.get("id")
        self.ids.add(record_id if isinstance(record_id, (str, int)) else repr(record_id))  # a hand-edited id may be a list
        turns = [turn for turn in _list(row.get("conversations")) if isinstance(turn, dict)]
        self.rounds[len(turns) // 2] += 1
        for turn in turns:
            value = str(turn.get("value", ""))
            if turn.get("from") == "human":
                question = question_text(value)
                self.question_types[question_type(question)] += 1
                self.questions[normalise_question(question)] += 1
            else:
                tokens = words(value)
                self.answer_words.append(len(value.split()))
                self.distinct_1.add(tokens)
                self.distinct_2.add(tokens)
        meta = _object(row.get("meta"))
        self.add_usage(meta)
        if meta.get("finish_reason") is not None:
            self.finish_reasons[str(meta["finish_reason"])] += 1
        grounding = meta.get("grounding")
        if isinstance(grounding, dict):
            mentioned, unsupported = _list(grounding.get("mentioned")), _list(grounding.get("unsupported"))
            self.grounded_records += 1
            self.mentions += len(mentioned)
            self.unsupported_mentions += len(unsupported)
            self.records_with_unsupported += bool(unsupported)
            self.unsupported_objects.update(map(str, unsupported))

    def add_usage(self, meta: dict) -> None:
        usage = meta.get("usage")
        if isinstance(usage, dict):
            for key, value in _flat_numbers(usage):
                self.usage[key] += value

    # -- figures --

    @property
    def chair(self) -> tuple[float | None, float | None, str]:
        """(CHAIR_i, CHAIR_s, where they come from): the manifest's quality block, else the records' grounding."""
        quality = self.quality or {}
        if isinstance(quality.get("chair_i"), (int, float)) or isinstance(quality.get("chair_s"), (int, float)):
            return _number(quality.get("chair_i")), _number(quality.get("chair_s")), "manifest"
        if self.grounded_records:
            chair_i = self.unsupported_mentions / self.mentions if self.mentions else None
            return chair_i, self.records_with_unsupported / self.grounded_records, "records"
        return None, None, "n/a"

    @property
    def object_counts(self) -> str:
        """Unsupported of mentioned objects, from where CHAIR comes from."""
        quality = self.quality or {}
        if self.chair[2] == "manifest" and isinstance(quality.get("mentions"), int):
            return f"{_count(quality.get('unsupported_mentions'))} of {_count(quality['mentions'])}"
        if self.grounded_records:
            return f"{self.unsupported_mentions:,} of {self.mentions:,}"
        return "n/a"

    @property
    def distinct(self) -> tuple[float | None, float | None]:
        return self.distinct_1.value, self.distinct_2.value

    @property
    def question_total(self) -> int:
        return sum(self.questions.values())

    @property
    def exact_duplicates(self) -> int:
        return self.question_total - len(self.questions)

    @cached_property
    def near_duplicates(self) -> int:
        return near_duplicate_count(self.questions)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _flat_numbers(mapping: dict, prefix: str = "") -> Iterable[tuple[str, int]]:
    """Integer usage fields, nested ones (`prompt_tokens_details.cached_tokens`) flattened with dots."""
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flat_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


@dataclass
class RunReport:
    folder: Path
    manifest: dict
    tasks: dict[str, TaskStats]
    label: str = ""

    @property
    def teacher(self) -> dict:
        teacher = self.manifest.get("teacher")
        return teacher if isinstance(teacher, dict) else {}

    @property
    def usage(self) -> dict[str, int]:
        usage = self.manifest.get("usage")
        return dict(_flat_numbers(usage)) if isinstance(usage, dict) else {}


def _object(value: object) -> dict:
    """A JSON object as it is, anything else (missing, hand-edited) as an empty one."""
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    """A JSON array as it is, anything else (missing, hand-edited) as an empty one."""
    return value if isinstance(value, list) else []


def read_run(folder: Path) -> RunReport:
    manifest = read_run_manifest(folder, "report")
    quality = _object(manifest.get("quality"))
    tasks: dict[str, TaskStats] = {}
    for task, counts in manifest["counts"].items():
        task_quality = quality.get(task)
        tasks[task] = TaskStats(counts=counts if isinstance(counts, dict) else {}, quality=task_quality if isinstance(task_quality, dict) else None)
        for line in record_lines(folder / task_file(task)):  # a hand-edited line counted for what it still holds
            tasks[task].add_record(line.data, task)
    rejects_shown: Counter[str] = Counter()
    for line in record_lines(folder / REJECTS_FILE, reject=True):
        row = line.data
        task = str(row.get("task"))
        stats = tasks.get(task)
        if stats is not None:  # rejected answers were paid for too
            stats.add_usage(_object(row.get("meta")))
            if rejects_shown[task] < EXAMPLES_PER_TASK:
                rejects_shown[task] += 1
                stats.examples.append(Example(row=row, task=task, rejected=True))
    return RunReport(folder=folder, manifest=manifest, tasks=tasks)


def label_runs(runs: list[RunReport]) -> None:
    """Folder name and teacher model; folders of the same name are told apart by their parent."""
    names = Counter(run.folder.resolve().name for run in runs)
    for run in runs:
        resolved = run.folder.resolve()
        name = resolved.name if names[resolved.name] == 1 else f"{resolved.parent.name}/{resolved.name}"
        model = run.teacher.get("model", "unknown teacher")
        if run.teacher.get("mock"):
            model = "mock teacher" if model == "mock" else f"{model}, mock teacher"
        run.label = f"{name} ({model})"


# -- figures and formatting ------------------------------------------------------------------------------


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "n/a"


def _rate(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else f"{part:,}"


def _reasons(counts: object) -> str:
    if not isinstance(counts, dict) or not counts:
        return "0"
    total = sum(value for value in counts.values() if isinstance(value, int))
    return f"{total:,}: " + ", ".join(f"{reason} {count:,}" for reason, count in sorted(counts.items(), key=lambda item: -item[1]))


def _total(counts: object) -> int:
    return sum(value for value in counts.values() if isinstance(value, int)) if isinstance(counts, dict) else 0


def _distribution(values: list[int]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return f"mean {statistics.fmean(values):.1f}, median {statistics.median(values):g}, p90 {p90}, max {ordered[-1]}"


def _spent(usage: dict, prices: Prices) -> float:
    """USD for a manifest's usage, read as JSON (a field an older datagen did not write counts 0)."""
    return prices.of_tokens(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


def _cost(usage: dict, prices: Prices | None) -> str:
    return f"${_spent(usage, prices):,.4f}" if prices else "n/a (pass --price-in/--price-out)"


def task_rows(stats: TaskStats, prices: Prices | None, shared: int | None) -> list[tuple[str, str]]:
    """The table rows of one task of one run: (measure, value)."""
    counts = stats.counts
    requested, written = counts.get("requested"), counts.get("written")
    chair_i, chair_s, chair_source = stats.chair
    distinct_1, distinct_2 = stats.distinct
    questions = stats.question_total
    usage = dict(stats.usage)
    rows = [
        ("requested", _count(requested)),
        ("written", _share(written, requested) if isinstance(written, int) and isinstance(requested, int) else _count(written)),
        ("rejected", _reasons(counts.get("rejected"))),
        ("skipped", _reasons(counts.get("skipped"))),
        ("records read", _count(stats.records)),
        ("images written by every run", _count(shared) if shared is not None else "n/a (one run)"),
        ("CHAIR_i (unsupported mentions)", _rate(chair_i)),
        ("CHAIR_s (answers with one)", _rate(chair_s)),
        ("CHAIR from", chair_source),
        ("unsupported of mentioned objects", stats.object_counts),
        ("most often unsupported (records)", ", ".join(f"{name} {n:,}" for name, n in stats.unsupported_objects.most_common(5)) or ("none" if stats.grounded_records else "n/a")),
        ("rounds per record", _distribution([rounds for rounds, n in stats.rounds.items() for _ in range(n)])),
        ("answer words", _distribution(stats.answer_words)),
        ("distinct-1 / distinct-2 (answers)", f"{_rate(distinct_1)} / {_rate(distinct_2)}"),
        ("questions (distinct)", f"{questions:,} ({len(stats.questions):,})"),
        ("exact duplicate questions", _share(stats.exact_duplicates, questions)),
        (f"near-duplicate questions (Jaccard >= {NEAR_DUPLICATE_JACCARD})", _share(stats.near_duplicates, len(stats.questions))),
        ("finish reasons", ", ".join(f"{reason} {n:,}" for reason, n in stats.finish_reasons.most_common()) or "n/a"),
        ("prompt / completion tokens", f"{_count(usage.get('prompt_tokens', 0))} / {_count(usage.get('completion_tokens', 0))}"),
    ]
    other = {key: value for key, value in usage.items() if key not in ("prompt_tokens", "completion_tokens")}
    if other:
        rows.append(("other usage", ", ".join(f"{key} {value:,}" for key, value in sorted(other.items()))))
    rows.append(("cost", _cost(usage, prices)))
    if prices and isinstance(written, int) and written:
        rows.append(("cost per written record", f"${_spent(usage, prices) / written:,.6f}"))
    return rows


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _matplotlib_figure() -> type:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        # Not a runtime dependency (`make demo` and `pip install datagen` leave it out): say which extra brings it.
        raise InputError("datagen report draws its plots with matplotlib, which is not installed; install the report extra: pip install 'datagen[report]'") from None
    return Figure


def _new_figure(width: float, height: float):
    Figure = _matplotlib_figure()
    # A bare Figure renders through Agg without pyplot: no display, no global state.
    return Figure(figsize=(width, height), layout="constrained")


def outcome_figure(runs: list[RunReport], tasks: list[str]) -> str:
    figure = _new_figure(11, 3.2)
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    for axis, task in zip(axes, tasks):
        labels = [run.label for run in runs]
        parts: dict[str, list[int]] = {"written": [], "rejected": [], "skipped": []}
        for run in runs:
            counts = run.tasks[task].counts if task in run.tasks else {}
            parts["written"].append(counts.get("written", 0) if isinstance(counts.get("written"), int) else 0)
            parts["rejected"].append(_total(counts.get("rejected")))
            parts["skipped"].append(_total(counts.get("skipped")))
        left = [0] * len(runs)
        for name, color in (("written", "#4c9a6a"), ("rejected", "#c8553d"), ("skipped", "#b0b0b0")):
            axis.barh(range(len(runs)), parts[name], left=left, color=color, label=name)
            left = [a + b for a, b in zip(left, parts[name])]
        axis.set_yticks(range(len(runs)), labels, fontsize=8)
        axis.invert_yaxis()
        axis.set_title(task, fontsize=10)
        axis.set_xlabel("items")
    axes[0].legend(fontsize=8, loc="lower right")
    return _png(figure)


def _grouped_bars(axes, runs: list[RunReport], positions, shares: Callable[[TaskStats], list[float]], task: str) -> None:
    """One bar per run at each position, side by side, each run's bars its shares of its own records."""
    width = 0.8 / max(1, len(runs))
    for offset, run in enumerate(runs):
        shift = (offset - (len(runs) - 1) / 2) * width
        axes.bar([value + shift for value in positions], shares(run.tasks[task]), width=width, label=run.label)


def task_figure(runs: list[RunReport], task: str) -> str:
    figure = _new_figure(11, 3.4)
    lengths, rounds, kinds = figure.subplots(1, 3)
    present = [run for run in runs if task in run.tasks]
    every_length = [value for run in present for value in run.tasks[task].answer_words]
    if every_length:
        top = max(every_length)
        bins = list(range(0, top + max(1, top // 30) + 1, max(1, top // 30)))
        for run in present:
            if run.tasks[task].answer_words:
                lengths.hist(run.tasks[task].answer_words, bins=bins, histtype="step", linewidth=1.5, label=run.label)
        lengths.legend(fontsize=7)
    else:
        lengths.text(0.5, 0.5, "no answers", ha="center", va="center", transform=lengths.transAxes)
    lengths.set_title("answer length", fontsize=10)
    lengths.set_xlabel("words per answer")
    lengths.set_ylabel("answers")

    all_rounds = sorted({count for run in present for count in run.tasks[task].rounds})
    _grouped_bars(rounds, present, all_rounds, lambda stats: [stats.rounds.get(value, 0) / (stats.records or 1) for value in all_rounds], task)
    rounds.set_xticks(all_rounds)
    rounds.set_title("question-answer rounds per record", fontsize=10)
    rounds.set_ylabel("share of records")

    positions = range(len(QUESTION_TYPES))
    _grouped_bars(
        kinds, present, positions,
        lambda stats: [stats.question_types.get(kind, 0) / (stats.question_total or 1) for kind in QUESTION_TYPES], task,
    )
    kinds.set_xticks(list(positions), QUESTION_TYPES, rotation=45, ha="right", fontsize=8)
    kinds.set_title("question types", fontsize=10)
    kinds.set_ylabel("share of questions")
    return _png(figure)


# -- the page -----------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.mock { color: #a33; font-weight: 600; }
img { max-width: 100%; display: block; margin: 8px 0; }
.note { color: #666; font-size: 12px; }
.example { border-left: 3px solid #8ab; padding: 2px 12px; margin: 8px 0; } .example p { margin: 4px 0; }
.reject { color: #a33; } pre { white-space: pre-wrap; font-size: 12px; background: #f8f8f8; padding: 6px; }
"""


def _table(header: list[str], rows: list[list[str]], row_heads: bool = True) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = ""
    for row in rows:
        cells = [f"<th>{html.escape(row[0])}</th>" if row_heads else f"<td>{html.escape(row[0])}</td>"]
        cells += [f"<td>{html.escape(cell)}</td>" for cell in row[1:]]
        body += "<tr>" + "".join(cells) + "</tr>\n"
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


SEEN = {"image": "the image only", "both": "the image and the captions/boxes text"}


def run_rows(runs: list[RunReport], prices: Prices | None) -> list[list[str]]:
    def setting(run: RunReport, *path: str) -> str:
        value: object = run.manifest
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return "n/a" if value is None else str(value)

    rows = [
        ["folder", *(str(run.folder) for run in runs)],
        ["teacher", *(f"{run.teacher.get('model', 'n/a')} (kind {run.teacher.get('kind', 'n/a')})" for run in runs)],
        ["mock teacher", *("yes: not a language model" if run.teacher.get("mock") else "no" for run in runs)],
        # generate --see: runs of one set of images in two regimes are the comparison a vision switch is for
        ["teacher saw", *(SEEN.get(setting(run, "settings", "fingerprint_parts", "see"), "captions and boxes as text") for run in runs)],
        ["status", *(setting(run, "status") for run in runs)],
        ["seed / temperature / max tokens", *(
            f"{setting(run, 'settings', 'sampling', 'seed')} / {setting(run, 'settings', 'sampling', 'temperature')} / "
            f"{setting(run, 'settings', 'sampling', 'max_tokens')}" for run in runs
        )],
        ["prompt packs", *(", ".join(f"{task} {digest}" for task, digest in (run.manifest.get("prompt_hashes") or {}).items()) or "n/a" for run in runs)],
        ["source images", *(_count((run.manifest.get("source") or {}).get("images")) for run in runs)],
        ["started / finished", *(f"{setting(run, 'started_at')} / {setting(run, 'finished_at')}" for run in runs)],
        *_metric_rows(runs),
        ["prompt / completion tokens (manifest)", *(f"{_count(run.usage.get('prompt_tokens'))} / {_count(run.usage.get('completion_tokens'))}" for run in runs)],
        ["other usage (manifest)", *(
            ", ".join(f"{key} {value:,}" for key, value in sorted(run.usage.items()) if key not in ("prompt_tokens", "completion_tokens")) or "none"
            for run in runs
        )],
        ["cost (manifest tokens)", *(_cost(run.usage, prices) for run in runs)],
    ]  # fmt: skip
    return rows


def _metric_rows(runs: list[RunReport]) -> list[list[str]]:
    """A row per metric shown in the report (formats/metrics.py); metrics that name one row share it."""
    rows: dict[str, list[str]] = {}
    for metric in shown("report"):
        rows.setdefault(metric.row or metric.label, []).append(metric.name)
    return [
        [row, *(" / ".join(_reasons(value) if isinstance(value := run.manifest.get(name), dict) else _count(value) for name in names) for run in runs)]
        for row, names in rows.items()
    ]


def shared_ids(runs: list[RunReport], task: str) -> set | None:
    holders = [run.tasks[task].ids for run in runs if task in run.tasks]
    return set.intersection(*holders) if len(runs) > 1 and len(holders) == len(runs) else None


def render_html(runs: list[RunReport], prices: Prices | None) -> str:
    tasks = report_tasks(runs)
    labels = [run.label for run in runs]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>datagen report: {html.escape(', '.join(labels))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>datagen report: {html.escape(', '.join(labels))}</h1>",
        f'<p class="note">datagen {__version__}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. '
        + (f"Prices: ${prices.input:g} per million prompt tokens, ${prices.output:g} per million completion tokens." if prices else "No prices given.")
        + "</p>",
    ]
    if any(run.teacher.get("mock") for run in runs):
        parts.append('<p class="note"><b>Mock teacher</b>: a run marked mock holds answers from datagen\'s offline mock teacher, not a language model.</p>')
    parts += ["<h2>Runs</h2>", _table(["", *labels], run_rows(runs, prices))]
    if tasks:
        parts += ["<h2>Outcome per task</h2>", f'<img alt="written, rejected and skipped per task" src="data:image/png;base64,{outcome_figure(runs, tasks)}">']
    for task in tasks:
        shared = shared_ids(runs, task)
        columns = [task_rows(run.tasks[task], prices, len(run.tasks[task].ids & shared) if shared is not None else None) if task in run.tasks else None for run in runs]
        names = next(column for column in columns if column is not None)
        rows = [[name, *((column[index][1] if column else "not in this run") for column in columns)] for index, (name, _) in enumerate(names)]
        parts += [
            f"<h2>{html.escape(task)}</h2>",
            _table(["", *labels], rows),
            f'<img alt="{html.escape(task)}: answer lengths, rounds, question types" src="data:image/png;base64,{task_figure(runs, task)}">',
        ]
        repeated = [[run.label, *(f"{count}x {question}" for question, count in run.tasks[task].questions.most_common(3) if count > 1)] for run in runs if task in run.tasks]
        if any(len(row) > 1 for row in repeated):
            parts += ["<p>Most repeated questions:</p>", _table(["run", "1st", "2nd", "3rd"], [row + [""] * (4 - len(row)) for row in repeated], row_heads=False)]
        shown = [(run.label, run.tasks[task].examples) for run in runs if task in run.tasks and run.tasks[task].examples]
        if shown:
            parts.append(f"<h3>Examples</h3><p class=\"note\">The first {EXAMPLES_PER_TASK} records of each run, and its first {EXAMPLES_PER_TASK} rejects; "
                         "`datagen show RUN` shows more in a terminal.</p>")
            parts += [f"<p><b>{html.escape(label)}</b></p>\n{render_examples(examples)}" for label, examples in shown]
        if task in TASKS and TASKS[task].instructions:
            parts.append(f'<p class="note">{html.escape(task.replace("_", " ").capitalize())} questions are drawn from datagen\'s instruction list, not written by the teacher: their repeats are by design.</p>')
    parts += [
        "<h2>Definitions</h2><ul class=\"note\">",
        "<li>CHAIR (Rohrbach et al., 2018): CHAIR_i is the share of object mentions that the image's annotations do not support; "
        "CHAIR_s the share of answers with at least one. From the manifest's <code>quality</code> block, else counted from the records' "
        "<code>meta.grounding</code>; n/a when the run measured neither.</li>",
        "<li>distinct-n: distinct word n-grams over all word n-grams of a task's answers (higher is more varied; it falls as a run grows, "
        "so compare runs of similar size).</li>",
        f"<li>Questions are compared lower-cased with punctuation removed; a near duplicate is a distinct question with another whose word set has "
        f"Jaccard similarity of at least {NEAR_DUPLICATE_JACCARD}.</li>",
        "<li>Tokens per task are summed over the task's records and rejects; the manifest's total also counts answers cut by max_tokens and asked again. "
        "Cost prices every prompt token at --price-in, cached ones included.</li>",
        "</ul></body></html>",
    ]
    return "\n".join(parts)


def report_tasks(runs: list[RunReport]) -> list[str]:
    named = {task for run in runs for task in run.tasks}
    return [task for task in TASKS if task in named] + sorted(named - set(TASKS))


def print_summary(runs: list[RunReport], prices: Prices | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="datagen report")
    for column in ("run", "task", "written/requested", "rejected", "CHAIR_i", "CHAIR_s", "answer words", "distinct-2", "dup questions", "tokens in/out", "cost"):
        table.add_column(column, justify="left" if column in ("run", "task") else "right", no_wrap=column in ("run", "task"))
    for run in runs:
        for task, stats in run.tasks.items():
            chair_i, chair_s, _ = stats.chair
            usage = dict(stats.usage)
            table.add_row(
                run.label,
                task,
                f"{_count(stats.counts.get('written'))}/{_count(stats.counts.get('requested'))}",
                _count(_total(stats.counts.get("rejected"))),
                _rate(chair_i),
                _rate(chair_s),
                f"{statistics.fmean(stats.answer_words):.1f}" if stats.answer_words else "n/a",
                _rate(stats.distinct[1]),
                f"{stats.exact_duplicates}+{stats.near_duplicates}~",
                f"{_count(usage.get('prompt_tokens', 0))}/{_count(usage.get('completion_tokens', 0))}",
                f"${_spent(usage, prices):,.4f}" if prices else "n/a",
            )
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    print("dup questions: exact repeats + distinct questions with a near duplicate (~)")


def write_report(folders: list[Path], out: Path, prices: Prices | None) -> list[RunReport]:
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; name the HTML file to write, e.g. --out report.html")
    _matplotlib_figure()  # before reading the runs, which can take a while
    runs = [read_run(folder) for folder in folders]
    label_runs(runs)
    page = render_html(runs, prices)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as handle:
        handle.write(page)
    return runs
