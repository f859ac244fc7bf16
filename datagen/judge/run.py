"""`datagen judge`: pairwise scoring of two answer sets by a text-only judge, through the teacher layer.

Every item is judged in both orders by every judge: one judgement per (item, judge, order) request.
Judgements are appended to `reviews.jsonl` as they arrive (a failure to give two scores included); a rerun
skips those and the response cache answers the ones in flight, so a killed run loses nothing. Then the
summary (`summary.json`, `summary.md`) is computed from the reviews. The run is a job of the core (run/job.py):
the folder's lock, SIGTERM, a full disk and the exit codes are those of `generate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from datagen import __version__
from datagen.teachers.cache import CachingTeacher, ResponseCache
from datagen.errors import InputError
from datagen.judge.inputs import JudgeItem, LoadedItems
from datagen.judge.mock import HEURISTICS, MockJudge
from datagen.judge.stats import Agreement, Pair, TaskSummary, agreement, summarise, table, winner
from datagen.files.jsonl import JsonlAppender, iter_jsonl, write_json_atomic
from datagen.redaction import one_line
from datagen.run.job import Job, run_job
from datagen.run.options import JudgeSettings, taken_from
from datagen.run.output_folder import CACHE_FILE, claim_folder
from datagen.run.prices import Costing, cost_line, resolve_prices
from datagen.formats.records import TeacherInfo, Usage, UsageTotals
from datagen.teachers.teacher import ChatRequest, RetryableError, Teacher, redact_url
from datagen.teachers.factory import BackendSettings, build_teacher

JUDGE_PROMPTS = Path(__file__).resolve().parents[2] / "prompts" / "judge"
SYSTEM_MESSAGE = JUDGE_PROMPTS / "system_message.txt"
USER_TEMPLATE = JUDGE_PROMPTS / "user_message.txt"
# With --rule the instructions are the rule's; the system message only sets the judge's stance, as LLaVA's one line does.
RULE_SYSTEM_MESSAGE = JUDGE_PROMPTS / "rule_system_message.txt"
REVIEWS_FILE = "reviews.jsonl"
SETTINGS_FILE = "judge.json"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary.md"
Order = Literal["reference_first", "candidate_first"]
ORDERS: tuple[Order, ...] = ("reference_first", "candidate_first")


class JudgeOptions(JudgeSettings):
    """The settings with what the command resolved from them: the folder and the system message."""

    out: Path
    system_prompt: Path = SYSTEM_MESSAGE


class Review(BaseModel):
    """One judgement: one judge, one order, one item; `ok` false when the reply held no two scores."""

    item_id: str
    task: str
    judge: TeacherInfo
    mock: bool
    order: Order
    ok: bool
    reference_score: float | None = None
    candidate_score: float | None = None
    shown_scores: list[float] | None = None  # as the judge wrote them: the first-shown answer's first
    reason: str
    raw: str | None = None  # the whole reply, kept for failures so the prompt can be tuned
    rule: str | None = None  # the rule.json key the request was built from (--rule)
    request_key: str
    usage: Usage


# -- the judge's reply -----------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?)"
_OUT_OF_TEN = re.compile(r"\s*(?:/|out of)\s*10\b", re.IGNORECASE)
_SCORE_LINE = re.compile(rf"(?:scores?\s*[:=]?\s*)?{_NUMBER}\s*(?:,|;|and|&|-|\s)\s*{_NUMBER}\s*\.?", re.IGNORECASE)


def _labelled(label: str) -> re.Pattern:
    # "Assistant 1: 8", "Answer 1 score - 8", "Answer 1 gets 8"; few words between, so "Answer 1 beats Answer 2" is no score.
    return re.compile(rf"\b(?:assistant|answer|response)\s*#?\s*{label}\b[^\d\n]{{0,12}}?{_NUMBER}", re.IGNORECASE)


_LABELS = (_labelled("1"), _labelled("2"))


def parse_scores(text: str) -> tuple[tuple[float, float], str] | None:
    """(score of the first-shown answer, of the second), and the reason; None unless two scores in 1..10."""
    cleaned = _OUT_OF_TEN.sub("", text.replace("*", ""))
    lines = [line.strip() for line in cleaned.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return None
    first = _SCORE_LINE.fullmatch(lines[0])
    if first:
        scores, reason = (float(first.group(1)), float(first.group(2))), " ".join(lines[1:])
    else:
        found = [pattern.search(cleaned) for pattern in _LABELS]
        if None in found:
            return None
        scores, reason = (float(found[0].group(1)), float(found[1].group(1))), " ".join(lines)
    if not all(1 <= score <= 10 for score in scores):
        return None
    return scores, reason[:500]


def parse_llava_scores(text: str) -> tuple[tuple[float, float], str] | None:
    """Scores as LLaVA's review scripts read them: the first line, commas made spaces, split on single spaces,
    exactly two parts, both numbers. Where LLaVA records [-1, -1] this returns None: a counted failure."""
    first, _, rest = text.partition("\n")
    parts = first.replace(",", " ").split(" ")
    if len(parts) != 2:
        return None
    try:
        scores = (float(parts[0]), float(parts[1]))
    except ValueError:
        return None
    if not all(math.isfinite(score) for score in scores):
        return None
    return scores, " ".join(rest.split())[:500]


class Rule(BaseModel):
    role: str
    prompt: str


def load_rules(path: Path) -> dict[str, Rule]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--rule {path}: file not found; pass LLaVA's llava/eval/table/rule.json or one shaped like it") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"--rule {path}: not a readable JSON file ({type(error).__name__}); pass a rule.json") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f'--rule {path}: expected an object of categories, each {{"role": ..., "prompt": ...}}')
    rules = {}
    for key, value in data.items():
        wrong = [name for name in ("role", "prompt") if not isinstance(value, dict) or not isinstance(value.get(name), str)]
        if wrong:
            raise InputError(f"--rule {path}: category {key!r} needs {' and '.join(wrong)} (strings)")
        rules[key] = Rule(role=value["role"], prompt=value["prompt"])
    return rules


def rule_keys(category: str, context_shape: str) -> list[str]:
    """The rule.json keys tried for a question, in order. LLaVA's script for in-the-wild contexts looks up
    `llava_bench_<category>`, its script for the COCO caps_boxes file the category itself."""
    if context_shape == "llava_wild" and not category.startswith("llava_bench_"):
        return [f"llava_bench_{category}", category]
    return [category]


def pick_rule(rules: dict[str, Rule], item: JudgeItem, path: Path) -> str:
    keys = rule_keys(item.task, item.context_shape)
    found = next((key for key in keys if key in rules), None)
    if found is None:
        tried = " or ".join(repr(key) for key in keys)
        raise InputError(
            f"--rule {path}: no rule for category {item.task!r} of question {item.item_id} (looked up {tried}); "
            f"add it to the rule file (it has: {', '.join(rules)})"
        )
    return found


# -- requests ---------------------------------------------------------------------------------------


def rule_message(item: JudgeItem, first: str, second: str, rule: Rule) -> str:
    """The user turn as LLaVA's eval_gpt_review_visual.py / _bench.py lay it out; Answer 1 is whichever is shown first."""
    role = rule.role
    return (
        f"[Context]\n{item.context}\n\n[Question]\n{item.question}\n\n"
        f"[{role} 1]\n{first}\n\n[End of {role} 1]\n\n[{role} 2]\n{second}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule.prompt}\n\n"
    )


