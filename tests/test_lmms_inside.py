"""The lmms-eval plugin (`vlmbench.interop.lmms.VlmbenchLMM`) as lmms-eval itself builds and runs it.

lmms-eval builds a simple model with `create_from_arg_string(--model_args, {"batch_size": --batch_size,
"max_batch_size": ..., "device": --device})`; the first tests call that classmethod the way lmms-eval
0.7.3 does, so they run without lmms-eval. The last test runs `python -m lmms_eval --model vlmbench` in a
separate venv holding lmms-eval (it pins another torch build than vlmbench's, see docs/hf-models.md):
it runs when `VLMBENCH_LMMS_PYTHON` names that venv's Python and is skipped otherwise.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vlmbench.errors import UserError
from vlmbench.interop import lmms
from vlmbench.interop.lmms import VlmbenchLMM

REPO = Path(__file__).resolve().parents[1]
LMMS_PYTHON_ENV = "VLMBENCH_LMMS_PYTHON"
# what lmms-eval 0.7.3's simple_evaluate passes when its CLI flags are left at their defaults
LMMS_DEFAULTS: dict[str, Any] = {"batch_size": 1, "max_batch_size": None, "device": None}


@pytest.fixture
def load_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace model loading with a recorder: the keyword arguments of every `load_model` call."""
    import vlmbench.modeling.resolve as resolve

    calls: list[dict[str, Any]] = []

    def fake_load(spec: str, **kwargs: Any) -> SimpleNamespace:
        calls.append({"spec": spec, **kwargs})
        return SimpleNamespace(model=object(), name=spec)

    monkeypatch.setattr(resolve, "load_model", fake_load)
    return calls


def test_model_args_batch_size_is_not_passed_twice(load_calls: list[dict[str, Any]]) -> None:
    """docs/hf-models.md's command, `--model_args model=...,batch_size=8`: lmms-eval also passes its
    `--batch_size` (default 1); this used to raise "got multiple values for keyword argument 'batch_size'"."""
    plugin = VlmbenchLMM.create_from_arg_string("model=llava-1.5-style,batch_size=8", dict(LMMS_DEFAULTS))
    assert plugin.batch_size == 8
    assert load_calls == [{"spec": "llava-1.5-style", "device": "cpu", "dtype": None, "seed": 0,
                           "checkpoint": None, "attn_implementation": None}]


def test_cli_settings_apply_when_model_args_do_not_name_them(load_calls: list[dict[str, Any]]) -> None:
    plugin = VlmbenchLMM.create_from_arg_string("model=llava-1.5-style", {**LMMS_DEFAULTS, "batch_size": "4"})
    assert plugin.batch_size == 4 and load_calls[0]["device"] == "cpu"  # device None: vlmbench's default
    VlmbenchLMM.create_from_arg_string("model=x,device=cpu", {**LMMS_DEFAULTS, "device": "cuda"})
    assert load_calls[1]["device"] == "cpu"  # named in --model_args: that one wins


@pytest.mark.parametrize("value", [0, -2, "auto", "auto:4", 2.5, True, "8x"])
def test_a_batch_size_that_is_not_a_positive_whole_number_is_refused(load_calls: list[dict[str, Any]], value: Any) -> None:
    with pytest.raises(UserError, match=r"batch_size .* is not a positive whole number; pass e\.g\. --batch_size 8"):
        VlmbenchLMM.create_from_arg_string("model=x", {**LMMS_DEFAULTS, "batch_size": value})


@pytest.mark.parametrize("arg_string", ["modle=llava-1.5-style", "pretrained=hf:/m/llava,batch_size=8", "loaded=x"])
def test_an_unknown_model_args_key_is_refused(load_calls: list[dict[str, Any]], arg_string: str) -> None:
    """A misspelt key (or another lmms-eval model's `pretrained`) used to be swallowed by **kwargs, and
    the default preset was evaluated instead of the model that was asked for."""
    key = arg_string.split("=")[0]
    with pytest.raises(UserError, match=rf"--model_args key\(s\) {key!r} unknown; use model=MODEL.*, batch_size"):
        VlmbenchLMM.create_from_arg_string(arg_string, dict(LMMS_DEFAULTS))
    assert load_calls == []


def test_model_args_parse_as_lmms_eval_parses_them() -> None:
    assert lmms._parse_model_args("model=hf:/m/a,batch_size=8,seed=3,dtype=float32, checkpoint=/c ") == {
        "model": "hf:/m/a", "batch_size": 8, "seed": 3, "dtype": "float32", "checkpoint": "/c"}
    assert lmms._parse_model_args("") == {}
    # every key the plugin accepts is a keyword of its constructor, and the other way round
    keywords = set(inspect.signature(VlmbenchLMM.__init__).parameters) - {"self", "loaded", "kwargs"}
    assert set(lmms.MODEL_ARGS) == keywords


