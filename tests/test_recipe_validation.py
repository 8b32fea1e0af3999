"""Recipe fields of the wrong type or out of range, and recipe files that cannot be read, are refused
with one `UserError` line naming the field (exit 2 from `vlmbench train`), before any training starts."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.training.recipe import load_recipe, parse_recipe

BASE: dict[str, Any] = {
    "name": "x",
    "seed": 0,
    "model": "llava-1.5-style",
    "data": {"caps": {"generator": "captions", "n": 4, "seed": 1001}},
    "stages": [
        {
            "name": "a",
            "kind": "align",
            "train": ["projector"],
            "data": ["caps"],
            "steps": 4,
            "batch_size": 1,
            "lr": 1e-3,
        }
    ],
}


def _with_stage(**fields: Any) -> dict[str, Any]:
    recipe = copy.deepcopy(BASE)
    recipe["stages"][0].update(fields)
    return recipe


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", "abc", r"stage 'a'\.steps must be an integer, got str 'abc'"),
        ("steps", 2.5, r"stage 'a'\.steps must be an integer, got float 2\.5"),
        ("steps", True, r"stage 'a'\.steps must be an integer, got bool True"),
        ("batch_size", "8", r"stage 'a'\.batch_size must be an integer"),
        ("warmup_steps", None, r"stage 'a'\.warmup_steps must be an integer"),
        ("lr", "fast", r"stage 'a'\.lr must be a number, got str 'fast'"),
        ("lr", math.nan, r"stage 'a'\.lr must be a finite number, got nan"),
        ("lr", math.inf, r"stage 'a'\.lr must be a finite number, got inf"),
        ("lr", True, r"stage 'a'\.lr must be a number, got bool"),
        ("grad_clip", "x", r"stage 'a'\.grad_clip must be a number or null"),
        ("grad_clip", 0, r"stage 'a'\.grad_clip must be > 0"),
        ("lora_alpha", "x", r"stage 'a'\.lora_alpha must be a number"),
        ("cosine", "no", r"stage 'a'\.cosine must be true or false, got str 'no'"),
        ("betas", "ab", r"stage 'a'\.betas must be a pair of numbers"),
        ("betas", [0.9], r"stage 'a'\.betas must be a pair of numbers"),
        ("betas", [0.9, 1.5], r"stage 'a'\.betas must lie in \[0, 1\)"),
        ("log_every", 0, r"stage 'a'\.log_every must be >= 1"),
        ("max_text_tokens", 0, r"stage 'a'\.max_text_tokens must be >= 1"),
        ("embed_dim", -1, r"stage 'a'\.embed_dim must be >= 1"),
        ("weight_decay", -0.1, r"stage 'a'\.weight_decay must be >= 0"),
        ("min_lr_ratio", 2.0, r"stage 'a'\.min_lr_ratio must lie in \[0, 1\]"),
        ("text_encoder", 3, r"stage 'a'\.text_encoder must be a string"),
        ("lora_rank", 2.0, r"stage 'a'\.lora_rank must be an integer or null"),
        ("lr_scale", {"vision": "x"}, r"stage 'a'\.lr_scale\.vision must be a positive number"),
    ],
)
def test_stage_field_of_wrong_type_or_range_is_a_user_error(field: str, value: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_recipe(_with_stage(**{field: value}))


def test_stage_name_that_is_not_a_string_is_named() -> None:
    with pytest.raises(UserError, match=r"stages\[0\]\.name must be"):
        parse_recipe(_with_stage(name=["a"]))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("data", "caps", "n"), 2.5, r"data\.caps\.n must be an integer"),
        (("data", "caps", "n"), True, r"data\.caps\.n must be an integer"),
        (
            ("data", "caps", "capitalize_yes_no"),
            "yes",
            r"data\.caps\.capitalize_yes_no must be true or false",
        ),
        (("data", "caps", "answer_suffix"), 5, r"data\.caps\.answer_suffix must be a string"),
        (
            ("data", "caps", "caption_prompts"),
            "Describe.",
            r"data\.caps\.caption_prompts must be a list of strings",
        ),
        (("data", "caps", "width"), 0, r"data\.caps\.width must be >= 1"),
        (
            ("data", "caps", "short_answer_words"),
            "three",
            r"data\.caps\.short_answer_words must be an integer",
        ),
        (("tokenizer",), {"vocab_size": "big"}, r"tokenizer\.vocab_size must be an integer, got str 'big'"),
        (("tokenizer",), {"split_digits": "no"}, r"tokenizer\.split_digits must be true or false"),
        (("tokenizer",), {"min_frequency": 1.5}, r"tokenizer\.min_frequency must be an integer"),
        (("tokenizer",), {"corpus": "caps"}, r"tokenizer\.corpus must be a list of strings"),
        (("tokenizer",), {"path": 3}, r"tokenizer\.path must be a string"),
        (("output_dir",), ["a"], r"output_dir must be a string"),
        (("work_dir",), 3, r"work_dir must be a string"),
        (("save_dtype",), ["float32"], r"save_dtype must be a string"),
        (("seed",), 1.0, r"\.seed must be an integer, got float"),
        (("seed",), True, r"\.seed must be an integer, got bool"),
        (("seed",), -1, r"seed must lie in \[0, 4294967295\], got -1"),
        (("seed",), 2**32, r"seed must lie in \[0, 4294967295\], got 4294967296"),
        (("data", "caps", "seed"), -3, r"data\.caps\.seed must lie in \[0, 4294967295\]"),
        (("model",), {"preset": "llava-1.5-style", "overrides": "x"}, r"model\.overrides must be a mapping"),
        (("model",), {"preset": ["llava-1.5-style"]}, r"model\.preset must be a string"),
    ],
)
def test_recipe_field_of_wrong_type_is_a_user_error(path: tuple[str, ...], value: Any, message: str) -> None:
    recipe = copy.deepcopy(BASE)
    target = recipe
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(UserError, match=message):
        parse_recipe(recipe)


def test_valid_base_recipe_parses_with_exact_types() -> None:
    stage = parse_recipe(_with_stage(steps=4, lr=1, betas=[0.9, 0.99], grad_clip=None)).stages[0]
    assert stage.steps == 4 and type(stage.steps) is int
    assert stage.lr == 1.0 and type(stage.lr) is float
    assert stage.betas == (0.9, 0.99) and stage.grad_clip is None


def test_recipe_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.yaml is not UTF-8 text.*byte 9"):
        load_recipe(path)


def test_recipe_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is a directory, not a recipe file"):
        load_recipe(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00garbage",
        b"name: x\nseed: 0\nmodel: llava-1.5-style\nstages:\n  - {name: a, kind: align, train: [projector], "
        b"data: [caps], steps: abc, batch_size: 1, lr: 1e-3}\ndata: {caps: {generator: captions, n: 4, seed: 1001}}\n",
        b"name: x\nseed: 0\nmodel: llava-1.5-style\nstages:\n  - {name: a, kind: align, train: [projector], "
        b"data: [caps], steps: 2, batch_size: 1, lr: .nan}\ndata: {caps: {generator: captions, n: 4, seed: 1001}}\n",
        b"name: x\nseed: 0\nmodel: llava-1.5-style\nstages:\n  - {name: a, kind: align, train: [projector], "
        b"data: [caps], steps: true, batch_size: 1, lr: 1e-3}\ndata: {caps: {generator: captions, n: 4, seed: 1001}}\n",
    ],
    ids=["not-utf8", "steps-abc", "lr-nan", "steps-true"],
)
def test_cli_train_bad_recipe_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert main(["train", "--recipe", str(path), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlmbench train: error:") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()  # refused before any training work


def test_cli_train_recipe_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--recipe", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a directory" in err and "\n" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"init": {"weights": "no/such/model.safetensors", "components": ["llm"]}}, "init: .* does not exist"),
        ({"tokenizer": {"path": "no/such/tokenizer"}}, "tokenizer not found at"),
    ],
)
def test_cli_train_missing_input_files_are_refused_before_data_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, Any], message: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    data_dir, work_dir = tmp_path / "data", tmp_path / "work"
    argv = ["train", "--recipe", str(path), "--data-dir", str(data_dir), "--work-dir", str(work_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert re.search(message, err), err
    assert not data_dir.exists() and not work_dir.exists()  # nothing generated, nothing prepared