def build_request(
    item: JudgeItem, order: Order, model: str, system: str, template: str, options: JudgeOptions, rule: Rule | None = None
) -> ChatRequest:
    first, second = (item.reference, item.candidate) if order == "reference_first" else (item.candidate, item.reference)
    if rule is not None:
        user = rule_message(item, first, second, rule)
    else:
        # str.replace, not format: answers are free text and may hold braces.
        user = template
        for name, value in (("{context}", item.context), ("{question}", item.question), ("{answer_1}", first), ("{answer_2}", second)):
            user = user.replace(name, value.strip())
    return ChatRequest(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        seed=options.seed,
    )


def make_judges(options: JudgeOptions) -> list[Teacher]:
    if options.judge == "mock":
        names = options.judge_models or ["overlap"]
        unknown = [name for name in names if name.removeprefix("mock-") not in HEURISTICS]
        if unknown:
            raise InputError(f"--judge-model {unknown[0]}: the mock judge knows {', '.join(HEURISTICS)}")
        return [MockJudge(name.removeprefix("mock-")) for name in names]
    if not options.judge_models:
        raise InputError(f"--judge-model is required with --judge {options.judge}; pass the model name your endpoint serves (twice for two judges)")
    judges = []
    for model in options.judge_models:
        settings = taken_from(options, BackendSettings, kind=options.judge, model=model)
        judges.append(build_teacher(settings, {}, kind_flag="--judge", model_flag="--judge-model"))
    return judges