# ---- inside lmms-eval ------------------------------------------------------------------------
# `python -m lmms_eval ARGS` with a recorder around the plugin: the batch size it was built with and the
# size of every batch it hands the model. The record is written at exit, however lmms-eval ends.
LMMS_RUNNER = """import atexit, json, runpy, sys
from vlmbench.interop.lmms import VlmbenchLMM

record, seen = sys.argv.pop(1), []
atexit.register(lambda: open(record, "w").write(json.dumps(seen)))
original = VlmbenchLMM.generate_until


def generate_until(self, requests):
    call = {"batch_size": self.batch_size, "requests": len(requests), "batches": [],
            "module": sys.modules[VlmbenchLMM.__module__].__file__}
    seen.append(call)
    generate = self.vlm.generate

    def counted(tokenizer, prompts, **kwargs):
        call["batches"].append(len(prompts))
        return generate(tokenizer, prompts, **kwargs)

    self.vlm.generate = counted
    try:
        return original(self, requests)
    finally:
        del self.vlm.generate


VlmbenchLMM.generate_until = generate_until
runpy.run_module("lmms_eval", run_name="__main__", alter_sys=True)
"""


def _lmms_python() -> str:
    python = os.environ.get(LMMS_PYTHON_ENV)
    if not python:
        pytest.skip(f"set {LMMS_PYTHON_ENV} to the Python of a venv with lmms-eval 0.7 (recipe: docs/hf-models.md)")
    if not Path(python).is_file():
        pytest.fail(f"{LMMS_PYTHON_ENV}={python} is not a file")
    return python


@pytest.mark.slow
def test_plugin_runs_inside_lmms_eval_with_batch_size_in_model_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m lmms_eval --model vlmbench --model_args model=llava-1.5-style,batch_size=8` on a local
    lmms-eval task holding 16 synthetic POPE questions: lmms-eval finds the plugin through its entry
    point, builds it with batch size 8 and writes the per-sample log, whose answers are the ones
    vlmbench's own batched inference gives on the same questions and images."""
    python = _lmms_python()
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    from vlmbench.tasks.registry import load_task

    task = load_task("pope")
    samples, _ = task.load(None, synthetic_n=1)
    samples = samples[:16]
    stop = tuple(task.config.stop)
    lmms.write_lmms_eval_task(samples, tmp_path / "task", name="vlmbench_pope_local",
                              max_new_tokens=task.config.max_new_tokens, until=stop)
    (tmp_path / "runner.py").write_text(LMMS_RUNNER)
    record, out = tmp_path / "record.json", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    cmd = [python, str(tmp_path / "runner.py"), str(record), "--model", "vlmbench",
           "--model_args", "model=llava-1.5-style,batch_size=8", "--tasks", "vlmbench_pope_local",
           "--include_path", str(tmp_path / "task"), "--log_samples", "--output_path", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    log = f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    # lmms-eval 0.7.3 exits 0 even when building the model fails: judge by what it wrote
    assert "got multiple values" not in proc.stderr, log
    seen = json.loads(record.read_text()) if record.exists() else []
    assert seen and all(call["batch_size"] == 8 for call in seen), log
    assert [n for call in seen for n in call["batches"]] == [8, 8], seen  # 16 questions, 8 at a time
    assert all(Path(call["module"]).resolve().is_relative_to(REPO) for call in seen), "lmms-eval imported another vlmbench"
    logs = sorted(out.rglob("*_samples_vlmbench_pope_local.jsonl"))
    assert logs, log
    rows = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    answers = {}
    for row in rows:
        response = row["filtered_resps"]
        while isinstance(response, list):
            response = response[0]
        answers[int(row["doc_id"])] = response
    assert sorted(answers) == list(range(len(samples)))

    from vlmbench.modeling.resolve import load_model

    vlm = load_model("llava-1.5-style", device="cpu").model
    expected: list[str] = []
    for start in range(0, len(samples), 8):
        batch = samples[start : start + 8]
        prompts = [vlm.format_prompt(s.prompt, n_images=1) for s in batch]
        visual = [vlm.encode([vlm.prepare_image(s.load_image())])[0] for s in batch]
        expected += vlm.generate(None, prompts, max_new_tokens=task.config.max_new_tokens, stop=stop, visual=visual)
    assert [answers[i] for i in range(len(samples))] == expected
    print(f"inside lmms-eval: {len(seen)} generate_until call(s), model batches {seen[0]['batches']}, {len(rows)} answers, "
          f"all equal to vlmbench's: {expected}", file=sys.stderr)
