"""Property-based tests (hypothesis): arbitrary rows, bytes, recipe values and argument strings end in a
result or a one-line `UserError` (exit 0, 1 or 2), never a traceback.

Bounded so the file stays well under a minute on two cores: few examples per property, no shrinking
deadline, and the costly properties (writing and loading Parquet files, the CLI) get the fewest.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.test_recipe_validation import BASE as RECIPE
from vlmbench.errors import UserError
from vlmbench.tasks.base import MalformedRow, as_text
from vlmbench.tasks.registry import load_task

TASKS = ("chair", "chartqa", "docvqa", "ocr", "pope", "textvqa", "vqav2", "pair_compare")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- text cells ------------------------------------------------------------------------------


def test_as_text_decodes_utf8_bytes_instead_of_printing_their_repr() -> None:
    assert as_text(b"  What is written here?  ") == "What is written here?"
    assert as_text(bytearray("café".encode())) == "café"
    assert as_text(memoryview(b"x")) == "x"
    assert as_text(3.0) == "3" and as_text(None) == "" and as_text(float("nan")) == ""


@pytest.mark.parametrize("value", [b"\xff\xfe\x00", [1, 2], {"a": 1}, Image.new("RGB", (1, 1))])
def test_as_text_of_a_cell_that_holds_no_text_is_a_malformed_row(value: Any) -> None:
    with pytest.raises(MalformedRow, match="question_id|text"):
        as_text(value)


def test_binary_question_column_reaches_the_prompt_as_text(tmp_path: Path) -> None:
    import datasets

    rows = {
        "question": [b"What is field 1?", "What is field 2?".encode("utf-16"), b"What is field 3?"],
        "answers": [["v1"], ["v2"], ["v3"]],
        "questionId": [1, 2, 3],
        "docId": [0, 0, 1],
        "image": [{"bytes": _png(), "path": None}] * 3,
    }
    (tmp_path / "data").mkdir()
    dataset = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    dataset.to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    samples, info = load_task("docvqa").load(tmp_path)
    assert samples[0].question == "What is field 1?"
    assert samples[0].prompt.startswith("What is field 1?\n") and "b'" not in samples[0].prompt
    assert "error" not in samples[0].meta and "error" not in samples[2].meta
    # UTF-16 bytes are not UTF-8 text: that row is malformed (counted as an error), not "b'\xff\xfe...'"
    assert "not UTF-8 text" in samples[1].meta["error"] and samples[1].question == ""
    assert info.meta["malformed"] == 1


# ---- strategies ------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here reproduces, CI stays stable
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""The budget of a cheap property (pure functions); costly ones lower max_examples further."""

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=30),
)
# What a data set's cell or a YAML value can hold: scalars, lists of them and small mappings.
values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
yaml_values = values.filter(lambda v: not isinstance(v, bytes))  # YAML text has no byte strings


def _one_line(message: str) -> bool:
    return "\n" not in message.strip() and "Traceback" not in message


# ---- data loaders: rows ----------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@PROPERTY
@given(data=st.data())
def test_any_row_becomes_a_sample_or_a_marked_error(task: str, data: st.DataObject) -> None:
    adapter = load_task(task)
    columns = sorted({*adapter.config.columns.values(), *adapter.config.meta_columns})
    row = data.draw(st.fixed_dictionaries({}, optional={c: values for c in columns}), label="row")
    try:
        sample = adapter.build_sample(0, row)
    except UserError as exc:  # a row naming an unknown POPE split stops the whole task
        assert task == "pope" and "unknown POPE category" in str(exc)
        return
    assert isinstance(sample.question_id, str) and sample.question_id
    assert isinstance(sample.question, str) and isinstance(sample.image_key, str)
    assert sample.prompt == adapter.config.build_prompt(sample.question)
    assert all(isinstance(r, str) and r for r in sample.references)
    if "error" not in sample.meta:
        assert sample.references or task == "chair"
        assert sample.question or task == "chair"
        assert "b'" not in sample.question or "b'" in str(row.get(adapter.config.columns["question"]))
    else:
        assert _one_line(sample.meta["error"])