def _read_text(path: Path, flag: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{flag} {path}: cannot read it ({type(error).__name__}); pass a UTF-8 text file") from None
    if not text.strip():
        raise InputError(f"{flag} {path}: the file is empty; write the judge's instructions in it")
    return text


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the run ----------------------------------------------------------------------------------------


class JudgeJob(Job[tuple[dict, str]]):
    command = "judge"

    def __init__(self, options: JudgeOptions, loaded: LoadedItems, judges: list[Teacher] | None = None) -> None:
        if len(set(options.judge_models)) != len(options.judge_models):
            raise InputError("--judge-model: the same judge was given twice; give two different models to compare judges")
        self.options = options
        self.loaded = loaded
        self.concurrency = options.concurrency
        self.system = _read_text(options.system_prompt, "--judge-prompt")
        self.template = _read_text(USER_TEMPLATE, "user template")
        self.rules = load_rules(options.rule) if options.rule is not None else {}
        # Every question's rule is found before the first request: a missing one stops the run with nothing spent.
        self.rule_of = {(item.task, item.item_id): pick_rule(self.rules, item, options.rule) for item in loaded.items} if options.rule else {}
        # Callers embedding datagen (and tests) may bring their own backends; the CLI builds them from the options.
        self.judges = judges if judges is not None else make_judges(options)
        self.out = options.out
        self.fingerprint_parts = {
            "inputs": loaded.input_hashes,
            "system_prompt": _sha(self.system),
            "user_template": _sha(self.template),
            "rule": _sha(options.rule.read_text(encoding="utf-8")) if options.rule is not None else None,
            "judges": [judge.info.model_dump() for judge in self.judges],
            "temperature": options.temperature,
            "max_tokens": options.max_tokens,
            "seed": options.seed,
        }
        self.reviews: dict[tuple[str, str, str, str], Review] = {}  # (task, item, judge model, order) -> review
        self.skipped: Counter[str] = Counter()
        self.usage = UsageTotals()
        self.usage_by_judge: dict[str, UsageTotals] = {}  # judge model -> its tokens, each priced at its own rate
        self.display: Any = None  # the progress display, which knows what this run spent
        self.listener: Callable[[str], None] = lambda outcome: None  # each judgement's end, for the progress display

    def open(self) -> None:
        claim_folder(
            self.out, SETTINGS_FILE, ("fingerprint_parts",), [REVIEWS_FILE], self.fingerprint_parts, self.options.force,
            derived=[SUMMARY_FILE, TABLE_FILE],
        )
        base_url = self.judges[0].base_url
        write_json_atomic(
            self.out / SETTINGS_FILE,
            {
                "datagen_version": __version__,
                "command": self.options.command,
                "base_url": redact_url(base_url) if base_url else None,
                "fingerprint_parts": self.fingerprint_parts,
            },
        )
        path = self.out / REVIEWS_FILE
        if path.exists():
            JsonlAppender(path).close()  # repairs a line torn by a kill before reading
            for line in iter_jsonl(path):
                review = Review.model_validate(line)
                self.reviews[(review.task, review.item_id, review.judge.model, review.order)] = review
                self._paid(review.judge.model, review.usage)
        if self.options.use_cache:
            cache = ResponseCache(self.options.cache or self.out / CACHE_FILE)
            self.judges = [CachingTeacher(judge, cache) for judge in self.judges]
        self.writer = JsonlAppender(self.out / REVIEWS_FILE)

    def progress(self) -> contextlib.AbstractContextManager[Any]:
        from datagen.run.progress import ProgressDisplay

        display = self.display = ProgressDisplay(
            "judge", sum(1 for _ in self.pending()), lambda: self.usage, self.judges, enabled=self.options.progress, log_every=self.options.log_every,
            costing=self.costing(),
        )
        self.listener = display.advance
        return display

    def _paid(self, model: str, usage: Usage) -> None:
        self.usage = self.usage + usage
        self.usage_by_judge[model] = self.usage_by_judge.get(model, UsageTotals()) + usage

    def costing(self) -> Costing | None:
        """Each judge's tokens at its prices (--price-in/--price-out, else its model's list price); None unless every
        judge has prices, since a cost leaving one out would look complete."""
        prices = {
            judge.info.model: resolve_prices(None if judge.info.mock else judge.info.model, self.options.price_in, self.options.price_out)
            for judge in self.judges
        }
        known = {model: price for model, price in prices.items() if price is not None}
        if not known or len(known) < len(prices):
            return None
        source = "; ".join(dict.fromkeys(price.source for price in known.values()))
        return Costing(lambda: sum(price.cost(self.usage_by_judge.get(model, UsageTotals())) for model, price in known.items()), source)

    def pending(self) -> Iterator[tuple[JudgeItem, Teacher, Order]]:
        for item in self.loaded.items:
            for judge in self.judges:
                for order in ORDERS:
                    if (item.task, item.item_id, judge.info.model, order) not in self.reviews:
                        yield item, judge, order

    async def process(self, pending: tuple[JudgeItem, Teacher, Order]) -> None:
        item, judge, order = pending
        rule_key = self.rule_of.get((item.task, item.item_id))
        rule = self.rules[rule_key] if rule_key is not None else None
        request = build_request(item, order, judge.info.model, self.system, self.template, self.options, rule)
        try:
            reply = await judge.complete(request)
        except RetryableError:
            self.skipped["request_failed"] += 1  # not written: a rerun asks again
            self.listener("skipped")
            return
        parsed = parse_llava_scores(reply.text) if rule is not None else parse_scores(reply.text)
        common = dict(
            item_id=item.item_id, task=item.task, judge=judge.info, mock=judge.info.mock, order=order,
            request_key=request.key(), usage=reply.usage, rule=rule_key,
        )
        if parsed is None:
            wanted = "a first line of exactly two numbers" if rule is not None else "two scores from 1 to 10"
            review = Review(ok=False, reason=f"no {wanted} in the reply", raw=reply.text, **common)
        else:
            shown, reason = parsed
            first, second = shown if order == "reference_first" else shown[::-1]
            review = Review(ok=True, reference_score=first, candidate_score=second, shown_scores=list(shown), reason=reason, **common)
        self.writer.append(review)
        self.reviews[(item.task, item.item_id, judge.info.model, order)] = review
        self._paid(judge.info.model, reply.usage)
        self.listener("written" if review.ok else "rejected")  # a reply without two scores shows as rejected

    async def close(self) -> None:
        self.writer.close()
        for judge in self.judges:
            await judge.aclose()

    def verdict(self) -> tuple[str, str | None]:
        failure = self.failure()
        if failure is not None:
            return "failed", failure
        failed = self.skipped["request_failed"]
        if failed:
            last_error = next((judge.last_error for judge in self.judges if judge.last_error), None)
            because = f"; the judge's last error: {one_line(last_error)}" if last_error else ""
            return "incomplete", f"{failed} judgements got no answer after their retries (request_failed); rerun the same command to do them{because}"
        return "completed", None

    def finish(self, status: str, failure: str | None) -> tuple[dict, str]:
        return self.write_summary(status, failure)

    # -- the summary ------------------------------------------------------------------------------

    def pairs(self, model: str) -> list[Pair]:
        pairs = []
        for item in self.loaded.items:
            both = [self.reviews.get((item.task, item.item_id, model, order)) for order in ORDERS]
            if not all(review is not None and review.ok for review in both):
                continue
            first, second = both
            pairs.append(
                Pair(
                    item_id=item.item_id,
                    task=item.task,
                    reference=(first.reference_score + second.reference_score) / 2,
                    candidate=(first.candidate_score + second.candidate_score) / 2,
                    order_flip=winner(first.reference_score, first.candidate_score)
                    != winner(second.reference_score, second.candidate_score),
                )
            )
        return pairs

    def summary(self, status: str) -> dict:
        judged = failed = 0
        wanted = {(item.task, item.item_id) for item in self.loaded.items}
        for (task, item_id, _, _), review in self.reviews.items():
            if (task, item_id) in wanted:
                judged += review.ok
                failed += not review.ok
        per_item = len(ORDERS) * len(self.judges)
        skipped = Counter({reason: count * per_item for reason, count in self.loaded.skipped.items()})
        skipped.update(self.skipped)
        requested = (len(self.loaded.items) + sum(self.loaded.skipped.values())) * per_item
        not_reached = requested - judged - failed - sum(skipped.values())
        if not_reached > 0:
            skipped["not_reached"] = not_reached
        tables: dict[str, dict[str, TaskSummary]] = {}
        all_pairs: dict[str, list[Pair]] = {}
        for judge in self.judges:
            model = judge.info.model
            pairs = all_pairs[model] = self.pairs(model)
            by_task: dict[str, list[Pair]] = defaultdict(list)
            for pair in pairs:
                by_task[pair.task].append(pair)
            rows = {task: summarise(task_pairs, self.options.resamples, self.options.seed) for task, task_pairs in by_task.items()}
            rows["all"] = summarise(pairs, self.options.resamples, self.options.seed)
            tables[model] = rows
        agreements: list[Agreement] = []
        models = [judge.info.model for judge in self.judges]
        for index, first in enumerate(models):
            for second in models[index + 1:]:
                agreements.append(agreement(first, second, all_pairs[first], all_pairs[second]))
        return {
            "status": status,
            "rule": str(self.options.rule) if self.options.rule is not None else None,
            "judges": [judge.info.model_dump() for judge in self.judges],
            "mock": any(judge.info.mock for judge in self.judges),
            "counts": {
                "requested": requested,
                "judged": judged,
                "failed": {"no_scores": failed} if failed else {},
                "skipped": dict(skipped),
            },
            "usage": self.usage.model_dump(),
            "bootstrap": {"resamples": self.options.resamples, "seed": self.options.seed, "level": 95},
            "tables": {model: {task: row.model_dump() for task, row in rows.items()} for model, rows in tables.items()},
            "agreement": [item.model_dump() for item in agreements],
        }

    def failure(self) -> str | None:
        """Why a run that ended without an error still failed: not one pair got two scores in both orders."""
        if not self.loaded.items or any(self.pairs(judge.info.model) for judge in self.judges):
            return None
        counts = self.summary("failed")["counts"]
        outcomes = Counter({"judged": counts["judged"], **counts["failed"], **counts["skipped"]})
        detail = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()) if count)
        return f"no pair was scored in both orders, so there is nothing to compare ({detail}); see {REVIEWS_FILE} for the judge's replies"

    def write_summary(self, status: str, failure: str | None = None) -> tuple[dict, str]:
        summary = self.summary(status)
        if failure is not None:
            summary["failure"] = failure
        spent = self.display.spent() if self.display is not None else None
        if spent is not None:
            summary["cost"] = {"this_run": spent[0], "total": spent[1], "prices": self.display.costing.source}
        text = render_summary(summary)
        write_json_atomic(self.out / SUMMARY_FILE, summary)
        (self.out / TABLE_FILE).write_text(text + "\n", encoding="utf-8")
        return summary, text


