"""Hand-computed test vectors for the hallucination scorers: probes, AMBER (both parts), HallusionBench
and grounding; and their recomputation from sample-log rows (what reports and `vlmbench check` use)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from release_miniatures import AMBER_RELATION, AMBER_SAFE_WORDS

from vlmbench.metrics.amber import AmberScorer, parse_exact
from vlmbench.metrics.amber_objects import Vocabulary, judge_caption
from vlmbench.metrics.grounding import GroundingScorer, iou, parse_box
from vlmbench.metrics.hallusionbench import HallusionBenchScorer, is_correct, parse_keyword
from vlmbench.metrics.probes import ProbesScorer
from vlmbench.metrics.registry import BUILTIN_SCORERS
from vlmbench.metrics.scorer import flatten


def _close(actual: dict[str, float], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value), key


def _recomputed(scorer: Any, rows: list[dict[str, Any]], result: dict[str, Any]) -> dict[str, float]:
    """The metrics a scorer recomputes from sample-log rows (per-sample fields + references)."""
    log_rows = [
        {
            **fields,
            "references": [row["answer"]] if "answer" in row else row.get("truth", []),
            "prediction": row["prediction"],
        }
        for row, fields in zip(rows, result["per_sample"], strict=True)
    ]
    stats = scorer.statistics(log_rows)
    assert stats is not None
    return {k: float(v[0]) for k, v in stats.compute(np.arange(len(rows))[None, :]).items()}


def test_the_new_scorers_are_registered() -> None:
    for name in ("probes", "amber", "hallusionbench", "grounding"):
        assert name in BUILTIN_SCORERS


# --- probes ------------------------------------------------------------------------------------------

PROBE_ROWS = [
    {"question_id": "1", "probe_type": "color", "category": "random", "answer": "yes", "prediction": "Yes"},
    {"question_id": "2", "probe_type": "color", "category": "random", "answer": "no", "prediction": "Yes"},
    {
        "question_id": "3",
        "probe_type": "color",
        "category": "adversarial",
        "answer": "yes",
        "prediction": "No",
    },
    {
        "question_id": "4",
        "probe_type": "color",
        "category": "adversarial",
        "answer": "no",
        "prediction": "No",
    },
    {"question_id": "5", "probe_type": "count", "category": "random", "answer": "yes", "prediction": ""},
    {"question_id": "6", "probe_type": "count", "category": "random", "answer": "no", "prediction": "No."},
]


def test_probe_metrics_by_hand() -> None:
    result = ProbesScorer().score(PROBE_ROWS, n_resamples=200)
    flat = flatten(result["metrics"])
    _close(flat, {
        "color.random.accuracy": 0.5, "color.random.precision": 0.5, "color.random.recall": 1.0,
        "color.random.f1": 2 / 3, "color.random.yes_ratio": 1.0,
        "color.adversarial.accuracy": 0.5, "color.adversarial.f1": 0.0, "color.adversarial.yes_ratio": 0.0,
        "color.all.accuracy": 0.5, "color.all.precision": 0.5, "color.all.recall": 0.5, "color.all.f1": 0.5,
        "count.random.accuracy": 0.5, "count.random.f1": 0.0, "count.random.unknown": 0.5, "count.all.yes_ratio": 0.0,
        "all.accuracy": 0.5, "all.precision": 0.5, "all.recall": 1 / 3, "all.f1": 0.4, "all.yes_ratio": 1 / 3,
        "all.unknown": 1 / 6, "f1_mean_of_types": 0.25,
    })  # fmt: skip
    assert "position" not in result["metrics"] and "popular" not in result["metrics"]["color"]
    assert list(result["metrics"])[0] == "f1_mean_of_types"
    cis = result["ci95"]
    assert (
        set(cis["color"]["random"]) == {"accuracy", "f1", "yes_ratio"} and len(cis["f1_mean_of_types"]) == 2
    )
    assert [s["parsed"] for s in result["per_sample"]] == ["yes", "yes", "no", "no", "unknown", "no"]
    _close(_recomputed(ProbesScorer(), PROBE_ROWS, result), {k: v for k, v in flat.items()})


def test_probe_rows_are_validated() -> None:
    scorer = ProbesScorer()
    with pytest.raises(ValueError, match="probe_type"):
        scorer.check_reference({"answer": "yes", "category": "random", "probe_type": "size"})
    with pytest.raises(ValueError, match="regime"):
        scorer.check_reference({"answer": "yes", "category": "easy", "probe_type": "color"})
    assert scorer.headline() == ("f1_mean_of_types", True)


# --- AMBER ---------------------------------------------------------------------------------------------

DISC_ROWS = [
    ("discriminative-hallucination", "yes", "Yes"),
    ("discriminative-hallucination", "no", "No"),
    ("discriminative-attribute-state", "no", "Yes"),
    ("discriminative-attribute-number", "yes", "No"),
    ("discriminative-attribute-action", "no", "no"),  # lower case: not the official "No" -> unknown
    ("discriminative-relation", "yes", " Yes\n"),
    ("relation", "no", "No"),
]
CAPTIONS = [
    (
        ["dog", "grass", "sky"],
        ["cat", "frisbee"],
        "Two puppies play on the lawn near a tree, and a kitten watches a bench.",
    ),
    (["car", "road"], ["person"], "A man drives a sedan down the street."),
]


def _amber_rows(disc: bool = True, gen: bool = True) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if gen:
        for truth, hallu, caption in CAPTIONS:
            rows.append({"question_id": f"g{len(rows)}", "amber_type": "generative", "truth": truth, "hallu": hallu,
                         "association": AMBER_RELATION, "safe_words": AMBER_SAFE_WORDS, "prediction": caption})  # fmt: skip
    if disc:
        for kind, truth, response in DISC_ROWS:
            rows.append(
                {"question_id": f"d{len(rows)}", "amber_type": kind, "answer": truth, "prediction": response}
            )
    return rows


def test_amber_exact_parsing() -> None:
    assert [parse_exact(t) for t in ("Yes", " No \n", "yes", "Yes.", "No, there is not.", "")] == [
        "yes", "no", "unknown", "unknown", "unknown", "unknown",
    ]  # fmt: skip


def test_amber_discriminative_with_no_as_the_positive_class() -> None:
    result = AmberScorer().score(_amber_rows(gen=False), n_resamples=100)
    flat = flatten(result["metrics"])
    _close(flat, {
        "discriminative.accuracy": 4 / 7, "discriminative.precision": 2 / 3, "discriminative.recall": 0.5,
        "discriminative.f1": 4 / 7, "discriminative.unknown": 1 / 7, "discriminative.yes_ratio": 3 / 7,
        "existence.accuracy": 1.0, "existence.f1": 1.0,
        "attribute.accuracy": 0.0, "attribute.precision": 0.0, "attribute.recall": 0.0, "attribute.f1": 0.0,
        "relation.accuracy": 1.0, "relation.precision": 1.0, "relation.recall": 1.0, "relation.f1": 1.0,
        "state.accuracy": 0.0, "number.accuracy": 0.0, "action.unknown": 1.0,
    })  # fmt: skip
    assert "amber_score" not in flat and "generative.chair" not in flat
    _close(_recomputed(AmberScorer(), _amber_rows(gen=False), result), flat)


def test_amber_caption_judgement_follows_the_official_steps() -> None:
    vocabulary = Vocabulary({k: tuple(v) for k, v in AMBER_RELATION.items()}, frozenset(AMBER_SAFE_WORDS))
    first = judge_caption(CAPTIONS[0][2], CAPTIONS[0][0], CAPTIONS[0][1], vocabulary)
    assert first.mentioned == ["puppy", "lawn", "tree", "kitten", "bench"]
    assert first.covered == ["dog", "grass"] and first.hit == ["cat"]
    assert first.hallucinated == ["tree", "kitten", "bench"]
    second = judge_caption(CAPTIONS[1][2], CAPTIONS[1][0], CAPTIONS[1][1], vocabulary)
    assert (second.mentioned, second.covered, second.hit, second.hallucinated) == (
        ["man", "street"], ["road"], ["person"], ["man"],
    )  # fmt: skip
    # similarity through the CHAIR synonym lists: a puppy is a dog, a kitty a cat; safe words are skipped
    custom = Vocabulary({"dog": (), "puppy": (), "kitty": (), "cat": (), "sky": ()}, frozenset({"sky"}))
    judged = judge_caption("A puppy and a kitty under the sky.", ["dog"], ["cat"], custom)
    assert judged.covered == ["dog"] and judged.hit == ["cat"] and judged.hallucinated == ["kitty"]
    assert judged.mentioned == ["puppy", "kitty", "sky"]


def test_amber_generative_metrics_and_the_amber_score() -> None:
    rows = _amber_rows()
    result = AmberScorer().score(rows, n_resamples=100)
    flat = flatten(result["metrics"])
    _close(flat, {
        "generative.chair": 4 / 7, "generative.cover": 3 / 5, "generative.hal": 1.0, "generative.cog": 2 / 3,
        "discriminative.f1": 4 / 7, "amber_score": ((1 - 4 / 7) + 4 / 7) / 2,
    })  # fmt: skip
    assert list(result["metrics"])[0] == "amber_score" and len(result["ci95"]["amber_score"]) == 2
    assert result["per_sample"][0]["hallucinated"] == ["tree", "kitten", "bench"]
    assert AmberScorer().outcome(result["per_sample"][0]) == (0.0, False)
    _close(_recomputed(AmberScorer(), rows, result), flat)


def test_amber_rows_are_validated() -> None:
    scorer = AmberScorer()
    with pytest.raises(ValueError, match="amber_type"):
        scorer.check_reference({"answer": "yes"})
    with pytest.raises(ValueError, match="relation.json"):
        scorer.check_reference({"amber_type": "generative", "truth": ["dog"]})
    with pytest.raises(ValueError, match="yes' or 'no"):
        scorer.check_reference({"amber_type": "relation", "answer": "maybe"})


# --- HallusionBench --------------------------------------------------------------------------------

HB_ROWS = [
    # (category, subcategory, set, figure, question, gt_answer, prediction)
    ("VD", "illusion", "0", "0", "0", "1", "Yes, it is."),
    ("VD", "illusion", "0", "0", "1", "0", "No"),
    ("VD", "illusion", "0", "1", "0", "0", "yes"),
    ("VD", "illusion", "0", "1", "1", "1", "Yes"),
    ("VS", "chart", "0", "0", "0", "1", "I am not sure."),  # unknown without the figure: counted right
    ("VS", "chart", "0", "1", "0", "0", "yes or no"),  # unknown with the figure: wrong
]


def _hb_rows() -> list[dict[str, Any]]:
    return [
        {"question_id": str(i), "answer": gt, "prediction": pred, "hb_category": c, "hb_subcategory": s,
         "hb_set_id": st, "hb_figure_id": f, "hb_question_id": q}
        for i, (c, s, st, f, q, gt, pred) in enumerate(HB_ROWS)
    ]  # fmt: skip


def test_hallusionbench_keyword_parsing() -> None:
    assert [parse_keyword(t) for t in ("Yes.", "no, it is not", "Yes and no", "Not really", "", "YES!")] == [
        "yes", "no", "unknown", "unknown", "unknown", "yes",
    ]  # fmt: skip
    assert is_correct("unknown", "yes", "VS", "0") and not is_correct("unknown", "yes", "VD", "0")


def test_hallusionbench_aacc_qacc_facc_by_hand() -> None:
    rows = _hb_rows()
    result = HallusionBenchScorer().score(rows, n_resamples=200)
    _close(
        result["metrics"], {"aacc": 4 / 6, "qacc": 1 / 3, "facc": 1 / 3, "yes_ratio": 0.5, "unknown": 2 / 6}
    )
    assert list(result["metrics"])[0] == "qacc"
    assert [s["correct"] for s in result["per_sample"]] == [True, True, False, True, True, False]
    assert set(result["ci95"]) == {"qacc", "facc", "aacc", "yes_ratio"}
    _close(_recomputed(HallusionBenchScorer(), rows, result), result["metrics"])


def test_hallusionbench_rows_need_their_keys() -> None:
    with pytest.raises(ValueError, match="hb_figure_id"):
        HallusionBenchScorer().check_reference({"answer": "1", "hb_category": "VD", "hb_subcategory": "x",
                                                 "hb_set_id": "0", "hb_question_id": "0"})  # fmt: skip
    with pytest.raises(ValueError, match="gt_answer"):
        HallusionBenchScorer().check_reference({"answer": "maybe"})


# --- grounding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "box_format", "expected"),
    [
        ("[10, 20, 30, 40]", "auto", ((10, 20, 30, 40), "pixels")),
        ("The box is [0.1, 0.2, 0.3, 0.4].", "auto", ((10, 40, 30, 80), "unit")),
        ("<|box_start|>(100,200),(300,400)<|box_end|>", "auto", ((10, 40, 30, 80), "qwen1000")),
        ('{"bbox_2d": [30, 40, 10, 20], "label": "cup"}', "auto", ((10, 20, 30, 40), "pixels")),
        ("(10.5, 20, 30, 40.5)", "auto", ((10.5, 20, 30, 40.5), "pixels")),
        ("[0.5, 0.5, 1, 1]", "pixels", ((0.5, 0.5, 1, 1), "pixels")),
        ("[100, 200, 300, 400]", "qwen1000", ((10, 40, 30, 80), "qwen1000")),
        ("[-5, 0, 500, 50]", "auto", ((0, 0, 100, 50), "pixels")),
    ],
)
def test_box_parsing(text: str, box_format: str, expected: tuple) -> None:
    parsed = parse_box(text, 100, 200, box_format)
    assert parsed is not None
    assert parsed[0] == pytest.approx(expected[0]) and parsed[1] == expected[1]


def test_box_parsing_without_a_box() -> None:
    assert parse_box("a cup on the left", 100, 100) is None
    with pytest.raises(ValueError, match="box_format"):
        parse_box("[1, 2, 3, 4]", 10, 10, "xywh")


def test_iou_by_hand() -> None:
    assert iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_grounding_metrics_by_hand() -> None:
    predictions = ["[10, 20, 30, 40]", "[0.1, 0.1, 0.3, 0.2]", "[20, 20, 40, 40]", "none"]
    rows = [
        {"question_id": str(i), "bbox": [10, 20, 20, 20], "image_size": [100, 200], "prediction": p}
        for i, p in enumerate(predictions)
    ]
    result = GroundingScorer().score(rows, n_resamples=200)
    _close(result["metrics"], {"acc_iou50": 0.5, "miou": (1 + 1 + 1 / 3) / 4, "unparsed": 0.25})
    assert [s["box_convention"] for s in result["per_sample"]] == ["pixels", "unit", "pixels", None]
    assert GroundingScorer().outcome(result["per_sample"][2]) == (pytest.approx(1 / 3), False)
    stats = GroundingScorer().statistics([{**s, "references": ["x"]} for s in result["per_sample"]])
    assert stats is not None and float(stats.compute(np.arange(4)[None, :])["miou"][0]) == pytest.approx(
        7 / 12
    )
    unknown_size = GroundingScorer().score([{**r, "image_size": None} for r in rows[:2]], n_resamples=10)
    assert [s["iou"] for s in unknown_size["per_sample"]] == [1.0, 0.0]  # pixels: scored; fractions: not
    assert unknown_size["metrics"]["unparsed"] == 0.5
    with pytest.raises(ValueError, match="bbox"):
        GroundingScorer().check_reference({"bbox": [1, 2, 3], "image_size": [4, 4]})
