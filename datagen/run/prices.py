"""What a run's tokens cost: the --price-in/--price-out flags, or else the list price of a known hosted model.

LIST_PRICES are the providers' published list prices (USD per million tokens, standard tier: no Batch API, cached
input or long-context rates) as stated for PRICES_AS_OF. Prices change: check the providers' pricing pages, and
pass --price-in/--price-out to use others. Every cost printed names where its prices came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PRICES_AS_OF = "2026-03-01"

# model name -> (input, output) USD per million tokens. A name also matches with a date or "-latest" after it
# (gpt-4o-2024-08-06, claude-sonnet-4-5-20250929) and behind a router's provider prefix (openai/gpt-4o).
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-sonnet-4-0": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
}
_VERSION_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)?")
FLAGS = "--price-in/--price-out"


@dataclass(frozen=True)
class Prices:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens
    source: str  # where they came from, said beside every cost

    def cost(self, usage: Any) -> float:
        """USD for `usage`'s tokens (anything with prompt_tokens and completion_tokens)."""
        return self.of_tokens(usage.prompt_tokens, usage.completion_tokens)

    def of_tokens(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for that many prompt and completion tokens."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


def list_price(model: str | None) -> tuple[str, tuple[float, float]] | None:
    """The table's entry for `model` (its name in the table, its prices), or None for a model it does not hold."""
    if not model:
        return None
    name = model.lower().rsplit("/", 1)[-1]
    for known, prices in LIST_PRICES.items():
        if name.startswith(known) and _VERSION_SUFFIX.fullmatch(name[len(known):]):
            return known, prices
    return None


def resolve_prices(model: str | None, price_in: float | None, price_out: float | None) -> Prices | None:
    """The flags where given, the model's list price for a side they leave out; None when neither says anything.

    A side known from neither (one flag given, for a model the table lacks) is priced at 0, and the source says so."""
    listed = list_price(model)
    if price_in is None and price_out is None:
        if listed is None:
            return None
        known, (listed_in, listed_out) = listed
        return Prices(listed_in, listed_out, f"list prices of {known} as of {PRICES_AS_OF}, datagen/run/prices.py; check them, {FLAGS} override")
    if price_in is not None and price_out is not None:
        return Prices(price_in, price_out, FLAGS)
    given, missing = ("--price-in", "--price-out") if price_in is not None else ("--price-out", "--price-in")
    if listed is None:
        source = f"{given}; no {missing} and no list price for {model or 'this model'}, so those tokens are priced at 0"
        return Prices(price_in or 0.0, price_out or 0.0, source)
    known, (listed_in, listed_out) = listed
    return Prices(
        listed_in if price_in is None else price_in, listed_out if price_out is None else price_out,
        f"{given}, and for the rest the list price of {known} as of {PRICES_AS_OF}",
    )


def generate_prices(options: Any) -> Prices | None:
    """A generate run's prices (GenerateSettings): a mock teacher costs nothing unless the flags say otherwise."""
    return resolve_prices(options.model if options.teacher != "mock" else None, options.price_in, options.price_out)


def money(amount: float) -> str:
    # Small runs cost fractions of a cent; two decimals would print them all as 0.00.
    return f"{amount:,.2f}" if amount >= 1 else f"{amount:.4f}"


def cost_line(this_run: float, total: float, source: str) -> str:
    """How a run's summary says its cost: this run's (a resumed run paid only for what it did) and the folder's."""
    return f"cost: ${money(this_run)} this run, ${money(total)} for the folder in all (prices: {source})"


@dataclass(frozen=True)
class Costing:
    """What a job has spent so far in USD (its folder's tokens, earlier runs' included), and where its prices are from."""

    spent: Callable[[], float]
    source: str


def priced(prices: Prices | None, usage: Callable[[], Any]) -> Costing | None:
    """The costing of a job whose tokens so far `usage` gives, all at `prices`."""
    return Costing(lambda: prices.cost(usage()), prices.source) if prices is not None else None
