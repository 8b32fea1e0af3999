"""lmms-eval interop: vlmbench models as an lmms-eval model, and vlmbench runs in lmms-eval's file layout.

1. `VlmbenchLMM` — an lmms-eval "simple" model (`lmms_eval.api.model.lmms`) wrapping any vlmbench
   model (preset, checkpoint directory or `hf:<path>`):

       python -m lmms_eval --model vlmbench --model_args model=hf:/models/llava-1.5-7b-hf,batch_size=8 --tasks pope

   Registration (lmms-eval ≥ 0.7 discovers plugins through the `lmms_eval.models` entry-point group):

       [project.entry-points."lmms_eval.models"]
       vlmbench = "vlmbench.interop.lmms:model_manifest"

   Importing this module never needs lmms-eval: without it the class derives from `object` and still
   works on any request objects that carry lmms-eval's `.args` tuples (this is how it is tested).

2. `write_lmms_eval_results(run_dir, out_path)` — a finished `vlmbench run` directory rewritten in
   lmms-eval's output layout: `<out>/<model>/<date>_results.json` (`results` with `metric,none` keys,
   `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`, `config`, …) and
   `<date>_samples_<task>.jsonl` per-sample logs, so lmms-eval tooling can read vlmbench results.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError
from vlmbench.jsonl import read_rows
from vlmbench.modeling.interface import IMAGE_MARKER, EvalModel
from vlmbench.report.metricspec import direction, flatten, scorer_of

try:  # optional: lmms-eval pulls its own torch/CUDA stack, so it is never a requirement
    from lmms_eval.api.model import lmms as _LmmsBase

    HAVE_LMMS_EVAL = True
except ImportError:  # pragma: no cover - depends on the environment
    _LmmsBase = object
    HAVE_LMMS_EVAL = False

MODEL_ID = "vlmbench"

# vlmbench task → (lmms-eval task name, {vlmbench metric path: lmms-eval metric name})
LMMS_TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "pope": (
        "pope",
        {
            "all.accuracy": "pope_accuracy",
            "all.precision": "pope_precision",
            "all.recall": "pope_recall",
            "all.f1": "pope_f1_score",
            "all.yes_ratio": "pope_yes_ratio",
            "f1_mean_of_splits": "pope_f1_mean_of_splits",
        },
    ),
    "docvqa": ("docvqa_val", {"anls": "anls"}),
    "textvqa": ("textvqa_val", {"accuracy": "exact_match"}),
    "vqav2": ("vqav2_val", {"accuracy": "exact_match"}),
    "chartqa": ("chartqa", {"relaxed_accuracy": "relaxed_overall"}),
}
# lmms-eval's task name for each POPE split (the splits themselves: vlmbench.metrics.pope.POPE_SPLITS)
LMMS_POPE_SPLIT_TASKS = {"random": "pope_random", "popular": "pope_pop", "adversarial": "pope_adv"}
_SPLIT_OF_TASK = {task: split for split, task in LMMS_POPE_SPLIT_TASKS.items()}


def model_manifest() -> Any:
    """The `lmms_eval.models` entry point: a ModelManifest naming `VlmbenchLMM` (simple model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.VlmbenchLMM")


# ---- the model plugin ------------------------------------------------------------------------
# The `--model_args` keys the plugin reads (each a keyword of `VlmbenchLMM.__init__`), with a sample value.
MODEL_ARGS = {
    "model": "MODEL", "checkpoint": "DIR", "device": "cpu|cuda", "dtype": "float32|bfloat16|float16",
    "batch_size": "N", "attn_implementation": "sdpa|eager|flash_attention_2", "seed": "N",
}


class VlmbenchLMM(_LmmsBase):  # type: ignore[misc, valid-type]
    """lmms-eval model over a vlmbench model: `generate_until` and `loglikelihood` (simple-model args).

    The model is used through `EvalModel` only. Each request's images go through the model's own
    `prepare_image` / `encode`; the lmms-eval context becomes the question of the model's
    `format_prompt` — with several images, its `<image>` markers kept where the images go when there
    is one per image; otherwise removed and the images come first — and generation stops at the
    task's `until` strings."""

    is_simple = True

    def __init__(
        self,
        model: str = "llava-1.5-style",
        checkpoint: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int | str = 1,
        attn_implementation: str | None = None,
        seed: int = 0,
        loaded: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not hasattr(self, "task_dict"):
            self.task_dict: dict[str, Any] = {}
        if loaded is None:
            from vlmbench.modeling.resolve import load_model
            from vlmbench.runner.options import torch_dtype

            loaded = load_model(
                model, device=device, dtype=torch_dtype(dtype), seed=int(seed), checkpoint=checkpoint,
                attn_implementation=attn_implementation,
            )
        self.loaded = loaded
        self.vlm: EvalModel = loaded.model
        self.model_name = loaded.name
        self.batch_size_per_gpu = _batch_size(batch_size)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> VlmbenchLMM:
        """Build the model from lmms-eval's `--model_args` string and its CLI settings.

        lmms-eval always passes `batch_size` (its `--batch_size`, default 1), `max_batch_size` and
        `device` in `additional_config`; its own version of this method then calls
        `cls(**model_args, **additional_config)`, which fails with "got multiple values for keyword
        argument" as soon as `--model_args` names one of them too. Here a setting named in
        `--model_args` wins (it is the one written for this model; the CLI value may be only lmms-eval's
        default), and unset (None) CLI values are dropped."""
        args = _parse_model_args(arg_string)
        unknown = sorted(set(args) - set(MODEL_ARGS))
        if unknown:  # **kwargs would swallow a misspelt key and evaluate the default model instead
            raise UserError(
                f"vlmbench lmms-eval model: --model_args key(s) {', '.join(map(repr, unknown))} unknown; "
                f"use {', '.join(f'{key}={value}' for key, value in MODEL_ARGS.items())}"
            )
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # lmms-eval reads these on some code paths
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _doc_visual(self, doc_to_visual: Callable[[Any], Any], doc_id: Any, task: str, split: str) -> list[Any]:
        """The request's images (RGB), in the order lmms-eval gives them."""
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc) if doc_to_visual is not None else []
        visuals = [v for v in (visuals or []) if v is not None]
        if not visuals:
            raise UserError(f"lmms-eval task {task} doc {doc_id} has no image; vlmbench models need at least one")
        return [image.convert("RGB") if hasattr(image, "convert") else image for image in visuals]

    def _prompt(self, context: str, n_images: int) -> str:
        if n_images > 1 and context.count(IMAGE_MARKER) == n_images:  # interleaved: keep the images' places
            return self.vlm.format_prompt(context.strip(), n_images=n_images)
        question = re.sub(r"\s*<image>\s*", " ", context).strip()
        return self.vlm.format_prompt(question, n_images=n_images)

    def _request(self, args: Sequence[Any]) -> tuple[str, Any]:
        """(the model's prompt, its visual input: one image's tokens, or a list for several images)."""
        context, _, doc_to_visual, doc_id, task, split = args
        images = self._doc_visual(doc_to_visual, doc_id, task, split)
        visual = self.vlm.encode([self.vlm.prepare_image(image) for image in images])
        return self._prompt(context, len(images)), visual[0] if len(visual) == 1 else visual

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy answers; requests are batched `batch_size` at a time when their settings agree."""
        out: list[str] = [""] * len(requests)
        order = list(range(len(requests)))
        for start in range(0, len(order), self.batch_size_per_gpu):
            chunk = order[start : start + self.batch_size_per_gpu]
            groups: dict[str, list[int]] = {}
            for index in chunk:
                gen_kwargs = requests[index].args[1] or {}
                groups.setdefault(json.dumps(gen_kwargs, sort_keys=True, default=str), []).append(index)
            for key, members in groups.items():
                gen_kwargs = json.loads(key)
                until = gen_kwargs.get("until") or ()
                until = (until,) if isinstance(until, str) else tuple(until)
                prompts, visual = [], []
                for index in members:
                    prompt, vis = self._request(requests[index].args)
                    prompts.append(prompt)
                    visual.append(vis)
                texts = self.vlm.generate(
                    None, prompts, max_new_tokens=int(gen_kwargs.get("max_new_tokens", 32)), stop=until, visual=visual
                )
                for index, text in zip(members, texts, strict=True):
                    out[index] = text
        return out

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """(log p(continuation | image, context), whether greedy decoding produces the continuation)."""
        results: list[tuple[float, bool]] = []
        for request in requests:
            _, doc_to_target, _, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            target = doc_to_target(doc) if callable(doc_to_target) else doc_to_target
            target = str(target[0] if isinstance(target, (list, tuple)) else target).strip()
            prompt, vis = self._request(request.args)
            logprob = float(self.vlm.score_choices(None, [prompt], [target], visual=[vis])[0, 0])
            # a token is at least one character: len(target) new tokens always cover the target
            greedy = self.vlm.generate(None, [prompt], max_new_tokens=max(1, len(target)), visual=[vis])[0]
            results.append((logprob, _starts_with_word(greedy.strip(), target)))
        return results

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("vlmbench models answer single-turn questions; multi-round tasks are not supported")


def _parse_model_args(arg_string: str) -> dict[str, Any]:
    """`key=value,key=value` as lmms-eval parses it (its own parser when importable, so quoting and
    value conversion match), else the same rules for the plain form: true/false, ints, floats, text."""
    try:
        from lmms_eval.utils import simple_parse_args_string
    except ImportError:
        pass
    else:
        return dict(simple_parse_args_string(arg_string or ""))
    args: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (arg_string or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"lmms-eval --model_args: {item!r} is not key=value; write e.g. model=llava-1.5-style,batch_size=8")
        args[key.strip()] = _arg_value(value)
    return args


def _arg_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.isnumeric():
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _batch_size(value: Any) -> int:
    """A positive whole number (lmms-eval passes `--batch_size` as text); 'auto' is not supported."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        raise UserError(
            f"vlmbench lmms-eval model: batch_size {value!r} is not a positive whole number; "
            "pass e.g. --batch_size 8 or --model_args ...,batch_size=8 ('auto' is not supported)"
        )
    return number


