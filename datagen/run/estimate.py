"""`generate --dry-run`: how many requests a run would send and roughly how many tokens, sending nothing.

Prompt tokens are estimated at about four characters per token plus a few per message for the chat framing
(real tokenizers differ by some tens of percent); completion tokens at the length of the prompt pack's own
example answers, capped at the token limit, with the limit itself as the upper bound. Images (`--see
image|both`) are estimated with OpenAI's tile formula for GPT-4o-class models at detail=high
(datagen.teachers.vision.image_tokens: 85 + 170 per 512-px tile after scaling to fit 2048 and a 768 shorter side).
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from datagen.run.batch import item_of
from datagen.run.handoff import planned_requests
from datagen.run.options import GenerateOptions
from datagen.run.prices import generate_prices, money
from datagen.tasks.registry import task_spec
from datagen.tasks.token_estimate import estimate_tokens
from datagen.teachers.vision import content_image_tokens, content_text_tokens

MESSAGE_FRAMING_TOKENS = 4  # role and separators around each chat message


class Estimate(BaseModel):
    requests: int
    prompt_tokens: int
    image_tokens: int = 0  # part of prompt_tokens
    completion_tokens: int
    completion_tokens_max: int
    skipped: dict[str, int] = {}  # items a live run would skip, by reason (image_missing...)
    cost: float | None = None
    cost_max: float | None = None
    prices: str | None = None  # where the prices came from: the flags or the list-price table


def estimate(options: GenerateOptions) -> Estimate:
    typical = {}
    for task in options.tasks:
        shots = task_spec(task).load_pack(options.prompts).shots
        typical[task] = sum(estimate_tokens(shot.response) for shot in shots) // max(1, len(shots))
    requests = prompt = images = completion = completion_max = 0
    skipped: Counter[str] = Counter()
    for cid, request in planned_requests(options, skipped):
        task = item_of(cid).task
        requests += 1
        for message in request.messages:
            image = content_image_tokens(message["content"])
            prompt += content_text_tokens(message["content"]) + image + MESSAGE_FRAMING_TOKENS
            images += image
        completion += min(typical[task] or request.max_tokens, request.max_tokens)
        completion_max += request.max_tokens
    result = Estimate(
        requests=requests,
        prompt_tokens=prompt,
        image_tokens=images,
        completion_tokens=completion,
        completion_tokens_max=completion_max,
        skipped=dict(sorted(skipped.items())),
    )
    prices = generate_prices(options)
    if prices is not None:
        result.cost = prices.of_tokens(prompt, completion)
        result.cost_max = prices.of_tokens(prompt, completion_max)
        result.prices = prices.source
    return result


def describe(result: Estimate) -> str:
    lines = [
        f"dry run: {result.requests} requests would be sent (nothing was sent)",
        f"estimated tokens: {result.prompt_tokens:,} prompt + {result.completion_tokens:,} completion"
        f" (at most {result.completion_tokens_max:,} completion)",
    ]
    if result.skipped:
        reasons = ", ".join(f"{reason} {count}" for reason, count in result.skipped.items())
        lines.append(f"{sum(result.skipped.values())} items would be skipped ({reasons}), not counted above")
    if result.image_tokens:
        lines.append(f"of the prompt tokens, {result.image_tokens:,} are images (OpenAI's detail=high tile formula; other servers count differently)")
    if result.cost is not None:
        lines.append(
            f"estimated cost: {money(result.cost)} (at most {money(result.cost_max or result.cost)}) before any prompt-cache discount; prices: {result.prices}"
        )
    return "\n".join(lines)
