"""AMBER (Wang et al. 2023, "An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination
Evaluation"): a generative part (describe the image) and a discriminative part (yes/no questions on
existence, attributes and relations), both judged without an LLM.

Discriminative part, as the official ``inference.py``:

* an answer is "Yes" or "No" only when the response *is* that string (vlmbench strips surrounding
  whitespace first); anything else ("yes", "Yes.", "No, ...") is ``unknown``: wrong for accuracy, not a
  "No" for precision, a miss for recall -- in choices mode the model picks "Yes"/"No" exactly;
* "No" is the positive class: precision = right "No" answers / "No" answers, recall = right "No"
  answers / questions whose truth is "no", F1 their harmonic mean (the official script adds 1e-4 to
  the denominator; vlmbench reports the exact value, 0.0 when both are 0);
* dimensions: ``existence`` (type ``discriminative-hallucination``), ``attribute`` (``state`` +
  ``number`` + ``action``: ``discriminative-attribute-*``), ``relation`` (every other discriminative
  type: ``discriminative-relation`` and ``relation``), and ``discriminative`` (all of them).

Generative part (`vlmbench.metrics.amber_objects` for the object matching and where it departs):
``chair`` = hallucinated object mentions / object mentions, ``cover`` = covered truth objects /
truth objects, ``hal`` = share of descriptions with at least one hallucinated mention, ``cog`` =
hallucination-prone (``hallu``) objects mentioned / ``hallu`` objects -- all pooled over images.
With both parts present, ``amber_score`` = ((1 - chair) + discriminative F1) / 2, the paper's
AMBER Score on a 0-1 scale. Ratios with a zero denominator are 0.0 (the official script starts its
denominators at 0.001).

Bootstrap intervals resample rows (both parts together), so ``amber_score``'s interval covers both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from vlmbench.metrics.amber_objects import Vocabulary, judge_caption
from vlmbench.metrics.binary import (
    CONFUSION_DIRECTIONS,
    CONFUSION_METRICS,
    GroupedConfusion,
    nest,
    yes_no_codes,
)
from vlmbench.metrics.pope import NO, UNKNOWN, YES
from vlmbench.metrics.scorer import (
    DEFAULT_RESAMPLES,
    SampleStats,
    Scorer,
    base_fields,
    ratio_matrix,
    result,
)
from vlmbench.metrics.stats import bootstrap_ci_matrix

GENERATIVE = "generative"
DIMENSIONS: Mapping[str, str] = MappingProxyType(
    {
        "discriminative-hallucination": "existence",
        "discriminative-attribute-state": "state",
        "discriminative-attribute-number": "number",
        "discriminative-attribute-action": "action",
    }
)
"""Official discriminative types -> vlmbench's dimension; any other discriminative type is ``relation``."""
DISC_GROUPS: tuple[str, ...] = (
    "discriminative",
    "existence",
    "attribute",
    "relation",
    "state",
    "number",
    "action",
)
GEN_METRICS: tuple[str, ...] = ("chair", "cover", "hal", "cog")
_CI_METRICS: tuple[str, ...] = ("accuracy", "f1")


def parse_exact(response: str) -> str:
    """``"yes"``/``"no"`` when the response is exactly ``Yes``/``No`` (outer whitespace ignored), else ``"unknown"``."""
    text = str(response).strip()
    return {"Yes": "yes", "No": "no"}.get(text, "unknown")


def dimension(amber_type: str) -> str:
    """The dimension of a discriminative question type (existence / state / number / action / relation)."""
    return DIMENSIONS.get(amber_type, "relation")


def _vocabulary(row: Mapping[str, Any], cache: dict[tuple[int, int], Vocabulary]) -> Vocabulary:
    association, safe = row.get("association"), row.get("safe_words")
    if not isinstance(association, Mapping) or not isinstance(safe, (list, tuple, frozenset, set)):
        raise ValueError(
            "a generative AMBER row needs 'association' (relation.json) and 'safe_words' (safe_words.txt)"
        )
    key = (id(association), id(safe))
    if key not in cache:
        cache[key] = Vocabulary(
            {str(k): tuple(str(w) for w in v) for k, v in association.items()},
            frozenset(str(w) for w in safe),
        )
    return cache[key]


