"""Caption recheck: ask about every object a caption names, and take out the ones the model denies.

**Objects.** The caption's object mentions are found exactly as CHAIR finds them
(`vlmbench.metrics.chair.object_mentions`: COCO categories through the synonym lists, longest phrase
first, plurals read as singular). One question is asked per distinct category, in mention order:
"Is there a {category} in the image?" ("an" before a vowel; "Are there {category} in the image?" for
the plural names ``skis`` and ``scissors``), with POPE's answer suffix; the answer is the higher
scoring of the choices "Yes" / "No" (`score_choices`; "Yes" wins a tie, as the runner's choices mode
does). A category the model answers "No" for is *unconfirmed*.

**What is removed** (`remove_objects`), for every mention of an unconfirmed category -- its noun
phrase, not its sentence, so that confirmed objects named in the same sentence stay:

1. the mention itself (e.g. ``dog``, ``dining table``, ``teddy bears``);
2. to its left, its determiner and modifiers: the nearest word of `DETERMINERS` (articles, numerals,
   quantifiers, possessives, demonstratives) at most 3 words back when every word between is a
   modifier (a word of `MODIFIERS`, or one ending like an adjective or participle: -ed, -en, -ing,
   -y, -ful, -ous, -ish, -al, -ic, -ive, -less); without such a determiner, only the directly
   preceding words of `MODIFIERS`; then a quantity phrase before it ("a group of", "two pairs of");
   punctuation, another object mention, a conjunction or a preposition stops the extension;
3. one connector, the first that applies: a preceding "and"/"or" or comma (a later list item: "a cat
   and a dog" without the dog is "a cat"); a following "and"/"or" or comma (the first list item: "a
   dog and a cat" without the dog is "a cat"); the preposition just before the phrase
   (`PREPOSITIONS`, also "next to", "in front of", "on top of", "close to": "a cat on a sofa" without
   the sofa is "a cat").

Whitespace and punctuation left doubled are tidied and the first letter keeps its case. Nothing else
is rewritten, so what is left may be ungrammatical ("The dog is next to a table." without the dog
becomes "is next to a table."); CHAIR counts object mentions only. The result is checked: its CHAIR
mentions must be the caption's minus the removed ones, in order. Where a removal would break that
(it joined words into a new mention), the sentence of each unconfirmed mention is removed instead
(``method: "sentence"``), and if even that fails, the whole caption (``method: "caption"``).

AMBER's generative part is scored with AMBER's own object matching; recheck still finds objects with
CHAIR's lists, so an AMBER object outside the 80 COCO categories (e.g. "grass") is never asked about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vlmbench.metrics.chair import Mention, object_mentions

QUESTION_SUFFIX = "\nAnswer the question using a single word or phrase."
"""POPE's answer suffix (tasks/pope.yaml), so the questions are asked as POPE asks them."""
CHOICES: tuple[str, str] = ("Yes", "No")
PLURAL_CATEGORIES = frozenset({"skis", "scissors"})

DETERMINERS = frozenset((
    "a", "an", "the", "some", "several", "many", "few", "one", "two", "three", "four", "five", "six",
    "seven", "eight", "nine", "ten", "eleven", "twelve", "another", "other", "his", "her", "their", "its",
    "my", "our", "your", "this", "that", "these", "those", "each", "every", "both", "all", "any", "no",
    "multiple", "numerous", "various",
))  # fmt: skip
MODIFIERS = frozenset((
    "big", "small", "large", "little", "tiny", "huge", "giant", "tall", "short", "long", "old", "young",
    "new", "white", "black", "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "gray",
    "grey", "silver", "gold", "golden", "dark", "light", "bright", "pale", "beige", "tan", "cute", "pretty",
    "wooden", "metal", "plastic", "empty", "full", "open", "closed", "single", "double", "half", "whole",
    "other", "same", "few", "many", "more", "most",
))  # fmt: skip
_ADJECTIVE_ENDINGS = ("ed", "en", "ing", "y", "ful", "ous", "ish", "al", "ic", "ive", "less")
QUANTITY_NOUNS = frozenset((
    "group", "groups", "couple", "couples", "pair", "pairs", "bunch", "bunches", "lot", "lots", "herd",
    "herds", "flock", "flocks", "pile", "piles", "stack", "stacks", "number", "row", "rows", "line", "lines",
    "crowd", "team", "set", "sets", "plate", "plates", "bowl", "bowls",
))  # fmt: skip
PREPOSITIONS = frozenset((
    "on", "in", "at", "near", "beside", "behind", "under", "with", "by", "above", "below", "over", "inside",
    "beneath", "underneath", "atop", "against", "along", "between", "among", "around", "from", "into",
    "onto", "toward", "towards", "without", "across", "of",
))  # fmt: skip
_PHRASAL_PREPOSITIONS: tuple[tuple[str, ...], ...] = (
    ("in", "front", "of"), ("on", "top", "of"), ("next", "to"), ("close", "to"),
)  # fmt: skip
CONJUNCTIONS = frozenset({"and", "or"})
MAX_MODIFIER_WORDS = 3

