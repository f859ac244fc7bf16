"""`datagen filter RUN --judge-model M`: a judge model scores each record against its image's annotations; records
under --min-score move to rejects as `judge_score`, and every score lands in the record's `meta.judge`.

MAMmoTH-VL filters its pairs with a model judge, and distilabel's AI-feedback filter drops the bottom half; LLaVA's
judge (datagen/judge/) compares two answer sets and removes nothing. Here the judge sees one record at a time with
the captions and boxes its teacher saw (the captions+boxes context), and the rule pack (prompts/judge/
filter_system_message.txt, or --rules FILE) says how to score. Requests go through the teachers' factory (any
backend, its retries and rate limits) and a response cache, so a killed filter reruns for free; a record already
scored by the same judge and rules is not asked again.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from datagen.curate.settings import FilterSettings
from datagen.curate.moves import Move, Row, apply_moves, task_rows, turns
from datagen.errors import InputError
from datagen.files.lock import lock_folder
from datagen.formats.manifest import CurationStep, load_run_manifest
from datagen.formats.records import IMAGE_TOKEN, JudgeScore, TeacherInfo, Usage
from datagen.quality.grounding import claimed_categories
from datagen.run.options import taken_from
from datagen.run.prices import resolve_prices
from datagen.run.output_folder import SOURCE_SNAPSHOT_FILE
from datagen.source.coco import CocoSource
from datagen.source.context import render_context
from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.cache import CachingTeacher, ResponseCache
from datagen.teachers.factory import BackendSettings, build_teacher
from datagen.teachers.teacher import ChatReply, ChatRequest, RequestRefused, RetryableError, Teacher

JUDGE_CACHE_FILE = "judge-cache.sqlite"
TYPICAL_REPLY_TOKENS = 40  # three numbers and a sentence of reasons, for --dry-run's estimate
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


# -- the request and the reply ------------------------------------------------------------------------


def conversation_text(row: Row) -> str:
    lines = []
    for question, answer in zip(turns(row, "human"), turns(row, "gpt")):
        lines += [f"USER: {question.replace(IMAGE_TOKEN, '').strip()}", f"ASSISTANT: {answer.strip()}"]
    return "\n".join(lines)


def judge_request(context: str, row: Row, rules: str, settings: FilterSettings, model: str) -> ChatRequest:
    user = f"<context>\n{context}\n</context>\n\n<example>\n{conversation_text(row)}\n</example>"
    return ChatRequest(
        model=model, messages=[{"role": "system", "content": rules}, {"role": "user", "content": user}],
        temperature=0.0, max_tokens=settings.max_tokens, seed=settings.seed,
    )


def parse_scores(text: str) -> tuple[float, float, float] | None:
    """The first line's three numbers (commas allowed), each 1..10; None for anything else, which leaves the record
    unscored rather than guessed."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    parts = first.replace(",", " ").split()
    if len(parts) != 3 or not all(_NUMBER.match(part) for part in parts):
        return None
    values = tuple(float(part) for part in parts)
    if not all(1 <= value <= 10 for value in values):
        return None
    return values[0], values[1], values[2]


def judge_score(scores: tuple[float, float, float] | None, model: str, rules_sha256: str) -> JudgeScore:
    if scores is None:
        return JudgeScore(model=model, accuracy=None, helpfulness=None, detail=None, score=None, rules_sha256=rules_sha256)
    accuracy, helpfulness, detail = scores
    return JudgeScore(
        model=model, accuracy=accuracy, helpfulness=helpfulness, detail=detail, score=round(sum(scores) / 3, 3), rules_sha256=rules_sha256
    )


# -- the scripted judge for CI --------------------------------------------------------------------------

_TAGGED = re.compile(r"<context>\n(?P<context>.*?)\n</context>\n\n<example>\n(?P<example>.*?)\n</example>", re.DOTALL)
_CONTENT = re.compile(r"[a-z]{4,}")


