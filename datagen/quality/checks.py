"""Answer checks: every rule that refuses a teacher answer by its content, in one place.

Each rule has a name, which is the reject reason (`RejectReason` in records.py), and looks at one
question or one answer at a time, so a refusal in the third answer of a conversation is as visible
as one at the start of the reply. The rules are written against realistic teacher text: they fire on
talk about the text the teacher was given ("based on the provided information", "x=0.12") and stay
quiet on what a photo can legitimately show (signs, menus, prices, "annotations" on a diagram, a
quoted "Sorry, we're closed").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel

from datagen.quality.patterns import Caseless, Triggers, fold

Role = Literal["question", "answer"]
# The reply's form, all a rule needs of its task: one free-text answer (a description) or Question/Answer pairs
# (the values of tasks.ResponseFormat, which names each task's form).
Form = Literal["prose", "qa_pairs"]
Span = tuple[int, int]


class Finding(BaseModel):
    """One rule that fired on one question or answer of a reply."""

    rule: str
    turn: int  # index of the question/answer pair; 0 for a detail description
    role: Role
    excerpt: str


@dataclass(frozen=True)
class Rule:
    name: str
    roles: frozenset[str]
    find: Callable[[str, Form], Span | None]  # (text, form) -> where the rule fires, or None
    summary: str


_I = re.IGNORECASE
_M = re.MULTILINE
_A = "['’]"  # ASCII and typographic apostrophes alike: chat models often write I’m / can’t


_OPENING_SINGLE = re.compile(r"(?:^|(?<=[\s(\[]))['‘](?=\S)")
_CLOSING_SINGLE = re.compile(r"(?<=\S)['’](?=[\s.,;:!?)\]]|$)")


def _in_quotes(text: str, position: int) -> bool:
    """Inside a quotation: signs, cards and T-shirts may legitimately say "Sorry, we're closed".

    Single quotes count only where they open before a word or close after one, so the apostrophes
    of "I'm" and "dogs' toys" are not taken for quotation marks."""
    before = text[:position]
    if before.count('"') % 2 == 1 or before.count("“") > before.count("”"):
        return True
    opened = sum(1 for mark in _OPENING_SINGLE.finditer(text) if mark.start() < position)
    closed = sum(1 for mark in _CLOSING_SINGLE.finditer(text) if mark.start() < position)
    return opened > closed


# Words after a match that put the text on a physical thing in the picture or give it a source there:
# "the description on the plaque", "the items listed on the menu", "information provided by the guide".
_ON_SOMETHING = re.compile(
    r"\s*(?:\w+\s+){0,3}?(?:on|onto|upon|under|underneath|beneath|below|beside|next to|along|across|at|inside|"
    r"printed|written|painted|posted|displayed|engraved|etched|attached|inscribed|stenciled|stencilled|"
    r"scrawled|taped|pinned|stuck|hanging|chalked|handwritten)\b"
    # "as indicated by green arrows": a bare plural points at marks in the picture as well
    r"|\s+by\s+(?!(?:(?:the|a|an|its|their|his|her|this|these|those|my|your|our|some|many|several|two|three|four|five|all|both)\s+)?"
    r"(?:descri|caption|sentence|annot|text|information|data|notes?\b|context|prompt|user|you\b|me\b))",
    _I,
)


@dataclass(frozen=True)
class _Gated:
    """A pattern and the lowercase words one of which any match contains: the regex is skipped on the many
    answers that lack them all. Which words a text holds is found once per text (`_view`), for every rule."""

    triggers: frozenset[str]
    pattern: Caseless


_TRIGGER_WORDS: set[str] = set()


def _when(triggers: str, pattern: str, flags: int = 0) -> _Gated:
    words = frozenset(triggers.split("|"))
    _TRIGGER_WORDS.update(words)
    return _Gated(words, Caseless(re.compile(pattern, flags)))


@lru_cache(maxsize=4)
def _triggers(count: int) -> Triggers:
    """The scanner for every trigger word; `count` words so far, so a rule defined after the first check counts too."""
    return Triggers(set(_TRIGGER_WORDS))


@lru_cache(maxsize=32)
def _view(text: str, count: int) -> tuple[str | None, frozenset[str]]:
    """What every rule needs of one text, computed once: the text lowered for caseless patterns (None where that
    would not be exact) and the trigger words it holds."""
    folded = fold(text)  # the text lowered, where that is exact
    return folded, _triggers(count).present(folded if folded is not None else text.lower())


# A finder's trigger words when every pattern of it is gated: check_text skips it on a text holding none of them.
_FINDER_TRIGGERS: dict[Callable[[str, Form], Span | None], frozenset[str] | None] = {}


def _finder(*patterns: _Gated | re.Pattern[str], unless_on_something: bool = False, unless_quoted: bool = True,
            unless_before: re.Pattern[str] | None = None) -> Callable[[str, Form], Span | None]:
    """First match of any pattern that is not inside a quotation (or, when asked, not about a thing
    in the picture, or not preceded closely by `unless_before`)."""
    gated = [p if isinstance(p, _Gated) else _Gated(frozenset(), Caseless(p)) for p in patterns]
    # When every pattern is gated, a text holding none of their words is settled by one set test.
    any_trigger = frozenset().union(*(candidate.triggers for candidate in gated)) if all(candidate.triggers for candidate in gated) else None

    def find(text: str, form: Form) -> Span | None:
        folded, present = _view(text, len(_TRIGGER_WORDS))
        if any_trigger is not None and any_trigger.isdisjoint(present):
            return None
        for candidate in gated:
            if candidate.triggers and present.isdisjoint(candidate.triggers):
                continue
            for match in candidate.pattern.finditer(text, folded):
                if unless_quoted and _in_quotes(text, match.start()):
                    continue
                after = text[match.end():match.end() + 60]
                if unless_on_something and _ON_SOMETHING.match(after):
                    continue
                if unless_before is not None and unless_before.search(text[max(0, match.start() - 40):match.start()]):
                    continue
                return match.span()
        return None

    _FINDER_TRIGGERS[find] = any_trigger
    return find


# --- control_string: chat-template tokens; LLaVA's trainer masks a record holding them, ours would learn them ---
_CONTROL = (
    _when("<|[", r"</?s>|<\|[A-Za-z_]{1,30}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk)>"),
    _when(":", r"^[ \t]*(?:#{2,3}[ \t]*)?(?:USER|ASSISTANT|SYSTEM|Human|Assistant|User|System|GPT|Instruction|Response)[ \t]*:", _M),
)

# --- image_token_echo: the image token belongs once in the first human turn, put there by us ---
_IMAGE_TOKEN = _when("<", r"<\s*/?\s*(?:image|img)(?:[\s_-]*\d+)?\s*/?\s*>", _I)

# --- refusal: the teacher declines, apologises, or says it cannot see the picture ---
_IMAGE_WORD = r"(?:images?|pictures?|photos?|photographs?|visuals?|visual (?:content|input|data|information)|attachments?|media|files?)"
_I_CANNOT = (
    rf"\bI(?: (?:cannot|can{_A}?t|can not|could not|couldn{_A}?t|am unable to|am not able to|am not capable of|won{_A}t be able to"
    rf"|will not be able to|have no (?:way|means|ability) (?:to|of)|do not|don{_A}?t)|{_A}m (?:unable to|not able to|not capable of))"
)
_CANNOT_WORDS = "cannot|can't|can’t|can not|could not|couldn't|couldn’t|unable|not able|not capable|be able|no way|no means|no ability|do not|don't|don’t"
_REFUSALS = (
    _when(
        "sorry|apolog",
        rf"\bI(?:{_A}m| am)(?: (?:so|very|really|truly|afraid))? sorry\b|\bI apologi[sz]e\b|(?:^|(?<=[.!?]\s))(?:My )?apologies\b",
        _I | _M,
    ),
    _when("sorry", r"(?:^|(?<=[.!?]\s))Sorry,? (?:but )?(?:I|as an|there is no|the image|this image|no image)\b", _I | _M),
    # Perceiving the picture at all, not a detail of it: "I can't see his face" is a fair thing to say.
    _when(_CANNOT_WORDS,
        rf"{_I_CANNOT}\s+(?:actually |directly |physically |currently )?(?:see|view|look at|access|open|analy[sz]e|process|perceive"
        rf"|display|load|interpret|examine|inspect|describe|watch|receive|seeing|viewing|looking at|accessing|opening|analy[sz]ing)"
        rf"(?:\s+(?:or|and|,)\s+\w+(?: at)?)*"
        rf"\s+(?:(?:the|this|that|your|any|an|a|these|those|actual|provided|attached|uploaded|shared|given|specific|referenced"
        rf"|real|original|such)\s+)*{_IMAGE_WORD}\b",
        _I,
    ),
    _when(_CANNOT_WORDS, rf"{_I_CANNOT}\s+(?:view|access|open|load|process|analy[sz]e|display|receive)\s+(?:it|them)\b", _I),
    _when(_CANNOT_WORDS,
        rf"{_I_CANNOT}\s+(?:help(?! but\b)(?:\s+(?:you|with))?|assist|comply|fulfil+"
        r"|provide (?:a |an |any )?(?:description|answer|response|assistance|help))\b",
        _I,
    ),
    _when("do not|don't|don’t|did not|didn't|didn’t",
        rf"\bI (?:do not|don{_A}?t|did not|didn{_A}?t) (?:have|possess) (?:the ability|the capability|the capacity|any way|a way|the means"
        rf"|(?:any |direct |visual )?access|eyes|vision|visual (?:capabilities|abilities|perception))\b",
        _I,
    ),
    _when("beyond|outside", r"\b(?:beyond|outside) (?:my|the) (?:current )?(?:capabilities|abilities|capacity)\b", _I),
    _when(
        "access|way to see|ability to see|seeing|viewing|without",
        rf"\b(?:without|no) (?:(?:direct |visual )?access to|(?:a |any )?way to see|the ability to see|seeing|viewing|having|being able to see"
        rf"|looking at) (?:the|this|your|an|any) (?:actual )?{_IMAGE_WORD}|\bwithout (?:the|an|any) (?:actual|real|original) {_IMAGE_WORD}",
        _I,
    ),
    _when("provided|attached|shared|uploaded|included|available|please|haven|have not|did not|didn",
        rf"\b(?:there is no|there{_A}s no|no) {_IMAGE_WORD} (?:was |has been |is )?(?:provided|attached|shared|uploaded|included|available)\b"
        rf"|\b(?:the|an|any) {_IMAGE_WORD} (?:was|is|has|were)(?: not|n{_A}t)(?: been)? (?:provided|attached|shared|uploaded|included)\b"
        rf"|\byou (?:have not|haven{_A}?t|did not|didn{_A}?t) (?:provide|provided|share|shared|upload|uploaded|attach|attached|include|included)"
        rf" (?:an|the|any|a) {_IMAGE_WORD}"
        rf"|\bplease (?:provide|upload|share|attach|send) (?:an|the|a) {_IMAGE_WORD}",
        _I,
    ),
)

# --- ai_disclaimer: talk about itself as a model instead of about the picture ---
_MODEL_WORD = (
    r"(?:AI|A\.I\.|artificial intelligence|(?:large )?language model|LLM|chatbot|text[- ]based (?:model|AI|assistant|system)"
    r"|text[- ]only (?:model|AI|assistant|system)|(?:AI|virtual|digital|visual AI) (?:language )?(?:model|assistant|system))"
)
_MODEL_WORDS = " ai| a.i.|intelligence|model|llm|chatbot|assistant|system"
_AI_DISCLAIMERS = (
    _when(_MODEL_WORDS, rf"\bas (?:an?|the|your) (?:\w+ )?{_MODEL_WORD}\b", _I),
    _when(
        _MODEL_WORDS,
        rf"\b(?:I{_A}m|I am|being|since I{_A}m|since I am) (?:just |only |merely |simply )?(?:an?|a) (?:\w+ )?{_MODEL_WORD}\b",
        _I,
    ),
    _when("my training|my knowledge|my programming", r"\bmy (?:training data|knowledge cut-?off|programming|training)\b", _I),
    _when("only|just", r"\bI (?:can only|only|just) (?:process|read|understand|work with|handle|respond to|see) (?:text|textual|written|words)\b", _I),
)

# --- chat_preamble: chat talk to the requester before the content ---
_PREAMBLE_START = (
    r"^\s*(?:(?:Sure|Certainly|Of course|Absolutely|Okay|OK|Alright|All right|Gladly|Great|No problem)\b[!.,:]*\s*)?"
)
_PREAMBLES = (
    re.compile(
        _PREAMBLE_START + rf"(?:here{_A}?s|here is|here are|below is|below are|the following is)\b(?:\s+[\w-]+){{0,5}}?\s+"
        r"(?:description|conversation|answer|response|questions?|question-answer|Q&A|analysis|breakdown|overview|summary|version"
        r"|dialogue|explanation|paragraph|reasoning|set|take|look|attempt)\b",
        _I,
    ),
    re.compile(
        _PREAMBLE_START + rf"(?:here goes|here we go|here{_A}?s what|here is what)\b",
        _I,
    ),
    re.compile(_PREAMBLE_START + rf"(?:I{_A}d|I would|I will|I{_A}ll|I{_A}m) (?:be )?(?:happy|glad|delighted) to\b", _I),
    re.compile(
        _PREAMBLE_START + r"(?:Let me|I will|I'll|I’ll) (?:describe|provide|create|generate|write|break|walk|paint|analy[sz]e|take a look|give)\b",
        _I,
    ),
    re.compile(r"^\s*(?:#+\s*)?\**(?:Detailed |Image |Scene |Final )?(?:Description|Response|Conversation|Output)\**\s*:", _I),
    re.compile(r"^\s*Great question\b", _I),
    # A heading line ("## Detailed Description", "**Scene overview**"): answers in this data are plain prose.
    re.compile(r"^\s*(?:#{1,6}[ \t]+[^\n]+|\*\*[^*\n]{1,60}\*\*:?)[ \t]*\n"),
)
# A whole reply that is a description opens with the picture, never with "Sure," - a conversation answer may.
_BARE_OPENER = re.compile(r"^\s*(?:Sure|Certainly|Of course|Absolutely|Okay|OK|Alright|All right|Gladly|Great)\b\s*[!,.:]", _I)


def _find_preamble(text: str, form: Form) -> Span | None:
    for pattern in _PREAMBLES:
        match = pattern.match(text)
        if match:
            return match.span()
    if form == "prose":
        match = _BARE_OPENER.match(text)
        if match:
            return match.span()
    return None


# --- chat_closing: chat talk to the requester after the content ---
_CLOSINGS = (
    _when("hope|let me know|feel free|hesitate|if you|anything else|would you like|to help",
        rf"\b(?:I )?hope (?:this|that|it|the above|my \w+) (?:helps|is helpful|was helpful|answers|gives|provides|clarifies)"
        rf"|\b(?:I )?hope you (?:find|found|enjoy|enjoyed|like|liked) (?:this|that|it|the|my)\b"
        rf"|\b(?:please )?let me know if\b|\bfeel free to (?:ask|reach|let)\b|\bdon{_A}?t hesitate to\b|\bdo not hesitate to\b"
        rf"|\bif you (?:have|need|want) (?:any )?(?:more|other|further|additional)\b(?:\s+\w+)?\s+(?:questions|help|details|information|assistance)"
        rf"|\bis there anything else\b|\bwould you like (?:me to|to know more|more (?:details|information))\b"
        rf"|\b(?:happy|glad) to help (?:further|more|with)\b",
        _I,
    ),
)

# --- reveals_text_source: the answer talks about the text it was given, not about a picture ---
_SOURCE_NOUN = r"(?:descriptions?|captions?|sentences?|annotations?|bounding[\s-]*box(?:es)?|coordinates|metadata)"
_WEAK_NOUN = r"(?:information|info|data|text|notes|lists?|details|context|input|prompt|objects? list)"
_REPORTING = (
    r"(?:say|says|said|mention|mentions|mentioned|describe|describes|described|state|states|stated|note|notes|noted|agree|agrees"
    r"|agreed|disagree|disagrees|confirm|confirms|specify|specifies|specified|tell|tells|refer|refers|list|lists|listed|place|places"
    r"|put|puts|position|positions|imply|implies|talk|talks|provide|provides|give|gives|differ|differs|vary|varies|conflict|conflicts"
    r"|match|matches|focus|focuses|emphasi[sz]es?|suggest|suggests|indicate|indicates|call|calls|claim|claims)"
)
_PICTURE_WORD = r"(?:image|picture|photo|photograph|scene|scan|x-ray|figure|frame|shot)"
_HEDGE = rf"(?:(?:also|all|both|only|clearly|explicitly|specifically|do not|does not|don{_A}?t|doesn{_A}?t|never|just)\s+)?"
# The noun "coordinates" (not the verb: "her scarf and hat coordinate"), unless a map or GPS shows them.
_COORDINATES = (
    _when(
        "coordinat",
        r"\b(?:normali[sz]ed|relative|pixel|spatial|object|box|xy|x-y|\(x, ?y\)|x and y)[\s-]+coordinates?\b"
        r"|\bcoordinate (?:values?|pairs?|system|data)\b",
        _I,
    ),
    _when(
        "coordinat",
        r"\b(?:the|its|their|these|those|given|provided|whose|listed|with|by) coordinates\b"
        r"|\bcoordinates (?:of|for|show|suggest|indicate|place|put|given|provided|are|were|range)\b|\bcoordinates\s*[(\[:=]",
        _I,
    ),
)
_MAP_WORDS = re.compile(r"\b(?:GPS|map|maps|navigation|navigator|latitude|longitude|geographic|compass|satnav)\b", _I)
_TEXT_SOURCE_STRONG = (
    _when("bounding|box ", r"\bbounding[\s-]*box(?:es)?\b|\bbox (?:coordinates|annotations?|positions?|data|labels?|values)\b", _I),
    _when("descri|caption|annot|metadata|detail|data|summar|info", rf"\b(?:image|scene|photo|picture)(?:{_A}s)? (?:descriptions?|captions?|annotations?|metadata|data|summary|summaries|information|info)\b"
        rf"|\b(?:image|scene|photo|picture) details\s+(?:do not|don{_A}?t|does not|doesn{_A}?t|you|I|{_REPORTING}|include|includes)\b", _I),
    _when("descri|caption|annot", r"\b(?:descriptions?|captions?|annotations?) (?:of|for|about) (?:the|this) (?:image|picture|photo|scene)\b", _I),
    # "the detected objects", "the described scene" (but "in the provided image" is how a user talks about a picture)
    _when(
        "detected|annotated|listed|described|mentioned|given|provided|specified",
        r"\b(?:(?:detected|annotated|listed|described|mentioned|specified) (?:objects?|items?|people|persons|elements|entities|scene|image|picture"
        r"|setting)|(?:given|provided) (?:categories|entities|elements))\b",
        _I,
    ),
    _when("object |category |class ", r"\b(?:object|category|class) (?:labels?|names|categories|list)\b", _I),
    _when("you", rf"\byou(?:{_A}ve| have)? (?:provided|given|gave|supplied|shared|described|listed)\b", _I),
    _when("i was|i've|i’ve|i have|i'm|i’m|i am", rf"\bI(?: was|{_A}ve been| have been|{_A}m| am)(?: not| only)? (?:given|provided|told|shown|sent)\b", _I),
    _when(
        "i received|i got|i have|i was sent",
        r"\b(?:text|descriptions?|captions?|information|data|notes|details|input|prompt|sentences?)\s+(?:that\s+)?I\s+(?:received|got|have|was sent)\b",
        _I,
    ),
    _when("your ", r"\byour (?:words|descriptions?|text|captions?|sentences|notes|list|input|prompt|message|summary)\b", _I),
    _when("mention", r"\b(?:no|any|without) mention of\b|\bnot mentioned\b", _I),
    _when("entr", r"\b(?:person|people|object|box|bounding box|category|annotation|caption|list|data) entr(?:y|ies)\b", _I),
    # "the text indicates" (a sign's text "says" or "reads")
    _when("text", rf"\b(?:the|this|that|my|your)\s+text\s+{_HEDGE}(?:mentions?|indicates?|suggests?|describes?|states?|specif(?:y|ies)|implies)\b", _I),
    _when("annotated", r"\bannotated as\b", _I),
    _when("descri", r"\bthis (?:image |scene )?description\b", _I),
)
_WHICH_WERE = rf"(?:(?:that|which)\s+(?:were|was|are|is|I was|I{_A}ve been|you)\s+|I was\s+|you\s+)?"
_TEXT_SOURCE_ABOUT_SOMETHING = (
    # "provided description", "given information"
    _when("provided|given|supplied|accompanying|preceding|included|attached|listed|available|textual",
        r"\b(?:provided|given|supplied|accompanying|preceding|included|attached|listed|available|textual)\s+"
        rf"(?:(?:image|scene|photo|object|box|caption|text)\s+)?(?:{_SOURCE_NOUN}|{_WEAK_NOUN})\b",
        _I,
    ),
    # "the information provided", "the objects listed", "details that were given"
    _when(
        "provided|given|supplied|listed|mentioned|described|specified|annotated",
        rf"\b(?:{_SOURCE_NOUN}|{_WEAK_NOUN})\s+{_WHICH_WERE}(?:provided|given|supplied|listed|mentioned|described|specified|annotated)\b",
        _I,
    ),
    # ...but "the items provided by the hotel", "people given blankets"
    _when(
        "listed|mentioned|described|specified|annotated",
        rf"\b(?:objects?|items?|elements|entities|categories|things|people|persons|animals)\s+{_WHICH_WERE}(?:listed|mentioned|described|specified|annotated)\b",
        _I,
    ),
    # "the tumor mentioned in the context", "another condition mentioned": a thing named by the text, not seen
    # (but "the man you mentioned", "the sign mentioned earlier", "the date mentioned on the poster")
    _when(
        "mentioned",
        r"\b(?:the|a|an|another|any|other|this|that|these|those|each|every|no|some)\s+(?:[\w-]+\s+){0,2}?"
        r"(?!(?:is|are|was|were|been|being|not|also|I|you|we|he|she|they|it|just|already|previously|earlier)\s)[\w-]+"
        r"\s+mentioned\b(?!\s+(?:as\s+)?(?:earlier|above|before|previously|in (?:my|the) (?:previous|earlier|last) answer))",
        _I,
    ),
    # "what's written" (but "what is written on the sign")
    _when(
        "written|described|stated|mentioned|listed|given|provided|told",
        rf"\bwhat(?:{_A}s| is| was| has been| I{_A}ve been| I was)? (?:written|described|stated|mentioned|listed|given|provided|told)\b"
        r"(?!\s*(?:in|inside|there|here|across|along|under|below|above|at|\?))",
        _I,
    ),
    # "as described", "as was mentioned"
    _when("described|mentioned|stated|listed|noted|specified|indicated|annotated|provided|given|detailed|outlined",
        # "as mentioned earlier/above" points back into the answer itself, which is fine
        r"\bas (?:(?:was|is|were|are|clearly|explicitly|I was)\s+)?(?:described|mentioned|stated|listed|noted|specified"
        r"|indicated|annotated|provided|given|detailed|outlined)\b"
        r"(?!\s+(?:as\b|earlier|before|previously|above|in (?:my|the) (?:previous|earlier|last) answer))"
        # "as indicated in the image", "as shown in the photo": the picture itself is the source
        rf"(?!(?:(?<=indicated)|(?<=noted))\s+(?:in|on)\s+(?:the|this)\s+{_PICTURE_WORD}\b)",
        _I,
    ),
    # "it was mentioned", "is not described", "are listed" (but "are listed on the menu")
    _when("described|mentioned|stated|listed|specified|annotated",
        rf"\b(?:is|are|was|were|been|being)(?:n{_A}t|\s+not|\s+also|\s+only|\s+clearly|\s+explicitly|\s+specifically)*\s+"
        r"(?:described|mentioned|stated|listed|specified|annotated)\b(?!\s+(?:as\s+)?(?:earlier|before|previously))",
        _I,
    ),
    _when("provided|given|specified|included", rf"\b(?:is|are|was|were)(?:n{_A}t|\s+not)\s+(?:provided|given|specified|included)\b", _I),
    # "according to the description", "from the captions", "in the sentences"
    _when("descri|caption|sentence|annot|bounding|coordinat|metadata",
        r"\b(?:according to|based on|from|in|per|judging (?:by|from)|going by|as per|relying on|given)\s+"
        rf"(?:the|these|those|this|that|my|your|all|each|every|both|its|our|one of the|some of the)\s+(?:[\w-]+\s+){{0,2}}?{_SOURCE_NOUN}\b",
        _I,
    ),
    _when(
        "the information|the info|the data|the text|the notes|the list|these notes|those notes|my notes|your notes|all the"
        "|the available|the limited|my text|your text|my list|your list|my data|your data|my information|your information",

        r"\b(?:according to|based on|from|per|judging (?:by|from)|going by|as per|relying on|given)\s+"
        r"(?:the|these|those|all|my|your)\s+(?:available\s+|limited\s+)?(?:information|info|data|text|notes|list)\b"
        r"(?!\s+(?:\w+\s+){0,2}?(?:in|from|of|within|about|visible|shown|seen)\s+(?:the|this)\s+(?:image|picture|photo|scene|photograph))",
        _I,
    ),
    # "the captions say", "all five sentences agree"
    _when("descri|caption|sentence|coordinat|information|data|listing",
        r"\b(?:the|these|those|this|that|each|every|all|both|one|another|other|first|second|third|fourth|fifth|last|final|two|three"
        rf"|four|five|several|multiple|some|most|no|my|your)\s+(?:[\w-]+\s+)?(?:descriptions?|captions?|sentences?|coordinates|information|data|listing)"
        rf"\s+{_HEDGE}{_REPORTING}\b",
        _I,
    ),
    # Narrower verbs than the other nouns: "the annotations show the route" is said of a diagram too.
    _when(
        "annot",
        rf"\b(?:the|these|those|my|your|all|both)\s+annotations?\s+{_HEDGE}(?:say|says|mention|mentions|list|lists|describe|describes|state|states"
        r"|agree|place|places|put|puts|specify|specifies|mark|marks|label|labels|identify|identifies)\b",
        _I,
    ),
    # "one of the captions", "the first sentence", "all five descriptions"
    _when("descri|caption|sentence|annot",
        r"\b(?:one|some|none|each|all|both|two|three|four|five|six|most|several|many|any|either|neither|half|majority) of (?:the|these|those|my|your) "
        r"(?:[\w-]+\s+)?(?:descriptions|captions|sentences|annotations)\b",
        _I,
    ),
    _when("descri|caption|sentence", r"\b(?:first|second|third|fourth|fifth|last|final|other|previous|remaining) (?:descriptions?|captions?|sentences?)\b", _I),
    _when(
        "captions|sentences",
        r"\b(?:the|these|those|all|both|multiple|several|different|various|other|given|two|three|four|five|six)\s+(?:[\w-]+\s+)?"
        r"(?:captions|sentences)\b(?! contest)",
        _I,
    ),
    _when("descriptions", r"\b(?:all|both|multiple|several|two|three|four|five|six) (?:of the )?descriptions\b", _I),
)


# "in the data", "in the text": a leak, unless the picture shows data itself ("outliers in the data" of a plot)
_IN_THE_TEXT = _when(
    "the information|the info|the data|the text|the notes|the list|my |your ",
    r"\bin\s+(?:the|these|those|all|my|your)\s+(?:available\s+|limited\s+)?(?:information|info|data|text|notes|list)\b"
    r"(?!\s+(?:\w+\s+){0,2}?(?:in|from|of|within|about|visible|shown|seen)\s+(?:the|this)\s+(?:image|picture|photo|scene|photograph))",
    _I,
)
_SHOWS_DATA = re.compile(
    r"\b(?:charts?|graphs?|plots?|diagrams?|spreadsheets?|matrix|matrices|dashboards?|infographics?|histograms?|screens?"
    r"|monitors?|displays?)\b",
    _I,
)


def _find_text_source(text: str, form: Form) -> Span | None:
    return (
        _strong_text_source(text, form)
        or _coordinates(text, form)
        or _text_source_about_something(text, form)
        or _in_the_text_unless_data_shown(text, form)
    )


def _in_the_text_unless_data_shown(text: str, form: Form) -> Span | None:
    span = _in_the_text(text, form)  # gated, so nearly always None at once: the picture test runs only after a hit
    return None if span is None or _SHOWS_DATA.search(text) else span


_strong_text_source = _finder(*_TEXT_SOURCE_STRONG)
_coordinates = _finder(*_COORDINATES, unless_before=_MAP_WORDS)
_text_source_about_something = _finder(*_TEXT_SOURCE_ABOUT_SOMETHING, unless_on_something=True)
_in_the_text = _finder(_IN_THE_TEXT, unless_on_something=True)


def _triggers_of(*parts: Callable[[str, Form], Span | None]) -> frozenset[str] | None:
    """A rule made of several finders finds nothing in a text without a trigger word of one of them, if each is gated."""
    gated = [triggers for part in parts if (triggers := _FINDER_TRIGGERS.get(part)) is not None]
    return frozenset().union(*gated) if len(gated) == len(parts) else None


_FINDER_TRIGGERS[_find_text_source] = _triggers_of(_strong_text_source, _coordinates, _text_source_about_something, _in_the_text)

# --- box_coordinates: numbers only the normalised box corners can have produced ---
_NORM = r"(?:0?\.\d{1,3}|1\.0{1,3})"  # a 0..1 value with a decimal point, as the context writes corners
_UNIT = (
    r"\s*-?\s*(?:%|percent|per ?cent|mm|cm|km|m|kg|g|mg|lbs?|oz|ml|l|liters?|litres?|gal|gallons?|mi|miles?|mph|km/h|kph|inch(?:es)?|ft"
    r"|feet|seconds?|secs?|s|ct|carats?|dollars?|cents?|euros?|pounds?|points?|pts|stars?|x|times|ounces?|grams?|meters?|metres?"
    r"|kilometers?|kilometres?|hours?|hrs?|minutes?|mins?|volts?|v|amps?|mpg|acres?|each|apiece|a piece|per|a pound|a dozen|/"
    r"|(?:milli|centi|micro|nano)(?:met(?:er|re)s?|lit(?:er|re)s?|grams?)|microns?|µm|μm|nm|kilograms?|degrees?|°|yards?|tons?|tonnes?"
    r"|inch|watts?|hz|khz|mhz|ghz)(?![a-z])"
)
_NUMBER = r"(?<![\w.$€£¥,/:])"  # a number of its own, not the tail of 10.52, $0.99 or 3:45
_BOX_NUMBERS = (
    # "x=0.12", "width: 0.3", "from x 0.2"
    re.compile(
        rf"\b(?:x|y|x1|y1|x2|y2|x_?min|y_?min|x_?max|y_?max|w|h|cx|cy|left|top|right|bottom|width|height)\s*(?:=|:|≈|~)\s*{_NORM}(?!\d)"
        rf"|(?<!\d )\b[xy] {_NORM}(?!\d)(?!{_UNIT})",
        _I,
    ),
    # "(0.12, 0.40, ...", "[0.1, 0.2"
    re.compile(rf"[(\[]\s*(?:{_NORM}\s*,\s*(?:{_NORM}|[01])|[01]\s*,\s*{_NORM})(?!\d)"),
    # "0.3 of the image width", "0.2 from the left"
    re.compile(
        rf"{_NUMBER}{_NORM}\s+(?:of the (?:image|frame|picture|photo|width|height|scene|way)|across|from the (?:left|right|top|bottom)"
        r"|horizontally|vertically|along the [xy])\b",
        _I,
    ),
)
# Looser shapes that signs, price tags and scoreboards also show: "0.42-0.88", a bare "0.55".
_LOOSE_BOX_NUMBERS = (
    re.compile(rf"{_NUMBER}0?\.\d{{1,3}}\s*(?:-|–|—|to|and)\s*{_NORM}(?!\d)(?!{_UNIT})", _I),
    re.compile(rf"{_NUMBER}0?\.\d{{2,3}}(?!\d)(?![.,]\d)(?!{_UNIT})", _I),
    re.compile(rf"{_NUMBER}{_NORM}\s*[,/]\s*{_NORM}(?!\d)"),  # "its center is about 0.4, 0.6", "0.8/0.7"
)
_WRITTEN_IN_PICTURE = re.compile(
    r"\b(?:price[sd]?|cost|costs|tags?|signs?|menu|labels?|board|screen|display|displays|scoreboard|reads|says|shows|written|printed"
    r"|sells?|sold|fare|average|percentage|stats|rate|ratio|odds|chart|graph|odometer|meter|gauge|thermometer|scale|dial)\b"
    r"|\bp\s*(?:[=<>≤≥]|-?values?\b)|\b(?:significan\w*|correlat\w*|coefficients?|probabilit\w*|confidence|statistic\w*)\b",
    _I,
)
_DECIMAL = re.compile(r"\.\d")
_find_box_numbers_strict = _finder(*_BOX_NUMBERS)
_find_box_numbers_loose = _finder(*_LOOSE_BOX_NUMBERS, unless_before=_WRITTEN_IN_PICTURE)


def _find_box_numbers(text: str, form: Form) -> Span | None:
    if _DECIMAL.search(text) is None:  # every shape below holds a decimal point followed by a digit
        return None
    return _find_box_numbers_strict(text, form) or _find_box_numbers_loose(text, form)


# --- incomplete_sentence: cut mid-sentence although the teacher reported a normal stop ---
_END_OK = ".!?…)\"”»"
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")
_CLOSING_MARKUP = "*_` \t\n'’]"


def _find_incomplete(text: str, form: Form) -> Span | None:
    body = text.rstrip()
    ending = body.rstrip(_CLOSING_MARKUP)
    if not ending or ending[-1] in _END_OK or len(body.split()) <= 3:
        return None
    if not ending[-1].isascii() and not ending[-1].isalnum():  # an emoji or other symbol ends a sentence too
        return None
    if _LIST_ITEM.match(body.splitlines()[-1]):
        return None
    start = max(body.rfind(". "), body.rfind("\n")) + 1
    return start, len(body)


_BOTH = frozenset({"question", "answer"})
_ANSWERS = frozenset({"answer"})
RULES: tuple[Rule, ...] = (
    Rule("control_string", _BOTH, _finder(*_CONTROL, unless_quoted=False), "holds chat-template tokens such as `</s>`, `[INST]` or a `USER:` line"),
    Rule("image_token_echo", _BOTH, _finder(_IMAGE_TOKEN, unless_quoted=False), "holds the `<image>` token"),
    Rule("refusal", _ANSWERS, _finder(*_REFUSALS), "declines, apologises or says it cannot see the image"),
    Rule("ai_disclaimer", _ANSWERS, _finder(*_AI_DISCLAIMERS), "talks about itself as an AI or language model"),
    Rule("chat_preamble", _ANSWERS, _find_preamble, "opens with chat talk (\"Sure! Here's a detailed description:\")"),
    Rule("chat_closing", _ANSWERS, _finder(*_CLOSINGS), "ends with chat talk (\"Let me know if you have questions\")"),
    Rule(
        "reveals_text_source",
        _BOTH,
        _find_text_source,
        "refers to the captions, descriptions, lists or boxes the teacher was given",
    ),
    Rule("box_coordinates", _BOTH, _find_box_numbers, "quotes numbers only the normalised box corners hold"),
    Rule("incomplete_sentence", _ANSWERS, _find_incomplete, "stops mid-sentence although the teacher said it was done"),
)
RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES)
_PRIORITY = {name: index for index, name in enumerate(RULE_NAMES)}
_ENDING_RULES = frozenset({"incomplete_sentence"})


def _excerpt(text: str, span: Span, margin: int = 30) -> str:
    start, end = max(0, span[0] - margin), min(len(text), span[1] + margin)
    return ("…" if start else "") + text[start:end].replace("\n", " ") + ("…" if end < len(text) else "")


# Per role, its rules in order, each with the trigger words one of which it needs (None: it runs on every text).
_RULES_OF_ROLE: dict[str, tuple[tuple[Rule, frozenset[str] | None], ...]] = {
    role: tuple((rule, _FINDER_TRIGGERS.get(rule.find)) for rule in RULES if role in rule.roles) for role in ("question", "answer")
}


def check_text(text: str, role: Role, turn: int = 0, form: Form = "qa_pairs") -> list[Finding]:
    """Every rule that fires on one question or answer, in rule order."""
    findings = []
    present = _view(text, len(_TRIGGER_WORDS))[1]
    for rule, triggers in _RULES_OF_ROLE[role]:
        if triggers is not None and triggers.isdisjoint(present):
            continue
        span = rule.find(text, form)
        if span is not None:
            findings.append(Finding(rule=rule.name, turn=turn, role=role, excerpt=_excerpt(text, span)))
    return findings


def check_pairs(form: Form, pairs: list[tuple[str, str]]) -> list[Finding]:
    """Findings over every question and answer of a reply, most serious rule first, then by turn.

    Questions as the teacher wrote them: without the `<image>` token a record adds to its first turn
    (strip it before checking a finished LLaVA record). For a prose reply (a description), pairs is
    [(instruction, description)]; an empty question is skipped.
    """
    findings: list[Finding] = []
    for turn, (question, answer) in enumerate(pairs):
        if question.strip():
            findings.extend(check_text(question, "question", turn, form))
        findings.extend(check_text(answer, "answer", turn, form))
    return sorted(findings, key=lambda finding: (_PRIORITY[finding.rule], finding.turn, finding.role != "question"))


def check_lead(text: str) -> list[Finding]:
    """Findings on text a Question/Answer reply holds before its first `Question:` (or instead of any):
    judged like a free-text reply, since no such text belongs there; its ending is not judged."""
    findings = check_text(text, "answer", 0, "prose")
    return [finding for finding in findings if finding.rule not in _ENDING_RULES]
