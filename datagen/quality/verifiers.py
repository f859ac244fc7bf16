"""Exact checks of answers whose truth the boxes decide: a count, a left/right/above/below relation, a yes or no
about an object, a box. Each reads one answer and returns what it states (None when it states nothing the check
can read); `verify_*` compares that with the truth and raises `Rejected` with a named reason.

How an answer is read:
- A count is the sum, in the first clause that counts the category, of each number standing right before a word
  of the category ("two dogs and a puppy" is three dogs; "one of the dogs" counts nothing). The clause ends at a
  comma, colon, semicolon, dash or bracket, where answers go on to say who the counted are ("two people, a man and
  a woman" is two). Numbers may be digits or words up to twenty; "a"/"an" count one, "a pair of" two. An answer
  naming no counted object ("Three.") is read as its first number.
- A relation is read from the first sentence that states one, from the viewer's side: "the dog is to the left of
  the cat", "the cat is on the right of the dog" (the same fact, its objects swapped), "the cat is to the dog's
  right". A sentence taking an object's own point of view ("from the dog's perspective") or negating the relation
  states nothing this check trusts.
- Yes/no is read from the first sentence: its opening "Yes" or "No"; else a negation word makes it "no" (as POPE's
  scorer reads it), and "yes" is read when it claims the object.
- A box is `[x1, y1, x2, y2]` (or in parentheses): four numbers no larger than 1 are corners normalised to the
  image size, LLaVA-1.5's way; larger ones are pixels. A box matches when its IoU with the truth is at least 0.5.
"""

from __future__ import annotations

import re

from datagen.quality.grounding import mentions
from datagen.quality.object_words import find_forms
from datagen.quality.parse import Rejected
from datagen.quality.patterns import SENTENCE_END
from datagen.formats.records import RejectReason

Corners = tuple[float, float, float, float]

NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
        "eighteen nineteen twenty".split()
    )
} | {"a": 1, "an": 1, "single": 1, "lone": 1, "pair": 2, "couple": 2, "no": 0}
_WORD = re.compile(r"[a-z0-9]+(?:'s)?")
# Words that may stand between a number and its noun ("two small brown dogs"); "of" and "the" may not ("one of the
# dogs" is not a count), except in "a pair of" / "a couple of".
_BETWEEN_MAX = 2
_NOT_BETWEEN = frozenset("of the these those this that his her their its other and or".split())
MIN_IOU = 0.5
_CLAUSE_END = re.compile(r"[,;:()\u2014\u2013]|\s-\s")


def sentences(text: str) -> list[str]:
    return [part for part in SENTENCE_END.split(text.strip()) if part.strip()]


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


def _count_before(words: list[str]) -> int | None:
    """The number that counts the noun after `words`: the nearest number word at most two words back."""
    for back, word in enumerate(reversed(words[-(_BETWEEN_MAX + 1):])):
        value = _number(word)
        if value is not None:
            if word in ("pair", "couple") and back + 1 < len(words) and words[-back - 2] in ("a", "one"):
                return 2
            return value
        if word in _NOT_BETWEEN and not (word == "of" and back + 1 < len(words) and words[-back - 2] in ("pair", "couple")):
            return None
    return None


def stated_count(answer: str, category: str) -> int | None:
    """The number of `category` an answer states, or None when it states none."""
    for clause in (clause for sentence in sentences(answer) for clause in _CLAUSE_END.split(sentence)):
        lowered = clause.lower().replace("’", "'")
        total, counted, last = 0, False, 0
        for start, end, categories in find_forms(clause):
            if category not in categories:
                last = end
                continue
            value = _count_before(_WORD.findall(lowered[last:start]))
            last = end
            if value is not None:
                total, counted = total + value, True
        if counted:
            return total
    for word in _WORD.findall(answer.lower()):
        if word.isdigit() or (word in NUMBER_WORDS and word not in ("a", "an", "no", "pair", "couple")):
            return _number(word)
    return None


def _judge(stated: object, truth: object, reason: RejectReason, unclear: str, wrong: str) -> None:
    """`wrong` may name the stated value as {stated}."""
    if stated is None:
        raise Rejected("unclear_answer", unclear)
    if stated != truth:
        raise Rejected(reason, wrong.format(stated=stated))


def verify_count(answer: str, category: str, truth: int) -> None:
    unclear = f"states no number of {category} (the image has {truth})"
    _judge(stated_count(answer, category), truth, "wrong_count", unclear, f"says {{stated}} {category}, the image has {truth}")


# --- relations -------------------------------------------------------------------------------------------------

INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
_RELATION = re.compile(
    r"\b(?:(?P<left>(?:to|on|at|towards?) (?:the )?(?:far )?left(?: side| hand side)?(?: of)?|left of)"
    r"|(?P<right>(?:to|on|at|towards?) (?:the )?(?:far )?right(?: side| hand side)?(?: of)?|right of)"
    r"|(?P<above>above|over|higher (?:up )?than|on top of)"
    r"|(?P<below>below|beneath|underneath|under|lower (?:down )?than))\b"
)
# "to the dog's left": the possessive names the reference object.
_POSSESSIVE_SIDE = re.compile(r"\b(?:to|on|at) (?:the )?(?P<owner>[a-z ]+?)'s (?:own )?(?P<side>left|right)\b")
_OWN_VIEW = re.compile(r"\b(?:from|in) (?:the |a |an )?(?P<owner>[a-z ]+?)'s (?:own )?(?:perspective|point of view|viewpoint|view)\b|\bits own (?:left|right)\b")
_VIEWERS = frozenset({"viewer", "camera", "observer", "photographer", "our", "my", "your"})
_NEGATED = re.compile(r"\b(?:not|n't|never|neither)\b")


