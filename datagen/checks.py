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
from typing import Literal

from pydantic import BaseModel

Role = Literal["question", "answer"]
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
    find: Callable[[str, str], Span | None]  # (text, task) -> where the rule fires, or None
    summary: str


_I = re.IGNORECASE
_M = re.MULTILINE
_A = "['’]"  # ASCII and typographic apostrophes alike: chat models often write I’m / can’t


def _in_quotes(text: str, position: int) -> bool:
    """Inside a quotation: signs, cards and T-shirts may legitimately say "Sorry, we're closed"."""
    before = text[:position]
    return before.count('"') % 2 == 1 or before.count("“") > before.count("”")


# Words after a match that put the text on a physical thing in the picture: "the description on the
# plaque", "the items listed on the menu", "notes pinned to the board".
_ON_SOMETHING = re.compile(
    r"\s*(?:\w+\s+){0,2}?(?:on|onto|upon|under|underneath|beneath|below|beside|next to|along|across|at|inside|"
    r"printed|written|painted|posted|displayed|engraved|etched|attached|inscribed|stenciled|stencilled|"
    r"scrawled|taped|pinned|stuck|hanging|chalked|handwritten)\b",
    _I,
)


def _finder(*patterns: re.Pattern[str], unless_on_something: bool = False, unless_quoted: bool = True,
            unless: re.Pattern[str] | None = None) -> Callable[[str, str], Span | None]:
    """First match of any pattern that is not inside a quotation (or, when asked, not about a thing
    in the picture, or followed by `unless`)."""

    def find(text: str, task: str) -> Span | None:
        for pattern in patterns:
            for match in pattern.finditer(text):
                if unless_quoted and _in_quotes(text, match.start()):
                    continue
                after = text[match.end():match.end() + 60]
                if unless_on_something and _ON_SOMETHING.match(after):
                    continue
                if unless is not None and unless.match(after):
                    continue
                return match.span()
        return None

    return find


# --- control_string: chat-template tokens; LLaVA's trainer masks a record holding them, ours would learn them ---
_CONTROL = re.compile(
    r"</?s>|<\|[A-Za-z_]{1,30}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk)>"
    r"|^[ \t]*(?:#{2,3}[ \t]*)?(?:USER|ASSISTANT|SYSTEM|Human|Assistant|User|System|GPT|Instruction|Response)[ \t]*:",
    _M,
)

# --- image_token_echo: the image token belongs once in the first human turn, put there by us ---
_IMAGE_TOKEN = re.compile(r"<\s*/?\s*(?:image|img)(?:[\s_-]*\d+)?\s*/?\s*>", _I)

