"""Training recipes: a YAML file that says what to train, on which data, in which stages.

A recipe is data, not code (prismatic-vlms style): the model (a preset name, optionally with
overrides, or a full config), the seed, where to write the checkpoint, the tokenizer, the synthetic
training sets to generate, and an ordered list of stages. `load_recipe` validates everything up
front so that a typo fails in one line naming the field, before any training starts.

    name: internvl-style
    model: {preset: internvl-style, overrides: {llm: {num_layers: 4}}}
    seed: 0
    output_dir: models/checkpoints/internvl-style
    tokenizer: {vocab_size: 512, corpus: [instructions, documents]}
    data:
      instructions: {generator: instructions, n: 2000, seed: 1002}
    stages:
      - {name: sft, kind: sft, train: [vision, projector, llm], data: {instructions: 1.0},
         steps: 1000, batch_size: 8, lr: 1e-3, warmup_steps: 50}
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmbench.errors import UserError
from vlmbench.modeling.location_tokens import check_levels
from vlmbench.resources import bundled_dir, project_root

STAGE_KINDS: tuple[str, ...] = ("lm_pretrain", "vision_contrastive", "vision_tagging", "align", "sft", "dpo")
COMPONENTS: tuple[str, ...] = ("vision", "projector", "llm", "cross_attention")
SCENE_GENERATORS: tuple[str, ...] = ("captions", "instructions", "existence", "attributes", "grounding")  # they write box annotations
GENERATORS: tuple[str, ...] = (*SCENE_GENERATORS, "preferences", "documents")
CONTRASTIVE_LOSSES: tuple[str, ...] = ("clip", "siglip")
TEXT_ENCODERS: tuple[str, ...] = ("llm_mean", "small")
SAVE_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

# Which generators a stage kind can read.
_KIND_DATA: dict[str, tuple[str, ...]] = {
    "lm_pretrain": (*SCENE_GENERATORS, "documents"),
    "vision_contrastive": ("captions", "instructions"),
    "vision_tagging": (*SCENE_GENERATORS, "documents"),  # boxes: scene objects, or characters of pages
    "align": (*SCENE_GENERATORS, "documents"),
    "sft": (*SCENE_GENERATORS, "documents"),
    "dpo": ("preferences",),
}


@dataclass(frozen=True)
class DataSpec:
    """One synthetic training set and how its conversations are normalised when read.

    `answer_suffix` is appended to user turns with a short answer (<= `short_answer_words` words) so
    training prompts match the evaluation prompts (LLaVA-1.5's "Answer the question using a single
    word or phrase."); `capitalize_yes_no` turns "yes"/"no" answers into the "Yes"/"No" that POPE's
    choices score; `caption_prompts`, when given, replace the prompts of caption turns (cycled)."""

    generator: str
    n: int
    seed: int
    answer_suffix: str = ""
    capitalize_yes_no: bool = False
    caption_prompts: tuple[str, ...] = ()
    short_answer_words: int = 3
    width: int = 256  # documents only: page size
    height: int = 320
    # preferences only: share of existence pairs whose chosen answer is "yes" (None: today's 1/3, which
    # the shipped bases were trained on; 0.5 balances them)
    yes_share: float | None = None
    # grounding only: answer boxes as PaliGemma location tokens quantised to this many levels per side
    # (None: "[x1, y1, x2, y2]" in pixels); the tokenizer gains the tokens (modeling.location_tokens)
    location_levels: int | None = None

    def cache_key(self) -> str:
        """The generated files depend on these fields only (normalisation happens at read time)."""
        extra = f"-{self.width}x{self.height}-v2" if self.generator == "documents" else ""
        if self.yes_share is not None:  # unset keeps the key, and the sets already on disk, of before
            extra += f"-yes{self.yes_share:g}"
        if self.location_levels is not None:
            extra += f"-loc{self.location_levels}"
        return f"{self.generator}-s{self.seed}-n{self.n}{extra}"


@dataclass(frozen=True)
class TokenizerSpec:
    """Train a byte-level BPE tokenizer on the text of `corpus` (data set names), or load `path`."""

    path: str | None = None
    vocab_size: int = 512
    corpus: tuple[str, ...] = ()
    split_digits: bool = True  # numbers tokenised digit by digit (no digit merges are learned)
    min_frequency: int = 2


@dataclass(frozen=True)
class InitSpec:
    """Start from another run's weights for some components (e.g. the ViT and LLM a base recipe's
    early stages produced), so that ablations change one axis with the encoder and LLM held fixed."""

    weights: str  # a model.safetensors (a stage's or a final checkpoint's)
    components: tuple[str, ...]


@dataclass(frozen=True)
class StageConfig:
    """One training stage. Components not in `train` are frozen (requires_grad False)."""

    name: str
    kind: str
    train: tuple[str, ...]
    data: dict[str, float]
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    cosine: bool = True
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    loss: str | None = None  # vision_contrastive: clip | siglip
    text_encoder: str = "llm_mean"  # vision_contrastive: llm_mean | small
    embed_dim: int = 64  # vision_contrastive: joint embedding width
    beta: float = 0.1  # dpo
    nll_weight: float = 0.0  # dpo: weight of the chosen answers' per-token NLL added to the DPO loss (RPO)
    lora_rank: int | None = None  # dpo: LoRA on the LLM's attention projections (merged at the end)
    lora_alpha: float = 16.0
    checkpoint_every: int | None = None
    log_every: int = 10
    max_text_tokens: int = 256  # lm_pretrain / vision_contrastive: text truncation
    lr_scale: dict[str, float] = dataclasses.field(default_factory=dict)  # per component, e.g. {vision: 0.1}
    image_view: str = (
        "model"  # vision_contrastive: "model" (the resolution strategy) | "tile" (one ViT-size tile)
    )
    lm_targets: str = "all"  # lm_pretrain: loss on "all" tokens or on "assistant" answers only
    crop_p: float = 0.6  # vision_tagging: share of native-scale crops (the rest: whole image resized)
    pos_weight: float = 4.0  # vision_tagging: BCE weight of positive (covered) patch labels
    # align / sft: every user turn becomes its own row holding the image and that one question (the
    # image encoded once for all of them), so no answer can read another and each row is shaped like
    # an evaluation prompt
    branches: bool = False
    # align / sft with branches: lay each image's branches out as one sequence (`training.packing`): one
    # copy of the visual tokens, then up to `max_branches` questions under a block-diagonal attention
    # mask with positions restarting per branch; the same loss as unpacked branches for less compute
    pack_branches: bool = False
    max_branches: int = 16
    # align / sft: weight of the word-alignment loss, which scores each category against the visual
    # tokens through the LLM's own embedding of its name (max over tokens, BCE against presence): an
    # offline stand-in for CLIP's text alignment, so a token showing a dog lies near the token " dog"
    word_alignment: float = 0.0
    # align / sft: weight of the location-alignment loss (`training.location_alignment`), which scores the
    # visual tokens of a whole-image view against the location tokens of their region, per axis; needs a
    # data set with `location_levels`
    location_alignment: float = 0.0
    # any stage: every `probe_every` steps (and at the end) answer a held-out existence probe of
    # `probe_images` scenes (`vlmbench.training.probe`) and log its accuracy / yes-ratio / AUC
    probe_every: int | None = None
    probe_images: int = 40
    # any stage with a probe: keep the weights at every probe (`probed/step-N.safetensors` in the stage's
    # work dir), so any point of the logged curve can be evaluated afterwards
    keep_probed: bool = False
    # any stage with a probe: stop the stage once `plateau_patience` probes in a row have not raised the
    # best probe accuracy by `plateau_min_delta` (the stage's weights are then those of its last step)
    plateau_patience: int | None = None
    plateau_min_delta: float = 0.01


@dataclass(frozen=True)
class Recipe:
    name: str
    model: dict[str, Any]  # the resolved VLMConfig as a dict
    seed: int
    output_dir: str
    work_dir: str
    data_dir: str
    tokenizer: TokenizerSpec
    data: dict[str, DataSpec]
    stages: tuple[StageConfig, ...]
    save_dtype: str = "bfloat16"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    init: InitSpec | None = None
    source: str = "recipe"

    def fingerprint(self, upto: int | None = None) -> str:
        """A hash of everything that determines the trained weights (not where files go); with `upto`,
        of the weights after stage `upto` (later stages left out), so edits to later stages keep
        finished earlier stages reusable by --resume."""
        stages = self.stages if upto is None else self.stages[: upto + 1]
        payload = {
            "model": self.model,
            "seed": self.seed,
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "data": {k: _data_fingerprint_fields(v) for k, v in sorted(self.data.items())},
            "stages": [_stage_fingerprint_fields(s) for s in stages],
        }
        if self.init is not None:  # added only when set, so fingerprints of other recipes are unchanged
            payload["init"] = {**dataclasses.asdict(self.init), "sha256": _file_sha256(self.init.weights)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


# ---- loading ---------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe file. `overrides` replaces top-level keys (e.g. output_dir)."""
    path = Path(path)
    data = yaml_file(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping with name, model, stages, ...")
    data = {**data, **(overrides or {})}
    return parse_recipe(data, source=str(path), base_dir=_repo_root())


def yaml_file(path: Path) -> Any:
    """The YAML document in `path`; a missing, unreadable, non-UTF-8 or malformed file is a `UserError`."""
    if not path.exists():
        raise UserError(f"recipe {path} does not exist; recipes live in recipes/*.yaml")
    if path.is_dir():
        raise UserError(f"recipe {path} is a directory, not a recipe file; pass one of its *.yaml files")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read recipe {path}: {exc.strerror or exc}; check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"recipe {path} is not UTF-8 text: byte {exc.start} (0x{raw[exc.start]:02x}) cannot be "
            "decoded; save the recipe as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's messages span several lines (context, caret); the CLI prints one.
        raise UserError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise UserError(f"{path} nests too deeply to be a recipe") from None


def parse_recipe(data: dict[str, Any], source: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a recipe mapping; relative paths are resolved against `base_dir` (the repo root)."""
    base = base_dir or _repo_root()
    known = {
        "name",
        "model",
        "seed",
        "output_dir",
        "work_dir",
        "data_dir",
        "tokenizer",
        "data",
        "stages",
        "save_dtype",
        "precision",
        "description",
        "notes",
        "init",
    }
    _no_unknown(data, known, source)
    name = _require(data, "name", str, source)
    seed = _seed(_require(data, "seed", int, source), f"{source}.seed")
    model = _resolve_model(data.get("model"), source)
    dirs = {
        key: _typed(data.get(key), str | None, f"{source}: {key}")
        for key in ("output_dir", "work_dir", "data_dir")
    }
    output_dir = str(_resolve(base, dirs["output_dir"] or f"runs/train/{name}/final"))
    work_dir = str(_resolve(base, dirs["work_dir"] or f"runs/train/{name}"))
    data_dir = str(_resolve(base, dirs["data_dir"] or "runs/train-data"))
    specs = _parse_data(data.get("data") or {}, source)
    tokenizer = _parse_tokenizer(data.get("tokenizer") or {}, specs, source, base)
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise UserError(f"{source}: 'stages' must be a non-empty list of stage mappings")
    stages = tuple(_parse_stage(s, i, specs, model, source) for i, s in enumerate(raw_stages))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise UserError(f"{source}: stage names must be unique, got {names}")
    save_dtype = _typed(data.get("save_dtype", "bfloat16"), str, f"{source}: save_dtype")
    _choice(save_dtype, SAVE_DTYPES, f"{source}: save_dtype")
    precision = _typed(data.get("precision", "auto"), str, f"{source}: precision")
    _choice(precision, PRECISIONS, f"{source}: precision")
    init = _parse_init(data.get("init"), source, base)
    return Recipe(
        name=name,
        model=model,
        seed=seed,
        output_dir=output_dir,
        work_dir=work_dir,
        data_dir=data_dir,
        tokenizer=tokenizer,
        data=specs,
        stages=stages,
        save_dtype=save_dtype,
        precision=precision,
        init=init,
        source=source,
    )


def check_inputs(recipe: Recipe) -> None:
    """Refuse a recipe whose input files are missing before any data is generated or model built.

    Parsing cannot require them (an ablation recipe names the weights its base recipe is still to
    produce, and every bundled recipe must parse); training needs them, so `vlmbench train` asks here
    first instead of failing after the data sets are generated."""
    if recipe.init is not None and not Path(recipe.init.weights).is_file():
        raise UserError(
            f"{recipe.source}: init: {recipe.init.weights} does not exist; run the recipe that produces it "
            "first (an ablation recipe starts from its base recipe's stage weights: see its header)"
        )
    if recipe.tokenizer.path is not None and not Path(recipe.tokenizer.path).exists():
        raise UserError(
            f"{recipe.source}: tokenizer not found at {recipe.tokenizer.path}: pass a directory holding "
            "tokenizer.json / tokenizer_config.json, or leave tokenizer.path out to train one"
        )


def eval_seeds(tasks_dir: Path | None = None) -> set[int]:
    """The `synthetic_seed` of every task config: training data must never use these."""
    directory = tasks_dir or bundled_dir("tasks")
    seeds = set()
    for path in sorted(directory.glob("*.yaml")):
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            continue
        if isinstance(cfg, dict) and isinstance(cfg.get("synthetic_seed"), int):
            seeds.add(cfg["synthetic_seed"])
    return seeds or {0}


# ---- parts -----------------------------------------------------------------------------------


def _resolve_model(value: Any, source: str) -> dict[str, Any]:
    """`model:` is a preset name, `{preset, overrides}`, or a full config mapping."""
    from vlmbench.modeling.config import VLMConfig
    from vlmbench.modeling.presets import load_preset

    if isinstance(value, str):
        return load_preset(value).to_dict()
    if not isinstance(value, dict):
        raise UserError(f"{source}: 'model' must be a preset name, {{preset, overrides}} or a config mapping")
    if "preset" in value:
        _no_unknown(value, {"preset", "overrides"}, f"{source}: model")
        base = load_preset(_typed(value["preset"], str, f"{source}: model.preset")).to_dict()
        overrides = value.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise UserError(
                f"{source}: model.overrides must be a mapping of config fields (e.g. {{llm: {{num_layers: 4}}}}), "
                f"got {_describe(overrides)}"
            )
        merged = _deep_merge(base, overrides)
        return VLMConfig.from_dict(merged, source=f"{source}: model").to_dict()
    return VLMConfig.from_dict(value, source=f"{source}: model").to_dict()


def _parse_data(raw: Any, source: str) -> dict[str, DataSpec]:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: 'data' must map a data set name to {{generator, n, seed}}")
    forbidden = eval_seeds()
    fields = {f.name for f in dataclasses.fields(DataSpec)}
    out: dict[str, DataSpec] = {}
    for name, spec in raw.items():
        where = f"{source}: data.{name}"
        if not isinstance(spec, dict):
            raise UserError(f"{where} must be a mapping with generator, n, seed")
        _no_unknown(spec, fields, where)
        generator = _require(spec, "generator", str, where)
        _choice(generator, GENERATORS, f"{where}.generator")
        _require(spec, "n", int, where)
        seed = _seed(_require(spec, "seed", int, where), f"{where}.seed")
        kwargs = _typed_fields(spec, DataSpec, where)
        _at_least(kwargs, {"n": 1, "short_answer_words": 0, "width": 1, "height": 1}, where)
        if seed in forbidden:
            raise UserError(
                f"{where}.seed {seed} is the seed of an evaluation set (tasks/*.yaml synthetic_seed "
                f"{sorted(forbidden)}); training data must use other seeds (e.g. 1000+)"
            )
        if kwargs.get("caption_prompts") is None:
            kwargs["caption_prompts"] = ()
        _check_yes_share(kwargs.get("yes_share"), generator, where)
        _check_location_levels(kwargs.get("location_levels"), generator, where)
        out[str(name)] = DataSpec(**kwargs)
    return out


def _check_yes_share(value: float | None, generator: str, where: str) -> None:
    if value is None:
        return
    if generator != "preferences":
        raise UserError(
            f"{where}.yes_share only applies to the preferences generator (this set is {generator}); remove it"
        )
    if not 0.0 <= value <= 1.0:
        raise UserError(
            f"{where}.yes_share must lie in [0, 1] (the share of existence pairs preferring 'yes'), got {value}"
        )


def _check_location_levels(value: int | None, generator: str, where: str) -> None:
    if value is None:
        return
    if generator != "grounding":
        raise UserError(
            f"{where}.location_levels only applies to the grounding generator (this set is {generator}); remove it"
        )
    try:
        check_levels(value)
    except ValueError as exc:
        raise UserError(f"{where}.location_levels: {exc}") from None


# Data-spec fields added after recipes had been trained: hashed only when set, so that adding one does
# not invalidate every finished stage checkpoint.
_LATE_DATA_FIELDS: dict[str, Any] = {"yes_share": None, "location_levels": None}


def _data_fingerprint_fields(spec: DataSpec) -> dict[str, Any]:
    fields = dataclasses.asdict(spec)
    for name, default in _LATE_DATA_FIELDS.items():
        if fields.get(name) == default:
            fields.pop(name)
    return fields


# Stage fields added after recipes had been trained: hashed only when set to something other than their
# default, so that adding a field does not invalidate every finished stage checkpoint.
_LATE_STAGE_FIELDS: dict[str, Any] = {
    "nll_weight": 0.0,
    "branches": False,
    "pack_branches": False,
    "max_branches": 16,
    "word_alignment": 0.0,
    "location_alignment": 0.0,
    "plateau_patience": None,
    "plateau_min_delta": 0.01,
}


# Stage fields that only say what is logged: never part of a fingerprint.
_LOGGING_STAGE_FIELDS: tuple[str, ...] = ("probe_every", "probe_images", "keep_probed")


def _stage_fingerprint_fields(stage: StageConfig) -> dict[str, Any]:
    fields = dataclasses.asdict(stage)
    for name in _LOGGING_STAGE_FIELDS:
        fields.pop(name)
    for name, default in _LATE_STAGE_FIELDS.items():
        if fields.get(name) == default:
            fields.pop(name)
    return fields


def _parse_init(raw: Any, source: str, base: Path) -> InitSpec | None:
    where = f"{source}: init"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping {{weights: FILE.safetensors, components: [vision, llm]}}")
    _no_unknown(raw, {"weights", "components"}, where)
    weights = _resolve(base, _require(raw, "weights", str, where))  # checked when training starts
    components = raw.get("components")
    if isinstance(components, str):
        components = [components]
    if not isinstance(components, list) or not components:
        raise UserError(f"{where}.components must list components to load ({', '.join(COMPONENTS)})")
    for component in components:
        _choice(component, COMPONENTS, f"{where}.components")
    return InitSpec(weights=str(weights), components=tuple(components))


def _file_sha256(path: str) -> str:
    if not Path(path).is_file():
        return "missing"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _parse_tokenizer(raw: Any, specs: dict[str, DataSpec], source: str, base: Path) -> TokenizerSpec:
    where = f"{source}: tokenizer"
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a path or a mapping {{vocab_size, corpus}}")
    _no_unknown(raw, {f.name for f in dataclasses.fields(TokenizerSpec)}, where)
    kwargs = _typed_fields(raw, TokenizerSpec, where)
    kwargs["corpus"] = kwargs.get("corpus") or ()
    for name in kwargs["corpus"]:
        if name not in specs:
            raise UserError(f"{where}.corpus names data set {name!r}, which 'data' does not define")
    if kwargs.get("path") is not None:
        kwargs["path"] = str(_resolve(base, kwargs["path"]))
    _at_least(kwargs, {"min_frequency": 1}, where)
    vocab = kwargs.get("vocab_size", 512)
    if vocab < 300:
        raise UserError(
            f"{where}.vocab_size {vocab} is too small: a byte-level tokenizer needs > 263 entries"
        )
    return TokenizerSpec(**kwargs)


def _parse_stage(
    raw: Any, index: int, specs: dict[str, DataSpec], model: dict[str, Any], source: str
) -> StageConfig:
    where = f"{source}: stages[{index}]"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping")
    _no_unknown(raw, {f.name for f in dataclasses.fields(StageConfig)}, where)
    name = _require(raw, "name", str, where)
    where = f"{source}: stage {name!r}"
    kind = _require(raw, "kind", str, where)
    _choice(kind, STAGE_KINDS, f"{where}.kind")
    train = raw.get("train")
    if isinstance(train, str):
        train = [train]
    if not isinstance(train, list):
        raise UserError(f"{where}.train must list the trainable components ({', '.join(COMPONENTS)})")
    for component in train:
        _choice(component, COMPONENTS, f"{where}.train")
    if "cross_attention" in train and not model.get("cross_attention_every"):
        raise UserError(f"{where}.train names cross_attention but the model has none (cross_attention_every)")
    data = raw.get("data")
    if isinstance(data, str):
        data = {data: 1.0}
    elif isinstance(data, list):
        data = {str(d): 1.0 for d in data}
    if not isinstance(data, dict) or not data:
        raise UserError(f"{where}.data must name at least one data set (a list, or name: weight)")
    for dname, weight in data.items():
        if dname not in specs:
            raise UserError(
                f"{where}.data names '{dname}', which 'data' does not define ({', '.join(specs)})"
            )
        if specs[dname].generator not in _KIND_DATA[kind]:
            raise UserError(
                f"{where}: a {kind} stage cannot read '{dname}' ({specs[dname].generator}); "
                f"it reads {', '.join(_KIND_DATA[kind])}"
            )
        _positive(weight, f"{where}.data.{dname}: the sampling weight")
    scales = raw.get("lr_scale") or {}
    if not isinstance(scales, dict):
        raise UserError(f"{where}.lr_scale must map components to learning-rate multipliers")
    for component, scale in scales.items():
        _choice(component, COMPONENTS, f"{where}.lr_scale")
        _positive(scale, f"{where}.lr_scale.{component}")
    scalars = {k: v for k, v in raw.items() if k not in ("train", "data", "lr_scale")}
    kwargs = _typed_fields(scalars, StageConfig, where)
    kwargs["lr_scale"] = {str(k): float(v) for k, v in scales.items()}
    try:
        stage = StageConfig(train=tuple(train), data={str(k): float(v) for k, v in data.items()}, **kwargs)
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None
    _at_least(
        kwargs,
        {"steps": 1, "batch_size": 1, "log_every": 1, "max_text_tokens": 1, "embed_dim": 1, "weight_decay": 0},
        where,
    )
    if stage.lr <= 0:
        raise UserError(f"{where}: lr must be > 0")
    if stage.grad_clip is not None and stage.grad_clip <= 0:
        raise UserError(f"{where}.grad_clip must be > 0, or null for no clipping")
    if not 0.0 <= stage.min_lr_ratio <= 1.0:
        raise UserError(f"{where}.min_lr_ratio must lie in [0, 1]")
    if not all(0.0 <= b < 1.0 for b in stage.betas):
        raise UserError(f"{where}.betas must lie in [0, 1), got {list(stage.betas)}")
    if stage.beta <= 0 or stage.lora_alpha <= 0:
        raise UserError(f"{where}: beta and lora_alpha must be > 0")
    if not 0 <= stage.warmup_steps <= stage.steps:
        raise UserError(f"{where}: warmup_steps must lie in [0, steps]")
    if kind == "vision_contrastive":
        if stage.loss not in CONTRASTIVE_LOSSES:
            raise UserError(
                f"{where}.loss must be one of {', '.join(CONTRASTIVE_LOSSES)} for vision_contrastive"
            )
        _choice(stage.text_encoder, TEXT_ENCODERS, f"{where}.text_encoder")
        _choice(stage.image_view, ("model", "tile"), f"{where}.image_view")
        if stage.image_view == "tile" and model["vision"]["kind"] == "native_vit":
            raise UserError(
                f"{where}: image_view 'tile' needs a tile-based ViT; native_vit takes the image as it is"
            )
        if stage.batch_size < 2:
            raise UserError(f"{where}: contrastive training needs batch_size >= 2 (in-batch negatives)")
    elif stage.loss is not None:
        raise UserError(f"{where}.loss is only used by vision_contrastive stages")
    if kind == "vision_tagging":
        if set(train) != {"vision"}:
            raise UserError(f"{where}: vision_tagging trains the vision encoder only (train: [vision])")
        if not 0.0 <= stage.crop_p <= 1.0:
            raise UserError(f"{where}.crop_p must lie in [0, 1]")
        if stage.pos_weight <= 0:
            raise UserError(f"{where}.pos_weight must be > 0")
    _choice(stage.lm_targets, ("all", "assistant"), f"{where}.lm_targets")
    if kind == "lm_pretrain" and set(train) - {"llm"}:
        raise UserError(f"{where}: lm_pretrain trains the LLM only (train: [llm])")
    if stage.nll_weight and kind != "dpo":
        raise UserError(f"{where}.nll_weight is only used by dpo stages")
    if stage.nll_weight < 0:
        raise UserError(f"{where}.nll_weight must be >= 0")
    if stage.lora_rank is not None:
        if kind != "dpo":
            raise UserError(f"{where}.lora_rank is only supported in dpo stages")
        if stage.lora_rank < 1:
            raise UserError(f"{where}.lora_rank must be >= 1")
        if "llm" not in train:
            raise UserError(f"{where}: lora_rank adapts the LLM, so train must include llm")
    if (stage.branches or stage.word_alignment) and kind not in ("align", "sft"):
        raise UserError(f"{where}: branches and word_alignment apply to align / sft stages only")
    if stage.pack_branches and not stage.branches:
        raise UserError(f"{where}.pack_branches packs the rows of branches: true; set branches: true as well")
    if stage.max_branches != 16 and not stage.pack_branches:
        raise UserError(
            f"{where}.max_branches applies with pack_branches: true only; set pack_branches: true or remove it"
        )
    if stage.max_branches < 1:
        raise UserError(f"{where}.max_branches must be >= 1, got {stage.max_branches}")
    if stage.word_alignment < 0:
        raise UserError(f"{where}.word_alignment must be >= 0")
    if stage.location_alignment < 0:
        raise UserError(f"{where}.location_alignment must be >= 0")
    if stage.location_alignment and kind not in ("align", "sft"):
        raise UserError(f"{where}: location_alignment applies to align / sft stages only")
    if stage.location_alignment and not any(spec.location_levels for spec in specs.values()):
        raise UserError(
            f"{where}.location_alignment scores visual tokens against location tokens, but no data set has "
            "location_levels; add location_levels to a grounding set or remove location_alignment"
        )
    if stage.probe_every is not None and stage.probe_every < 1:
        raise UserError(f"{where}.probe_every must be >= 1 or null")
    if stage.probe_images < 2:
        raise UserError(f"{where}.probe_images must be >= 2")
    if (stage.plateau_patience is not None or stage.keep_probed) and not stage.probe_every:
        raise UserError(f"{where}: plateau_patience and keep_probed read the probe; set probe_every too")
    if stage.plateau_patience is not None and stage.plateau_patience < 1:
        raise UserError(f"{where}.plateau_patience must be >= 1 or null")
    if stage.plateau_min_delta < 0:
        raise UserError(f"{where}.plateau_min_delta must be >= 0")
    if stage.checkpoint_every is not None and stage.checkpoint_every < 1:
        raise UserError(f"{where}.checkpoint_every must be >= 1 or null")
    if not train and kind != "vision_contrastive":
        raise UserError(f"{where}.train is empty: nothing would be trained")
    return stage


# ---- helpers ---------------------------------------------------------------------------------


def _repo_root() -> Path:
    """What relative recipe paths resolve against (see `vlmbench.resources.project_root`)."""
    return project_root()


def _resolve(base: Path, value: str | Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _no_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(repr(k) if not isinstance(k, str) else k for k in set(data) - known)
    if unknown:
        raise UserError(
            f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}"
        )


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise UserError(f"{where}: missing required field '{key}'")
    return _typed(data[key], kind, f"{where}.{key}")


def _choice(value: Any, options: tuple[str, ...], what: str) -> None:
    if not isinstance(value, str) or value not in options:
        raise UserError(f"{what} {value!r} is unknown; valid options: {', '.join(options)}")


# ---- field types -----------------------------------------------------------------------------
# A recipe is YAML written by hand: `steps: 2.5`, `lr: fast`, `lr: .nan` or `steps: true` (YAML's
# boolean, which Python counts as the integer 1) must be refused naming the field, not coerced or
# left to fail deep inside training. The expected type of every field is its dataclass annotation.


def _describe(value: Any) -> str:
    """`str 'abc'`, `float 2.5`: the type and (shortened) value of what the recipe holds."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _typed(value: Any, hint: Any, what: str, or_null: str = "") -> Any:
    """`value` checked against the type `hint` (int, float, bool, str, `X | None`, `tuple[X, ...]`,
    `tuple[X, Y]`) and normalised (int → float for floats, a list → tuple); else a `UserError`.
    `or_null` is added to the expected kind in the message (" or null" for an optional field)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(value, inner, what, " or null")
    if typing.get_origin(hint) is tuple:
        fixed = Ellipsis not in args
        if (
            not isinstance(value, (list, tuple))
            or (fixed and len(value) != len(args))
            or (not fixed and any(isinstance(v, (list, tuple, dict)) for v in value))
        ):
            kind = "a pair of numbers" if fixed and len(args) == 2 else f"a list of {_KIND_NAMES[args[0]]}s"
            raise UserError(f"{what} must be {kind}{or_null}, got {_describe(value)}")
        hints = args if fixed else (args[0],) * len(value)
        return tuple(_typed(v, h, f"{what}[{i}]") for i, (v, h) in enumerate(zip(value, hints, strict=True)))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{what} must be true or false{or_null}, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{what} must be an integer{or_null}, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{what} must be a number{or_null}, got {_describe(value)}")
        if not math.isfinite(value):
            raise UserError(f"{what} must be a finite number{or_null}, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{what} must be a string{or_null}, got {_describe(value)}")
        return value
    return value  # mappings (data, lr_scale) are checked by their parsers


_KIND_NAMES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _typed_fields(raw: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """Every field `raw` sets, checked against the annotation of the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {key: _typed(value, hints[key], f"{where}.{key}") for key, value in raw.items() if key in hints}


def _at_least(values: Mapping[str, Any], minimums: Mapping[str, float], where: str) -> None:
    for key, minimum in minimums.items():
        if key in values and values[key] < minimum:
            raise UserError(f"{where}.{key} must be >= {minimum}, got {values[key]}")


MAX_SEED = 2**32 - 1
"""Seeds go to numpy's generators (non-negative) and torch's (`seed * 1009 + stage`, below 2**64)."""


def _seed(value: int, what: str) -> int:
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{what} must lie in [0, {MAX_SEED}], got {value}")
    return value


def _positive(value: Any, what: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} must be a positive number, got {_describe(value)}")


__all__ = [
    "COMPONENTS",
    "DataSpec",
    "Recipe",
    "STAGE_KINDS",
    "StageConfig",
    "TokenizerSpec",
    "check_inputs",
    "eval_seeds",
    "load_recipe",
    "parse_recipe",
]
