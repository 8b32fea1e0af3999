"""Degenerate-answer warnings: signs that a model's answers do not depend on the image.

results.json records them per task (``tasks.<task>.warnings``: a list of ``{"code", "message"}``);
the terminal table, the report and the leaderboard show the messages. The rules:

* POPE, ``yes_ratio_extreme``: the pooled share of "yes" answers lies outside [0.2, 0.8] — the model
  answers mostly one way whatever it is asked (the POPE sets are balanced, half yes and half no).
* POPE, ``chance_accuracy``: a split's accuracy 95% interval contains 0.5 — on that split the
  answers are indistinguishable from coin flips, so they do not depend on the image.
* CHAIR, ``identical_captions``: the captions are nearly all the same — the most common caption
  (compared after lower-casing and collapsing whitespace) is more than half of the captions, or
  fewer than one caption in ten is distinct; only checked with at least 10 captions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from vlmbench.metrics.pope import POPE_SPLITS

YES_RATIO_RANGE = (0.2, 0.8)
CHANCE = 0.5
MOST_COMMON_CAPTION_MAX = 0.5
DISTINCT_CAPTIONS_MIN = 0.1
MIN_CAPTIONS = 10


def degenerate_warnings(scorer: Any, result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The warnings for one task's result (``metrics``, ``ci95``) and its sample rows."""
    family = getattr(scorer, "name", "")
    if family == "pope":
        return pope_warnings(result.get("metrics") or {}, result.get("ci95") or {})
    if family == "chair":
        return caption_warnings([str(r.get("prediction") or "") for r in rows if not r.get("error")])
    return []


def pope_warnings(metrics: Mapping[str, Any], ci95: Mapping[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    yes = (metrics.get("all") or {}).get("yes_ratio")
    low, high = YES_RATIO_RANGE
    if isinstance(yes, (int, float)) and not low <= yes <= high:
        out.append({
            "code": "yes_ratio_extreme",
            "message": f"answers are {yes:.0%} 'yes' on a balanced set (outside [{low}, {high}]): "
                       "the model answers mostly one way whatever is asked",
        })  # fmt: skip
    for split in POPE_SPLITS:
        interval = (ci95.get(split) or {}).get("accuracy")
        if isinstance(interval, (list, tuple)) and len(interval) == 2 and interval[0] <= CHANCE <= interval[1]:
            accuracy = (metrics.get(split) or {}).get("accuracy")
            shown = f"{accuracy:.3f}, " if isinstance(accuracy, (int, float)) else ""
            out.append({
                "code": "chance_accuracy",
                "message": f"{split}: answers do not depend on the image (accuracy {shown}95% CI "
                           f"[{interval[0]:.3f}, {interval[1]:.3f}] contains 0.5, chance)",
            })  # fmt: skip
    return out


def caption_warnings(captions: Sequence[str]) -> list[dict[str, str]]:
    if len(captions) < MIN_CAPTIONS:
        return []
    normal = [" ".join(c.lower().split()) for c in captions]
    counts = Counter(normal)
    top = counts.most_common(1)[0][1] / len(normal)
    distinct = len(counts) / len(normal)
    if top <= MOST_COMMON_CAPTION_MAX and distinct >= DISTINCT_CAPTIONS_MIN:
        return []
    return [{
        "code": "identical_captions",
        "message": f"captions do not depend on the image: the most common caption is {top:.0%} of "
                   f"{len(normal)}, {len(counts)} distinct",
    }]  # fmt: skip