class _Columns:
    """Per-row arrays from which every AMBER metric is a ratio of sums (so any resample recomputes it)."""

    def __init__(
        self, types: Sequence[str], pred: np.ndarray, gt: np.ndarray, gen: Mapping[str, np.ndarray]
    ) -> None:
        is_gen = np.array([t == GENERATIVE for t in types], dtype=bool)
        dims = np.array(["" if t == GENERATIVE else dimension(t) for t in types], dtype=object)
        disc = ~is_gen
        groups = {
            "discriminative": disc,
            "existence": dims == "existence",
            "attribute": np.isin(dims, ("state", "number", "action")),
            "relation": dims == "relation",
            "state": dims == "state",
            "number": dims == "number",
            "action": dims == "action",
        }
        self.groups = {name: mask for name, mask in groups.items() if np.any(mask)}
        self.confusion = GroupedConfusion(pred, gt, self.groups, positive=NO) if self.groups else None
        self.has_gen = bool(np.any(is_gen))
        self.gen = {k: np.asarray(v, dtype=np.float64) for k, v in gen.items()}
        self.n = len(types)

    def compute(self, idx: np.ndarray, key: str | None = None) -> dict[str, np.ndarray]:
        """Every metric on the resamples ``idx``, or only what ``key`` (one dotted metric name) needs."""
        group = key.split(".")[0] if key else None
        out: dict[str, np.ndarray] = {}
        if self.has_gen and group in (None, "generative", "amber_score"):
            s = {k: v[idx].sum(axis=1) for k, v in self.gen.items()}
            out["generative.chair"] = ratio_matrix(s["hallucinated"], s["mentions"])
            out["generative.cover"] = ratio_matrix(s["covered"], s["truth"])
            out["generative.hal"] = ratio_matrix(s["any_hallucinated"], s["is_gen"])
            out["generative.cog"] = ratio_matrix(s["hit"], s["hallu"])
        if self.confusion is not None and group != "generative":
            wanted = None if group is None else ("discriminative",) if group == "amber_score" else (group,)
            out.update(self.confusion.compute(idx, wanted))
            if self.has_gen and group in (None, "amber_score"):
                out["amber_score"] = ((1.0 - out["generative.chair"]) + out["discriminative.f1"]) / 2.0
        return out


def _gen_columns(judged: Sequence[Mapping[str, Any] | None]) -> dict[str, list[float]]:
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "mentions",
            "hallucinated",
            "any_hallucinated",
            "covered",
            "truth",
            "hit",
            "hallu",
            "is_gen",
        )
    }
    for j in judged:
        if j is None:
            for values in cols.values():
                values.append(0.0)
            continue
        cols["mentions"].append(len(j["mentioned"]))
        cols["hallucinated"].append(len(j["hallucinated"]))
        cols["any_hallucinated"].append(1.0 if j["hallucinated"] else 0.0)
        cols["covered"].append(len(j["covered"]))
        cols["truth"].append(float(j["n_truth"]))
        cols["hit"].append(len(j["hit"]))
        cols["hallu"].append(float(j["n_hallu"]))
        cols["is_gen"].append(1.0)
    return cols