# --- refusal: the teacher declines, apologises, or says it cannot see the picture ---
_IMAGE_WORD = r"(?:images?|pictures?|photos?|photographs?|visuals?|visual (?:content|input|data|information)|attachments?|media|files?)"
_I_CANNOT = (
    rf"\bI(?: (?:cannot|can{_A}?t|can not|could not|couldn{_A}?t|am unable to|am not able to|am not capable of|won{_A}t be able to"
    rf"|will not be able to|have no way to|do not|don{_A}?t)|{_A}m (?:unable to|not able to|not capable of))"
)
_REFUSALS = (
    re.compile(rf"\bI(?:{_A}m| am)(?: (?:so|very|really|truly|afraid))? sorry\b|\bI apologi[sz]e\b|(?:^|(?<=[.!?]\s))(?:My )?apologies\b", _I | _M),
    re.compile(rf"(?:^|(?<=[.!?]\s))Sorry,? (?:but )?(?:I|as an|there is no|the image|this image|no image)\b", _I | _M),
    # Perceiving the picture at all, not a detail of it: "I can't see his face" is a fair thing to say.
    re.compile(
        rf"{_I_CANNOT}\s+(?:actually |directly |physically |currently )?(?:see|view|look at|access|open|analy[sz]e|process|perceive"
        rf"|display|load|interpret|examine|inspect|describe|watch|receive)(?:\s+(?:or|and|,)\s+\w+(?: at)?)*"
        rf"\s+(?:(?:the|this|that|your|any|an|a|these|those|actual|provided|attached|uploaded|shared|given|specific|referenced"
        rf"|real|original|such)\s+)*{_IMAGE_WORD}\b",
        _I,
    ),
    re.compile(rf"{_I_CANNOT}\s+(?:view|access|open|load|process|analy[sz]e|display|receive)\s+(?:it|them)\b", _I),
    re.compile(
        rf"{_I_CANNOT}\s+(?:help(?! but\b)(?:\s+(?:you|with))?|assist|comply|fulfil+|provide (?:a |an |any )?(?:description|answer|response|assistance|help))\b",
        _I,
    ),
    re.compile(
        rf"\bI (?:do not|don{_A}?t|did not|didn{_A}?t) (?:have|possess) (?:the ability|the capability|the capacity|any way|a way|the means"
        rf"|(?:any |direct |visual )?access|eyes|vision|visual (?:capabilities|abilities|perception))\b",
        _I,
    ),
    re.compile(rf"\b(?:without|no) (?:(?:direct |visual )?access to|(?:a |any )?way to see|the ability to see|seeing) (?:the|this|your|an|any) (?:actual )?{_IMAGE_WORD}", _I),
    re.compile(
        rf"\b(?:there is no|there{_A}s no|no) {_IMAGE_WORD} (?:was |has been |is )?(?:provided|attached|shared|uploaded|included|available)\b"
        rf"|\byou (?:have not|haven{_A}?t|did not|didn{_A}?t) (?:provide|provided|share|shared|upload|uploaded|attach|attached|include|included) (?:an|the|any|a) {_IMAGE_WORD}"
        rf"|\bplease (?:provide|upload|share|attach|send) (?:an|the|a) {_IMAGE_WORD}",
        _I,
    ),
)

# --- ai_disclaimer: talk about itself as a model instead of about the picture ---
_MODEL_WORD = (
    r"(?:AI|A\.I\.|artificial intelligence|(?:large )?language model|LLM|chatbot|text[- ]based (?:model|AI|assistant|system)"
    r"|text[- ]only (?:model|AI|assistant|system)|(?:AI|virtual|digital|visual AI) (?:language )?(?:model|assistant|system))"
)
_AI_DISCLAIMERS = (
    re.compile(rf"\bas (?:an?|the|your) (?:\w+ )?{_MODEL_WORD}\b", _I),
    re.compile(rf"\b(?:I{_A}m|I am|being|since I{_A}m|since I am) (?:just |only |merely |simply )?(?:an?|a) (?:\w+ )?{_MODEL_WORD}\b", _I),
    re.compile(r"\bmy (?:training data|knowledge cut-?off|programming|training)\b", _I),
    re.compile(rf"\bI (?:can only|only|just) (?:process|read|understand|work with|handle|respond to|see) (?:text|textual|written|words)\b", _I),
)