@pytest.mark.parametrize("value", [b"abc", "abc", 3, 2.0, None, float("nan"), True, [b"a"], {"a": b"b"}])
def test_as_text_never_returns_a_repr_of_bytes(value: Any) -> None:
    try:
        text = as_text(value)
    except MalformedRow:
        return
    assert not text.startswith(("b'", 'b"', "bytearray("))


# ---- data loaders: files ---------------------------------------------------------------------


@settings(PROPERTY, max_examples=8)
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".parquet", ".arrow"]))
def test_any_bytes_as_a_data_file_is_a_user_error(content: bytes, suffix: str, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("bytes")
    (root / "data").mkdir()
    (root / "data" / f"validation-00000-of-00001{suffix}").write_bytes(content)
    with pytest.raises(UserError) as info:
        load_task("docvqa").load(root)
    assert _one_line(str(info.value))


_texts = st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=4, max_size=4)
_binaries = st.lists(st.one_of(st.none(), st.binary(max_size=12)), min_size=4, max_size=4)


def _docvqa_parquet(root: Path, question: list[Any], answers: list[Any], ids: list[Any]) -> Path:
    import datasets

    n = len(question)
    columns = {
        "questionId": ids,
        "question": question,
        "answers": answers,
        "docId": list(range(n)),
        "image": [{"bytes": _png(), "path": None}] * n,
    }
    dataset = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    (root / "data").mkdir()
    dataset.to_parquet(str(root / "data" / "validation-00000-of-00001.parquet"))
    return root


def test_text_cell_that_is_not_utf8_is_a_user_error(tmp_path: Path) -> None:
    # Found by the property below: Arrow keeps the bytes of a string cell unchecked, and reading the
    # rows raised UnicodeDecodeError (a traceback) instead of naming the data.
    root = _docvqa_parquet(tmp_path, ["q"], [["", b"\x80"]], ["1"])
    with pytest.raises(UserError, match="has a text cell that is not UTF-8"):
        load_task("docvqa").load(root)


@settings(PROPERTY, max_examples=8)
@given(
    question=st.one_of(_texts, _binaries),
    answers=st.lists(st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=3)), min_size=4, max_size=4),
    ids=st.lists(st.one_of(st.none(), st.text(max_size=4)), min_size=4, max_size=4),
)
def test_any_parquet_cells_load_or_are_a_user_error(
    question: list[Any], answers: list[Any], ids: list[Any], tmp_path_factory
) -> None:
    root = _docvqa_parquet(tmp_path_factory.mktemp("cells"), question, answers, ids)
    try:
        samples, info = load_task("docvqa").load(root)
    except UserError as exc:
        assert _one_line(str(exc))
        return
    assert len(samples) == len(question) and info.meta["malformed"] == sum("error" in s.meta for s in samples)
    for sample, raw in zip(samples, question, strict=True):
        assert isinstance(sample.question, str) and "b'" not in sample.prompt
        if "error" not in sample.meta and isinstance(raw, bytes):
            assert sample.question == raw.decode("utf-8").strip()


# ---- scorers ---------------------------------------------------------------------------------

_COCO_NAMES = ("dog", "cat", "cup", "person", "bicycle", "dining table", "traffic light")