def _objects(sentence: str, a: str, b: str) -> list[tuple[int, int, str]]:
    """(start, end, "a" | "b") of the words naming either object."""
    found = []
    for start, end, categories in find_forms(sentence):
        side = "a" if a in categories else "b" if b in categories else None
        if side is not None:
            found.append((start, end, side))
    return found


def stated_relation(answer: str, a: str, b: str, axis: tuple[str, str] | None = None) -> str | None:
    """Where the answer puts object `a` relative to object `b` (left, right, above, below), seen from the viewer;
    with `axis`, only relations on it count ("beneath a tree" answers no left-or-right question)."""
    for sentence in sentences(answer):
        lowered = sentence.lower().replace("’", "'")
        own_view = _OWN_VIEW.search(lowered)
        if own_view and (own_view.group("owner") or "its").split()[-1] not in _VIEWERS:
            return None
        objects = _objects(sentence, a, b)
        found = [(match, match.group("side"), True) for match in _POSSESSIVE_SIDE.finditer(lowered)]
        found += [(match, match.lastgroup or "", False) for match in _RELATION.finditer(lowered)]
        for match, relation, possessive in sorted(found, key=lambda item: item[0].start()):
            if axis is not None and relation not in axis:
                continue
            if _NEGATED.search(lowered[: match.start()]):
                return None
            before = [side for start, end, side in objects if end <= match.start()]
            after = [side for start, end, side in objects if start >= match.end()]
            if possessive:  # "to the dog's right": the owner is the reference, the subject comes before
                owner = next((side for start, end, side in objects if match.start("owner") <= start < match.end("owner")), None)
                if owner is None:
                    continue
                before = [side for side in before if side != owner]
                subject = before[-1] if before else ("b" if owner == "a" else "a")
            elif before:
                subject = before[-1]
            elif after:
                # "Left of the cat." names the reference after the phrase; "On the left is the dog." the subject.
                takes_object = match.group(0).endswith(" of") or relation in ("above", "below")
                subject = ("b" if after[0] == "a" else "a") if takes_object else after[0]
            else:
                subject = "a"  # "It is on the left.": about the object asked after
            return relation if subject == "a" else INVERSE[relation]
    return None


def verify_relation(answer: str, a: str, b: str, truth: str) -> None:
    axis = ("left", "right") if truth in ("left", "right") else ("above", "below")
    unclear = f"states no viewer-side relation of the {a} to the {b} (it is {truth} of it)"
    _judge(stated_relation(answer, a, b, axis), truth, "wrong_relation", unclear, f"puts the {a} {{stated}} of the {b}; it is {truth} of it")


# --- yes / no --------------------------------------------------------------------------------------------------

_NO = frozenset({"no", "not", "none", "nothing", "neither", "nor", "without"})


def stated_presence(answer: str, category: str) -> bool | None:
    """Whether the answer says the object is there: True, False, or None when it says neither."""
    parts = sentences(answer)
    if not parts:
        return None
    first = parts[0].lower().replace("’", "'")
    said = _WORD.findall(first)
    if said[:1] in (["yes"], ["no"]):  # "Yes, there is a dog, but no cat."
        return said[0] == "yes"
    words = set(said)
    if words & _NO or "n't" in first:
        return False
    if "yes" in words or any(category in mention.categories and mention.claimed for mention in mentions(parts[0])):
        return True
    return None


def verify_presence(answer: str, category: str, truth: bool) -> None:
    said = {True: "yes", False: "no", None: None}[stated_presence(answer, category)]
    wrong = f"says {{stated}} about a {category}; the image has {'one' if truth else 'none'}"
    _judge(said, "yes" if truth else "no", "wrong_presence", f"says neither yes nor no about a {category}", wrong)


# --- boxes -----------------------------------------------------------------------------------------------------

_FLOAT = r"\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*"
_BOX = re.compile(rf"[\[(]{_FLOAT},{_FLOAT},{_FLOAT},{_FLOAT}[\])]")


def stated_boxes(text: str, width: int, height: int) -> list[Corners]:
    """Every box in `text`, as corners normalised to 0-1 (pixel boxes divided by the image size)."""
    boxes = []
    for match in _BOX.finditer(text):
        x1, y1, x2, y2 = (float(value) for value in match.groups())
        if max(x1, y1, x2, y2) > 1.0:
            x1, x2, y1, y2 = x1 / width, x2 / width, y1 / height, y2 / height
        boxes.append((x1, y1, x2, y2))
    return boxes


def iou(first: Corners, second: Corners) -> float:
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    area = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1]) - overlap
    return overlap / area if area > 0 else 0.0


def verify_box(answer: str, truth: Corners, width: int, height: int, what: str) -> None:
    boxes = stated_boxes(answer, width, height)
    if not boxes:
        raise Rejected("unclear_answer", f"gives no [x1, y1, x2, y2] box for the {what}")
    best = iou(boxes[0], truth)  # the first box is the answer; later ones are other objects it names
    if best < MIN_IOU:
        raise Rejected("wrong_box", f"box {list(boxes[0])} overlaps the {what}'s {list(truth)} by IoU {best:.2f} < {MIN_IOU}")


def verify_named(answer: str, category: str) -> None:
    """The answer names the region's object (any word of its category, claimed)."""
    claimed = [mention for mention in mentions(answer) if mention.claimed]
    if not any(category in mention.categories for mention in claimed):
        named = ", ".join(dict.fromkeys(mention.categories[0] for mention in claimed)) or "nothing it can place"
        raise Rejected("wrong_object", f"names {named}; the region holds a {category}")
