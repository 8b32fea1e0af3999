"""CHAIR (Caption Hallucination Assessment with Image Relevance, Rohrbach et al. 2018).

Object mentions are found in a caption by:

1. lower-casing and splitting into alphabetic words (``"hot-dog"`` -> ``hot dog``,
   ``"man's"`` -> ``man s``);
2. matching the longest phrase first (up to :data:`MAX_PHRASE_WORDS` words), so ``"hot dog"`` is a
   hot dog and not a dog, ``"teddy bear"`` not a bear, ``"dirt bike"`` a motorcycle not a bicycle;
   a few phrases are *blocked* (they name no COCO object: ``"pony tail"``, ``"baseball field"``,
   ``"train tracks"``...), which also stops their words from matching alone;
3. plural forms are read as their singular (``dogs``, ``women``, ``knives``, ``buses``...);
4. each match maps, through the synonym table, to one of the 80 COCO category names
   (``man``/``girl``/``people`` -> ``person``, ``sofa`` -> ``couch``...);
5. the original's special cases: ``baby``/``adult`` before an animal word and ``passenger``
   before a vehicle word are qualifiers, not people (``"baby elephant"`` is one elephant), and a
   ``seat`` in a caption that mentions a toilet is the toilet's seat, not a chair.

Metrics over captions with ground-truth object sets:

* ``chair_i`` = hallucinated object mentions / all object mentions (mentions counted with
  multiplicity, as the original does);
* ``chair_s`` = captions with at least one hallucinated mention / captions;
* ``recall``  = ground-truth objects mentioned / ground-truth objects (pooled over captions,
  each caption's ground truth taken as a set).

Ratios with a zero denominator are 0.0. Known limitation shared with the original: no
part-of-speech tagging, so a colour adjective ("an orange cat") counts as the fruit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from vlmbench.metrics.scorer import (
    DEFAULT_RESAMPLES,
    SampleStats,
    Scorer,
    base_fields,
    ci,
    mean,
    ratio_matrix,
    result,
)

# ---------------------------------------------------------------------------------------------
# Data: COCO category -> the words and phrases (singular) that name it in captions.
# The first entry of each row is the category name itself, in COCO's category-id order.
# ---------------------------------------------------------------------------------------------
SYNONYMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("person", (
        "person", "people", "man", "woman", "boy", "girl", "kid", "child", "baby", "toddler", "infant",
        "adult", "teenager", "teen", "guy", "lady", "gentleman", "male", "female", "human",
        "mother", "father", "mom", "dad", "parent", "brother", "sister", "son", "daughter", "husband",
        "wife", "bride", "groom", "grandmother", "grandfather", "friend",
        "player", "athlete", "skier", "snowboarder", "surfer", "skateboarder", "skater", "rider",
        "biker", "cyclist", "bicyclist", "motorcyclist", "pitcher", "batter", "catcher", "umpire",
        "swimmer", "jogger", "runner", "hiker", "spectator",
        "chef", "baker", "worker", "farmer", "vendor", "officer", "policeman", "policewoman",
        "police officer", "cop", "soldier", "doctor", "nurse", "student", "teacher", "driver",
        "passenger", "pedestrian", "tourist", "traveler", "traveller", "shopper", "customer",
        "cowboy", "businessman", "businesswoman", "fireman", "firefighter", "sailor", "pilot",
    )),
    ("bicycle", ("bicycle", "bike", "tricycle", "trike", "unicycle", "mountain bike")),
    ("car", (
        "car", "automobile", "van", "minivan", "sedan", "suv", "jeep", "taxi", "taxicab", "cab", "limo",
        "limousine", "hatchback", "coupe", "police car", "sports car",
    )),
    ("motorcycle", (
        "motorcycle", "motorbike", "motor bike", "motor cycle", "dirt bike", "scooter", "moped",
    )),
    ("airplane", (
        "airplane", "aeroplane", "plane", "air plane", "jet", "jetliner", "airliner", "aircraft",
        "biplane", "seaplane", "jumbo jet",
    )),
    ("bus", ("bus", "minibus", "school bus", "trolley bus")),
    ("train", ("train", "locomotive", "tram", "streetcar", "caboose")),
    ("truck", ("truck", "pickup truck", "pickup", "lorry", "firetruck", "fire truck", "semi truck")),
    ("boat", (
        "boat", "ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "motorboat", "speedboat",
        "rowboat", "dinghy", "catamaran", "gondola", "tugboat", "vessel",
    )),
    ("traffic light", ("traffic light", "traffic signal", "stoplight", "stop light")),
    ("fire hydrant", ("fire hydrant", "hydrant")),
    ("stop sign", ("stop sign",)),
    ("parking meter", ("parking meter",)),
    ("bench", ("bench", "park bench")),
    ("bird", (
        "bird", "pigeon", "seagull", "gull", "duck", "duckling", "goose", "swan", "parrot",
        "owl", "eagle", "hawk", "sparrow", "crow", "pelican", "flamingo", "heron", "penguin",
        "rooster", "hen",
    )),
    ("cat", ("cat", "kitten", "kitty")),
    ("dog", ("dog", "puppy", "pup", "doggy", "terrier", "retriever", "bulldog", "poodle", "beagle")),
    ("horse", ("horse", "pony", "foal", "colt", "stallion", "mare")),
    ("sheep", ("sheep", "lamb", "ewe")),
    ("cow", ("cow", "cattle", "bull", "calf", "ox", "heifer")),
    ("elephant", ("elephant",)),
    ("bear", ("bear", "polar bear", "grizzly")),
    ("zebra", ("zebra",)),
    ("giraffe", ("giraffe",)),
    ("backpack", ("backpack", "back pack", "knapsack", "rucksack")),
    ("umbrella", ("umbrella", "parasol")),
    ("handbag", ("handbag", "hand bag", "purse")),
    ("tie", ("tie", "necktie", "bow tie")),
    ("suitcase", ("suitcase", "suit case", "luggage")),
    ("frisbee", ("frisbee", "flying disc")),
    ("skis", ("skis", "ski")),
    ("snowboard", ("snowboard",)),
    ("sports ball", (
        "sports ball", "ball", "soccer ball", "football", "basketball", "baseball", "softball",
        "volleyball", "tennis ball", "beach ball",
    )),
    ("kite", ("kite",)),
    ("baseball bat", ("baseball bat", "bat")),
    ("baseball glove", ("baseball glove", "glove", "mitt", "baseball mitt")),
    ("skateboard", ("skateboard", "skate board", "longboard")),
    ("surfboard", ("surfboard", "surf board")),
    ("tennis racket", ("tennis racket", "racket", "racquet", "tennis racquet")),
    ("bottle", ("bottle",)),
    ("wine glass", ("wine glass", "wineglass", "champagne glass", "goblet")),
    ("cup", ("cup", "mug", "teacup", "coffee cup", "coffee mug")),
    ("fork", ("fork",)),
    ("knife", ("knife",)),
    ("spoon", ("spoon", "teaspoon", "tablespoon")),
    ("bowl", ("bowl",)),
    ("banana", ("banana",)),
    ("apple", ("apple",)),
    ("sandwich", ("sandwich", "burger", "hamburger", "cheeseburger", "sub", "sub sandwich", "panini")),
    ("orange", ("orange", "tangerine")),
    ("broccoli", ("broccoli",)),
    ("carrot", ("carrot",)),
    ("hot dog", ("hot dog", "hotdog", "frankfurter")),
    ("pizza", ("pizza",)),
    ("donut", ("donut", "doughnut")),
    ("cake", ("cake", "cupcake", "cheesecake")),
    ("chair", ("chair", "seat", "stool", "armchair", "recliner", "highchair", "high chair")),
    ("couch", ("couch", "sofa", "loveseat", "love seat", "settee", "futon")),
    ("potted plant", ("potted plant", "houseplant", "house plant", "flowerpot", "flower pot")),
    ("bed", ("bed",)),
    ("dining table", (
        "dining table", "table", "desk", "kitchen table", "coffee table", "picnic table",
    )),
    ("toilet", ("toilet", "toilet seat", "toilet bowl", "urinal", "commode", "lavatory")),
    ("tv", ("tv", "television", "tv set", "television set", "monitor", "computer monitor", "flat screen")),
    ("laptop", ("laptop", "computer", "laptop computer", "notebook computer", "macbook")),
    ("mouse", ("mouse", "computer mouse")),
    ("remote", ("remote", "remote control", "controller")),
    ("keyboard", ("keyboard", "computer keyboard")),
    ("cell phone", (
        "cell phone", "cellphone", "phone", "mobile phone", "smartphone", "smart phone", "telephone",
        "iphone",
    )),
    ("microwave", ("microwave", "microwave oven")),
    ("oven", ("oven", "stove", "stovetop", "stove top")),
    ("toaster", ("toaster", "toaster oven")),
    ("sink", ("sink",)),
    ("refrigerator", ("refrigerator", "fridge", "freezer")),
    ("book", ("book", "textbook")),
    ("clock", ("clock", "alarm clock", "wall clock", "clock tower")),
    ("vase", ("vase",)),
    ("scissors", ("scissors", "scissor")),
    ("teddy bear", ("teddy bear", "teddybear", "teddy")),
    ("hair drier", ("hair drier", "hair dryer", "hairdryer", "blow dryer", "blow drier")),
    ("toothbrush", ("toothbrush", "tooth brush")),
)  # fmt: skip

# Phrases that name no COCO object but contain words that would otherwise match one.
BLOCKED_PHRASES: tuple[str, ...] = (
    "pony tail", "train track", "train station", "street light", "home plate",
    "baseball field", "baseball game", "baseball diamond", "baseball cap", "baseball hat",
    "baseball uniform", "baseball team", "baseball stadium", "football field", "football game",
    "soccer field", "soccer game", "basketball court", "basketball game", "tennis court",
    "ski slope", "ski lift", "ski resort", "ski lodge", "ski area", "ski run", "ski trail",
    "flower bed", "river bed", "fork lift", "bus stop", "bus station", "table cloth",
    "table top", "table tennis", "computer screen", "dvd player", "cd player", "record player",
    "video player", "media player",
)  # fmt: skip

# Phrases whose category differs from what their words would match one by one.
PHRASE_OVERRIDES: Mapping[str, str] = MappingProxyType(
    {
        "baseball player": "person",
        "football player": "person",
        "soccer player": "person",
        "basketball player": "person",
        "tennis player": "person",
        "truck bed": "truck",
    }
)

# "baby"/"adult" in front of these are qualifiers of an animal; "passenger" in front of a vehicle.
ANIMAL_CATEGORIES: frozenset[str] = frozenset(
    {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
)
VEHICLE_CATEGORIES: frozenset[str] = frozenset({"airplane", "train", "bus", "boat", "car", "truck"})
_QUALIFIER_TARGETS: Mapping[str, frozenset[str]] = MappingProxyType(
    {"baby": ANIMAL_CATEGORIES, "adult": ANIMAL_CATEGORIES, "passenger": VEHICLE_CATEGORIES}
)
_QUALIFIED_GENERIC: Mapping[str, frozenset[str]] = MappingProxyType(
    {"baby": frozenset({"animal", "animals", "cub", "cubs"}), "adult": frozenset({"animal", "animals"})}
)

COCO_CATEGORIES: tuple[str, ...] = tuple(name for name, _ in SYNONYMS)
_CATEGORY_SET: frozenset[str] = frozenset(COCO_CATEGORIES)

# Irregular plurals of words used in the table (the regular ones are generated).
_IRREGULAR_PLURALS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "person": ("persons",),
        "child": ("children",),
        "mouse": ("mice",),
        "knife": ("knives",),
        "goose": ("geese",),
        "ox": ("oxen",),
        "calf": ("calves",),
        "sheep": ("sheep",),
        "cattle": ("cattle",),
        "bus": ("buses", "busses"),
        "scissors": ("scissors",),
        "skis": ("skis",),
        "broccoli": ("broccoli",),
        "luggage": ("luggage",),
        "people": ("peoples",),
    }
)

_WORD = re.compile(r"[a-z]+")


def _plurals(word: str) -> tuple[str, ...]:
    """Plural spellings of a singular word (irregular table first, then English rules)."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith("man") and word not in ("human",):
        return (word[:-3] + "men",)
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return (word + "es",)
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return (word[:-1] + "ies",)
    return (word + "s",)


