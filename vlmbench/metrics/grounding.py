"""Referring-expression grounding (RefCOCO-style): the model names a box, scored by IoU with the truth.

Box parsing (first box in the answer):

1. Qwen-VL's tokens, ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``: coordinates on a 0-1000 grid;
2. else PaliGemma's location tokens, four in a row ``<loc{y1}><loc{x1}><loc{y2}><loc{x2}>``: bins of a
   1024-bin grid over each side, coordinate = bin / 1024 * side (``vlmbench.modeling.location_tokens``);
3. else the first four numbers in brackets or parentheses, ``[x1, y1, x2, y2]`` / ``(x1, y1, x2, y2)``
   (Qwen2.5-VL's ``{"bbox_2d": [...]}`` included); their scale is detected from the values: all within
   [0, 1] -> fractions of the image size (the lmms-eval RefCOCO prompt's convention); any above 1 ->
   pixels of the image -- unless the task's ``box_format`` says otherwise (``pixels``, ``unit``,
   ``qwen1000``, ``paligemma1024`` force the scale of whatever box was found; ``auto`` is the detection
   just described);
4. no box -> ``unparsed`` (IoU 0, counted). Without the image size (a reference row without
   ``image_size``; an image whose header could not be read) only a box in pixels can be scored.

A box with x2 < x1 or y2 < y1 has its corners swapped; coordinates are clipped to the image.
Metrics: ``acc_iou50`` = share of answers with IoU >= 0.5 (the RefCOCO accuracy), ``miou`` = mean IoU,
``unparsed`` = share of answers without a box; bootstrap intervals for the first two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vlmbench.metrics.scorer import (
    DEFAULT_RESAMPLES,
    SampleStats,
    Scorer,
    base_fields,
    ci,
    finite,
    mean,
    mean_statistics,
    result,
)
from vlmbench.modeling.location_tokens import LOC_BINS, LOC_PATTERN

BOX_FORMATS: tuple[str, ...] = ("auto", "pixels", "unit", "qwen1000", "paligemma1024")
IOU_THRESHOLD = 0.5
_NUM = r"(-?\d+(?:\.\d+)?)"
_QWEN = re.compile(
    rf"<\|box_start\|>\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*<\|box_end\|>"
)
_PALIGEMMA = re.compile(LOC_PATTERN * 4)
_SEP = r"\s*[,;]?\s*"
_BRACKETED = re.compile(rf"[\[(]\s*{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}\s*[\])]")

Box = tuple[float, float, float, float]


def parse_box(
    text: str, width: float | None, height: float | None, box_format: str = "auto"
) -> tuple[Box, str] | None:
    """The first box of an answer in pixels (x1, y1, x2, y2), with the convention it was read in;
    None when the answer has no box, or when the image size is unknown (``None``) and the box is not
    in pixels. See the module docstring for the rules."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"unknown box_format {box_format!r}; choose one of {', '.join(BOX_FORMATS)}")
    read = _read_values(text)
    if read is None:
        return None
    values, convention = read
    if box_format != "auto":
        convention = box_format
    if width is None or height is None:
        if convention != "pixels":
            return None
        width = height = float("inf")
    scale_x, scale_y = {
        "unit": (width, height),
        "qwen1000": (width / 1000, height / 1000),
        "paligemma1024": (width / LOC_BINS, height / LOC_BINS),
    }.get(convention, (1.0, 1.0))
    x1, y1, x2, y2 = values[0] * scale_x, values[1] * scale_y, values[2] * scale_x, values[3] * scale_y
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return (x1, y1, x2, y2), convention