class AmberScorer(Scorer):
    """AMBER: discriminative P/R/F1 with "No" positive per dimension, generative CHAIR/Cover/Hal/Cog, AMBER score."""

    name = "amber"
    directions = MappingProxyType(
        {
            "amber_score": True,
            "chair": False,
            "cover": True,
            "hal": False,
            "cog": False,
            **CONFUSION_DIRECTIONS,
        }
    )
    default_metric = "amber_score"
    conventions = (
        "AMBER (Wang et al. 2023). Discriminative: exact 'Yes'/'No' responses (else unknown, which is wrong), "
        "'No' is the positive class of precision/recall/F1, per dimension (existence, attribute, relation) as the "
        "official script. Generative: CHAIR, Cover, Hal, Cog over AMBER's object vocabulary, similar words "
        "matched through the CHAIR synonym lists instead of spaCy similarity. "
        "amber_score = ((1 - CHAIR) + discriminative F1) / 2."
    )

    def metric_names(self) -> tuple[str, ...]:
        return (
            "amber_score",
            *(f"generative.{m}" for m in GEN_METRICS),
            *(f"{g}.{m}" for g in DISC_GROUPS for m in CONFUSION_METRICS),
        )

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score AMBER rows: ``amber_type``, and ``answer`` (yes/no, discriminative) or ``truth``, ``hallu``,
        ``association``, ``safe_words`` (generative)."""
        cache: dict[tuple[int, int], Vocabulary] = {}
        types: list[str] = []
        parsed: list[str] = []
        truths: list[str] = []
        judged: list[dict[str, Any] | None] = []
        per_sample: list[dict[str, Any]] = []
        for row in rows:
            self.check_reference(row)
            amber_type = str(row["amber_type"])
            types.append(amber_type)
            sample = {**base_fields(row), "amber_type": amber_type}
            if amber_type == GENERATIVE:
                truth, hallu = list(row["truth"]), list(row.get("hallu") or [])
                j = judge_caption(str(row["prediction"]), truth, hallu, _vocabulary(row, cache))
                fields = {
                    "mentioned": j.mentioned, "hallucinated": j.hallucinated, "covered": j.covered,
                    "hit": j.hit, "n_truth": len(truth), "n_hallu": len(hallu),
                }  # fmt: skip
                judged.append(fields)
                parsed.append("unknown")
                truths.append("")
                sample.update(fields)
            else:
                answer = parse_exact(str(row["prediction"]))
                truth = str(row["answer"]).strip().lower()
                judged.append(None)
                parsed.append(answer)
                truths.append(truth)
                sample.update({"parsed": answer, "truth": truth, "correct": answer == truth})
            per_sample.append(sample)
        columns = _Columns(types, yes_no_codes(parsed), yes_no_codes(truths), _gen_columns(judged))
        identity = np.arange(len(rows))[None, :]
        flat = {k: float(v[0]) for k, v in columns.compute(identity).items()}
        ci95: dict[str, list[float]] = {}
        keys = [k for k in flat if k.split(".")[-1] in (*_CI_METRICS, *GEN_METRICS) or k == "amber_score"]
        for key in keys:
            low, high = bootstrap_ci_matrix(
                len(rows), lambda idx, k=key: columns.compute(idx, k)[k], n_resamples=n_resamples, seed=seed
            )
            ci95[key] = [low, high]
        ordered = {k: flat[k] for k in ("amber_score",) if k in flat}
        ordered.update({k: v for k, v in flat.items() if k != "amber_score"})
        return result(self.task_name, len(rows), nest(ordered), nest(ci95), per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        if fields.get("amber_type") == GENERATIVE:
            clean = not fields.get("hallucinated")
            return float(clean), clean
        correct = bool(fields.get("correct"))
        return float(correct), correct

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        """Every metric from sample-log rows (``amber_type`` plus the generative lists or ``parsed``/``truth``)."""
        types: list[str] = []
        pred: list[int] = []
        gt: list[int] = []
        judged: list[Mapping[str, Any] | None] = []
        for row in rows:
            amber_type = row.get("amber_type")
            if not isinstance(amber_type, str):
                return None
            types.append(amber_type)
            if amber_type == GENERATIVE:
                if not all(
                    isinstance(row.get(k), list) for k in ("mentioned", "hallucinated", "covered", "hit")
                ):
                    return None
                judged.append(row)
                pred.append(UNKNOWN)
                gt.append(UNKNOWN)
            else:
                truth = str(row.get("truth", "")).lower()
                if truth not in ("yes", "no"):
                    return None
                judged.append(None)
                pred.append({"yes": YES, "no": NO}.get(str(row.get("parsed")), UNKNOWN))
                gt.append(YES if truth == "yes" else NO)
        columns = _Columns(
            types, np.array(pred, dtype=np.int8), np.array(gt, dtype=np.int8), _gen_columns(judged)
        )
        binary = columns.confusion.binary() if columns.confusion is not None else {}
        return SampleStats(columns.compute, binary)

    def check_reference(self, row: Mapping[str, Any]) -> None:
        amber_type = row.get("amber_type")
        if not isinstance(amber_type, str) or not amber_type:
            raise ValueError("missing field 'amber_type' (the 'type' of annotations.json)")
        if amber_type == GENERATIVE:
            truth = row.get("truth")
            if not isinstance(truth, (list, tuple)) or not all(isinstance(t, str) for t in truth):
                raise ValueError(
                    f"'truth' of a generative AMBER row must be a list of object words, got {truth!r}"
                )
            _vocabulary(row, {})
            return
        answer = str(row.get("answer", "")).strip().lower()
        if answer not in ("yes", "no"):
            raise ValueError(
                f"a discriminative AMBER answer must be 'yes' or 'no', got {row.get('answer')!r}"
            )
