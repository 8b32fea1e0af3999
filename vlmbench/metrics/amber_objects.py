"""AMBER's generative part: which annotated objects a description mentions, covers or hallucinates.

The official script (`inference.py` of junyangwang0410/AMBER) extracts nouns with NLTK (POS tags
``NN*``, WordNet lemmas), keeps those in AMBER's object vocabulary (the keys and values of
``relation.json``), and judges each kept noun, unless it is one of the global ``safe_words``:

1. a truth object or one of its association words -> that truth object is *covered*; next noun;
2. a hallucination-prone object (``hallu``) or one of its association words -> that object is
   *hit* (Cog); the noun goes on to step 3;
3. similar (spaCy ``en_core_web_lg`` similarity > 0.8) to a hallu word -> that object is hit;
4. similar to a truth word -> covered; next noun;
5. otherwise the noun is *hallucinated*.

Association words are searched before the objects themselves, first match wins, and a match on an
association word marks the object it belongs to -- this module keeps that order.

Where vlmbench departs (judge-free and offline, no spaCy model or NLTK data to download):

* candidates are the caption's alphabetic words (lower-cased) whose singular, by the plural rules of
  the CHAIR module, is in the vocabulary -- no POS tagging, so a vocabulary word used as an adjective
  counts, as in CHAIR;
* "similar" (steps 3 and 4) is "names the same COCO category through the CHAIR synonym lists"
  (`vlmbench.metrics.chair`): ``puppy`` is similar to ``dog``, ``sofa`` to ``couch``. Word-vector
  similarity also links words the CHAIR lists do not (and sometimes unrelated ones); expect small
  differences from the official numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from vlmbench.metrics.chair import LEXICON, _plurals

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Vocabulary:
    """AMBER's word lists: the object vocabulary, each object's association words, the safe words."""

    association: Mapping[str, tuple[str, ...]]
    safe_words: frozenset[str]
    words: frozenset[str] = field(init=False)
    """The object vocabulary: every key and value of ``association``."""

    def __post_init__(self) -> None:
        words = frozenset(w for key, values in self.association.items() for w in (key, *values))
        object.__setattr__(self, "words", words)


@lru_cache(maxsize=8)
def _surface_map(words: frozenset[str]) -> Mapping[str, str]:
    """Every singular and plural spelling of a vocabulary word -> the word."""
    out: dict[str, str] = {}
    for word in sorted(words):
        out.setdefault(word, word)
        for plural in _plurals(word):
            out.setdefault(plural, word)
    return out


def coco_category(word: str) -> str | None:
    """The COCO category a single word names through the CHAIR synonym lists, or None."""
    return LEXICON.get((word,))


def similar(a: str, b: str) -> bool:
    """vlmbench's stand-in for the official word-vector similarity: the same word, or two words that
    name the same COCO category in the CHAIR synonym lists."""
    if a == b:
        return True
    category = coco_category(a)
    return category is not None and category == coco_category(b)


def candidates(caption: str, vocabulary: Vocabulary) -> list[str]:
    """The vocabulary words a caption mentions, in order and with repeats (singular form)."""
    surface = _surface_map(vocabulary.words)
    return [surface[w] for w in _WORD.findall(caption.lower()) if w in surface]


def _indexed(objects: Sequence[str], association: Mapping[str, Sequence[str]]) -> list[tuple[str, int]]:
    """(word, object index) in the official search order: every object's association words, then the objects."""
    pairs = [(word, i) for i, obj in enumerate(objects) for word in association.get(obj, ())]
    return pairs + [(obj, i) for i, obj in enumerate(objects)]


@dataclass(frozen=True)
class CaptionJudgement:
    """What one description mentions (`mentioned`), hallucinates, covers (truth objects) and hits (hallu objects)."""

    mentioned: list[str]
    hallucinated: list[str]
    covered: list[str]
    hit: list[str]


def judge_caption(
    caption: str, truth: Sequence[str], hallu: Sequence[str], vocabulary: Vocabulary
) -> CaptionJudgement:
    """Apply the five steps of the module docstring to every candidate word of ``caption``."""
    safe_pairs = _indexed(truth, vocabulary.association)
    hallu_pairs = _indexed(hallu, vocabulary.association)
    covered: set[int] = set()
    hit: set[int] = set()
    mentioned = candidates(caption, vocabulary)
    hallucinated: list[str] = []
    for noun in mentioned:
        if noun in vocabulary.safe_words:
            continue
        exact = next((i for word, i in safe_pairs if word == noun), None)
        if exact is not None:
            covered.add(exact)
            continue
        exact_hallu = next((i for word, i in hallu_pairs if word == noun), None)
        if exact_hallu is not None:
            hit.add(exact_hallu)
        similar_hallu = next((i for word, i in hallu_pairs if similar(noun, word)), None)
        if similar_hallu is not None:
            hit.add(similar_hallu)
        similar_truth = next((i for word, i in safe_pairs if similar(noun, word)), None)
        if similar_truth is not None:
            covered.add(similar_truth)
            continue
        hallucinated.append(noun)
    return CaptionJudgement(
        mentioned=mentioned,
        hallucinated=hallucinated,
        covered=[truth[i] for i in sorted(covered)],
        hit=[hallu[i] for i in sorted(hit)],
    )