# --- chat_preamble: chat talk to the requester before the content ---
_PREAMBLE_START = (
    rf"^\s*(?:(?:Sure|Certainly|Of course|Absolutely|Okay|OK|Alright|All right|Gladly|Great|No problem)\b[!.,:]*\s*)?"
)
_PREAMBLES = (
    re.compile(
        _PREAMBLE_START + rf"(?:here{_A}?s|here is|here are|below is|below are|the following is)\b(?:\s+[\w-]+){{0,5}}?\s+"
        r"(?:description|conversation|answer|response|questions?|question-answer|Q&A|analysis|breakdown|overview|summary|version"
        r"|dialogue|explanation|paragraph|reasoning|set|take|look|attempt)\b",
        _I,
    ),
    re.compile(_PREAMBLE_START + rf"(?:I{_A}d|I would|I will|I{_A}ll|I{_A}m) (?:be )?(?:happy|glad|delighted) to\b", _I),
    re.compile(_PREAMBLE_START + r"(?:Let me|I will|I'll|I’ll) (?:describe|provide|create|generate|write|break|walk|paint|analy[sz]e|take a look|give)\b", _I),
    re.compile(r"^\s*(?:#+\s*)?\**(?:Detailed |Image |Scene |Final )?(?:Description|Response|Conversation|Output)\**\s*:", _I),
    re.compile(r"^\s*Great question\b", _I),
)
# A whole reply that is a description opens with the picture, never with "Sure," - a conversation answer may.
_BARE_OPENER = re.compile(r"^\s*(?:Sure|Certainly|Of course|Absolutely|Okay|OK|Alright|All right|Gladly|Great)\b\s*[!,.:]", _I)


def _find_preamble(text: str, task: str) -> Span | None:
    for pattern in _PREAMBLES:
        match = pattern.search(text)
        if match:
            return match.span()
    if task == "detail":
        match = _BARE_OPENER.search(text)
        if match:
            return match.span()
    return None


# --- chat_closing: chat talk to the requester after the content ---
_CLOSINGS = (
    re.compile(
        rf"\bI hope (?:this|that|it|the above|my \w+) (?:helps|is helpful|was helpful|answers|gives|provides|clarifies)"
        rf"|\b(?:please )?let me know if\b|\bfeel free to (?:ask|reach|let)\b|\bdon{_A}?t hesitate to\b|\bdo not hesitate to\b"
        rf"|\bif you (?:have|need|want) (?:any )?(?:more|other|further|additional)\b(?:\s+\w+)?\s+(?:questions|help|details|information|assistance)"
        rf"|\bis there anything else\b|\bwould you like (?:me to|to know more|more (?:details|information))\b"
        rf"|\b(?:happy|glad) to help (?:further|more|with)\b",
        _I,
    ),
)