_WORD = re.compile(r"[a-z]+")


def question_for(category: str) -> str:
    """The yes/no question asked about one COCO category."""
    if category in PLURAL_CATEGORIES:
        return f"Are there {category} in the image?"
    article = "an" if category[0] in "aeiou" else "a"
    return f"Is there {article} {category} in the image?"


def categories_to_check(caption: str) -> list[str]:
    """The distinct COCO categories a caption mentions, in mention order (one question each)."""
    return list(dict.fromkeys(m.category for m in object_mentions(caption)))


@dataclass(frozen=True)
class Removal:
    """A caption with the unconfirmed objects taken out."""

    caption: str
    removed: list[str]
    """The text of every removed span, in caption order."""
    method: str
    """``"none"`` (nothing to remove), ``"phrase"``, ``"sentence"`` or ``"caption"``."""


@dataclass(frozen=True)
class _Token:
    word: str
    start: int
    end: int


def remove_objects(caption: str, unconfirmed: Iterable[str]) -> Removal:
    """``caption`` without the mentions of the ``unconfirmed`` categories (see the module docstring)."""
    drop = set(unconfirmed)
    mentions = object_mentions(caption)
    targets = [m for m in mentions if m.category in drop]
    if not targets:
        return Removal(caption, [], "none")
    expected = [m.category for m in mentions if m.category not in drop]
    tokens = [_Token(m.group(), m.start(), m.end()) for m in _WORD.finditer(caption.lower())]
    spans = _merge(_phrase_span(caption, tokens, mentions, m) for m in targets)
    cleaned = _tidy(_cut(caption, spans), caption)
    if [m.category for m in object_mentions(cleaned)] == expected:
        return Removal(cleaned, [caption[a:b].strip() for a, b in spans], "phrase")
    sentences = _merge(_sentence_span(caption, m) for m in targets)
    cleaned = _tidy(_cut(caption, sentences), caption)
    if [m.category for m in object_mentions(cleaned)] == expected:
        return Removal(cleaned, [caption[a:b].strip() for a, b in sentences], "sentence")
    return Removal("", [caption.strip()], "caption")


# ---- spans ---------------------------------------------------------------------------------------
def _token_index(tokens: Sequence[_Token], position: int, *, start: bool) -> int:
    return next(i for i, t in enumerate(tokens) if (t.start if start else t.end) == position)


def _joined(caption: str, left: _Token, right: _Token) -> bool:
    """Whether only whitespace separates two neighbouring words (no punctuation between them)."""
    return not caption[left.end : right.start].strip()


def _is_modifier(word: str) -> bool:
    return word in MODIFIERS or (len(word) > 3 and word.endswith(_ADJECTIVE_ENDINGS))


def _phrase_span(
    caption: str, tokens: Sequence[_Token], mentions: Sequence[Mention], target: Mention
) -> tuple[int, int]:
    """The character span removed for one mention: its noun phrase and one connector, tried in this
    order: a list connector before it ("and"/"or"/comma: it is a later list item), a list connector
    after it (the first item), a preposition before it (the phrase is the preposition's object)."""
    first = _token_index(tokens, target.start, start=True)
    last = _token_index(tokens, target.end, start=False)
    occupied = {
        i for m in mentions if m is not target for i, t in enumerate(tokens) if m.start <= t.start < m.end
    }
    begin = _quantity_begin(caption, tokens, _phrase_begin(caption, tokens, first, occupied), occupied)
    start, end = tokens[begin].start, tokens[last].end
    if begin > 0:
        gap = caption[tokens[begin - 1].end : start].strip()
        if gap == "" and tokens[begin - 1].word in CONJUNCTIONS:
            return tokens[begin - 1].start, end  # "a cat and a dog" without the dog: "a cat"
        if gap == ",":
            return tokens[begin - 1].end, end  # "a cat, a dog" without the dog
    rest = caption[end:]
    following = rest.lstrip(" ")
    if following.startswith(","):
        return start, end + len(rest) - len(following) + 1  # "a cat, a dog" without the cat
    if (
        last + 1 < len(tokens)
        and tokens[last + 1].word in CONJUNCTIONS
        and _joined(caption, tokens[last], tokens[last + 1])
    ):
        return start, tokens[last + 1].end  # "a cat and a dog" without the cat
    preposition = _preposition_before(caption, tokens, begin, occupied)
    return (tokens[preposition].start if preposition is not None else start), end