class ScriptedJudge(Teacher):
    """An offline judge with a rule anyone can check, labelled mock: accuracy loses 3 points per COCO category the
    answers name and the context does not; helpfulness is 8 when the answers reuse a word of the questions, else 4;
    detail grows one point per 6 distinct words of four letters or more. It says nothing about quality; it runs the whole filter path in CI."""

    def __init__(self) -> None:
        self.info = TeacherInfo(kind="mock", model="mock-judge", mock=True)
        self.stats: Counter[str] = Counter()

    async def complete(self, request: ChatRequest) -> ChatReply:
        self.stats["requests"] += 1
        prompt = str(request.messages[-1]["content"])
        match = _TAGGED.search(prompt)
        if match is None:
            text = "The request held no <context> and <example> sections."
        else:
            questions = [line[6:] for line in match["example"].splitlines() if line.startswith("USER: ")]
            answers = [line[11:] for line in match["example"].splitlines() if line.startswith("ASSISTANT: ")]
            shown = {name for names in claimed_categories([match["context"]]) for name in names}
            shown |= {line.split(":")[0] for line in match["context"].splitlines() if ": [" in line}
            invented = {names[0] for names in claimed_categories(answers) if not shown.intersection(names)}
            asked = set(_CONTENT.findall(" ".join(questions).lower()))
            accuracy = max(1, 10 - 3 * len(invented))
            helpfulness = 8 if asked & set(_CONTENT.findall(" ".join(answers).lower())) else 4
            # Distinct words: the rule pack says padding and repetition are not detail.
            detail = min(10, 1 + len(set(_CONTENT.findall(" ".join(answers).lower()))) // 6)
            text = f"{accuracy} {helpfulness} {detail}\nScripted mock judge: {len(invented)} objects not in the context."
        usage = Usage(prompt_tokens=sum(estimate_tokens(str(m["content"])) for m in request.messages), completion_tokens=estimate_tokens(text))
        return ChatReply(text=text, finish_reason="stop", usage=usage)

    async def aclose(self) -> None:
        return None


MOCK_JUDGES = {"mock": ScriptedJudge}


# -- the command ----------------------------------------------------------------------------------------


def _rules(path: Path) -> tuple[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise InputError(f"--rules {path}: not a readable text file; pass the judge's system message (see prompts/judge/filter_system_message.txt)") from None
    if not text.strip():
        raise InputError(f"--rules {path}: empty; pass the judge's system message")
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]


def _source(folder: Path, settings: FilterSettings, captions: str, instances: str | None) -> CocoSource:
    captions_path = settings.captions or Path(captions)
    instances_path = settings.instances or (Path(instances) if instances else None)
    if not captions_path.is_file():
        raise InputError(f"--captions {captions_path}: not found (the file the run was made from); pass --captions and --instances")
    # The run's own snapshot, when it was made from these files: no JSON parsed again.
    return CocoSource(captions_path, instances_path, snapshot=folder / SOURCE_SNAPSHOT_FILE)


class FilterOutcome(BaseModel):
    examined: int
    scored: int  # by this invocation (asked, or answered from the cache)
    reused: int  # scored before by the same judge and rules
    unscored: int  # no usable reply: kept, asked again by a rerun
    moved: dict[str, int]
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    notes: list[str] = []


# A judge that gives nearly every record the same three numbers tells none apart (Qwen2.5-Coder-1.5B copied its rule
# pack's format example for all 74 records of bench/results_judge_filter.md): its --min-score keeps or moves them all.
SAME_SCORES_SHARE = 0.9
SAME_SCORES_MIN_RECORDS = 10


def same_scores_note(scores: Iterable[JudgeScore], model: str) -> str | None:
    """One line when (nearly) every record got the same scores from `model`; None while they differ."""
    triples = Counter((score.accuracy, score.helpfulness, score.detail) for score in scores if score.score is not None and score.model == model)
    total = sum(triples.values())
    if total < SAME_SCORES_MIN_RECORDS:
        return None
    [(triple, count)] = triples.most_common(1)
    if count < SAME_SCORES_SHARE * total:
        return None
    shown = " ".join(f"{value:g}" for value in triple if value is not None)
    return (
        f"the judge {model} gave {count} of {total} records the same scores ({shown}): it is not telling them apart, so --min-score keeps or "
        "moves them alike; judge with a stronger --judge-model, or a --rules pack it does not echo"
    )


def _cost(settings: FilterSettings, prompt: int, completion: int) -> float | None:
    # The flags only: a judge's list price is not looked up here (model=None), a side left out costs 0.
    prices = resolve_prices(None, settings.price_in, settings.price_out)
    return prices.of_tokens(prompt, completion) if prices is not None else None


async def _ask_all(teacher: Teacher, requests: dict[str, ChatRequest], concurrency: int) -> dict[str, ChatReply]:
    replies: dict[str, ChatReply] = {}
    pending = iter(requests.items())

    async def worker() -> None:
        for key, request in pending:  # one shared iterator: a free worker takes the next record
            try:
                replies[key] = await teacher.complete(request)
            except (RetryableError, RequestRefused):
                continue  # unscored: kept as it is, and asked again by a rerun

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, concurrency)):
                group.create_task(worker())
    finally:
        await teacher.aclose()
    return replies


