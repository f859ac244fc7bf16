"""Grounding: which COCO objects an answer claims, and which of them the image's annotations do not support.

An object is supported when the image has a box of its category or one of its captions mentions it. A mention is
a claim unless it is negated ("no dogs", "there aren't any cars or trucks") or generic in a hypothetical ("an
umbrella can protect people from the sun", "passengers may need to hurry", "a bench for people to rest"). The
figures follow CHAIR (Rohrbach et al. 2018): per record, each category counts once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from datagen.source.coco import CocoSource, ImageAnnotations, ImageSupport
from datagen.quality.object_words import PERSON_MODIFIERS, find_forms
from datagen.quality.parse import Rejected
from datagen.quality.patterns import SENTENCE_END, Caseless, fold, whole_words
from datagen.quality.reply_checks import names_another_image, shown_objects
from datagen.formats.records import GeneratedRecord, Grounding, Turn

# Where a negation or a determiner stops reaching forward: punctuation and words that open a new clause.
_CLAUSE_OPENERS = (
    "but although though while whereas yet except however whether if that which who where when because since so only just instead rather"
).split()
_CLAUSE_BREAK = Caseless(re.compile(
    "|".join(re.escape(mark) for mark in ",;:()\u2014\u2013")
    + "|" + whole_words(_CLAUSE_OPENERS)
    + r"|and(?<!\wand)(?=\s+(?:there|the|a|an)\b)",
    re.IGNORECASE,
))
_WORD = re.compile(r"[\w'’]+")
_NEGATIONS = frozenset({"no", "not", "never", "without", "nor", "neither", "none", "nobody", "cannot", "lack", "lacks", "absence"})
_NOT_NEGATING_AFTER_NO = frozenset({"longer", "matter", "doubt"})
_NEGATION_REACH = 6  # words between a negation and the noun it still governs ("no sign of any other dogs")
# Another noun of a negated list: "no cars, trucks or buses".
_LIST_CONTINUES = re.compile(r"^[\s,]*(?:(?:or|nor|and)\s+)?(?:any\s+|other\s+)?$", re.IGNORECASE)

# Words before a noun that make it a particular, countable thing in the picture, not a kind of thing.
_SPECIFIC = frozenset(
    "the this these those his her their its my our your both each several few another couple pair group herd flock "
    "team crowd lone single one two three four five six seven eight nine ten eleven twelve dozen".split()
)
_DETERMINER_REACH = 3
# Right before a noun these presuppose it is there, negation or not: "the dog is not chasing the cat".
_DEFINITE = frozenset("the this that these those his her their its my our your".split())
# Sentence markers of hypothetical, purpose or habit: a bare plural in such a sentence names a kind, not an object.
_HYPOTHETICAL = Caseless(re.compile(
    r"(?<!\bas )(?<!\beven )\b(?:may|might|could|would|should|can|cannot|must|will|shall|if|unless|whether|potential(?:ly)?"
    r"|possibly|perhaps|likely|probably"
    r"|often|usually|typically|generally|commonly|tend to|designed|intended|meant|ideal|perfect|suitable"
    r"|popular|convenient|important|essential|useful|helpful|safe|dangerous"
    r"|(?:help|allow|enable|protect|attract|ensure|encourage|invite|provide|offer|serve|shield|warn|prevent|remind"
    r"|welcome|cater|accommodate|entertain|lure|guide|inform|alert)(?:s|ed|ing)?)\b|['’]ll\b",
    re.IGNORECASE,
))
_CONDITIONAL = Caseless(re.compile(whole_words(["if", "unless", "whether", "in case", "whenever"], ("as", "even")), re.IGNORECASE))


@dataclass(frozen=True)
class Mention:
    text: str
    categories: tuple[str, ...]  # more than one for words such as "bike" (bicycle or motorcycle)
    claimed: bool


def _clause_before(sentence: str, folded: str | None, start: int, after: int) -> str:
    """The text leading up to a noun at `start`, back to the last clause break after `after`, the end of the
    previous noun; lowered where `folded` is. A break is searched for between the two nouns alone: its look-behinds
    see the text before them, and none can straddle either noun, since the characters next to an object word are
    not word characters."""
    last = after
    for match in _CLAUSE_BREAK.finditer(sentence, folded, after, start):
        last = match.end()
    return (sentence if folded is None else folded)[last:start]


def _negated(words: list[str]) -> bool:
    reach = words[-_NEGATION_REACH:]
    if _NEGATIONS.isdisjoint(reach) and "n't " not in " ".join(reach).replace("’", "'") + " ":
        return False  # most nouns: no negation word near, settled without the word-by-word reading below
    for index, word in enumerate(reach):
        following = reach[index + 1] if index + 1 < len(reach) else ""
        if word in _NEGATIONS and not (word == "no" and following in _NOT_NEGATING_AFTER_NO):
            return True
        if word.endswith(("n't", "n’t")):
            return True
    return False


class _Hypothetical:
    """Whether a sentence speaks of a hypothetical: asked at most once per sentence, and only when the words near
    a noun leave it open."""

    def __init__(self, sentence: str, folded: str | None) -> None:
        self.sentence, self.folded = sentence, folded
        self.answer: bool | None = None

    def __call__(self) -> bool:
        if self.answer is None:
            self.answer = _HYPOTHETICAL.search(self.sentence, self.folded) is not None
        return self.answer


def _presupposed(words: list[str]) -> bool:
    for word in words[-2:]:
        if word in _DEFINITE or word.endswith(("'s", "’s")):
            return True
    return False


def _generic(words: list[str], hypothetical: _Hypothetical, start: int) -> bool:
    """A kind of thing, not a thing in the picture: "people may...", "for visitors", "if a dog were to..."."""
    near = words[-_DETERMINER_REACH:]
    if not _SPECIFIC.isdisjoint(near):
        return False
    for word in near:
        if word.isdigit() or word.endswith(("'s", "’s")):
            return False
    if near and near[-1] == "for":
        return True
    if "a" in near or "an" in near:
        # One thing: hypothetical only inside a condition ("if a child runs...") or a purpose ("for a person").
        article = len(near) - 1
        while near[article] not in ("a", "an"):  # the last article
            article -= 1
        before, folded = hypothetical.sentence[:start], hypothetical.folded
        return _CONDITIONAL.search(before, folded and folded[:start]) is not None or (article > 0 and near[article - 1] == "for")
    return hypothetical()


# Any word that may negate a noun after it; a sentence without one negates none of its nouns.
_ANY_NEGATION = re.compile(whole_words(sorted(_NEGATIONS)) + r"|n['’]t\b")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, stop) of each sentence: it ends at white space after . ! or ?, or at a line break."""
    spans, begin = [], 0
    for match in SENTENCE_END.finditer(text):
        stop = match.start() if text[match.start()] == "\n" else match.start() + 1  # the stop stays in its sentence
        spans.append((begin, stop))
        begin = match.end()
    spans.append((begin, len(text)))
    return spans


