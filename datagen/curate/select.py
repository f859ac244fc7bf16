"""Selection before generating (`generate --select coverage --budget N`): which N images are worth a teacher's time.

PreSel (2025) matched the full set with instructions for 15% of the images, picked before anything was generated;
Cambrian-1 caps each source and balances categories. Here an image is worth what it adds: each COCO category
it shows adds 1 / (1 + images already chosen that show it), so rare categories come first and common ones keep
diminishing; each caption word no chosen image has yet adds a little. Both gains only shrink as images are
chosen, so the lazy greedy pick (re-score the top of the heap, take it if it still beats the next) is exact. No
category goes into more than the cap's images while other images remain; ties go by a seeded shuffle.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections import Counter
from typing import NamedTuple

from datagen.formats.manifest import ImageSelection
from datagen.source.coco import CocoSource

SELECT_METHODS = ("coverage",)
CATEGORY_SHARE = 0.25  # default cap: no category in more than a quarter of the chosen images
WORD_GAIN = 0.1  # a new caption word is worth a tenth of a new category
_WORD = re.compile(r"[a-z]{3,}")
# Words every caption has: they tell images apart no better than chance.
_COMMON = frozenset(
    "the and with are for that this there some its has have his her their from into onto near next down over "
    "while who which other two three four one sitting standing".split()
)


class Candidate(NamedTuple):
    image_id: int
    categories: frozenset[str]
    words: frozenset[str]


def candidates(source: CocoSource, image_ids: list[int]) -> list[Candidate]:
    """The images that can be asked about (a usable caption), with what each covers."""
    found = []
    for image_id in image_ids:
        support = source.support(image_id)
        if support is None:
            continue
        words = frozenset(word for caption in support.captions for word in _WORD.findall(caption.lower()) if word not in _COMMON)
        found.append(Candidate(image_id, support.categories, words))
    return found


def histogram(chosen: list[Candidate]) -> dict[str, int]:
    """Images per category, most frequent first (then by name)."""
    counts = Counter(category for candidate in chosen for category in candidate.categories)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def choose(pool: list[Candidate], budget: int, seed: int, cap: int | None = None) -> tuple[list[Candidate], int]:
    """Up to `budget` images of `pool` by greedy coverage; and the per-category cap used."""
    cap = cap if cap is not None else max(1, math.ceil(budget * CATEGORY_SHARE))
    if budget >= len(pool):
        return list(pool), cap
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    shown: Counter[str] = Counter()
    seen_words: set[str] = set()

    def gain(candidate: Candidate) -> float:
        return sum(1.0 / (1 + shown[c]) for c in candidate.categories) + WORD_GAIN * len(candidate.words - seen_words)

    # Max-heap by gain; the seeded rank breaks ties, so one seed always picks the same images.
    heap = [(-gain(pool[index]), rank, index) for rank, index in enumerate(order)]
    heapq.heapify(heap)
    picked: list[int] = []
    over_cap: list[int] = []  # held back while other images remain
    while heap and len(picked) < budget:
        _, rank, index = heapq.heappop(heap)
        candidate = pool[index]
        if any(shown[c] >= cap for c in candidate.categories):
            over_cap.append(rank)
            continue
        fresh = gain(candidate)
        if heap and -heap[0][0] > fresh:
            heapq.heappush(heap, (-fresh, rank, index))  # stale score: it may no longer be the best
            continue
        picked.append(index)
        shown.update(candidate.categories)
        seen_words |= candidate.words
    # The cap leaves the budget short only when too few images avoid the capped categories: fill in seeded order.
    for rank in sorted(over_cap)[: budget - len(picked)]:
        picked.append(order[rank])
    return [pool[index] for index in sorted(picked, key=lambda index: pool[index].image_id)], cap


class Selection(NamedTuple):
    image_ids: list[int]
    record: ImageSelection
    note: str | None  # said once when the budget exceeds the images


def select_images(source: CocoSource, image_ids: list[int], budget: int, seed: int, cap: int | None = None) -> Selection:
    pool = candidates(source, image_ids)
    chosen, used_cap = choose(pool, budget, seed, cap)
    note = None
    if budget >= len(pool):
        note = f"--budget {budget} is not less than the {len(pool)} images there are to choose from; taking them all"
    record = ImageSelection(
        method="coverage", budget=budget, seed=seed, candidates=len(pool), chosen=len(chosen), per_category_cap=used_cap,
        categories_before=histogram(pool), categories_after=histogram(chosen),
    )
    return Selection([candidate.image_id for candidate in chosen], record, note)


def describe(record: ImageSelection) -> str:
    """The category histogram before and after, one category a line, for --dry-run."""
    lines = [
        f"selection: {record.chosen} of {record.candidates} images by coverage (seed {record.seed}, at most "
        f"{record.per_category_cap} images per category while others remain)",
        f"{'category':<20} {'before':>8} {'after':>8}",
    ]
    for category, before in record.categories_before.items():
        lines.append(f"{category:<20} {before:>8} {record.categories_after.get(category, 0):>8}")
    return "\n".join(lines)
