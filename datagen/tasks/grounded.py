"""Grounded tasks: our code picks, from an image's boxes, the questions whose answers the boxes decide (a count, a
relation, an object's presence, a box), and shows them to the teacher with their facts; the teacher phrases one
Question/Answer pair per planned question, and each answer is checked exactly against its fact
(datagen/quality/verifiers.py). A plan is a pure function of the image, the source's object statistics and a seed,
so the request and the check of its answer plan alike.

What may be asked (each rule keeps out questions whose truth the annotations do not settle):
- a box is tiny below COCO's "small" size, 32 x 32 pixels: such objects are often left unannotated and hard to see;
- a category our word list does not read by its own name ("orange", mostly a colour) is never asked about;
- counting asks about a category with no crowd box, no tiny box and at most `MAX_COUNT` boxes;
- spatial, referring and the present half of absent_objects ask about categories boxed exactly once (for presence:
  boxed at least once), with no crowd box and no tiny box, so "the dog" names one object;
- spatial asks left/right when the two boxes overlap horizontally by at most `MAX_OVERLAP` of the narrower one's
  width and their centres lie at least `MIN_GAP` of the image width apart; else above/below by the same rule on the
  vertical axis; else nothing about that pair;
- absent_objects asks about as many absent categories as present ones (`ABSENT_SHARE`), absent meaning no box of
  it (crowd included) and no caption claiming it, each drawn as POPE draws: at random, the most frequent in the
  source (popular) or the most often seen with the image's objects (adversarial), the three in turn;
- referring asks what a region `[x1, y1, x2, y2]` (corners normalised, LLaVA-1.5's way) holds, and where one
  object is, answered with such a box.
An image where nothing may be asked is skipped as `unaskable`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import cache
from itertools import combinations
from typing import Literal

from pydantic import BaseModel

from datagen.quality.grounding import claimed_categories, mentions
from datagen.quality.parse import Rejected
from datagen.quality.verifiers import Corners, iou, stated_boxes, verify_box, verify_count, verify_named, verify_presence, verify_relation
from datagen.source.coco import Box, ImageAnnotations, ObjectStats

TINY_SIDE_PX = 32
MAX_COUNT = 10
COUNT_QUESTIONS = 3
MAX_OVERLAP = 0.1
MIN_GAP = 0.15
RELATION_QUESTIONS = 2
PRESENT_QUESTIONS = 2
ABSENT_SHARE = 0.5
SAMPLINGS = ("random", "popular", "adversarial")
HEADER = "Questions to write, in this order, each with the fact its answer must state:"

Kind = Literal["count", "relation", "presence", "region", "locate"]


class Probe(BaseModel):
    """One planned question and its truth."""

    kind: Kind
    category: str
    other: str | None = None  # relation: the reference object
    truth: str  # the fact as the teacher is shown it: a number, left/right/above/below, yes/no, a category, a box
    box: Corners | None = None  # region and locate: the object's corners
    sampling: str | None = None  # presence of an absent object: how POPE would have drawn it

    def line(self) -> str:
        """The question's line in the teacher's context."""
        if self.kind == "count":
            return f"how many {self.category}: {self.truth}"
        if self.kind == "relation":
            axis = "left or right of" if self.truth in ("left", "right") else "above or below"
            return f"is the {self.category} {axis} the {self.other}: {self.truth}"
        if self.kind == "presence":
            return f"is there a {self.category}: {self.truth}"
        if self.kind == "region":
            return f"what is in region {list(self.box or ())}: {self.truth}"
        return f"where is the {self.category}: {self.truth}"

    def check_question(self, question: str, image: ImageAnnotations) -> None:
        """The teacher's question asks what was planned: it names the object(s), or holds the region's box."""
        if self.kind == "region":
            assert self.box is not None
            if not any(iou(box, self.box) >= 0.5 for box in stated_boxes(question, image.width, image.height)):
                raise Rejected("off_plan_question", f"does not give the region {list(self.box)} it was to ask about")
            return
        named = {category for mention in mentions(question) for category in mention.categories}
        for wanted in (self.category, self.other):
            if wanted is not None and wanted not in named:
                raise Rejected("off_plan_question", f"does not name the {wanted} it was to ask about")

    def check_answer(self, answer: str, image: ImageAnnotations) -> None:
        if self.kind == "count":
            verify_count(answer, self.category, int(self.truth))
        elif self.kind == "relation":
            assert self.other is not None
            verify_relation(answer, self.category, self.other, self.truth)
        elif self.kind == "presence":
            verify_presence(answer, self.category, self.truth == "yes")
        elif self.kind == "region":
            verify_named(answer, self.category)
        else:
            assert self.box is not None
            verify_box(answer, self.box, image.width, image.height, self.category)


def corners(box: Box) -> Corners:
    return (box.x1, box.y1, box.x2, box.y2)


def is_tiny(box: Box, image: ImageAnnotations) -> bool:
    return (box.x2 - box.x1) * image.width * (box.y2 - box.y1) * image.height < TINY_SIDE_PX * TINY_SIDE_PX


def _by_category(image: ImageAnnotations) -> dict[str, list[Box]]:
    found: dict[str, list[Box]] = {}
    for box in image.boxes:
        found.setdefault(box.category, []).append(box)
    return found


@cache
def nameable(category: str) -> bool:
    """Whether our word list reads the category's own name as it ("orange" it does not: mostly a colour); the checks
    of an answer could not read a question or an answer about one that it does not."""
    return any(category in mention.categories for mention in mentions(f"There is one {category} here."))


def clear_categories(image: ImageAnnotations, most: int | None = 1) -> dict[str, list[Box]]:
    """Categories whose every box is clear (no crowd box of it, none tiny), with at most `most` boxes, and nameable."""
    return {
        name: boxes
        for name, boxes in _by_category(image).items()
        if name not in image.crowd
        and (most is None or len(boxes) <= most)
        and not any(is_tiny(box, image) for box in boxes)
        and nameable(name)
    }


def plan_counting(image: ImageAnnotations, stats: Callable[[], ObjectStats], rng: random.Random) -> list[Probe]:
    countable = sorted(clear_categories(image, MAX_COUNT).items())
    rng.shuffle(countable)
    return [Probe(kind="count", category=name, truth=str(len(boxes))) for name, boxes in countable[:COUNT_QUESTIONS]]


def relation(first: Corners, second: Corners) -> str | None:
    """Where `first` lies relative to `second` when the boxes leave no doubt (the module's margin rule), else None."""
    for low, high, before, after in ((0, 2, "left", "right"), (1, 3, "above", "below")):
        overlap = min(first[high], second[high]) - max(first[low], second[low])
        narrower = min(first[high] - first[low], second[high] - second[low])
        gap = (second[low] + second[high]) / 2 - (first[low] + first[high]) / 2
        if overlap <= MAX_OVERLAP * narrower and abs(gap) >= MIN_GAP:
            return before if gap > 0 else after
    return None


def plan_spatial(image: ImageAnnotations, stats: Callable[[], ObjectStats], rng: random.Random) -> list[Probe]:
    singles = sorted((name, corners(boxes[0])) for name, boxes in clear_categories(image).items())
    pairs = list(combinations(singles, 2))
    rng.shuffle(pairs)
    probes = []
    for (a, a_box), (b, b_box) in pairs:
        if rng.random() < 0.5:  # either object may be the subject
            (a, a_box), (b, b_box) = (b, b_box), (a, a_box)
        found = relation(a_box, b_box)
        if found is not None:
            probes.append(Probe(kind="relation", category=a, other=b, truth=found))
        if len(probes) == RELATION_QUESTIONS:
            break
    return probes


def _absent_candidates(image: ImageAnnotations, stats: ObjectStats) -> list[str]:
    shown = {box.category for box in image.boxes} | set(image.crowd)
    shown |= {category for categories in claimed_categories(image.captions) for category in categories}
    return sorted(name for name in stats.together if name not in shown and nameable(name))


def _draw_absent(candidates: list[str], present: list[str], stats: ObjectStats, sampling: str, rng: random.Random) -> str:
    if sampling == "random":
        return rng.choice(candidates)
    if sampling == "popular":
        return max(candidates, key=lambda name: (stats.images_with[name], name))
    return max(candidates, key=lambda name: (sum(stats.together[seen][name] for seen in present), name))


def plan_absent_objects(image: ImageAnnotations, stats: Callable[[], ObjectStats], rng: random.Random) -> list[Probe]:
    present = sorted(clear_categories(image, None))
    rng.shuffle(present)
    present = present[:PRESENT_QUESTIONS]
    absent_wanted = round(len(present) * ABSENT_SHARE / (1 - ABSENT_SHARE))
    candidates = _absent_candidates(image, stats()) if present else []
    probes = [Probe(kind="presence", category=name, truth="yes") for name in present]
    first = rng.randrange(len(SAMPLINGS))
    for index in range(absent_wanted):
        if not candidates:
            break
        sampling = SAMPLINGS[(first + index) % len(SAMPLINGS)]
        name = _draw_absent(candidates, present, stats(), sampling, rng)
        candidates.remove(name)
        probes.append(Probe(kind="presence", category=name, truth="no", sampling=sampling))
    if len(probes) < 2 or all(probe.truth == "yes" for probe in probes):
        return []  # a set of yes-only questions would teach a model to say yes
    rng.shuffle(probes)
    return probes


def plan_referring(image: ImageAnnotations, stats: Callable[[], ObjectStats], rng: random.Random) -> list[Probe]:
    singles = sorted((name, corners(boxes[0])) for name, boxes in clear_categories(image).items())
    others = [corners(box) for box in image.boxes]
    # A region shared (IoU >= 0.5) with another box could be read as either object.
    singles = [(name, box) for name, box in singles if sum(iou(box, other) >= 0.5 for other in others) == 1]
    rng.shuffle(singles)
    probes = []
    if len(singles) >= 2:
        name, box = singles.pop()
        probes.append(Probe(kind="region", category=name, truth=name, box=box))
    if singles:
        name, box = singles.pop()
        probes.append(Probe(kind="locate", category=name, truth=str(list(box)), box=box))
    return probes


Planner = Callable[[ImageAnnotations, Callable[[], ObjectStats], random.Random], list[Probe]]


def brief(probes: list[Probe]) -> str:
    """The lines appended to the teacher's context: what to ask, in order, with each answer's fact."""
    return "\n".join([HEADER, *(f"{number}. {probe.line()}" for number, probe in enumerate(probes, 1))])


_BRIEF_LINE = re.compile(r"^\d+\. (.+)$")
_LINES: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    ("count", re.compile(r"^how many (?P<category>.+): (?P<truth>\d+)$")),
    ("relation", re.compile(r"^is the (?P<category>.+) (?:left or right of|above or below) the (?P<other>.+): (?P<truth>left|right|above|below)$")),
    ("presence", re.compile(r"^is there an? (?P<category>.+): (?P<truth>yes|no)$")),
    ("region", re.compile(r"^what is in region (?P<box>\[[^\]]*\]): (?P<truth>(?P<category>.+))$")),
    ("locate", re.compile(r"^where is the (?P<category>.+): (?P<truth>(?P<box>\[[^\]]*\]))$")),
)