def _read_values(text: str) -> tuple[list[float], str] | None:
    """The first box's four numbers as (x1, y1, x2, y2) in the units of the convention it is written in."""
    if (match := _QWEN.search(text)) is not None:
        return [float(v) for v in match.groups()], "qwen1000"
    if (match := _PALIGEMMA.search(text)) is not None:
        y1, x1, y2, x2 = (float(v) for v in match.groups())
        return [x1, y1, x2, y2], "paligemma1024"
    if (match := _BRACKETED.search(text)) is not None:
        values = [float(v) for v in match.groups()]
        return values, "unit" if all(0.0 <= v <= 1.0 for v in values) else "pixels"
    return None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0.0 when the union is empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """COCO's (x, y, w, h) as (x1, y1, x2, y2)."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def _check_box(row: Mapping[str, Any]) -> tuple[Box, tuple[float, float] | None]:
    """(the truth as x1, y1, x2, y2; the image size or None when unknown); ValueError on a bad field."""
    box, size = row.get("bbox"), row.get("image_size")
    if not isinstance(box, (list, tuple)) or len(box) != 4 or any(finite(v) is None for v in box):
        raise ValueError(f"'bbox' must be [x, y, w, h] in pixels (COCO), got {box!r}")
    if size is None:
        return xywh_to_xyxy(box), None
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any((finite(v) or 0) <= 0 for v in size):
        raise ValueError(f"'image_size' must be [width, height] in pixels, got {size!r}")
    return xywh_to_xyxy(box), (float(size[0]), float(size[1]))


class GroundingScorer(Scorer):
    """Box answers scored by IoU with the referred object's box: Acc@IoU>=0.5, mean IoU."""

    name = "grounding"
    directions = MappingProxyType({"acc_iou50": True, "miou": True, "unparsed": False})
    default_metric = "acc_iou50"
    conventions = (
        "First box of the answer: Qwen <|box_start|>(x1,y1),(x2,y2)<|box_end|> on a 0-1000 grid, else PaliGemma's "
        "<loc{y1}><loc{x1}><loc{y2}><loc{x2}> on a 1024-bin grid, else [x1, y1, x2, y2] "
        "read as fractions of the image when all values are in [0, 1], else as pixels (box_format fixes one reading); "
        "no box -> IoU 0 (unparsed). acc_iou50: IoU >= 0.5; miou: mean IoU."
    )

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score rows: ``prediction``, ``bbox`` ([x, y, w, h] pixels), ``image_size`` ([w, h], or None when
        unknown), optional ``box_format`` (default ``auto``)."""
        per_sample, ious, hits, unparsed = [], [], [], []
        for row in rows:
            truth, size = _check_box(row)
            width, height = size if size else (None, None)
            parsed = parse_box(str(row["prediction"]), width, height, str(row.get("box_format") or "auto"))
            value = iou(parsed[0], truth) if parsed is not None else 0.0
            ious.append(value)
            hits.append(1.0 if value >= IOU_THRESHOLD else 0.0)
            unparsed.append(0.0 if parsed is not None else 1.0)
            per_sample.append(
                {**base_fields(row), "iou": value, "acc_iou50": hits[-1], "miou": value, "unparsed": unparsed[-1],
                 "box": [round(v, 2) for v in parsed[0]] if parsed else None,
                 "box_convention": parsed[1] if parsed else None, "truth_box": [round(v, 2) for v in truth]}
            )  # fmt: skip
        metrics = {"acc_iou50": mean(hits), "miou": mean(ious), "unparsed": mean(unparsed)}
        ci95 = {"acc_iou50": ci(hits, None, seed, n_resamples), "miou": ci(ious, None, seed, n_resamples)}
        return result(self.task_name, len(rows), metrics, ci95, per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        value = finite(fields.get("iou")) or 0.0
        return value, value >= IOU_THRESHOLD

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        if not all(finite(r.get(k)) is not None for r in rows for k in self.directions):
            return None
        return mean_statistics(rows, tuple(self.directions), None)

    def check_reference(self, row: Mapping[str, Any]) -> None:
        _check_box(row)
        box_format = row.get("box_format")
        if box_format is not None and box_format not in BOX_FORMATS:
            raise ValueError(f"unknown box_format {box_format!r}; choose one of {', '.join(BOX_FORMATS)}")
