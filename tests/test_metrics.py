"""Metric functions against hand-computed vectors, including the edge cases each official script defines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlmbench.metrics import SCORERS, TASKS, score_task
from vlmbench.metrics.anls import anls_metrics, anls_score, levenshtein, normalize_anls
from vlmbench.metrics.chair import (
    COCO_CATEGORIES,
    chair_metrics,
    check_categories,
    extract_objects,
    hallucinated_objects,
    object_mentions,
)
from vlmbench.metrics.ocr import cer, exact_match, ocr_metrics
from vlmbench.metrics.pope import parse_yes_no, pope_metrics
from vlmbench.metrics.relaxed import relaxed_accuracy, relaxed_correct, to_number
from vlmbench.metrics.stats import binomial_two_sided_p, bootstrap_ci, mcnemar, paired_bootstrap
from vlmbench.metrics.vqa import normalize_vqa_answer, vqa_accuracy, vqa_metrics

approx = pytest.approx

# --------------------------------------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No, there is not.", "no"),
        ("Yes.", "yes"),
        ("yes", "yes"),
        ("There is no dog in the image", "no"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("...", "unknown"),
        ("Not sure", "no"),
        ("NO!", "no"),
        ("Yes, there is a dog. No cat though.", "yes"),  # only the first sentence counts
        ("The answer is (no)", "no"),  # punctuation around a word is stripped
        ("Nothing like that", "yes"),  # "nothing" is not the word "no"
        ("Yes, no doubt", "no"),  # the official rule: any "no"/"not" in the first sentence
    ],
)
def test_parse_yes_no(text: str, expected: str) -> None:
    assert parse_yes_no(text) == expected


def _pope_rows() -> list[dict]:
    # random: TP, FN, FN(unknown), TN, FP, TN  |  adversarial: TP, TP, wrong(unknown), FP
    table = [
        ("random", "yes", "Yes."),
        ("random", "yes", "There is no dog in the image"),
        ("random", "yes", ""),
        ("random", "no", "No, there is not."),
        ("random", "no", "Yes, there is a dog."),
        ("random", "no", "Not sure"),
        ("adversarial", "yes", "yes"),
        ("adversarial", "YES", "YES, it is."),
        ("adversarial", "no", "..."),
        ("adversarial", "no", "Yes"),
    ]
    return [
        {"question_id": i, "category": c, "answer": a, "prediction": p} for i, (c, a, p) in enumerate(table)
    ]


def test_pope_metrics_hand_computed_table() -> None:
    m = pope_metrics(_pope_rows())
    assert set(m) == {"random", "adversarial", "all", "f1_mean_of_splits"}  # no "popular": not present
    # random: TP=1 FP=1 FN=2 (one of them unknown) TN=2
    assert m["random"] == approx(
        {"accuracy": 0.5, "precision": 0.5, "recall": 1 / 3, "f1": 0.4, "yes_ratio": 1 / 3, "unknown": 1 / 6}
    )
    # adversarial: TP=2 FP=1 FN=0, one unknown on a gt-no row (wrong, not a yes)
    assert m["adversarial"] == approx(
        {"accuracy": 0.5, "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "yes_ratio": 0.75, "unknown": 0.25}
    )
    # pooled: TP=3 FP=2 FN=2, 5 of 10 right, 5 predicted yes, 2 unknown
    assert m["all"] == approx(
        {"accuracy": 0.5, "precision": 0.6, "recall": 0.6, "f1": 0.6, "yes_ratio": 0.5, "unknown": 0.2}
    )
    assert m["f1_mean_of_splits"] == approx(0.6)


def test_pope_division_by_zero_is_zero() -> None:
    rows = [{"category": "popular", "answer": "no", "prediction": "no"}]
    m = pope_metrics(rows)
    assert m["popular"] == {
        "accuracy": 1.0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "yes_ratio": 0.0,
        "unknown": 0.0,
    }
    assert pope_metrics([])["all"]["f1"] == 0.0
    assert pope_metrics([])["f1_mean_of_splits"] == 0.0


def test_pope_rejects_unknown_split_and_label() -> None:
    with pytest.raises(ValueError, match="unknown POPE split"):
        pope_metrics([{"category": "hard", "answer": "yes", "prediction": "yes"}])
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        pope_metrics([{"category": "random", "answer": "maybe", "prediction": "yes"}])


# --------------------------------------------------------------------------------------------- ANLS


def test_levenshtein() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("flaw", "lawn") == 2
    rng = np.random.default_rng(0)
    for _ in range(20):  # the vectorised path (long strings) agrees with the plain DP
        a = "".join(rng.choice(list("abc"), size=rng.integers(60, 120)))
        b = "".join(rng.choice(list("abc"), size=rng.integers(60, 120)))
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        assert levenshtein(a, b) == prev[-1]


def test_anls_threshold_boundary() -> None:
    assert anls_score("abxx", ["abcd"]) == 0.5  # similarity exactly 0.5 is kept
    assert anls_score("axxx", ["abcd"]) == 0.0  # 0.25 < 0.5 -> 0
    assert anls_score("abcx", ["abcd"]) == 0.75
    assert anls_score("  The   ANSWER ", ["the answer"]) == 1.0
    assert normalize_anls(" A \n b  ") == "a b"
    assert anls_score("abcx", ["zzzz", "abcd"]) == 0.75  # best reference wins
    assert anls_score("", ["abc"]) == 0.0
    assert anls_score("", [""]) == 1.0
    assert anls_metrics(
        [{"prediction": "abxx", "answers": ["abcd"]}, {"prediction": "x", "answers": ["y"]}]
    ) == {"anls": 0.25}


# ---------------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("two", "2"),
        ("Two", "2"),
        ("a dog", "dog"),
        ("The dog.", "dog"),
        ("dont", "don't"),
        ("don't", "don't"),
        ("yes!", "yes"),
        ("1,000", "1000"),  # digit-comma-digit: commas go, numbers join
        ("2.5", "2.5"),  # a period before a digit is a decimal point
        ("hi-fi", "hi fi"),  # punctuation inside a word becomes a space
        ("red, white", "red white"),  # punctuation next to a space is deleted
        ("none", "0"),
        ("  an\tapple\n", "apple"),
    ],
)
def test_vqa_normalisation(raw: str, normalised: str) -> None:
    assert normalize_vqa_answer(raw) == normalised


def test_vqa_leave_one_out_values_are_exact() -> None:
    for matches, expected in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]:
        answers = ["2"] * matches + ["3"] * (10 - matches)
        assert vqa_accuracy("two", answers) == expected  # exact, not approximate


def test_vqa_matches_through_normalisation() -> None:
    assert vqa_accuracy("A dog.", ["dog"] * 10) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 10) == 1.0
    assert vqa_accuracy("dog", ["dog"]) == 1.0  # a single reference: exact match
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    assert vqa_accuracy("dog", ["dog", "dog", "cat"]) == approx((1 / 3 + 1 / 3 + 2 / 3) / 3)  # < 10 answers
    assert vqa_metrics(
        [{"prediction": "2", "answers": ["two"] * 10}, {"prediction": "x", "answers": ["y"] * 10}]
    ) == {"accuracy": 0.5}


# -------------------------------------------------------------------------------------------- ChartQA


def test_relaxed_accuracy_tolerance() -> None:
    assert relaxed_correct("104.9", "100")  # 4.9 % off: right
    assert not relaxed_correct("105.1", "100")  # 5.1 % off: wrong
    assert relaxed_correct("95.1", "100")
    assert not relaxed_correct("94.9", "100")
    assert relaxed_correct("-104", "-100")


def test_relaxed_accuracy_percent_and_strings() -> None:
    assert to_number("12%") == approx(0.12)
    assert relaxed_correct("12%", "0.12")
    assert relaxed_correct("0.12", "12 %")
    assert not relaxed_correct("12%", "12")  # a trailing % is a fraction on either side
    assert relaxed_correct("0", "0") and relaxed_correct("0.0", "0")
    assert not relaxed_correct("0.001", "0")  # target 0: exact equality
    assert relaxed_correct(" Yes ", "yes")
    assert not relaxed_correct("1,000", "1000")  # not a number: string comparison
    assert to_number("nan") is None
    assert relaxed_accuracy("7", ["abc", "7.2"]) == 1.0
    assert relaxed_accuracy("8", ["abc", "7.2"]) == 0.0


# ---------------------------------------------------------------------------------------------- OCR


def test_ocr_exact_match_and_cer() -> None:
    assert exact_match("  Hello   world ", ["Hello world"]) == 1.0
    assert exact_match("hello world", ["Hello world"]) == 0.0  # case-sensitive
    assert cer("helo", ["hello"]) == approx(0.2)
    assert cer("hello", ["xxxxx", "hello"]) == 0.0
    assert cer("", ["abc"]) == 1.0
    assert cer("a much longer hallucinated output", ["ab"]) == 1.0  # clipped per sample
    assert cer("", [""]) == 0.0 and cer("x", [""]) == 1.0
    assert ocr_metrics(
        [{"prediction": "helo", "answers": ["hello"]}, {"prediction": "ok", "answers": ["ok"]}]
    ) == approx({"exact_match": 0.5, "cer": 0.1})


# --------------------------------------------------------------------------------------------- CHAIR

COCO_80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def test_chair_categories_are_the_80_coco_names() -> None:
    assert COCO_CATEGORIES == COCO_80 and len(set(COCO_80)) == 80
    for name in COCO_80:  # every category is found under its own name
        assert extract_objects(f"There is a {name} here.") == [name]


@pytest.mark.parametrize(
    ("caption", "objects"),
    [
        ("Two dogs play in the park.", ["dog"]),  # plural
        ("A man and a woman.", ["person", "person"]),  # synonyms, with multiplicity
        ("People and children on a bench.", ["person", "person", "bench"]),
        ("A hot dog on a plate.", ["hot dog"]),  # two-word name, not a dog
        ("Hot-dogs and a dog.", ["hot dog", "dog"]),
        ("A teddy bear next to a bear.", ["teddy bear", "bear"]),
        ("A cell phone and a phone.", ["cell phone", "cell phone"]),
        ("A baby elephant with its mother.", ["elephant", "person"]),  # "baby" qualifies the animal
        ("A baby in a high chair.", ["person", "chair"]),
        ("A passenger train.", ["train"]),
        ("The seat of the toilet is up.", ["toilet"]),  # a toilet's seat is no chair
        (
            "A girl with a pony tail holds two knives.",
            ["person", "knife"],
        ),  # blocked phrase, irregular plural
        ("A dirt bike and a bike.", ["motorcycle", "bicycle"]),
        (
            "A laptop, a computer mouse and a keyboard on the desk.",
            ["laptop", "mouse", "keyboard", "dining table"],
        ),
        ("Buses and sheep.", ["bus", "sheep"]),
        ("", []),
    ],
)
def test_extract_objects(caption: str, objects: list[str]) -> None:
    assert extract_objects(caption) == objects


def test_object_mentions_spans_for_highlighting() -> None:
    caption = "A Hot Dog and two Dogs."
    spans = [(m.text, m.category, caption[m.start : m.end]) for m in object_mentions(caption)]
    assert spans == [("Hot Dog", "hot dog", "Hot Dog"), ("Dogs", "dog", "Dogs")]


def test_chair_metrics_hand_computed() -> None:
    rows = [
        {"prediction": "A man walks two dogs past a cat.", "gt_objects": ["person", "dog"]},
        {"prediction": "A hot dog on a table.", "gt_objects": ["hot dog", "dining table", "cup"]},
    ]
    # mentions: person, dog, cat | hot dog, dining table -> 1 of 5 hallucinated, 1 of 2 captions
    # recall: 2 of 2 + 2 of 3 gt objects covered
    assert chair_metrics(rows) == approx({"chair_i": 0.2, "chair_s": 0.5, "recall": 0.8})
    assert hallucinated_objects("A cat, a man and another cat.", ["person"]) == ["cat"]
    assert chair_metrics([]) == {"chair_i": 0.0, "chair_s": 0.0, "recall": 0.0}


def test_chair_rejects_non_category_names() -> None:
    assert check_categories(["person", "hot dog"]) == ["person", "hot dog"]
    with pytest.raises(ValueError, match="did you mean 'person'"):
        check_categories(["people"])
    with pytest.raises(ValueError, match="not a COCO category"):
        check_categories(["unicorn"])


# --------------------------------------------------------------------------------------------- stats


def test_mcnemar_exact_and_chi_square() -> None:
    # b = 1 (A right, B wrong), c = 6 (A wrong, B right): exact p = 2 * (1 + 7) / 2**7 = 0.125
    a = [True] * 1 + [False] * 6 + [True] * 5
    b = [False] * 1 + [True] * 6 + [True] * 5
    assert mcnemar(a, b) == 0.125
    assert binomial_two_sided_p(0, 5) == 0.0625
    assert binomial_two_sided_p(3, 6) == 1.0
    # b = 10, c = 30: chi2 = (|10 - 30| - 1)^2 / 40 = 9.025 -> p = 0.0026631 (chi-square, 1 dof)
    a = [True] * 10 + [False] * 30
    b = [False] * 10 + [True] * 30
    assert mcnemar(a, b) == approx(0.0026631, abs=1e-6)
    assert mcnemar([True, False], [True, False]) == 1.0  # no discordant pairs


def test_bootstrap_ci_is_deterministic_and_sane() -> None:
    values = np.random.default_rng(1).random(200)
    ci = bootstrap_ci(values, seed=3)
    assert ci == bootstrap_ci(values, seed=3)
    assert ci != bootstrap_ci(values, seed=4)
    assert ci[0] < values.mean() < ci[1]
    # the statistic form with the mean as statistic draws the same resamples
    assert bootstrap_ci(values, lambda idx: float(values[idx].mean()), seed=3) == approx(ci)
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_paired_bootstrap() -> None:
    a = np.zeros(50)
    delta, ci, p = paired_bootstrap(a, a, seed=0)
    assert (delta, ci, p) == (0.0, (0.0, 0.0), 1.0)
    b = np.array([1.0] * 30 + [0.0] * 20)
    delta, (low, high), p = paired_bootstrap(a, b, n_resamples=500, seed=0)
    assert delta == approx(0.6) and 0.0 < low < 0.6 < high
    assert p == approx(1 / 501)
    assert paired_bootstrap(a, b, n_resamples=500, seed=0) == (delta, (low, high), p)


# -------------------------------------------------------------------------------------- score_task


def _in_unit(x: object) -> bool:
    if isinstance(x, dict):
        return all(_in_unit(v) for v in x.values())
    if isinstance(x, list):
        return all(_in_unit(v) for v in x)
    return isinstance(x, float) and 0.0 <= x <= 1.0 and not math.isnan(x)


def test_score_task_pope_shape() -> None:
    result = score_task("pope", _pope_rows(), seed=0, n_resamples=200)
    assert set(result) == {"task", "n", "metrics", "ci95", "per_sample"}
    assert result["task"] == "pope" and result["n"] == 10
    assert result["metrics"] == pope_metrics(_pope_rows())
    assert set(result["ci95"]) == {"random", "adversarial", "all", "f1_mean_of_splits"}
    assert set(result["ci95"]["random"]) == {"f1", "accuracy"}
    assert _in_unit(result["metrics"]) and _in_unit(result["ci95"])
    assert result["per_sample"][2] == {"question_id": 2, "parsed": "unknown", "correct": False}
    assert result == score_task("pope", _pope_rows(), seed=0, n_resamples=200)


@pytest.mark.parametrize(
    ("task", "row", "metric"),
    [
        ("docvqa", {"prediction": "abxx", "answers": ["abcd"]}, "anls"),
        ("textvqa", {"prediction": "two", "answers": ["2"] * 3 + ["x"] * 7}, "accuracy"),
        ("vqav2", {"prediction": "two", "answers": ["2"] * 3 + ["x"] * 7}, "accuracy"),
        ("chartqa", {"prediction": "12%", "answer": "0.12"}, "relaxed_accuracy"),
        ("ocr", {"prediction": "helo", "answer": "hello"}, "cer"),
        ("chair", {"prediction": "A cat and a dog.", "gt_objects": ["dog"]}, "chair_i"),
    ],
)
def test_score_task_flat_tasks(task: str, row: dict, metric: str) -> None:
    rows = [{"question_id": i, **row} for i in range(4)] + [{"question_id": 9, **row, "prediction": ""}]
    result = score_task(task, rows, n_resamples=100)
    assert result["task"] == task and result["n"] == 5
    assert metric in result["metrics"] and set(result["ci95"]) == set(result["metrics"])
    assert _in_unit(result["metrics"]) and _in_unit(result["ci95"])
    assert len(result["per_sample"]) == 5 and result["per_sample"][0]["question_id"] == 0


def test_score_task_registry() -> None:
    hallucination = {"probes", "amber", "hallusionbench", "grounding"}  # tests/test_hallucination_metrics.py
    assert set(TASKS) == {"pope", "docvqa", "textvqa", "vqav2", "chartqa", "ocr", "chair", *hallucination} == set(SCORERS)
    with pytest.raises(ValueError, match="unknown task"):
        score_task("mmmu", [])
    assert score_task("docvqa", [])["metrics"] == {"anls": 0.0}


# ------------------------------------------------------- numbers pinned before the library switch
# Recorded with the hand-written implementations (pure-Python binomial tail, erfc chi-square, the
# numpy Levenshtein DP) on these inputs; scipy / rapidfuzz must reproduce them.


def test_binomial_and_mcnemar_match_the_hand_written_tests() -> None:
    cases = [(0, 1), (3, 10), (5, 10), (2, 24), (12, 24), (0, 0), (7, 20)]
    recorded = [1.0, 0.34375, 1.0, 3.5881996154785156e-05, 1.0, 1.0, 0.26317596435546875]
    assert [binomial_two_sided_p(k, n) for k, n in cases] == approx(recorded, rel=1e-12)
    rng = np.random.default_rng(7)
    a, b = rng.random(60) < 0.7, rng.random(60) < 0.6
    assert mcnemar(a[:30], b[:30]) == approx(0.3876953125, rel=1e-12)  # exact branch
    assert mcnemar(a, b) == approx(0.12365771040283349, rel=1e-12)  # chi-square branch
    big_a, big_b = rng.random(400) < 0.7, rng.random(400) < 0.55
    assert mcnemar(big_a, big_b) == approx(0.004286708238680489, rel=1e-12)


def test_seeded_bootstrap_intervals_are_unchanged() -> None:
    rng = np.random.default_rng(7)
    rng.random(60), rng.random(60), rng.random(400), rng.random(400)  # same stream as when recorded
    values = rng.random(50)
    assert bootstrap_ci(values, seed=3, n_resamples=500) == (0.3846204415029457, 0.5420117173174663)
    delta, ci, p = paired_bootstrap(values, values + rng.normal(0.05, 0.1, 50), seed=1, n_resamples=500)
    assert (delta, ci, p) == (
        0.06585785451348021,
        (0.042945430620207184, 0.09037080438521225),
        0.001996007984031936,
    )


def test_rapidfuzz_edit_distances_match_the_dp() -> None:
    pairs = [("kitten", "sitting"), ("", "abc"), ("flaw", "lawn"), ("a" * 80 + "b", "b" + "a" * 79),
             ("héllo wörld", "hello world"), ("x" * 100, "y" * 70)]  # fmt: skip
    assert [levenshtein(x, y) for x, y in pairs] == [3, 3, 2, 2, 2, 100]
    assert anls_score("The Quick brown", ["the quick brown fox", "x"]) == 0.7894736842105263
    assert [cer("helo", ["hello"]), cer("", [""]), cer("abc", [""]), cer("x" * 30, ["ab"])] == [
        0.2,
        0.0,
        1.0,
        1.0,
    ]


def test_score_task_intervals_are_unchanged() -> None:
    rows = [
        {"question_id": i, "prediction": p, "answers": a}
        for i, (p, a) in enumerate(
            [
                ("12", ["12.4"]),
                ("cat", ["Cat"]),
                ("1,000", ["1000"]),
                ("5%", ["0.05"]),
                ("two", ["2", "2", "two"]),
            ]
        )
    ] * 4
    result = score_task("chartqa", rows, seed=2, n_resamples=100)
    assert result["metrics"] == {"relaxed_accuracy": 0.8}
    assert result["ci95"] == {"relaxed_accuracy": [0.62375, 0.95]}


# ------------------------------------------------------------------------------ scorers and AUC


def test_pope_splits_have_one_definition() -> None:
    import vlmbench.interop.lmms as lmms
    import vlmbench.report.metricspec as metricspec
    import vlmbench.tasks.pope as pope_task
    from vlmbench.metrics import pope

    assert metricspec.POPE_SPLITS is pope.POPE_SPLITS and pope_task.POPE_SPLITS is pope.POPE_SPLITS
    assert set(lmms.LMMS_POPE_SPLIT_TASKS) == set(pope.POPE_SPLITS)


def test_scorer_directions_and_headlines() -> None:
    assert SCORERS["ocr"].headline("cer") == ("cer", False)  # the YAML may rank by a lower-is-better metric
    assert SCORERS["ocr"].headline() == ("exact_match", True)
    assert SCORERS["chair"].headline() == ("chair_i", False)
    assert SCORERS["pope"].direction("random.yes_ratio") is None
    assert SCORERS["pope"].direction("all.unknown") is False
    with pytest.raises(ValueError, match="not a metric of the ocr scorer"):
        SCORERS["ocr"].headline("anls")
    with pytest.raises(ValueError, match="no better direction"):
        SCORERS["pope"].headline("all.yes_ratio")
    assert SCORERS["textvqa"].task_name == "textvqa" and SCORERS["vqav2"].task_name == "vqav2"


def test_outcomes_are_the_scorers() -> None:
    assert SCORERS["pope"].outcome({"correct": True}) == (1.0, True)
    assert SCORERS["chair"].outcome({"hallucinated": ["dog"]}) == (0.0, False)
    assert SCORERS["docvqa"].outcome({"anls": 0.7}) == (0.7, None)
    assert SCORERS["ocr"].outcome({"exact_match": 1.0, "cer": 0.0}) == (1.0, True)
    assert SCORERS["chartqa"].outcome({"relaxed_accuracy": 0.0}) == (0.0, False)


def test_reference_validation_lives_in_the_scorers() -> None:
    SCORERS["pope"].check_reference({"answer": "Yes", "category": "random"})
    with pytest.raises(ValueError, match="yes' or 'no'"):
        SCORERS["pope"].check_reference({"answer": "maybe", "category": "random"})
    with pytest.raises(ValueError, match="unknown POPE split"):
        SCORERS["pope"].check_reference({"answer": "no", "category": "odd"})
    with pytest.raises(ValueError, match="not a COCO category"):
        SCORERS["chair"].check_reference({"gt_objects": ["doggo"]})
    with pytest.raises(ValueError, match="missing field 'answer'"):
        SCORERS["docvqa"].check_reference({})


def test_roc_auc_resampled_equals_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    from vlmbench.metrics.auc import roc_auc, roc_auc_resampled

    rng = np.random.default_rng(0)
    labels = rng.random(40) < 0.5
    scores = np.round(rng.normal(size=40) + labels, 1)  # rounded: ties
    idx = rng.integers(0, 40, size=(25, 40))
    got = roc_auc_resampled(labels, scores, idx)
    want = [roc_auc_score(labels[i], scores[i]) if 0 < labels[i].sum() < 40 else 0.0 for i in idx]
    assert got == approx(want, abs=1e-12)
    assert roc_auc_resampled(labels, scores, np.arange(40)[None, :])[0] == approx(roc_auc(labels, scores))
    include = np.arange(40) < 20
    subset = [roc_auc_score(labels[i[include[i]]], scores[i[include[i]]]) for i in idx[:5]]
    assert roc_auc_resampled(labels, scores, idx[:5], include=include) == approx(subset, abs=1e-12)
    assert roc_auc(np.ones(3, dtype=bool), np.zeros(3)) == 0.0  # one class: undefined, reported 0


def test_pope_auc_only_with_log_probs() -> None:
    rows = _pope_rows()
    plain = score_task("pope", rows, n_resamples=50)
    assert all("auc" not in plain["metrics"][s] for s in ("random", "adversarial", "all"))
    with_lp = [
        {**r, "choice_logprobs": {"Yes": -0.1 if r["answer"].lower() == "yes" else -2.0, "No": -1.0}}
        for r in rows
    ]
    scored = score_task("pope", with_lp, n_resamples=50)
    assert scored["metrics"]["all"]["auc"] == 1.0  # the margin separates the classes perfectly
    assert len(scored["ci95"]["all"]["auc"]) == 2
    # everything else is unchanged by the addition
    strip = {
        k: {m: v for m, v in s.items() if m != "auc"} if isinstance(s, dict) else s
        for k, s in scored["metrics"].items()
    }
    assert strip == plain["metrics"]
    partial = with_lp[:-1] + rows[-1:]  # one row without log-probs: no auc at all
    assert "auc" not in score_task("pope", partial, n_resamples=50)["metrics"]["all"]