def _build_lexicon() -> Mapping[tuple[str, ...], str | None]:
    """Every surface phrase (as a word tuple, singular and plural) -> category, or None if blocked."""
    lexicon: dict[tuple[str, ...], str | None] = {}

    def add(phrase: str, category: str | None) -> None:
        words = tuple(phrase.split())
        for last in (words[-1], *_plurals(words[-1])):
            lexicon.setdefault((*words[:-1], last), category)

    for category, synonyms in SYNONYMS:
        for synonym in synonyms:
            add(synonym, category)
    for phrase, category in PHRASE_OVERRIDES.items():
        add(phrase, category)
    for phrase in BLOCKED_PHRASES:
        add(phrase, None)
    return MappingProxyType(lexicon)


LEXICON: Mapping[tuple[str, ...], str | None] = _build_lexicon()
MAX_PHRASE_WORDS: int = max(len(key) for key in LEXICON)
_SYNONYM_TO_CATEGORY: Mapping[str, str] = MappingProxyType(
    {" ".join(k): v for k, v in LEXICON.items() if v is not None}
)


class Mention(NamedTuple):
    """One object mention: character span in the caption, the text matched, its COCO category."""

    start: int
    end: int
    text: str
    category: str


def object_mentions(caption: str) -> list[Mention]:
    """All COCO object mentions in a caption, in order (see the module docstring for the rules)."""
    lowered = caption.lower()
    tokens = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(lowered)]
    words = [t[0] for t in tokens]
    mentions: list[Mention] = []
    i = 0
    while i < len(words):
        for size in range(min(MAX_PHRASE_WORDS, len(words) - i), 0, -1):
            key = tuple(words[i : i + size])
            if key in LEXICON:
                category = LEXICON[key]
                if category is not None and not _is_qualifier(words, i, size, category):
                    start, end = tokens[i][1], tokens[i + size - 1][2]
                    mentions.append(Mention(start, end, caption[start:end], category))
                i += size
                break
        else:
            i += 1
    if any(m.category == "toilet" for m in mentions):
        mentions = [
            m for m in mentions if not (m.category == "chair" and m.text.lower() in ("seat", "seats"))
        ]
    return mentions


