"""Self-consistency: seeds, answer keys and the majority vote.

**Seeds.** Draw ``d`` of question ``q`` under run seed ``s`` uses the generator seed
``int(sha256(f"{s}\\0{q}\\0{d}")[:8], 16)`` (`draw_seed`): it depends on nothing else — not on the
batch, the batch size, the rank or the number of processes — so a run answers the same whatever
way it is sharded, and the draws of ``self-consistency:5`` are the first five of ``self-consistency:9``.

**Answer keys.** Votes are counted after the task's own answer normalisation (`answer_key`): POPE /
probes parse yes/no with the official POPE rule, AMBER's discriminative part takes exactly "Yes"/"No",
HallusionBench its yes-xor-no keyword rule, VQA tasks the official VQA normalisation, DocVQA ANLS's
lower-casing and whitespace collapsing, ChartQA the number an answer reads as (else its lower-cased
text), OCR its exact-match normalisation; any other scorer lower-cased text with whitespace
collapsed. An answer whose key is None (an unparseable yes/no, an empty answer) abstains.

**Vote.** The key with most votes wins; a tie goes to the plain (greedy) answer's key when it is among
the tied keys, else to the tied key drawn first. The prediction written is the first draw with the
winning key (so the scorer parses it to that key). When every draw abstains, the first draw is the
prediction (it then scores as the scorer scores an unparseable answer).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

AnswerKey = Callable[[str], str | None]


def draw_seed(seed: int, question_id: str, draw: int) -> int:
    """The generator seed of one draw (see the module docstring); fits a 32-bit unsigned integer."""
    digest = hashlib.sha256(f"{seed}\0{question_id}\0{draw}".encode()).hexdigest()
    return int(digest[:8], 16)


def _collapsed(text: str) -> str | None:
    key = " ".join(str(text).lower().split())
    return key or None


def answer_key(scorer: Any) -> AnswerKey:
    """The normalisation votes are counted under for a task scored by ``scorer``."""
    from vlmbench.metrics.amber import AmberScorer, parse_exact
    from vlmbench.metrics.anls import AnlsScorer
    from vlmbench.metrics.hallusionbench import HallusionBenchScorer, parse_keyword
    from vlmbench.metrics.ocr import OcrScorer, normalize_ocr
    from vlmbench.metrics.pope import PopeScorer, parse_yes_no
    from vlmbench.metrics.probes import ProbesScorer
    from vlmbench.metrics.relaxed import RelaxedAccuracyScorer, to_number
    from vlmbench.metrics.vqa import VqaScorer, normalize_vqa_answer

    def known(parse: Callable[[str], str]) -> AnswerKey:
        return lambda text: None if (label := parse(text)) == "unknown" else label

    if isinstance(scorer, (PopeScorer, ProbesScorer)):
        return known(parse_yes_no)
    if isinstance(scorer, AmberScorer):
        return known(parse_exact)
    if isinstance(scorer, HallusionBenchScorer):
        return known(parse_keyword)
    if isinstance(scorer, VqaScorer):
        return lambda text: normalize_vqa_answer(text) or None
    if isinstance(scorer, AnlsScorer):
        return _collapsed
    if isinstance(scorer, OcrScorer):
        return lambda text: normalize_ocr(text) or None
    if isinstance(scorer, RelaxedAccuracyScorer):

        def number_or_text(text: str) -> str | None:
            number = to_number(text)
            return f"{number:.12g}" if number is not None else _collapsed(text)

        return number_or_text
    return _collapsed


@dataclass(frozen=True)
class Vote:
    """The outcome of one question's vote."""

    prediction: str
    key: str | None
    votes: dict[str, int]
    """Votes per key, most first (abstentions are not counted)."""
    tie: bool
    """Whether the winner was chosen by the tie rule."""


def majority(draws: Sequence[str], key: AnswerKey, plain: str | None = None) -> Vote:
    """The majority answer of ``draws`` under ``key``; ties as the module docstring says."""
    if not draws:
        raise ValueError("a vote needs at least one draw")
    keys = [key(d) for d in draws]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return Vote(draws[0], None, {}, False)
    top = max(counts.values())
    tied = [k for k in dict.fromkeys(k for k in keys if k is not None) if counts[k] == top]  # in draw order
    plain_key = key(plain) if plain is not None else None
    winner = plain_key if len(tied) > 1 and plain_key in tied else tied[0]
    prediction = draws[keys.index(winner)]
    ordered = dict(sorted(counts.items(), key=lambda item: (-item[1], keys.index(item[0]))))
    return Vote(prediction, winner, ordered, len(tied) > 1)


def sample_choices(logprobs: Sequence[float], temperature: float, uniforms: Sequence[float]) -> list[int]:
    """One choice index per uniform draw in [0, 1) from softmax(logprobs / temperature) (inverse CDF).

    A choice with a non-finite log-probability has probability 0; if none is finite, choice 0."""
    import math

    scaled = [lp / temperature if math.isfinite(lp) else -math.inf for lp in logprobs]
    top = max(scaled)
    if not math.isfinite(top):
        return [0 for _ in uniforms]
    weights = [math.exp(v - top) if math.isfinite(v) else 0.0 for v in scaled]
    total = sum(weights)
    cumulative: list[float] = []
    running = 0.0
    for w in weights:
        running += w / total
        cumulative.append(running)
    out = []
    for u in uniforms:
        index = next((i for i, c in enumerate(cumulative) if u < c), len(cumulative) - 1)
        out.append(index)
    return out


def uniform(seed: int) -> float:
    """A uniform number in [0, 1) from a draw seed (numpy's PCG64; the same on every platform)."""
    import numpy as np

    return float(np.random.Generator(np.random.PCG64(seed)).random())