def _has_negation(sentence: str, folded: str | None) -> bool:
    return _ANY_NEGATION.search(folded if folded is not None else sentence.lower()) is not None


def _sentences_with_objects(text: str) -> Iterator[tuple[str, str | None, bool, list[tuple[int, int, tuple[str, ...]]]]]:
    """Each sentence of `text` that has an object word: the sentence, it lowered (None where that is not exact, see
    `fold`), whether it has a word that may negate, and its object words' (start, end, categories) in it.

    The words are found in the whole text at once (one regex pass, not one per sentence). A sentence ends in white
    space, which no name holds but for a line break between its words ("hot\ndog"): where one does, the sentences
    are searched one by one, as two sentences' words."""
    forms = find_forms(text)
    if not forms:
        return
    folded = fold(text)  # not None: each sentence's own lowering is its slice
    negations = _has_negation(text, folded)
    spans = _sentence_spans(text)
    if "\n" in text and any("\n" in text[start:end] for start, end, _ in forms):
        for begin, stop in spans:
            sentence = text[begin:stop]
            if found := find_forms(sentence):
                sentence_folded = fold(sentence)
                yield sentence, sentence_folded, negations and _has_negation(sentence, sentence_folded), found
        return
    index = 0
    for begin, stop in spans:
        inside = []
        while index < len(forms) and forms[index][0] < stop:
            start, end, categories = forms[index]
            inside.append((start - begin, end - begin, categories))
            index += 1
        if inside:
            sentence = text[begin:stop]
            sentence_folded = folded[begin:stop] if folded is not None else fold(sentence)
            yield sentence, sentence_folded, negations and _has_negation(sentence, sentence_folded), inside
        if index == len(forms):
            return