def _is_qualifier(words: Sequence[str], i: int, size: int, category: str) -> bool:
    """Whether the single word at ``i`` (a person word) only qualifies the animal/vehicle after it."""
    if size != 1 or category != "person" or words[i] not in _QUALIFIER_TARGETS or i + 1 >= len(words):
        return False
    following = words[i + 1]
    if following in _QUALIFIED_GENERIC.get(words[i], frozenset()):
        return True
    for size_next in range(min(MAX_PHRASE_WORDS, len(words) - i - 1), 0, -1):
        target = LEXICON.get(tuple(words[i + 1 : i + 1 + size_next]))
        if target is not None:
            return target in _QUALIFIER_TARGETS[words[i]]
    return False


def extract_objects(caption: str) -> list[str]:
    """The COCO categories a caption mentions, one entry per mention (with multiplicity)."""
    return [m.category for m in object_mentions(caption)]


def check_categories(names: Iterable[str]) -> list[str]:
    """Return the names unchanged if all are COCO category names; raise ValueError naming the bad one."""
    names = list(names)
    for name in names:
        if name not in _CATEGORY_SET:
            hint = _SYNONYM_TO_CATEGORY.get(str(name).lower().strip())
            suggestion = (
                f"; did you mean {hint!r}?" if hint else " (see vlmbench.metrics.chair.COCO_CATEGORIES)"
            )
            raise ValueError(f"{name!r} is not a COCO category name{suggestion}")
    return names