# --- reveals_text_source: the answer talks about the text it was given, not about a picture ---
_SOURCE_NOUN = r"(?:descriptions?|captions?|sentences?|annotations?|bounding[\s-]*box(?:es)?|coordinates|metadata)"
_WEAK_NOUN = r"(?:information|info|data|text|notes|lists?|details|context|input|prompt|labels|boxes|objects? list)"
_REPORTING = (
    r"(?:say|says|said|mention|mentions|mentioned|describe|describes|described|state|states|stated|note|notes|noted|agree|agrees"
    r"|agreed|disagree|disagrees|confirm|confirms|specify|specifies|specified|tell|tells|refer|refers|list|lists|listed|place|places"
    r"|put|puts|position|positions|imply|implies|talk|talks|provide|provides|give|gives|differ|differs|vary|varies|conflict|conflicts"
    r"|match|matches|focus|focuses|emphasi[sz]es?|suggest|suggests|indicate|indicates|call|calls|claim|claims)"
)
_HEDGE = rf"(?:(?:also|all|both|only|clearly|explicitly|specifically|do not|does not|don{_A}?t|doesn{_A}?t|never|just)\s+)?"
_TEXT_SOURCE_STRONG = (
    re.compile(r"\bbounding[\s-]*box(?:es)?\b|\bbox (?:coordinates|annotations?|positions?|data|labels?|values)\b", _I),
    re.compile(r"\b(?:normali[sz]ed|relative|pixel|spatial|object|box|xy|x-y|\(x, ?y\)|x and y)[\s-]+coordinates?\b|\bcoordinate (?:values?|pairs?|system|data)\b", _I),
    re.compile(r"\b(?:the|its|their|these|those|given|provided|whose|listed|with|by) coordinates\b|\bcoordinates (?:of|for|show|suggest|indicate|place|put|given|provided|are|were|range)\b|\bcoordinates\s*[(\[:=]", _I),
    re.compile(rf"\b(?:image|scene|photo|picture)(?:{_A}s)? (?:descriptions?|captions?|annotations?|metadata)\b", _I),
    re.compile(rf"\b(?:descriptions?|captions?|annotations?) (?:of|for|about) (?:the|this) (?:image|picture|photo|scene)\b", _I),
    re.compile(r"\b(?:detected|annotated|listed|described|mentioned|given|provided|specified) (?:objects?|items?|scene|image|picture|setting|categories|entities|people|persons|elements)\b", _I),
    re.compile(r"\b(?:object|category|class) (?:labels?|names|categories|list)\b", _I),
    re.compile(rf"\byou(?:{_A}ve| have)? (?:provided|given|gave|supplied|shared|described|listed)\b|\bI(?: was|{_A}ve been| have been) (?:given|provided|told|shown)\b", _I),
    re.compile(r"\b(?:no|any|without) mention of\b|\bnot mentioned\b", _I),
    re.compile(r"\bannotated as\b", _I),
    re.compile(rf"\bthis (?:image |scene )?description\b", _I),
)
_TEXT_SOURCE_ABOUT_SOMETHING = (
    # "provided description", "given information"
    re.compile(
        r"\b(?:provided|given|supplied|accompanying|preceding|aforementioned|included|attached|listed|following|available|textual)\s+"
        rf"(?:(?:image|scene|photo|object|box|caption|text)\s+)?(?:{_SOURCE_NOUN}|{_WEAK_NOUN})\b",
        _I,
    ),
    # "the information provided", "the objects listed", "details that were given"
    re.compile(
        rf"\b(?:{_SOURCE_NOUN}|{_WEAK_NOUN}|objects?|items?|elements|entities|categories|things|people|persons|animals)\s+"
        rf"(?:(?:that|which)\s+(?:were|was|are|is|I was|I{_A}ve been|you)\s+|I was\s+|you\s+)?(?:provided|given|supplied|listed|mentioned|described|specified|annotated)\b",
        _I,
    ),
    # "as described", "as was mentioned"
    re.compile(
        r"\bas (?:(?:was|is|were|are|previously|already|clearly|explicitly|I was)\s+)?(?:described|mentioned|stated|listed|noted|specified"
        r"|indicated|annotated|provided|given|detailed|outlined)\b(?!\s+(?:earlier|before|previously|by you|in (?:my|the) (?:previous|earlier|last) answer))",
        _I,
    ),
    # "it was mentioned", "is not described", "are listed" (but "are listed on the menu")
    re.compile(
        rf"\b(?:is|are|was|were|been|being|be)(?:n{_A}t|\s+not|\s+also|\s+only|\s+clearly|\s+explicitly|\s+specifically)*\s+"
        r"(?:described|mentioned|stated|listed|specified|annotated)\b(?!\s+(?:as\s+)?(?:earlier|before|previously))",
        _I,
    ),
    re.compile(rf"\b(?:is|are|was|were)(?:n{_A}t|\s+not)\s+(?:provided|given|specified|included)\b", _I),
    # "according to the description", "from the captions", "in the sentences"
    re.compile(
        r"\b(?:according to|based on|from|in|per|judging (?:by|from)|going by|as per|relying on|given)\s+"
        rf"(?:the|these|those|this|that|my|your|all|each|every|both|its|our|one of the|some of the)\s+(?:[\w-]+\s+){{0,2}}?{_SOURCE_NOUN}\b",
        _I,
    ),
    re.compile(
        r"\b(?:according to|based on|from|in|per|judging (?:by|from)|going by|as per|relying on|given)\s+"
        r"(?:the|these|those|all|my|your)\s+(?:available\s+|limited\s+)?(?:information|info|data|text|notes|list)\b"
        r"(?!\s+(?:\w+\s+){0,2}?(?:in|from|of|within|about|visible|shown|seen)\s+(?:the|this)\s+(?:image|picture|photo|scene|photograph))",
        _I,
    ),
    # "the captions say", "all five sentences agree"
    re.compile(
        r"\b(?:the|these|those|this|that|each|every|all|both|one|another|other|first|second|third|fourth|fifth|last|final|two|three"
        rf"|four|five|several|multiple|some|most|no|my|your)\s+(?:[\w-]+\s+)?(?:descriptions?|captions?|sentences?|coordinates|information|data)\s+{_HEDGE}{_REPORTING}\b",
        _I,
    ),
    re.compile(rf"\b(?:the|these|those|my|your|all|both)\s+annotations?\s+{_HEDGE}(?:say|says|mention|mentions|list|lists|describe|describes|state|states|agree|place|places|put|puts|specify|specifies|mark|marks|label|labels|identify|identifies)\b", _I),
    # "one of the captions", "the first sentence", "all five descriptions"
    re.compile(
        r"\b(?:one|some|none|each|all|both|two|three|four|five|six|most|several|many|any|either|neither|half|majority) of (?:the|these|those|my|your) "
        r"(?:[\w-]+\s+)?(?:descriptions|captions|sentences|annotations|notes)\b",
        _I,
    ),
    re.compile(r"\b(?:first|second|third|fourth|fifth|last|final|other|previous|remaining) (?:descriptions?|captions?|sentences?)\b", _I),
    re.compile(r"\b(?:the|these|those|all|both|multiple|several|different|various|other|given|two|three|four|five|six)\s+(?:[\w-]+\s+)?(?:captions|sentences)\b(?! contest)", _I),
    re.compile(r"\b(?:all|both|multiple|several|two|three|four|five|six) (?:of the )?descriptions\b", _I),
)