def _judged(text: str, settled: Container[str]) -> Iterator[tuple[str, tuple[str, ...], bool]]:
    """(surface, categories, claimed) of each object word in `text`, in order. A word whose one category is in
    `settled` is not judged and not given: claimed or not, it changes nothing for its caller (its negation is still
    read when a negated list may carry it on to the next noun)."""
    for sentence, folded, negations, forms in _sentences_with_objects(text):
        hypothetical = _Hypothetical(sentence, folded)
        previous: tuple[int, bool] | None = None  # where the last object word ended and whether it was negated
        previous_end = 0  # a noun's determiners and negation lie after the previous noun
        for index, (start, end, categories) in enumerate(forms):
            clause_start, previous_end = previous_end, end
            if not categories:
                previous = None
                continue
            surface = sentence[start:end]
            following = forms[index + 1] if index + 1 < len(forms) else None
            if surface.lower() in PERSON_MODIFIERS and following and not sentence[end : following[0]].strip():
                continue  # "passenger jet": an adjective here
            unjudged = len(categories) == 1 and categories[0] in settled
            if unjudged and not negations:
                previous = (end, False)
                continue
            words = _WORD.findall(_clause_before(sentence, folded, start, clause_start))
            if folded is None:  # (lowering keeps every character's word-ness: the words of the lowered text are these)
                words = [word.lower() for word in words]
            negated = negations and (
                (_negated(words) and not _presupposed(words))
                or (previous is not None and previous[1] and _LIST_CONTINUES.match(sentence[previous[0] : start]) is not None)
            )
            previous = (end, negated)
            if not unjudged:
                yield surface, categories, not negated and not _generic(words, hypothetical, start)


def mentions(text: str) -> list[Mention]:
    """Every object word in `text`, in order, each marked claimed or not (negated or generic)."""
    return [Mention(surface, categories, claimed) for surface, categories, claimed in _judged(text, ())]


def claimed_categories(texts: Iterable[str]) -> list[tuple[str, ...]]:
    return [categories for text in texts for _, categories, claimed in _judged(text, ()) if claimed]


@lru_cache(maxsize=4096)
def _caption_support(captions: tuple[str, ...]) -> frozenset[str]:
    # Cached: the three tasks of an image, and an audited file's several records per image, share captions.
    return frozenset(category for categories in claimed_categories(captions) for category in categories)


def ground(texts: Iterable[str], image: ImageAnnotations | ImageSupport) -> Grounding:
    """The categories the texts claim, and those of them neither a box nor a caption of `image` shows."""
    if isinstance(image, ImageSupport):
        boxed, captions = image.categories, image.captions
    else:
        boxed, captions = frozenset(box.category for box in image.boxes), tuple(image.captions)
    # What the captions claim is read only when a claimed object has a category no box has: most answers name only
    # boxed objects, and reading five captions costs more than grounding the answer.
    supported, captions_read = boxed, False
    mentioned: set[str] = set()
    unsupported: set[str] = set()
    for text in texts:
        # A category claimed once is settled, as supported or not (the captions are read before a category no box
        # has is settled): its later words are not judged, which spares most of the work on a long answer.
        for _, categories, claimed in _judged(text, mentioned):
            if not claimed:
                continue
            if not captions_read and not boxed.issuperset(categories):
                supported, captions_read = boxed | _caption_support(captions), True
            present = [category for category in categories if category in supported]
            if present:
                mentioned.add(present[0])
            else:
                mentioned.add(categories[0])
                unsupported.add(categories[0])
    return Grounding(mentioned=sorted(mentioned), unsupported=sorted(unsupported))


def answers(turns: Iterable[Turn]) -> list[str]:
    """Only the gpt turns make claims; a question may ask about something absent."""
    return [turn.value for turn in turns if turn.speaker == "gpt"]


def ground_record(record: GeneratedRecord, image: ImageAnnotations, reject_unsupported: bool) -> None:
    """Sets `record.meta.grounding`; a record about another image is refused, and with `reject_unsupported` any
    record naming an absent object."""
    record.meta.grounding = ground(answers(record.conversations), image)
    if names_another_image(record.meta.grounding):
        raise Rejected(
            "unsupported_object",
            f"names {', '.join(record.meta.grounding.unsupported)}, which the boxes and captions of the image do not show, and"
            f" fewer objects other than people that they do show ({', '.join(shown_objects(record.meta.grounding)) or 'none'})",
        )
    if reject_unsupported and record.meta.grounding.unsupported:
        raise Rejected(
            "unsupported_object",
            f"names {', '.join(record.meta.grounding.unsupported)}, which neither the boxes nor the captions of the image show",
        )


def stored_grounding(line: dict, source: CocoSource) -> Grounding:
    """A written record's grounding as stored; one written before records carried it is grounded now."""
    if line["meta"].get("grounding") is not None:
        return Grounding.model_validate(line["meta"]["grounding"])
    image = source.image(line["meta"]["image_id"], Counter())
    turns = [Turn.model_validate(turn) for turn in line["conversations"]]
    return ground(answers(turns), image) if image is not None else Grounding(mentioned=[], unsupported=[])