def hallucinated_objects(caption: str, gt_objects: Iterable[str]) -> list[str]:
    """Categories mentioned in the caption but absent from ``gt_objects`` (distinct, in mention order)."""
    gt = set(gt_objects)
    return list(dict.fromkeys(c for c in extract_objects(caption) if c not in gt))


def caption_counts(caption: str, gt_objects: Iterable[str]) -> dict[str, Any]:
    """Per-caption CHAIR counts: mentioned/hallucinated categories and the numbers behind the metrics."""
    gt = set(gt_objects)
    mentioned = extract_objects(caption)
    hallucinated = [c for c in mentioned if c not in gt]
    return {
        "mentioned": mentioned,
        "hallucinated": hallucinated,
        "n_mentions": len(mentioned),
        "n_hallucinated": len(hallucinated),
        "n_gt": len(gt),
        "n_gt_covered": len(gt & set(mentioned)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def chair_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{"chair_i", "chair_s", "recall"}`` over rows with ``prediction`` (caption) and ``gt_objects``."""
    counts = [caption_counts(r["prediction"], check_categories(r["gt_objects"])) for r in rows]
    return {
        "chair_i": _ratio(sum(c["n_hallucinated"] for c in counts), sum(c["n_mentions"] for c in counts)),
        "chair_s": _ratio(sum(c["n_hallucinated"] > 0 for c in counts), len(counts)),
        "recall": _ratio(sum(c["n_gt_covered"] for c in counts), sum(c["n_gt"] for c in counts)),
    }


def gt_objects(row: Mapping[str, Any]) -> list[str] | None:
    """An image's ground-truth objects: `gt_objects` when a row has it, else `references` (where the
    runner's CHAIR sample logs keep them)."""
    for key in ("gt_objects", "references"):
        if isinstance(row.get(key), list):
            return list(row[key])
    return None


def _pooled(num: np.ndarray, den: np.ndarray) -> Any:
    """The statistic ``sum(num[i]) / sum(den[i])`` of a resample ``i`` (0.0 for a zero denominator)."""

    def stat(i: np.ndarray) -> float:
        d = den[i].sum()
        return float(num[i].sum() / d) if d else 0.0

    return stat


class ChairScorer(Scorer):
    """CHAIR: instance- and sentence-level hallucination rates (lower is better) and object recall."""

    name = "chair"
    directions = MappingProxyType({"chair_i": False, "chair_s": False, "recall": True})
    default_metric = "chair_i"
    conventions = (
        "CHAIR (Rohrbach et al. 2018) with the 80 COCO categories and their synonym lists; lower is better."
    )

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score CHAIR rows (``prediction`` caption, ``gt_objects`` COCO category names)."""
        per_sample = []
        counts = []
        for row in rows:
            c = caption_counts(str(row["prediction"]), check_categories(row["gt_objects"]))
            counts.append(c)
            per_sample.append(
                {**base_fields(row), "mentioned": c["mentioned"], "hallucinated": c["hallucinated"],
                 "chair_s": 1.0 if c["n_hallucinated"] else 0.0}
            )  # fmt: skip
        mentions = np.array([c["n_mentions"] for c in counts], dtype=np.float64)
        halluc = np.array([c["n_hallucinated"] for c in counts], dtype=np.float64)
        gt_n = np.array([c["n_gt"] for c in counts], dtype=np.float64)
        covered = np.array([c["n_gt_covered"] for c in counts], dtype=np.float64)
        any_halluc = (halluc > 0).astype(np.float64)
        metrics = {
            "chair_i": _pooled(halluc, mentions)(np.arange(len(rows))),
            "chair_s": mean(any_halluc),
            "recall": _pooled(covered, gt_n)(np.arange(len(rows))),
        }
        ci95 = {
            "chair_i": ci(halluc, _pooled(halluc, mentions), seed, n_resamples),
            "chair_s": ci(any_halluc, None, seed, n_resamples),
            "recall": ci(covered, _pooled(covered, gt_n), seed, n_resamples),
        }
        return result(self.task_name, len(rows), metrics, ci95, per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        clean = not fields.get("hallucinated")
        return float(clean), clean

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        """CHAIR_i/CHAIR_s from ``mentioned``/``hallucinated``; recall when every row has ground truth."""
        if not all(
            isinstance(r.get("mentioned"), list) and isinstance(r.get("hallucinated"), list) for r in rows
        ):
            return None
        mentions = np.array([len(r["mentioned"]) for r in rows], dtype=np.float64)
        halluc = np.array([len(r["hallucinated"]) for r in rows], dtype=np.float64)
        any_halluc = halluc > 0
        gts = [gt_objects(r) for r in rows]
        has_gt = all(gt is not None for gt in gts)
        gt_n = np.array([len(gt or []) for gt in gts], dtype=np.float64)
        covered = np.array(
            [len(set(gt or []) & set(r["mentioned"])) for gt, r in zip(gts, rows, strict=True)],
            dtype=np.float64,
        )

        def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
            out = {
                "chair_i": ratio_matrix(halluc[idx].sum(axis=1), mentions[idx].sum(axis=1)),
                "chair_s": any_halluc[idx].mean(axis=1),
            }
            if has_gt:
                out["recall"] = ratio_matrix(covered[idx].sum(axis=1), gt_n[idx].sum(axis=1))
            return out

        return SampleStats(compute, {"chair_s": (any_halluc, np.ones(len(rows), dtype=bool))})

    def check_reference(self, row: Mapping[str, Any]) -> None:
        objects = row.get("gt_objects")
        if objects is None:
            raise ValueError("missing field 'gt_objects' (list of COCO category names) for chair")
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise ValueError(f"'gt_objects' must be a list of strings, got {objects!r}")
        check_categories(objects)
