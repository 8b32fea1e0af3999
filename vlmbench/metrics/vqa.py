"""VQA accuracy (VQAv2, TextVQA) with the official answer normalisation.

Normalisation (applied to the prediction and to every reference answer):

1. newlines/tabs become spaces, the text is stripped;
2. punctuation: each mark in :data:`PUNCTUATION` is deleted when it touches a space or the text
   contains a digit-comma-digit group (``"1,000"``), and replaced by a space otherwise; then every
   period *not followed by a digit* is deleted (so ``"2.5"`` keeps its decimal point);
3. words (lower-cased, split on whitespace): number words ``zero``..``ten`` (and ``none``) become
   digits, the articles ``a``/``an``/``the`` are dropped, apostrophe-less contractions get their
   apostrophe back (``dont`` -> ``don't``).

Accuracy of one prediction against n reference answers is the mean, over the n leave-one-out
subsets, of ``min(1, matches / 3)``; with the usual 10 answers and k matches this is 0.3, 0.6,
0.9, 1.0 for k = 1, 2, 3, >=4. A question with a single reference answer is scored by exact
match (leave-one-out would leave nothing to match).

Difference from the GT-Vision-Lab script: that script normalises the reference answers only when
they disagree with each other (its annotation files are already normalised); here both sides are
always normalised, which gives the same numbers on the official annotation files and the intended
numbers on raw ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vlmbench.metrics.scorer import MeanScorer, mean

PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

NUMBER_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "none": "0",
        "zero": "0",
        "one": "1",
        "two": "2",
        "three": "3",
        "four": "4",
        "five": "5",
        "six": "6",
        "seven": "7",
        "eight": "8",
        "nine": "9",
        "ten": "10",
    }
)

# Contractions written without their apostrophe(s) -> the spelling the annotations use.
# (The official table also lists a few capitalised keys such as "Im"; they can never match a
# lower-cased word, so they are left out. "somebody'd" -> "somebodyd" is the official table's
# own entry and is kept so that scores agree with it.)
CONTRACTIONS: Mapping[str, str] = MappingProxyType(
    {
        "aint": "ain't",
        "arent": "aren't",
        "cant": "can't",
        "couldve": "could've",
        "couldnt": "couldn't",
        "couldn'tve": "couldn't've",
        "couldnt've": "couldn't've",
        "didnt": "didn't",
        "doesnt": "doesn't",
        "dont": "don't",
        "hadnt": "hadn't",
        "hadnt've": "hadn't've",
        "hadn'tve": "hadn't've",
        "hasnt": "hasn't",
        "havent": "haven't",
        "hed": "he'd",
        "hed've": "he'd've",
        "he'dve": "he'd've",
        "hes": "he's",
        "howd": "how'd",
        "howll": "how'll",
        "hows": "how's",
        "isnt": "isn't",
        "itd": "it'd",
        "itd've": "it'd've",
        "it'dve": "it'd've",
        "itll": "it'll",
        "let's": "let's",
        "maam": "ma'am",
        "mightnt": "mightn't",
        "mightnt've": "mightn't've",
        "mightn'tve": "mightn't've",
        "mightve": "might've",
        "mustnt": "mustn't",
        "mustve": "must've",
        "neednt": "needn't",
        "notve": "not've",
        "oclock": "o'clock",
        "oughtnt": "oughtn't",
        "ow's'at": "'ow's'at",
        "'ows'at": "'ow's'at",
        "'ow'sat": "'ow's'at",
        "shant": "shan't",
        "shed've": "she'd've",
        "she'dve": "she'd've",
        "she's": "she's",
        "shouldve": "should've",
        "shouldnt": "shouldn't",
        "shouldnt've": "shouldn't've",
        "shouldn'tve": "shouldn't've",
        "somebody'd": "somebodyd",
        "somebodyd've": "somebody'd've",
        "somebody'dve": "somebody'd've",
        "somebodyll": "somebody'll",
        "somebodys": "somebody's",
        "someoned": "someone'd",
        "someoned've": "someone'd've",
        "someone'dve": "someone'd've",
        "someonell": "someone'll",
        "someones": "someone's",
        "somethingd": "something'd",
        "somethingd've": "something'd've",
        "something'dve": "something'd've",
        "somethingll": "something'll",
        "thats": "that's",
        "thered": "there'd",
        "thered've": "there'd've",
        "there'dve": "there'd've",
        "therere": "there're",
        "theres": "there's",
        "theyd": "they'd",
        "theyd've": "they'd've",
        "they'dve": "they'd've",
        "theyll": "they'll",
        "theyre": "they're",
        "theyve": "they've",
        "twas": "'twas",
        "wasnt": "wasn't",
        "wed've": "we'd've",
        "we'dve": "we'd've",
        "weve": "we've",
        "werent": "weren't",
        "whatll": "what'll",
        "whatre": "what're",
        "whats": "what's",
        "whatve": "what've",
        "whens": "when's",
        "whered": "where'd",
        "wheres": "where's",
        "whereve": "where've",
        "whod": "who'd",
        "whod've": "who'd've",
        "who'dve": "who'd've",
        "wholl": "who'll",
        "whos": "who's",
        "whove": "who've",
        "whyll": "why'll",
        "whyre": "why're",
        "whys": "why's",
        "wont": "won't",
        "wouldve": "would've",
        "wouldnt": "wouldn't",
        "wouldnt've": "wouldn't've",
        "wouldn'tve": "wouldn't've",
        "yall": "y'all",
        "yall'll": "y'all'll",
        "y'allll": "y'all'll",
        "yall'd've": "y'all'd've",
        "y'alld've": "y'all'd've",
        "y'all'dve": "y'all'd've",
        "youd": "you'd",
        "youd've": "you'd've",
        "you'dve": "you'd've",
        "youll": "you'll",
        "youre": "you're",
        "youve": "you've",
    }
)

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def process_punctuation(text: str) -> str:
    """Step 2 of the module docstring: strip or space out punctuation, drop non-decimal periods."""
    has_number_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if touches_space or has_number_comma else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def process_digit_article(text: str) -> str:
    """Step 3 of the module docstring: number words to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_vqa_answer(text: str) -> str:
    """The full official normalisation of one answer string."""
    text = str(text).replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Leave-one-out VQA accuracy of one prediction (see the module docstring); 0.0 with no answers."""
    refs = [normalize_vqa_answer(a) for a in answers]
    if not refs:
        return 0.0
    pred = normalize_vqa_answer(prediction)
    if len(refs) == 1:
        return 1.0 if refs[0] == pred else 0.0
    total_matches = sum(r == pred for r in refs)
    # Leaving out answer i leaves total - [ref_i matches] matching answers among the others.
    # Sum min(3, matches) as integers and divide once, so 10 answers give exactly 0.3/0.6/0.9.
    thirds = sum(min(3, total_matches - (r == pred)) for r in refs)
    return thirds / (3 * len(refs))


def vqa_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{"accuracy": mean}`` over rows with ``prediction`` and ``answers`` (0.0 for no rows)."""
    scores = [vqa_accuracy(r["prediction"], r["answers"]) for r in rows]
    return {"accuracy": mean(scores)}


class VqaScorer(MeanScorer):
    """VQAv2 / TextVQA: leave-one-out VQA accuracy per question, averaged (one class, two task names)."""

    name = "vqav2"
    directions = MappingProxyType({"accuracy": True})
    default_metric = "accuracy"
    conventions = (
        "Official VQA normalisation; accuracy = mean over 10 leave-one-out subsets of min(1, matches/3)."
    )

    def per_question(self, prediction: str, answers: list[str]) -> Mapping[str, float]:
        return {"accuracy": vqa_accuracy(prediction, answers)}