def _phrase_begin(caption: str, tokens: Sequence[_Token], first: int, occupied: set[int]) -> int:
    """Where the phrase starts: the nearest determiner over modifiers, else the adjacent modifiers."""
    j = first - 1
    while (
        j >= 0
        and first - j <= MAX_MODIFIER_WORDS
        and _joined(caption, tokens[j], tokens[j + 1])
        and j not in occupied
    ):
        word = tokens[j].word
        if word in DETERMINERS:
            return j
        if not _is_modifier(word):
            break
        j -= 1
    begin = first
    while begin > 0 and _joined(caption, tokens[begin - 1], tokens[begin]) and begin - 1 not in occupied:
        if tokens[begin - 1].word not in MODIFIERS:
            break
        begin -= 1
    return begin


def _quantity_begin(caption: str, tokens: Sequence[_Token], begin: int, occupied: set[int]) -> int:
    """Extend over "a group of" / "two pairs of" before the phrase."""
    if begin < 2 or tokens[begin - 1].word != "of" or tokens[begin - 2].word not in QUANTITY_NOUNS:
        return begin
    if begin - 2 in occupied or not (
        _joined(caption, tokens[begin - 2], tokens[begin - 1])
        and _joined(caption, tokens[begin - 1], tokens[begin])
    ):
        return begin
    j = begin - 2
    if (
        j > 0
        and tokens[j - 1].word in DETERMINERS
        and _joined(caption, tokens[j - 1], tokens[j])
        and j - 1 not in occupied
    ):
        j -= 1
    return j


def _preposition_before(caption: str, tokens: Sequence[_Token], begin: int, occupied: set[int]) -> int | None:
    """The first token of the preposition directly before the phrase (phrasal ones first), or None."""
    for phrase in _PHRASAL_PREPOSITIONS:
        start = begin - len(phrase)
        if (
            start >= 0
            and tuple(t.word for t in tokens[start:begin]) == phrase
            and all(_joined(caption, tokens[i], tokens[i + 1]) for i in range(start, begin))
            and not occupied & set(range(start, begin))
        ):
            return start
    if begin == 0 or begin - 1 in occupied:
        return None
    if tokens[begin - 1].word in PREPOSITIONS and _joined(caption, tokens[begin - 1], tokens[begin]):
        return begin - 1
    return None


def _sentence_span(caption: str, mention: Mention) -> tuple[int, int]:
    """The sentence holding a mention: from after the previous . ! ? to its own, inclusive."""
    start = max(caption.rfind(p, 0, mention.start) for p in ".!?") + 1
    ends = [i for i in (caption.find(p, mention.end) for p in ".!?") if i >= 0]
    end = min(ends) + 1 if ends else len(caption)
    return start, end


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _cut(caption: str, spans: Sequence[tuple[int, int]]) -> str:
    parts, position = [], 0
    for start, end in spans:
        parts.append(caption[position:start])
        position = end
    parts.append(caption[position:])
    return " ".join(p.strip(" ") for p in parts if p.strip(" "))


def _tidy(text: str, original: str) -> str:
    """Collapse the whitespace and punctuation a removal leaves behind; keep the first letter's case."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"[,;:]+(?=[.!?])", "", text)  # "a cat, ." -> "a cat."
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"([.!?])(?:\s*[,;:.!?])+", r"\1", text)  # a sentence left with punctuation only
    text = re.sub(r"^[\s,;:.!?]+", "", text)
    text = text.strip(" ,;:")
    if text and original[:1].isupper() and text[:1].islower():
        text = text[0].upper() + text[1:]
    return text