def _find_text_source(text: str, task: str) -> Span | None:
    return _strong_text_source(text, task) or _text_source_about_something(text, task)


_strong_text_source = _finder(*_TEXT_SOURCE_STRONG)
_text_source_about_something = _finder(*_TEXT_SOURCE_ABOUT_SOMETHING, unless_on_something=True)

# --- box_coordinates: numbers only the normalised box corners can have produced ---
_NORM = r"(?:0?\.\d{1,3}|1\.0{1,3})"  # a 0..1 value with a decimal point, as the context writes corners
_UNIT = (
    r"\s*(?:%|percent|per ?cent|mm|cm|km|m|kg|g|mg|lbs?|oz|ml|l|liters?|litres?|gal|gallons?|mi|miles?|mph|km/h|kph|inch(?:es)?|in|ft"
    r"|feet|seconds?|secs?|s|ct|carats?|dollars?|cents?|euros?|pounds?|points?|pts|stars?|x|times|ounces?|grams?|meters?|metres?"
    r"|kilometers?|kilometres?|hours?|hrs?|minutes?|mins?|volts?|v|amps?|mpg|acres?|each|apiece|a piece|per|a pound|a dozen|/)(?![a-z])"
)
_BOX_NUMBERS = (
    re.compile(rf"\b(?:x|y|x1|y1|x2|y2|x_?min|y_?min|x_?max|y_?max|w|h|cx|cy|left|top|right|bottom|width|height)\s*(?:=|:|≈|~)\s*{_NORM}(?!\d)", _I),
    re.compile(rf"[(\[]\s*(?:{_NORM}\s*,\s*(?:{_NORM}|[01])|[01]\s*,\s*{_NORM})(?!\d)"),
    re.compile(rf"(?<![\w.$€£¥])0?\.\d{{1,3}}\s*(?:-|–|—|to|and)\s*{_NORM}(?!\d)(?!{_UNIT})", _I),
    re.compile(rf"(?<![\w.$€£¥,/:])0?\.\d{{2,3}}(?![\d.,]\d)(?!{_UNIT})", _I),
)
_PRICE_BEFORE = re.compile(r"(?:price[sd]?|costs?|for|sells?|sold|only|just|fare|pay|paid|rate)\s*(?:is|of|at)?\s*$", _I)