def render_summary(summary: dict) -> str:
    parts = []
    for judge in summary["judges"]:
        label = f"judge {judge['model']}"
        if judge["mock"]:
            label += " (mock: a heuristic, its scores mean nothing for quality)"
        rows = {task: TaskSummary.model_validate(row) for task, row in summary["tables"][judge["model"]].items()}
        parts.append(f"{label}; relative % = mean(candidate) / mean(reference) x 100\n\n{table(rows)}")
    for item in summary["agreement"]:
        same = "-" if item["same_winner"] is None else f"{100 * item['same_winner']:.1f}%"
        correlations = ", ".join(
            f"{name} {'-' if item[name] is None else format(item[name], '.2f')}" for name in ("pearson", "spearman")
        )
        parts.append(
            f"judges {item['judges'][0]} vs {item['judges'][1]}: {item['pairs']} pairs, same winner {same}, "
            f"score differences {correlations}"
        )
    counts = summary["counts"]

    def total(kind: str) -> str:
        reasons = counts[kind]
        detail = " (" + ", ".join(f"{reason} {count}" for reason, count in reasons.items()) + ")" if reasons else ""
        return f"{kind} {sum(reasons.values())}{detail}"

    parts.append(
        f"judgements: requested {counts['requested']} = judged {counts['judged']} + {total('failed')} + {total('skipped')}; "
        + FAILURE_NOTE
    )
    if "cost" in summary:
        parts.append(cost_line(summary["cost"]["this_run"], summary["cost"]["total"], summary["cost"]["prices"]))
    return "\n\n".join(parts)


# LLaVA's scripts record such a reply as [-1, -1] and average it in, pulling both means down.
FAILURE_NOTE = "a reply without two scores is counted as failed and left out of the means (LLaVA's scripts average it in as -1, -1)"


def run_judge(options: JudgeOptions, loaded: LoadedItems, judges: list[Teacher] | None = None) -> tuple[dict, str]:
    return run_job(JudgeJob(options, loaded, judges))
