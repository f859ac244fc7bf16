"""Our own word list for the 80 COCO object categories: which words in an answer name which category.

Choices for ambiguous words (they decide what counts as a mention, so they shape every CHAIR figure):
- Words that usually name something else are left out: bare "glass"/"glasses" (a material, spectacles, or a
  cup), "plant" (outdoor vegetation more often than a potted plant), "bag" (handbag, backpack or suitcase),
  "glove" (ski and winter gloves), "baseball"/"football"/"basketball" (the sport as often as the ball),
  "coach" (a person or a bus), "pitcher" (a player or a jug), "fan" (a person or a ceiling fan), "desk".
- "orange" counts only as "oranges": the singular is mostly a colour.
- "mother", "father" and "passenger" name a person unless another category word follows ("passenger jet"); "baby"
  and "adult" are left out of the person words and "calf" out of the cow words: they name young and grown animals
  of any kind ("two adults and one baby" in a herd of elephants, "elephant calves").
- "owner", "user" and "resident" are left out: answers infer them ("the owner likely...") more than they see them.
- "remote" counts unless a place noun follows ("a remote area"); "bat" unless it is "at bat" (batting);
  "tie" unless it is a verb ("to tie", "tie up"); "mouse" always maps to the computer mouse (the animal is
  no COCO category and rare in COCO images); "sink" always maps to the basin.
- Some words may name either of two categories: a mention of "bike" is supported by a bicycle or a
  motorcycle, "van" by a car or a truck, "monitor"/"computer" by a tv or a laptop.
- Phrases that contain a category word without naming the object ("bird's-eye view", "bus stop", "train
  station", "flower bed", "ski slope", "table tennis", "DVD player", "toy car", "the sun sinks behind") are
  matched first and name nothing.
- People: the everyday words for a person and the roles people are shown in (player, skier, rider,
  customer, passenger...). Not "viewer" or "photographer": they are outside the picture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from datagen.quality.patterns import alternation

# category -> words naming it (singular; plurals are derived, irregular ones are listed in _PLURALS)
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "person": (
        "person", "people", "persons", "man", "woman", "boy", "girl", "child", "kid", "toddler", "infant",
        "teenager", "teen", "guy", "lady", "gentleman", "humans", "individuals", "someone", "somebody",
        "player", "skier", "snowboarder", "surfer", "skateboarder", "skater", "cyclist", "bicyclist", "biker",
        "motorcyclist", "rider", "horseman", "jockey", "cowboy", "driver", "pedestrian", "passenger", "commuter",
        "traveler", "traveller", "tourist", "visitor", "customer", "shopper", "buyer", "diner", "guest", "vendor",
        "worker", "chef", "baker", "waiter", "waitress", "bartender", "officer", "policeman", "policewoman",
        "soldier", "student", "teacher", "athlete", "batter", "catcher", "umpire", "referee", "spectator",
        "onlooker", "audience", "crowd", "friend", "couple", "father", "mother", "dad", "mom", "son",
        "daughter", "brother", "sister", "husband", "wife", "bride", "groom", "hiker", "runner",
        "swimmer", "fisherman", "farmer", "herder", "shepherd", "operator",
    ),
    "bicycle": ("bicycle", "bmx bike", "mountain bike", "road bike", "racing bike"),
    "car": ("car", "sedan", "taxi", "suv", "hatchback", "jeep", "minivan", "automobile", "police car", "race car", "sports car"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "dirt bike", "moped"),
    "airplane": ("airplane", "aeroplane", "plane", "jet", "jetliner", "airliner", "aircraft", "jumbo jet"),
    "bus": ("bus", "double-decker", "double decker", "school bus", "minibus"),
    "train": ("train", "locomotive", "tram", "streetcar", "subway train", "passenger train", "freight train"),
    "truck": ("truck", "pickup truck", "fire truck", "firetruck", "dump truck", "lorry"),
    "boat": ("boat", "ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "rowboat", "speedboat"),
    "traffic light": ("traffic light", "traffic signal", "stoplight", "stop light"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench", "park bench"),
    "bird": (
        "bird", "pigeon", "seagull", "gull", "duck", "goose", "parrot", "swan", "crow", "sparrow", "eagle", "owl",
        "hen", "rooster", "pelican", "flamingo", "seabird",
    ),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "pup", "doggy"),
    "horse": ("horse", "pony", "foal", "stallion", "mare"),
    "sheep": ("sheep", "lamb"),
    "cow": ("cow", "cattle", "bull", "ox"),
    "elephant": ("elephant",),
    "bear": ("bear", "polar bear", "grizzly"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "rucksack", "knapsack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse"),
    "tie": ("tie", "necktie", "bow tie"),
    "suitcase": ("suitcase", "luggage", "baggage"),
    "frisbee": ("frisbee", "flying disc"),
    "skis": ("skis", "ski", "pair of skis"),
    "snowboard": ("snowboard",),
    "sports ball": ("ball", "soccer ball", "tennis ball", "beach ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat", "cricket bat"),
    "baseball glove": ("baseball glove", "baseball mitt", "catcher's mitt", "mitt"),
    "skateboard": ("skateboard", "skate board"),
    "surfboard": ("surfboard", "surf board"),
    "tennis racket": ("tennis racket", "racket", "racquet", "tennis racquet"),
    "bottle": ("bottle",),
    "wine glass": (
        "wine glass", "wineglass", "champagne glass", "glass of wine", "glass of red wine", "glass of white wine",
        "glass of champagne",
    ),
    "cup": ("cup", "mug", "teacup", "coffee cup"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "hamburger", "cheeseburger", "sub sandwich"),
    "orange": ("oranges",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog", "frankfurter"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake", "cheesecake"),
    "chair": ("chair", "armchair"),
    "couch": ("couch", "sofa", "loveseat", "settee"),
    "potted plant": (
        "potted plant", "houseplant", "house plant", "pot plant", "flower pot", "flowerpot", "planter",
        "potted flower", "potted tree", "potted palm", "potted herb",
    ),
    "bed": ("bed", "bunk bed"),
    "dining table": ("dining table", "table", "kitchen table", "coffee table", "picnic table", "dinner table"),
    "toilet": ("toilet", "toilet bowl"),
    "tv": ("tv", "television", "tv set", "flat screen", "flat-screen", "flatscreen"),
    "laptop": ("laptop", "notebook computer", "macbook"),
    "mouse": ("mouse", "computer mouse"),
    "remote": ("remote", "remote control", "controller", "game controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "cellphone", "phone", "smartphone", "mobile phone", "iphone", "telephone"),
    "microwave": ("microwave", "microwave oven"),
    "oven": ("oven", "stove", "stovetop"),
    "toaster": ("toaster", "toaster oven"),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book", "novel", "textbook"),
    "clock": ("clock", "clock tower", "wall clock"),
    "vase": ("vase",),
    "scissors": ("scissors", "pair of scissors"),
    "teddy bear": ("teddy bear", "teddy", "stuffed bear", "stuffed animal", "plush toy"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer", "blow-dryer"),
    "toothbrush": ("toothbrush",),
}

# Words that may name either of several categories: supported when the image holds any of them.
AMBIGUOUS_WORDS: dict[str, tuple[str, ...]] = {
    "bike": ("bicycle", "motorcycle"),
    "van": ("car", "truck"),
    "monitor": ("tv", "laptop"),
    "computer monitor": ("tv", "laptop"),
    "computer": ("laptop", "tv", "keyboard"),
}

# Phrases that hold a category word but name no object of it; matched first so the word inside is not counted.
NON_OBJECT_PHRASES: tuple[str, ...] = (
    "bird's-eye view", "bird's eye view", "birds-eye view", "bus stop", "bus station", "bus lane", "train station",
    "train tracks", "train platform", "flower bed", "truck bed", "river bed", "car park", "ski slope", "ski resort",
    "ski lift", "ski area", "ski run", "ski pole", "ski jacket", "ski boots", "ski goggles", "ski trail",
    "table tennis", "tie-dye", "concrete bowl", "skate bowl", "super bowl", "hot dog stand", "bike lane", "bike path",
    "bike rack", "dog park", "cat walk", "bed sheet", "tv stand", "phone booth", "teddy bear picnic",
    "remote area", "remote location", "remote region", "remote place", "remote village", "remote island",
    "remote spot", "remote part", "remote road", "remote beach", "remote town", "at bat", "cup holder",
    "table of contents", "couple of", "in a ball", "into a ball", "tight ball", "ball of yarn", "sink into", "sinks into", "chair lift", "jet ski", "to train",
    "to tie", "tie up", "ties up", "tie their", "tie his", "tie her", "tie the",
    "cd player", "dvd player", "record player", "music player", "mp3 player", "media player", "toy car", "toy train",
    "toy truck", "toy airplane", "bear in mind", "fork in the road", "to ski", "ski down",
    "sink below", "sink behind", "sink beneath", "sink toward", "sink towards", "sink low", "sink slowly", "sink down",
)

_PLURALS = {
    "person": "persons", "people": "people", "man": "men", "woman": "women", "gentleman": "gentlemen",
    "policeman": "policemen", "policewoman": "policewomen", "horseman": "horsemen", "fisherman": "fishermen",
    "child": "children", "mouse": "mice", "knife": "knives", "sheep": "sheep", "cattle": "cattle", "goose": "geese",
    "calf": "calves", "ox": "oxen", "scissors": "scissors", "skis": "skis", "broccoli": "broccoli",
    "luggage": "luggage", "baggage": "baggage", "aircraft": "aircraft", "oranges": "oranges", "audience": "audiences",
    "humans": "humans", "individuals": "individuals",
    "glass of wine": "glasses of wine", "glass of champagne": "glasses of champagne",
    "glass of red wine": "glasses of red wine", "glass of white wine": "glasses of white wine", "pair of skis": "pairs of skis",
    "pair of scissors": "pairs of scissors", "bus": "buses", "double-decker": "double-deckers",
    "lady": "ladies", "baby": "babies", "family": "families", "puppy": "puppies", "pony": "ponies",
    "kitty": "kitties", "doggy": "doggies", "teddy": "teddies", "crowd": "crowds", "bmx bike": "bmx bikes",
    "couple of": "couple of", "at bat": "at bat", "to train": "to train", "to tie": "to tie", "tie up": "tie up",
    "bear in mind": "bears in mind", "fork in the road": "forks in the road", "to ski": "to ski", "ski down": "skis down",
    "sink below": "sinks below", "sink behind": "sinks behind", "sink beneath": "sinks beneath", "sink toward": "sinks toward",
    "sink towards": "sinks towards", "sink low": "sinks low", "sink slowly": "sinks slowly", "sink down": "sinks down",
}


def plural(word: str, irregular: Mapping[str, str] = _PLURALS) -> str:
    """English plural of a noun or a noun phrase (its last word); `irregular` overrides the spelling rules."""
    if word in irregular:
        return irregular[word]
    head, _, last = word.rpartition(" ")
    prefix = head + " " if head else ""
    if last in irregular:
        return prefix + irregular[last]
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return prefix + last + "es"
    if last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        return prefix + last[:-1] + "ies"
    return prefix + last + "s"


def _key(text: str) -> str:
    """Spellings of one form alike: case, a space or a hyphen between words, typographic apostrophes."""
    return re.sub(r"[\s\-]+", " ", text.lower().replace("’", "'")).strip()


def _forms() -> dict[str, tuple[str, ...]]:
    """Every surface form (singular and plural, keyed by `_key`) -> the categories it may name; () for non-objects."""
    forms: dict[str, tuple[str, ...]] = {}
    for category, words in CATEGORY_WORDS.items():
        for word in words:
            for form in (word, plural(word)):
                forms.setdefault(_key(form), (category,))
    for word, categories in AMBIGUOUS_WORDS.items():
        for form in (word, plural(word)):
            forms[_key(form)] = categories
    for phrase in NON_OBJECT_PHRASES:
        for form in (phrase, plural(phrase)):
            forms[_key(form)] = ()
    return forms


FORMS: dict[str, tuple[str, ...]] = _forms()
# Person words that are adjectives when a category word follows them ("baby elephant", "mother duck").
PERSON_MODIFIERS = frozenset({"mother", "father", "passenger"})


_JOINER = re.compile(r"[\s\-]+")  # what may stand between the words of one name: "hot dog", "hot-dog"


# Any listed form as whole words: it starts a word (a word is r"\w+('\w+)*", so "dog" in "hotdog" or "rock'dog" does
# not count) and ends one, or ends in "'s" ("the dog's collar"). Greedy, so "hot dog" wins over "hot" and "dog".
_FORM = re.compile(r"(?<!\w)(?<!\w')(?:" + alternation(sorted(FORMS), space=r"[\s\-]+") + r")(?:'s)?(?!\w)(?!'\w)")


def find_forms(text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, categories) of each listed form in `text`, left to right, the longest form at each place
    first, so "hot dog" wins over "dog" and "dining table" over "table"; () marks a phrase naming no object."""
    lowered = text.lower().replace("’", "'")
    if len(lowered) != len(text):  # a few characters change length when lowered ("İ"): keep positions exact
        lowered = "".join(character.lower()[:1] for character in text).replace("’", "'")
    found = []
    for match in _FORM.finditer(lowered):
        categories = FORMS.get(match.group())  # a form as listed; else spelt with other joiners, or possessive
        if categories is None:
            key = _JOINER.sub(" ", match.group())
            categories = FORMS.get(key)
            if categories is None:
                categories = FORMS[key[:-2]]  # possessive: "the dog's collar"
        found.append((match.start(), match.end(), categories))
    return found