def filter_run(folder: Path, settings: FilterSettings, command: list[str], dry_run: bool = False) -> tuple[FilterOutcome, CurationStep | None]:
    rules, rules_sha256 = _rules(settings.rules)
    if not folder.is_dir():
        load_run_manifest(folder, "filter")  # names the missing folder; the lock would create it
    with lock_folder(folder, "filter"):
        manifest = load_run_manifest(folder, "filter")
        backend = taken_from(settings, BackendSettings, kind=settings.judge, model=settings.judge_model)
        # A dry run needs no key: it prices the requests, it sends none.
        teacher = None if dry_run else build_teacher(backend, MOCK_JUDGES, kind_flag="--judge", model_flag="--judge-model")
        model = teacher.info.model if teacher is not None else MOCK_JUDGES[settings.judge]().info.model if settings.judge in MOCK_JUDGES else settings.judge_model
        if model is None:
            raise InputError(f"--judge-model is required with --judge {settings.judge}: the model that scores the records")
        source = _source(folder, settings, manifest.source.captions_file, manifest.source.instances_file)
        rows = list(task_rows(folder))
        known = set(source.image_ids)
        scores: dict[str, JudgeScore] = {}
        requests: dict[str, ChatRequest] = {}
        for row in rows:
            earlier = row.data["meta"].get("judge")
            if isinstance(earlier, dict) and earlier.get("model") == model and earlier.get("rules_sha256") == rules_sha256 and earlier.get("score") is not None:
                scores[row.key] = JudgeScore.model_validate(earlier)
                continue
            image_id = row.data["meta"].get("image_id")
            image = source.image(image_id) if image_id in known else None
            if image is None:
                continue  # an image the source no longer has: nothing to judge against, kept as it is
            requests[row.key] = judge_request(render_context(image, "captions+boxes"), row, rules, settings, model)
        reused = len(scores)
        if dry_run:
            prompt = sum(estimate_tokens(rules) + estimate_tokens(str(r.messages[-1]["content"])) + 8 for r in requests.values())
            completion = len(requests) * TYPICAL_REPLY_TOKENS
            return FilterOutcome(
                examined=len(rows), scored=0, reused=reused, unscored=len(rows) - reused, moved={}, requests=len(requests),
                prompt_tokens=prompt, completion_tokens=completion, cost=_cost(settings, prompt, completion),
            ), None
        assert teacher is not None
        cache = ResponseCache(settings.cache or folder / JUDGE_CACHE_FILE) if settings.use_cache else None
        asking: Teacher = CachingTeacher(teacher, cache) if cache is not None else teacher
        try:
            replies = asyncio.run(_ask_all(asking, requests, settings.concurrency))
        finally:
            if cache is not None:
                cache.close()
        for key, reply in replies.items():
            parsed = parse_scores(reply.text)
            if parsed is not None:
                scores[key] = judge_score(parsed, model, rules_sha256)
        updated, moves = {}, []
        for row in rows:
            score = scores.get(row.key)
            if score is None:
                continue
            data = {**row.data, "meta": {**row.data["meta"], "judge": score.model_dump()}}
            updated[row.key] = data
            if score.score is not None and score.score < settings.min_score:
                moves.append(Move(Row(row.task, row.number, data), "judge_score", f"judge {model} scored {score.score} < --min-score {settings.min_score}"))
        prompt = sum(reply.usage.prompt_tokens or 0 for reply in replies.values())
        completion = sum(reply.usage.completion_tokens or 0 for reply in replies.values())
        outcome = FilterOutcome(
            examined=len(rows), scored=len(scores) - reused, reused=reused, unscored=len(rows) - len(scores),
            moved=dict(Counter(move.row.task for move in moves)), requests=asking.stats["requests"],
            prompt_tokens=prompt, completion_tokens=completion, cost=_cost(settings, prompt, completion),
            notes=[note] if (note := same_scores_note(scores.values(), model)) is not None else [],
        )
        step_settings = {
            "judge": settings.judge, "model": model, "mock": teacher.info.mock, "min_score": settings.min_score,
            "rules": str(settings.rules), "rules_sha256": rules_sha256, "scored": len(scores), "unscored": outcome.unscored,
            "requests_sent": outcome.requests, "cache_hits": asking.stats["cache_hits"],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        }
        step = apply_moves(folder, manifest, moves, "filter", command, step_settings, examined=len(rows), updated=updated)
    return outcome, step