def _find_box_numbers(text: str, task: str) -> Span | None:
    for pattern in _BOX_NUMBERS:
        for match in pattern.finditer(text):
            if _in_quotes(text, match.start()) or _PRICE_BEFORE.search(text[max(0, match.start() - 20):match.start()]):
                continue
            return match.span()
    return None


# --- incomplete_sentence: cut mid-sentence although the teacher reported a normal stop ---
_END_OK = ".!?…)\"”»"
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")
_CLOSING_MARKUP = "*_` \t\n'’]"


def _find_incomplete(text: str, task: str) -> Span | None:
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


RULES: tuple[Rule, ...] = (
    Rule("control_string", frozenset({"question", "answer"}), _finder(_CONTROL, unless_quoted=False), "chat-template tokens such as </s>, [INST] or a USER: line"),
    Rule("image_token_echo", frozenset({"question", "answer"}), _finder(_IMAGE_TOKEN, unless_quoted=False), "an <image> token in the teacher's text"),
    Rule("refusal", frozenset({"answer"}), _finder(*_REFUSALS), "declines, apologises or says it cannot see the image"),
    Rule("ai_disclaimer", frozenset({"answer"}), _finder(*_AI_DISCLAIMERS), "talks about itself as an AI or language model"),
    Rule("chat_preamble", frozenset({"answer"}), _find_preamble, "opens with chat talk: 'Sure! Here's a detailed description:'"),
    Rule("chat_closing", frozenset({"answer"}), _finder(*_CLOSINGS), "ends with chat talk: 'Let me know if you have questions'"),
    Rule(
        "reveals_text_source",
        frozenset({"question", "answer"}),
        _find_text_source,
        "refers to the captions, descriptions, lists or boxes the teacher was given",
    ),
    Rule("box_coordinates", frozenset({"question", "answer"}), _find_box_numbers, "quotes numbers that only the normalised box corners contain"),
    Rule("incomplete_sentence", frozenset({"answer"}), _find_incomplete, "stops mid-sentence although the teacher said it was done"),
)
RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES)
_PRIORITY = {name: index for index, name in enumerate(RULE_NAMES)}
_ENDING_RULES = frozenset({"incomplete_sentence"})


def _excerpt(text: str, span: Span, margin: int = 30) -> str:
    start, end = max(0, span[0] - margin), min(len(text), span[1] + margin)
    return ("…" if start else "") + text[start:end].replace("\n", " ") + ("…" if end < len(text) else "")


def check_text(text: str, role: Role, turn: int = 0, task: str = "conversation") -> list[Finding]:
    """Every rule that fires on one question or answer, in rule order."""
    findings = []
    for rule in RULES:
        if role in rule.roles:
            span = rule.find(text, task)
            if span is not None:
                findings.append(Finding(rule=rule.name, turn=turn, role=role, excerpt=_excerpt(text, span)))
    return findings


def check_pairs(task: str, pairs: list[tuple[str, str]]) -> list[Finding]:
    """Findings over every question and answer of a reply, most serious rule first, then by turn.

    For `detail`, pairs is [(instruction, description)]; an empty question is skipped.
    """
    findings: list[Finding] = []
    for turn, (question, answer) in enumerate(pairs):
        if question.strip():
            findings.extend(check_text(question, "question", turn, task))
        findings.extend(check_text(answer, "answer", turn, task))
    return sorted(findings, key=lambda finding: (_PRIORITY[finding.rule], finding.turn, finding.role != "question"))


def check_lead(text: str) -> list[Finding]:
    """Findings on text a Question/Answer reply holds before its first `Question:` (or instead of any):
    judged like a free-text reply, since no such text belongs there; its ending is not judged."""
    findings = check_text(text, "answer", 0, "detail")
    return [finding for finding in findings if finding.rule not in _ENDING_RULES]