def _reference_fields(scorer_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Reference fields a scorer accepts (arbitrary text where the format allows any text)."""
    if scorer_name == "pope":
        return st.fixed_dictionaries(
            {
                "answer": st.sampled_from(["yes", "no", "Yes", "NO"]),
                "category": st.sampled_from(["random", "popular", "adversarial"]),
            }
        )
    if scorer_name == "chair":
        return st.fixed_dictionaries({"gt_objects": st.lists(st.sampled_from(_COCO_NAMES), max_size=3)})
    if scorer_name == "probes":
        return st.fixed_dictionaries(
            {
                "answer": st.sampled_from(["yes", "no"]),
                "category": st.sampled_from(["random", "popular", "adversarial"]),
                "probe_type": st.sampled_from(["color", "position", "count"]),
            }
        )
    if scorer_name == "amber":
        words = st.lists(st.sampled_from(["dog", "cat", "grass", "sky"]), max_size=3)
        generative = st.fixed_dictionaries(
            {"amber_type": st.just("generative"), "truth": words, "hallu": words,
             "association": st.just({"dog": ["puppy"], "cat": [], "grass": ["lawn"], "sky": []}),
             "safe_words": st.just(["sky"])}
        )  # fmt: skip
        kinds = ["discriminative-hallucination", "discriminative-attribute-state", "relation"]
        discriminative = st.fixed_dictionaries(
            {"amber_type": st.sampled_from(kinds), "answer": st.sampled_from(["yes", "no"])}
        )
        return st.one_of(generative, discriminative)
    if scorer_name == "hallusionbench":
        digit = st.sampled_from(["0", "1"])
        return st.fixed_dictionaries(
            {"answer": digit, "hb_category": st.sampled_from(["VD", "VS"]), "hb_subcategory": st.just("chart"),
             "hb_set_id": digit, "hb_figure_id": digit, "hb_question_id": digit}
        )  # fmt: skip
    if scorer_name == "grounding":
        coordinate = st.floats(min_value=0, max_value=50, allow_nan=False)
        return st.fixed_dictionaries(
            {"bbox": st.tuples(coordinate, coordinate, st.floats(1, 20), st.floats(1, 20)).map(list),
             "image_size": st.one_of(st.none(), st.just([64, 64]))}
        )  # fmt: skip
    answer = st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
    return st.one_of(
        st.fixed_dictionaries({"answer": answer}),
        st.fixed_dictionaries({"answers": st.lists(answer, min_size=1, max_size=10)}),
    )


_predictions = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["Yes", "no.", "Not at all", "3.5%", "", "   ", "A dog and a cup on a dining table.",
                     "[1, 2, 30, 40]", "<|box_start|>(10,20),(500,600)<|box_end|>", "[0.1, 0.2, 0.5, 0.9]"]),
)


def _scorer_names() -> list[str]:
    from vlmbench.metrics.registry import BUILTIN_SCORERS

    return sorted(BUILTIN_SCORERS)


def _in_unit_interval(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("name", _scorer_names())
@PROPERTY
@given(data=st.data())
def test_scorer_metrics_and_intervals_lie_in_the_unit_interval(name: str, data: st.DataObject) -> None:
    from vlmbench.metrics.registry import BUILTIN_SCORERS
    from vlmbench.metrics.scorer import flatten

    scorer = BUILTIN_SCORERS[name]
    refs = data.draw(st.lists(_reference_fields(name), min_size=1, max_size=8), label="references")
    logprobs = name == "pope" and data.draw(st.booleans(), label="choice_logprobs")
    rows = []
    for i, ref in enumerate(refs):
        row = {"question_id": str(i), **ref, "prediction": data.draw(_predictions, label=f"prediction {i}")}
        if logprobs:
            pair = st.floats(min_value=-50, max_value=0, allow_nan=False)
            row["choice_logprobs"] = {"Yes": data.draw(pair), "No": data.draw(pair)}
        scorer.check_reference(row)
        rows.append(row)
    result = scorer.score(rows, seed=data.draw(st.integers(0, 2**32 - 1), label="seed"), n_resamples=50)
    assert result["n"] == len(rows) and len(result["per_sample"]) == len(rows)
    metrics = flatten(result["metrics"])
    assert metrics and all(_in_unit_interval(v) for v in metrics.values()), metrics
    for metric, bounds in flatten_intervals(result["ci95"]).items():
        low, high = bounds
        assert _in_unit_interval(low) and _in_unit_interval(high) and low <= high, (metric, bounds)
    for fields in result["per_sample"]:
        value, correct = scorer.outcome(fields)
        assert 0.0 <= value <= 1.0 and correct in (True, False, None)


def flatten_intervals(ci95: dict[str, Any], prefix: str = "") -> dict[str, list[float]]:
    """`{"all": {"f1": [lo, hi]}}` → `{"all.f1": [lo, hi]}`."""
    out: dict[str, list[float]] = {}
    for key, value in ci95.items():
        if isinstance(value, dict):
            out.update(flatten_intervals(value, f"{prefix}{key}."))
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", _scorer_names())
@settings(PROPERTY, max_examples=15)
@given(row=st.dictionaries(st.sampled_from(["answer", "answers", "category", "gt_objects"]), values))
def test_scorer_check_reference_accepts_or_names_the_field(name: str, row: dict[str, Any]) -> None:
    from vlmbench.metrics.registry import BUILTIN_SCORERS

    scorer = BUILTIN_SCORERS[name]
    try:
        scorer.check_reference({"question_id": "1", **row})
    except ValueError as exc:
        assert str(exc) and _one_line(str(exc))
        return
    scorer.score([{"question_id": "1", **row, "prediction": "yes"}], n_resamples=10)  # checked → scorable


# ---- recipe parser ---------------------------------------------------------------------------


def _recipe_paths() -> list[tuple[str, ...]]:
    import dataclasses

    from vlmbench.training.recipe import DataSpec, StageConfig, TokenizerSpec

    top = [
        (key,)
        for key in (
            "name",
            "seed",
            "model",
            "output_dir",
            "work_dir",
            "data_dir",
            "save_dtype",
            "precision",
            "init",
            "stages",
            "data",
            "tokenizer",
        )
    ]
    stage = [("stages", 0, f.name) for f in dataclasses.fields(StageConfig)]
    data = [("data", "caps", f.name) for f in dataclasses.fields(DataSpec)]
    tokenizer = [("tokenizer", f.name) for f in dataclasses.fields(TokenizerSpec)]
    return [*top, *stage, *data, *tokenizer, ("model", "overrides"), ("model", "preset"), ("stages", 0)]


# The minimal valid recipe of tests/test_recipe_validation.py, with the model and tokenizer given as
# mappings so that their fields are reachable too.
_VALID_RECIPE: dict[str, Any] = {
    **RECIPE,
    "model": {"preset": RECIPE["model"]},
    "tokenizer": {"vocab_size": 320, "corpus": ["caps"]},
}


@settings(PROPERTY, max_examples=60)
@given(changes=st.lists(st.tuples(st.sampled_from(_recipe_paths()), yaml_values), min_size=1, max_size=3))
def test_recipe_with_any_field_values_parses_or_names_the_field(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    import copy

    from vlmbench.training.recipe import Recipe, parse_recipe

    recipe = copy.deepcopy(_VALID_RECIPE)
    for path, value in changes:
        target: Any = recipe
        for key in path[:-1]:
            if not isinstance(target, (dict, list)) or (isinstance(target, list) and not target):
                break
            target = target[key] if isinstance(target, list) else target.setdefault(key, {})
        else:
            if isinstance(target, dict) or (isinstance(target, list) and target):
                target[path[-1]] = value
    try:
        parsed = parse_recipe(recipe)
    except UserError as exc:
        assert _one_line(str(exc)), str(exc)
        return
    assert isinstance(parsed, Recipe)
    for stage in parsed.stages:
        assert type(stage.steps) is int and stage.steps >= 1 and type(stage.batch_size) is int
        assert type(stage.lr) is float and 0 < stage.lr < float("inf")


@settings(PROPERTY, max_examples=40)
@given(content=st.one_of(st.binary(max_size=120), st.text(max_size=120).map(str.encode)))
def test_recipe_file_of_any_bytes_loads_or_is_a_user_error(content: bytes, tmp_path_factory) -> None:
    from vlmbench.training.recipe import load_recipe

    path = tmp_path_factory.mktemp("recipe") / "r.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:  # no byte string of this size is a complete recipe
        load_recipe(path)
    assert _one_line(str(info.value)), str(info.value)


# ---- the CLI ---------------------------------------------------------------------------------

_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.,=:+ ", max_size=12)
_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
    st.sampled_from(["-1", "0", "1", "2.5", "nan", "inf", "-0", "1e309", "4294967296", "0x10"]),
)
_WORDS = st.sampled_from(
    [
        "auto",
        "cpu",
        "cuda",
        "pope",
        "docvqa,pope",
        "pope,,",
        "bfloat16",
        "float32",
        "generate",
        "choices",
        "eager",
        "llava",
        "internvl",
        "a=b",
        "=",
        "-",
        "",
    ]
)
_PATHS = ("garbage.bin", "empty.jsonl", "adir", "missing", "bad-recipe.yaml", "rows.jsonl")
# Arguments that would start real work (an evaluation, training, a synthetic set) are chosen by the
# test, not drawn: the drawn ones only ever make the command fail, or finish quickly.
_FORCED: dict[str, tuple[str, ...]] = {
    "run": ("--model", "--output-dir", "--synthetic-n", "--checkpoint"),
    "train": ("--recipe",),
    "inspect": ("--model",),
}
# The arguments each command needs (drawn in most examples, so that they get past argparse).
_NEEDED: dict[str, tuple[str, ...]] = {
    "run": ("--tasks",),
    "score": ("--task", "--predictions", "--references"),
    "inspect": ("--image-size",),
    "train": (),
    "report": ("",),
    "leaderboard": ("",),
    "check": ("--baseline", "--candidate"),
    "effects": ("--run",),
    "export": ("--checkpoint", "--format", "--out"),
}


def _options(command: str) -> list[str]:
    import argparse

    from vlmbench.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = sub.choices[command]._actions
    return [
        option
        for action in actions
        if not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
        if option not in _FORCED.get(command, ())
    ]


@st.composite
def argvs(draw: st.DrawFn, root: Path) -> list[str]:
    command = draw(st.sampled_from(sorted(_NEEDED)), label="command")
    values = st.one_of(_WORD, _NUMBER, _WORDS, st.sampled_from(_PATHS).map(lambda p: str(root / p)))
    needed = []
    for option in _NEEDED[command]:
        if draw(st.integers(0, 9), label=f"with {option or 'positional'}"):  # 9 in 10
            value = draw(values)
            if option:
                needed.append(f"{option}={value}")  # "=": a value that starts with "-" is still a value
            elif not value.startswith("-"):
                needed.append(value)
    pairs = st.tuples(st.sampled_from(_options(command)), values).map(lambda t: f"{t[0]}={t[1]}")
    # Mostly OPTION=VALUE: a stray bare word is argparse's own usage error, not worth many examples.
    tokens = draw(
        st.lists(st.one_of(pairs, pairs, pairs, st.sampled_from(_options(command)), values), max_size=4),
        label="tokens",
    )
    forced = {
        "run": ["--model", "no-such-model-" + draw(_WORD), "--output-dir", str(root / "runs")],
        "train": ["--recipe", str(root / draw(st.sampled_from(_PATHS)))],
        "inspect": ["--model", "no-such-model-" + draw(_WORD)],
    }.get(command, [])
    return [command, *forced, *needed, *tokens]


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "garbage.bin").write_bytes(bytes(range(256)) * 3)
    (root / "empty.jsonl").write_text("")
    (root / "rows.jsonl").write_text(
        '{"question_id": 1, "prediction": "yes", "answer": "no", "category": "x"}\n'
    )
    (root / "adir").mkdir()
    (root / "adir" / "results.json").write_text('{"tasks": 3}')
    (root / "bad-recipe.yaml").write_text(
        "name: x\nseed: 0\nmodel: llava-1.5-style\nstages: [{name: a, steps: abc}]\n"
    )
    return root


@settings(PROPERTY, max_examples=40)
@given(data=st.data())
def test_any_arguments_exit_0_1_or_2_without_a_traceback(
    data: st.DataObject, cli_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlmbench.cli import main

    monkeypatch.chdir(cli_root)  # whatever a command writes by default lands here
    monkeypatch.setenv("VLMBENCH_CACHE", str(cli_root / "cache"))
    argv = data.draw(argvs(cli_root), label="argv")
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        code = exc.code
        assert code in (0, 2), argv
        return
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)