def _starts_with_word(text: str, target: str) -> bool:
    """`text` is `target`, or begins with it followed by a non-word character (greedy decoding
    produced the target and then went on)."""
    if not text.startswith(target):
        return False
    rest = text[len(target) :]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


# ---- vlmbench samples as a local lmms-eval task ---------------------------------------------
_LOCAL_TASK_YAML = """task: {name}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {parquet}
test_split: test
output_type: generate_until
doc_to_visual: !function {name}_utils.doc_to_visual
doc_to_text: !function {name}_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  until: {until}
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function {name}_utils.process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""

_LOCAL_TASK_UTILS = """import io

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(io.BytesIO(data)).convert("RGB") for data in doc["images"]]


def doc_to_text(doc):
    return doc["prompt"]


def process_results(doc, results):
    return {"acc": float(results[0].strip().lower() == doc["answer"].strip().lower())}
"""


def write_lmms_eval_task(
    samples: Sequence[Any], task_dir: str | Path, *, name: str, max_new_tokens: int, until: Sequence[str]
) -> Path:
    """Write vlmbench samples as a local lmms-eval task (`--include_path task_dir --tasks name`).

    The folder gets `<name>.parquet` (question id, prompt, answer and every image as PNG bytes),
    `<name>.yaml` (a `generate_until` task with greedy `generation_kwargs`, scored by exact match) and
    `<name>_utils.py`, so any lmms-eval model answers exactly the questions, prompts and images vlmbench
    evaluates. Returns the YAML's path."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    if not name.isidentifier():
        raise UserError(f"lmms-eval task name {name!r} must be a Python identifier (it names the utils module)")
    task_dir = Path(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for sample in samples:
        encoded = []
        for image in sample.load_images():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded.append(buffer.getvalue())
        images.append(encoded)
    table = pa.table({
        "question_id": [sample.question_id for sample in samples],
        "prompt": [sample.prompt for sample in samples],
        "answer": [str(sample.reference_fields.get("answer", (sample.references or [""])[0])) for sample in samples],
        "images": pa.array(images, type=pa.list_(pa.binary())),
    })
    parquet = task_dir / f"{name}.parquet"
    pq.write_table(table, parquet)
    yaml_path = task_dir / f"{name}.yaml"
    yaml_path.write_text(_LOCAL_TASK_YAML.format(
        name=name, parquet=json.dumps(str(parquet)), max_new_tokens=int(max_new_tokens), until=json.dumps(list(until))
    ))
    (task_dir / f"{name}_utils.py").write_text(_LOCAL_TASK_UTILS)
    return yaml_path


# ---- results in lmms-eval's layout -----------------------------------------------------------
def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _stderr(ci: Any) -> float | str:
    """lmms-eval reports a standard error; ours is a bootstrap 95% CI, read back as (hi − lo) / 3.92."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return round((ci[1] - ci[0]) / 3.92, 6)
    return "N/A"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _task_entries(name: str, task: dict[str, Any]) -> list[tuple[str, dict[str, str], dict[str, Any], dict[str, Any]]]:
    """(lmms task name, {our path: their metric}, metrics, ci95) for a task (POPE: pooled + per split)."""
    lmms_name, table = LMMS_TASKS.get(name, (name, {}))
    metrics, ci = task.get("metrics", {}), task.get("ci95", {})
    if not table:
        table = {path: path.replace(".", "_") for path in flatten(metrics)}
    entries = [(lmms_name, table, metrics, ci)]
    if name == "pope":
        for split, split_task in LMMS_POPE_SPLIT_TASKS.items():
            if isinstance(metrics.get(split), dict):
                split_table = {
                    f"{split}.{key}": their for key, their in
                    (("accuracy", "pope_accuracy"), ("precision", "pope_precision"), ("recall", "pope_recall"),
                     ("f1", "pope_f1_score"), ("yes_ratio", "pope_yes_ratio"))
                }
                entries.append((split_task, split_table, metrics, ci))
    return entries


def _ci_for(ci: dict[str, Any], path: str) -> Any:
    if path in ci:
        return ci[path]
    return _lookup(ci, path)


def write_lmms_eval_results(run_dir: str | Path, out_path: str | Path) -> Path:
    """Write a finished vlmbench run in lmms-eval's layout; returns the results file.

    `out_path` is a directory (as lmms-eval's `--output_path`: files go to `<out>/<model>/`) or a file
    name ending in `.json` (its samples files are written beside it). Metric names follow the lmms-eval
    task where one exists (`LMMS_TASKS`), else vlmbench's (dots → underscores)."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise UserError(f"{run_dir} holds no results.json: pass a finished `vlmbench run` directory")
    results = json.loads(results_path.read_text())
    created = results.get("created") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    try:
        date_id = datetime.datetime.fromisoformat(created).strftime("%Y%m%d_%H%M%S")  # lmms-eval's file stamp
    except ValueError:
        date_id = re.sub(r"\W+", "_", created)
    model_name = results["model"]["name"]
    sanitized = re.sub(r"[^A-Za-z0-9_.-]+", "__", model_name).strip("_") or "model"
    out = Path(out_path)
    if out.suffix == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        results_file = out
        samples_dir, samples_prefix = out.parent, out.stem.removesuffix("_results")
    else:
        samples_dir = out / sanitized
        samples_dir.mkdir(parents=True, exist_ok=True)
        results_file = samples_dir / f"{date_id}_results.json"
        samples_prefix = date_id

    cfg = results.get("config", {})
    task_cfgs = cfg.get("tasks", {})
    doc: dict[str, Any] = {
        "results": {},
        "group_subtasks": {},
        "configs": {},
        "versions": {},
        "n-shot": {},
        "higher_is_better": {},
        "n-samples": {},
        "config": {
            "model": MODEL_ID,
            "model_args": f"model={cfg.get('model', model_name)}"
            + (f",checkpoint={cfg['checkpoint']}" if cfg.get("checkpoint") else ""),
            "batch_size": cfg.get("batch_size"),
            "batch_sizes": [],
            "device": results.get("environment", {}).get("device"),
            "use_cache": None,
            "limit": cfg.get("limit"),
            "bootstrap_iters": 1000,
            "gen_kwargs": "",
            "random_seed": cfg.get("seed", 0),
            "numpy_seed": cfg.get("seed", 0),
            "torch_seed": cfg.get("seed", 0),
            "fewshot_seed": cfg.get("seed", 0),
        },
        "git_hash": results.get("environment", {}).get("git_commit"),
        "date": created,
        "task_hashes": {},
        "model_source": MODEL_ID,
        "model_name": model_name,
        "model_name_sanitized": sanitized,
        "total_evaluation_time_seconds": str(results.get("throughput", {}).get("wall_s", "")),
        "vlmbench": {"version": results.get("vlmbench_version"), "run_name": results.get("run_name"),
                     "synthetic": results.get("synthetic"), "run_dir": str(run_dir)},
    }
    for name, task in results.get("tasks", {}).items():
        tcfg = task_cfgs.get(name, {})
        rows = _read_samples(run_dir / "samples" / f"{name}.jsonl")
        entries = _task_entries(name, task)
        scorer = scorer_of(name, task)
        if len(entries) > 1:
            doc["group_subtasks"][entries[0][0]] = [e[0] for e in entries[1:]]
        for lmms_name, table, metrics, ci in entries:
            block: dict[str, Any] = {"alias": lmms_name}
            better: dict[str, bool] = {}
            for path, their in table.items():
                value = _lookup(metrics, path)
                if value is None:
                    continue
                block[f"{their},none"] = value
                block[f"{their}_stderr,none"] = _stderr(_ci_for(ci, path))
                # lmms-eval needs a bool: a metric with no better direction (POPE's yes_ratio) is
                # written as lmms-eval's own POPE task writes it, higher_is_better: true
                better[their] = direction(path, scorer, task.get("directions")) is not False
            doc["results"][lmms_name] = block
            doc["higher_is_better"][lmms_name] = better
            doc["versions"][lmms_name] = "Yaml"
            doc["n-shot"][lmms_name] = 0
            split = _SPLIT_OF_TASK.get(lmms_name)
            n = task.get("n", len(rows)) if split is None else sum(1 for r in rows if r.get("category") == split)
            doc["n-samples"][lmms_name] = {"original": n, "effective": n}
            doc["configs"][lmms_name] = {
                "task": lmms_name,
                "dataset_path": tcfg.get("hf_dataset"),
                "dataset_name": tcfg.get("hf_config"),
                "test_split": tcfg.get("split"),
                "output_type": "loglikelihood" if task.get("answer_mode") == "choices" else "generate_until",
                "generation_kwargs": {
                    "max_new_tokens": tcfg.get("max_new_tokens"),
                    "until": tcfg.get("stop", []),
                    "do_sample": False,
                    "temperature": 0,
                },
                "metric_list": [
                    {"metric": their, "aggregation": "mean", "higher_is_better": better[their]} for their in better
                ],
                "metadata": {"version": 0.0, "source": "vlmbench", "data": task.get("data", {}),
                             "prompt_template": tcfg.get("prompt_template")},
            }
        lmms_name, table = entries[0][0], entries[0][1]
        sample_metrics = sorted({their for their in table.values()})
        lines = []
        doc_hashes = []
        for index, row in enumerate(rows):
            references = row.get("references") or []
            target = references[0] if len(references) == 1 else references
            record: dict[str, Any] = {
                "doc_id": index,
                "question_id": row.get("question_id"),
                "target": str(target),
                "filtered_resps": [row.get("prediction", "")],
                "input": row.get("prompt", ""),
                "doc_hash": _hash({"question_id": row.get("question_id"), "prompt": row.get("prompt")}),
                "prompt_hash": _hash(row.get("prompt", "")),
                "target_hash": _hash(str(target)),
                "error": row.get("error"),
            }
            for their in sample_metrics:
                if name == "pope":  # lmms-eval's POPE logs one judgement dict under every metric
                    record[their] = {"question_id": row.get("question_id"), "score": row.get("score"),
                                     "prediction": row.get("prediction"), "ground_truth": str(target)}
                else:
                    record[their] = row.get("score")
            if "choice_logprobs" in row:
                record["choice_logprobs"] = row["choice_logprobs"]
            lines.append(json.dumps(record, ensure_ascii=False))
            doc_hashes.append(record["doc_hash"])
        doc["task_hashes"][lmms_name] = _hash(doc_hashes)
        (samples_dir / f"{samples_prefix}_samples_{lmms_name}.jsonl").write_text("".join(f"{line}\n" for line in lines))
    results_file.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    return results_file


def _read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return read_rows(path)


__all__ = [
    "HAVE_LMMS_EVAL", "LMMS_TASKS", "VlmbenchLMM", "model_manifest", "write_lmms_eval_results", "write_lmms_eval_task",
]