def probe_of_line(line: str) -> Probe | None:
    """The planned question a brief's line states (`Probe.line` read back), or None for a line of no known form."""
    for kind, pattern in _LINES:
        match = pattern.match(line)
        if match is None:
            continue
        found = match.groupdict()
        box = tuple(float(value) for value in found["box"].strip("[]").split(",")) if found.get("box") else None
        if box is not None and len(box) != 4:
            return None
        return Probe(kind=kind, category=found["category"], other=found.get("other"), truth=found["truth"], box=box)
    return None


def brief_probes(context: str) -> list[Probe]:
    """The planned questions of a context holding a brief (what a teacher reads), else []."""
    head, found, tail = context.partition(HEADER + "\n")
    if not found:
        return []
    lines = [match.group(1) for line in tail.splitlines() if (match := _BRIEF_LINE.match(line.strip()))]
    return [probe for probe in map(probe_of_line, lines) if probe is not None]


def verify_pairs(probes: list[Probe], pairs: list[tuple[str, str]], image: ImageAnnotations) -> None:
    """Each Question/Answer pair against its planned question, in order; the first failure is the reject."""
    if len(pairs) != len(probes):
        raise Rejected("wrong_turn_count", f"{len(probes)} questions were planned, the reply has {len(pairs)} Question/Answer pairs")
    for number, (probe, (question, answer)) in enumerate(zip(probes, pairs, strict=True), 1):
        try:
            probe.check_question(question, image)
            probe.check_answer(answer, image)
        except Rejected as rejection:
            raise Rejected(rejection.reason, f"question {number}: {rejection.detail}") from None
