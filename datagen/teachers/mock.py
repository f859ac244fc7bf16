"""Deterministic offline stand-in for the teacher LLM.

Answers a chat request built from a prompt pack in the response format its few-shot examples use,
mentioning only what the query context contains, so tests and benchmarks can exercise the whole
pipeline (including the validator) without a model.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache

from datagen.quality.checks import check_text
from datagen.quality.object_words import plural
from datagen.quality.verifiers import INVERSE
from datagen.tasks.grounded import Probe, brief_probes

QA_SEPARATOR = "\n===\n"

# The validator rejects answers that betray a text-reading teacher; captions or category names that
# contain such words or decimal numbers are left out of the answer rather than rewritten.
_REVEALING = re.compile(r"caption|description|annotation|bounding|\bbox(es)?\b|coordinate|\d\.\d", re.IGNORECASE)
# Cheap pre-check so the regex only runs on the rare text that could match it.
_DIGITS = frozenset("0123456789")


def _reveals_reading(text: str) -> bool:
    lowered = text.lower()
    if (
        _DIGITS.isdisjoint(text)
        and "capt" not in lowered
        and "descr" not in lowered
        and "annot" not in lowered
        and "bound" not in lowered
        and "box" not in lowered
        and "coord" not in lowered
    ):
        return _fails_answer_checks(text)
    return _REVEALING.search(text) is not None or _fails_answer_checks(text)


@lru_cache(maxsize=4096)
def _fails_answer_checks(text: str) -> bool:
    """Would the validator refuse an answer quoting this caption (a refusal, chat talk or a leak in it)?

    Captions are stored without their final full stop, so how a sentence ends is not judged here."""
    return any(finding.rule != "incomplete_sentence" for finding in check_text(text, "answer"))


@lru_cache(maxsize=4096)
def _is_usable_category(name: str) -> bool:
    return bool(name.strip()) and not _reveals_reading(name)


_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()

_IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
    "skis": "skis",
    "scissors": "scissors",
    "broccoli": "broccoli",
    "glasses": "glasses",
}


@lru_cache(maxsize=4096)
def _plural(noun: str) -> str:
    # The mock says "people", where the grounding word list also reads the rarer "persons".
    return plural(noun, _IRREGULAR_PLURALS)


def _with_article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _count_phrase(count: int, noun: str) -> str:
    if count == 1:
        return _with_article(noun)
    amount = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else "many"
    return f"{amount} {_plural(noun)}"


def _position(cx: float, cy: float) -> str:
    horizontal = "on the left" if cx < 0.34 else "on the right" if cx > 0.66 else "in the middle"
    if cy < 0.34:
        return horizontal + ", near the top"
    if cy > 0.66:
        return horizontal + ", near the bottom"
    return horizontal


def _as_clause(caption: str) -> str:
    """A caption (stored without its final full stop) as a clause to continue a sentence with."""
    # Keep acronyms such as "TV" intact; captions rarely start with a proper noun.
    if caption[1:2].isupper():
        return caption
    return caption[0].lower() + caption[1:]


def _as_sentence(caption: str) -> str:
    return caption[0].upper() + caption[1:] + "."


def _text_of(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    # OpenAI also accepts a list of typed content parts.
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


class _Scene:
    """What the query context says: distinct usable captions (final full stop removed), and objects
    counted by category."""

    __slots__ = ("captions", "counts", "_first_corners")

    def __init__(self, context: str) -> None:
        self.captions: list[str] = []
        self.counts: dict[str, int] = {}
        # Positions are only ever stated for categories seen once, so parse corners lazily.
        self._first_corners: dict[str, str] = {}
        counts = self.counts
        for line in context.splitlines():
            if line.endswith("]"):
                name, sep, corners = line.rpartition(": [")
                if sep:
                    if name in counts:
                        counts[name] += 1
                    elif _is_usable_category(name):
                        counts[name] = 1
                        self._first_corners[name] = corners[:-1]
                    continue
            caption = line.strip().rstrip(".! ")
            if caption and caption not in self.captions and not _reveals_reading(caption):
                self.captions.append(caption)

    def position(self, name: str) -> str:
        try:
            x1, y1, x2, y2 = map(float, self._first_corners[name].split(","))
        except ValueError:
            return "in the scene"
        return _position((x1 + x2) / 2, (y1 + y2) / 2)

    def inventory(self) -> str:
        phrases = [_count_phrase(n, name) for name, n in self.counts.items()]
        if len(phrases) == 1:
            return phrases[0]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]

    def overview(self, rng: random.Random) -> str:
        opener = rng.choice(_OVERVIEW_OPENERS)
        if self.captions:
            return f"{opener} {_as_clause(self.captions[0])}."
        if self.counts:
            return f"{opener} {self.inventory()}."
        return f"{opener} an everyday scene."


_OVERVIEW_OPENERS = ("The image shows", "In this picture, we can see", "This photo captures")


# --- conversation turns: each builder returns (question, answer) or None when the scene lacks it ---

_OVERVIEW_QUESTIONS = (
    "What is happening in the image?",
    "What does this picture show?",
    "Can you tell me what is going on in this scene?",
    "What can you see in the image?",
)
_DETAIL_QUESTIONS = (
    "What else can you notice in the picture?",
    "Is there anything else worth pointing out?",
    "What other details stand out?",
)
_COUNT_QUESTIONS = (
    "How many {plural} are there in the image?",
    "How many {plural} can be seen?",
    "Can you count the {plural} in the picture?",
)
_WHERE_QUESTIONS = (
    "Where is the {name} in the image?",
    "Where can the {name} be seen?",
    "In which part of the picture is the {name}?",
)


def _detail_turn(scene: _Scene, rng: random.Random, used: set) -> tuple[str, str] | None:
    unused = [c for c in scene.captions[1:] if c not in used]
    if not unused:
        return None
    caption = rng.choice(unused)
    used.add(caption)
    return rng.choice(_DETAIL_QUESTIONS), _as_sentence(caption)


def _count_turn(scene: _Scene, rng: random.Random, used: set) -> tuple[str, str] | None:
    names = [n for n in scene.counts if ("count", n) not in used]
    if not names:
        return None
    name = rng.choice(names)
    used.add(("count", name))
    count = scene.counts[name]
    verb = "is" if count == 1 else "are"
    question = rng.choice(_COUNT_QUESTIONS).format(plural=_plural(name))
    return question, f"There {verb} {_count_phrase(count, name)} in the image."


def _where_turn(scene: _Scene, rng: random.Random, used: set) -> tuple[str, str] | None:
    names = [n for n, c in scene.counts.items() if c == 1 and ("where", n) not in used]
    if not names:
        return None
    name = rng.choice(names)
    used.add(("where", name))
    question = rng.choice(_WHERE_QUESTIONS).format(name=name)
    return question, f"You can see the {name} {scene.position(name)}."


def _subject_turn(scene: _Scene) -> tuple[str, str] | None:
    if scene.captions:
        return "What is the main subject of the picture?", f"The main subject is {_as_clause(scene.captions[0])}."
    if scene.counts:
        return "What are the main things in view?", f"The main things in view are {scene.inventory()}."
    return None


_TURN_BUILDERS = (_detail_turn, _count_turn, _where_turn)


def _conversation(scene: _Scene, rng: random.Random) -> list[tuple[str, str]]:
    used: set = set()
    turns = [(rng.choice(_OVERVIEW_QUESTIONS), scene.overview(rng))]
    wanted = rng.randint(2, 4)
    for _ in range(wanted * 2):
        if len(turns) > wanted:
            break
        turn = rng.choice(_TURN_BUILDERS)(scene, rng, used)
        if turn is not None:
            turns.append(turn)
    if len(turns) == 1:
        # A single-caption, object-free context still deserves a second turn.
        subject = _subject_turn(scene)
        if subject is not None:
            turns.append(subject)
    return turns


# --- single-pair reasoning and paragraph description ---

_REASONING_QUESTIONS = (
    "What might be the purpose of the scene shown in the image?",
    "What can be inferred about the setting of this picture?",
    "Why might the things in this picture be together?",
    "What story could this image be telling?",
)
_REASONING_LEADS = (
    "This suggests",
    "This points to",
    "Taken together, this indicates",
)
_REASONING_ENDINGS = (
    "an ordinary moment captured as it happens, where each element plays a part in the activity.",
    "a situation in which the people and things present interact as part of daily life.",
    "a setting arranged around a shared activity rather than a staged composition.",
)


def _reasoning(scene: _Scene, rng: random.Random) -> tuple[str, str]:
    sentences = [scene.overview(rng)]
    if len(scene.captions) > 1:
        sentences.append(_as_sentence(rng.choice(scene.captions[1:])))
    if scene.counts:
        sentences.append(f"The scene includes {scene.inventory()}.")
    sentences.append(f"{rng.choice(_REASONING_LEADS)} {rng.choice(_REASONING_ENDINGS)}")
    return rng.choice(_REASONING_QUESTIONS), " ".join(sentences)


_CLOSER_LOOK_LEADS = ("Looking closer, the scene contains", "A closer look reveals", "Within the frame, one can find")


def _description(scene: _Scene, rng: random.Random) -> str:
    first = [scene.overview(rng)]
    first.extend(_as_sentence(c) for c in scene.captions[1:3])
    paragraphs = [" ".join(first)]
    if scene.counts:
        objects = [f"{rng.choice(_CLOSER_LOOK_LEADS)} {scene.inventory()}."]
        singles = [name for name, count in scene.counts.items() if count == 1]
        objects.extend(f"The {name} is {scene.position(name)}." for name in singles[:3])
        paragraphs.append(" ".join(objects))
    if len(scene.captions) > 3:
        paragraphs.append(" ".join(_as_sentence(c) for c in scene.captions[3:]))
    return "\n\n".join(paragraphs)


def _qa_pairs_per_shot(messages: list[dict]) -> list[int]:
    """Question/answer pairs in each few-shot reference answer (0 for a plain-prose one)."""
    counts = []
    for message in messages[:-1]:
        if message.get("role") != "assistant":
            continue
        text = _text_of(message).lstrip()
        counts.append(text.count("\nAnswer:") if text.startswith("Question:") else 0)
    return counts


def _format_qa(pairs: list[tuple[str, str]]) -> str:
    return QA_SEPARATOR.join(f"Question:\n{q}{QA_SEPARATOR}Answer:\n{a}" for q, a in pairs)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _first_sentences(text: str, count: int) -> str:
    return " ".join(_SENTENCE_END.split(text.strip())[:count])


def _terse(answer: str, qa_format: bool) -> str:
    """The "terse" variant: the same facts, fewer of them: two turns at most, one sentence per answer."""
    if not qa_format:
        return _first_sentences(answer.split("\n\n")[0], 2)
    blocks = answer.split(QA_SEPARATOR)
    pairs = [(blocks[i].removeprefix("Question:\n"), blocks[i + 1].removeprefix("Answer:\n")) for i in range(0, len(blocks), 2)]
    return _format_qa([(question, _first_sentences(reply, 1)) for question, reply in pairs[:2]])


def _query_of(message: dict) -> str:
    """The query as the mock reads it: a line per image saying what it shows (size, mean colour), then the text."""
    content = message.get("content")
    if not isinstance(content, list):
        return _text_of(message)
    from datagen.teachers.vision import describe_image, image_parts

    seen = [line for line in map(describe_image, image_parts(content)) if line]
    return "\n".join([*seen, _text_of(message)])


def mock_answer(messages: list[dict], seed: int | None = None, variant: str = "default") -> str:
    """A teacher-like answer to `messages`, in the format their few-shot answers use.

    Identical (messages, seed, variant) give identical answers; the wording varies with either.
    """
    answer = _default_answer(messages, seed)
    if variant == "terse":
        # A grounded reply (already one sentence an answer) keeps every planned pair: fewer would fail its plan.
        if messages and brief_probes(_query_of(messages[-1])):
            return answer
        return _terse(answer, answer.startswith("Question:\n"))
    if variant != "default":
        raise ValueError(f"unknown mock teacher variant {variant!r}")
    return answer


def _query_and_rng(messages: list[dict], seed: int | None) -> tuple[str, random.Random]:
    context = _query_of(messages[-1]) if messages else ""
    digest = hashlib.blake2b(f"{seed}\x00{context}".encode(), digest_size=8).digest()
    return context, random.Random(int.from_bytes(digest, "big"))


def _default_answer(messages: list[dict], seed: int | None) -> str:
    context, rng = _query_and_rng(messages, seed)
    planned = brief_probes(context)
    if planned:
        return _format_qa([(question, answer) for question, answer, _ in grounded_pairs(planned, rng)])
    scene = _Scene(context)
    pairs_per_shot = [n for n in _qa_pairs_per_shot(messages) if n > 0]
    if not pairs_per_shot:
        return _description(scene, rng)
    if max(pairs_per_shot) == 1:
        return _format_qa([_reasoning(scene, rng)])
    return _format_qa(_conversation(scene, rng))


# --- grounded tasks: the planned questions (datagen/tasks/grounded.py) phrased and answered, some of them wrongly ---

# A share of the mock's grounded replies gets one answer wrong on purpose, so that a mock run exercises the exact
# checks: `grounded_pairs` says which (its label), and each such record must end in rejects.jsonl.
WRONG_REPLY_SHARE = 0.3
def _count_sentence(count: int, name: str) -> str:
    return f"There {'is' if count == 1 else 'are'} {_count_phrase(count, name)} in the image."


def _relation_sentence(a: str, b: str, relation: str) -> str:
    where = f"to the {relation} of" if relation in ("left", "right") else relation
    return f"From the viewer's side, the {a} is {where} the {b}."


def _grounded_pair(probe: Probe, wrong: bool) -> tuple[str, str]:
    name = probe.category
    if probe.kind == "count":
        count = int(probe.truth)
        return f"How many {_plural(name)} can be seen in the picture?", _count_sentence(count + 1 if wrong else count, name)
    if probe.kind == "relation":
        other = probe.other or ""
        if probe.truth in ("left", "right"):
            question = f"Which side of the {other} is the {name} on, left or right?"
        else:
            question = f"Does the {name} appear higher or lower in the picture than the {other}?"
        return question, _relation_sentence(name, other, INVERSE[probe.truth] if wrong else probe.truth)
    if probe.kind == "presence":
        said = (probe.truth == "yes") != wrong
        answer = f"Yes, there is {_with_article(name)} in the image." if said else f"No, there is no {name} in the image."
        return f"Is there {_with_article(name)} in the image?", answer
    x1, y1, x2, y2 = probe.box or (0.0, 0.0, 1.0, 1.0)
    if probe.kind == "region":
        shown = ("giraffe" if name != "giraffe" else "zebra") if wrong else name
        return f"What object is in the region {[x1, y1, x2, y2]}?", f"The region shows {_with_article(shown)}."
    if wrong:  # the same size, moved by its own width: no overlap
        shift = x2 - x1 if x2 + (x2 - x1) <= 1.0 else -(x2 - x1)
        x1, x2 = round(x1 + shift, 3), round(x2 + shift, 3)
    return f"Where is the {name}? Give its region as [x1, y1, x2, y2].", f"The {name} is at {[x1, y1, x2, y2]}."


def grounded_pairs(probes: list[Probe], rng: random.Random) -> list[tuple[str, str, bool]]:
    """(question, answer, wrong) for each planned question; at most one answer of a reply is wrong."""
    wrong_at = rng.randrange(len(probes)) if rng.random() < WRONG_REPLY_SHARE else -1
    return [(*_grounded_pair(probe, index == wrong_at), index == wrong_at) for index, probe in enumerate(probes)]


def grounded_labels(messages: list[dict], seed: int | None) -> list[bool]:
    """Which answers of the mock's reply to a grounded request are wrong on purpose (empty for other requests)."""
    context, rng = _query_and_rng(messages, seed)
    planned = brief_probes(context)
    return [wrong for _, _, wrong in grounded_pairs(planned, rng)] if planned else []
