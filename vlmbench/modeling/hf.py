"""Released Hugging Face VLMs behind the runner's interface (`hf:<local dir or repo id>`).

`load_hf_model` opens a transformers checkpoint with `AutoProcessor` + `AutoModelForImageTextToText`
(`Blip2ForConditionalGeneration` for BLIP-2), from a local directory or the HF cache only: nothing is
downloaded, only safetensors are read and remote code is never run. The returned `HFVLM` implements
`vlmbench.modeling.interface.EvalModel`, as `vlmbench.modeling.vlm.VLM` does:

    prepare_image(image) → HFPrepared   the processor's pixel inputs for one image, the expanded image
                                        placeholder token ids the processor writes for it, and a `plan`
                                        with `tile_sizes` (one (W, H) per encoder input)
    encode([prepared])   → [HFVisual]   projected image features (`get_image_features`), cached by the
                                        runner; `visual.shape[0]` is the number of visual tokens
    generate / score_choices            left-padded batches; features go in through transformers'
                                        `mm_encoder_outputs`, so the model runs its own code path;
                                        `visual[i]` is one image or a list, one per image placeholder

Families with a tested path: LLaVA-1.5 (fixed + MLP), LLaVA-NeXT (anyres), Qwen2-VL (native
resolution, M-RoPE), InternVL (dynamic tiles + pixel shuffle) and BLIP-2 (Q-Former, features spliced
into the LLM's input embeddings as `Blip2ForConditionalGeneration.generate` does). Any other model
whose forward accepts `mm_encoder_outputs` takes the first path; a model without it falls back to
passing the raw pixel inputs at generation time (no feature caching). What differs between the
families (projector/strategy names, parameter groups, prompt fallback, how many images a prompt may
hold, how to describe the resolution strategy) is in `vlmbench.modeling.hf_families`.

Prompts and the input ids are exactly what the model's own processor produces: the chat template
renders the prompt, and the image placeholder is replaced by the ids the processor expands it to for
that image — so predictions equal plain `model.generate(**processor(images, prompts))` (greedy).

`HFVLM` also implements `PrefixSharing` (one prefill of an image prefix for all of its questions,
same answers); the KV-cache logic is in `vlmbench.modeling.hf_prefix`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vlmbench.errors import UserError
from vlmbench.modeling import hf_prefix
from vlmbench.modeling.compression.hf_apply import HFCompression, fastv_rows, prune_batch
from vlmbench.modeling.compression.hf_apply import configure as configure_compression
from vlmbench.modeling.compression.images import downsample
from vlmbench.modeling.compression.spec import CompressionSpec
from vlmbench.modeling.compression.stats import CallStats, FirstForward, clock
from vlmbench.modeling.hf_families import family_for
from vlmbench.modeling.interface import IMAGE_MARKER, REFERENCE_IMAGE
from vlmbench.modeling.loaded import LoadedModel

log = logging.getLogger(__name__)


# ---- data passed between the runner's steps ------------------------------------------------------
@dataclass(frozen=True)
class HFPlan:
    """What the processor did to one image (the runner reads `len(tile_sizes)` as the tile count)."""

    strategy: str
    tile_sizes: tuple[tuple[int, int], ...]  # (W, H) of every encoder input, thumbnail included
    resized: tuple[int, int] | None = None  # (W, H) the image was resized to, when the strategy has one


@dataclass
class HFPrepared:
    """One image after the processor: pixel inputs (batch of one) and its expanded placeholder ids."""

    inputs: dict[str, torch.Tensor]
    placeholder_ids: list[int]
    plan: HFPlan


@dataclass
class HFVisual:
    """What `encode` returns per image; `shape[0]` is the number of visual tokens entering the LLM.

    `features` holds the projected image features (M, D) when the model allows feature caching, else
    None and the pixel inputs in `prepared` are run at generation time."""

    prepared: HFPrepared
    num_tokens: int
    features: torch.Tensor | None = None
    pooled_as_tensor: bool = False  # the model's forward wants one tensor, not a list, as pooler_output
    kept: list[int] | None = None  # M-RoPE models under --visual-tokens: original indices of the kept tokens

    @property
    def shape(self) -> torch.Size:
        dim = int(self.features.shape[-1]) if self.features is not None else 0
        return torch.Size((self.num_tokens, dim))


@dataclass
class _TextBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


# ---- loading -------------------------------------------------------------------------------------
def resolve_hf_path(path_or_repo: str) -> Path:
    """A local directory, or the snapshot of a repo id in the HF cache; UserError (exit 2) otherwise."""
    candidate = Path(path_or_repo).expanduser()
    if candidate.is_dir():
        return candidate
    looks_like_path = path_or_repo.startswith(("/", ".", "~")) or candidate.exists() or path_or_repo.count("/") != 1
    if looks_like_path:
        raise UserError(
            f"hf:{path_or_repo}: no such directory ({candidate.resolve()}); pass a local transformers model "
            f"directory (config.json + *.safetensors + processor files) or a repo id held in the HF cache"
        )
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(path_or_repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - every failure means: not in the local cache
        raise UserError(
            f"hf:{path_or_repo} is not a local directory and is not in the HF cache ({constants.HF_HUB_CACHE}; "
            f"set HF_HOME or HF_HUB_CACHE to use another). vlmbench never downloads: on a connected machine run "
            f"`huggingface-cli download {path_or_repo}` (or `hf download {path_or_repo}`), then copy the cache "
            f"here or pass the local directory as hf:/path/to/model"
        ) from None


def default_attn_implementation(device: str | torch.device) -> str:
    """flash_attention_2 on CUDA when `flash_attn` imports, else PyTorch SDPA."""
    if torch.device(device).type == "cuda":
        try:
            importlib.import_module("flash_attn")
        except ImportError:
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


def load_hf_model(
    path_or_repo: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
):
    """Load a released transformers VLM (local directory or HF cache) as an `HFVLM` in eval mode."""
    root = resolve_hf_path(path_or_repo)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise UserError(f"hf:{path_or_repo}: {root} has no config.json; pass a directory written by save_pretrained")
    raw = _read_json(config_path)
    model_type = str(raw.get("model_type", ""))
    if not any(root.glob("*.safetensors")):
        raise UserError(
            f"hf:{path_or_repo}: no *.safetensors weights in {root}; vlmbench does not load pickled "
            "pytorch_model.bin files. Re-save with model.save_pretrained(dir, safe_serialization=True)"
        )
    processor = load_processor(root)
    attn = attn_implementation or default_attn_implementation(device)
    model = _load_weights(root, model_type, dtype, attn, path_or_repo)
    model.to(device)
    model.eval()
    name = f"hf:{path_or_repo}"
    return LoadedModel(HFVLM(model, processor, name=name), name, None, str(root), True)


def _load_weights(root: Path, model_type: str, dtype: torch.dtype | None, attn: str, spec: str) -> nn.Module:
    from transformers import AutoModelForImageTextToText, Blip2ForConditionalGeneration

    cls = Blip2ForConditionalGeneration if model_type == "blip-2" else AutoModelForImageTextToText
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "trust_remote_code": False}
    if dtype is not None:
        kwargs["dtype"] = dtype
    for implementation in dict.fromkeys([attn, "sdpa", "eager"]):
        try:
            return cls.from_pretrained(str(root), attn_implementation=implementation, **kwargs)
        except (ValueError, ImportError) as exc:
            if "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
                raise UserError(f"hf:{spec}: transformers cannot build this model: {exc}") from None
            log.warning("hf:%s: attention implementation %s unavailable (%s); trying the next one", spec, implementation, exc)
        except OSError as exc:
            raise UserError(f"hf:{spec}: cannot load the weights in {root}: {exc}") from None
    raise UserError(f"hf:{spec}: no attention implementation works for this model")


def load_processor(root: Path) -> Any:
    """`AutoProcessor`, or — when a sub-processor the image path does not use cannot be built here (video
    processors need torchvision) — the processor assembled from its tokenizer and PIL image processor."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    except (AttributeError, ImportError, TypeError, ValueError, OSError) as exc:
        log.debug("AutoProcessor failed for %s (%s); assembling the processor from its parts", root, exc)
        return assemble_processor(root)


def optional_subprocessors(processor_cls: type) -> type:
    """A subclass of `processor_cls` (same name) that accepts None for absent sub-processors.

    transformers checks every sub-processor argument against its base class, and without torchvision
    the video processor base class cannot be looked up even for `video_processor=None`; images never
    touch the video processor, so an image-only processor is built without one."""

    def check_argument_for_proper_class(self: Any, argument_name: str, argument: Any) -> Any:
        if argument is None:
            return None
        return processor_cls.check_argument_for_proper_class(self, argument_name, argument)

    return type(
        processor_cls.__name__,
        (processor_cls,),
        {"check_argument_for_proper_class": check_argument_for_proper_class, "__module__": processor_cls.__module__},
    )


def assemble_processor(root: Path) -> Any:
    """Processor from `processor_config.json` (class + init arguments), tokenizer and image processor."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    config: dict[str, Any] = {}
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = root / name
        if path.is_file():
            data = _read_json(path)
            if data.get("processor_class"):
                config = data if name == "processor_config.json" else {"processor_class": data["processor_class"]}
                break
    class_name = config.get("processor_class")
    processor_cls = getattr(transformers, str(class_name), None) if class_name else None
    if processor_cls is None:
        raise UserError(
            f"cannot build the processor in {root}: no known processor_class in processor_config.json, "
            "preprocessor_config.json or tokenizer_config.json"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
        image_processor = AutoImageProcessor.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, ImportError) as exc:
        raise UserError(f"cannot load the tokenizer / image processor in {root}: {exc}") from None
    attributes = processor_cls.get_attributes()
    parts: dict[str, Any] = dict.fromkeys(attributes)
    parts.update({"tokenizer": tokenizer, "image_processor": image_processor})
    accepted = inspect.signature(processor_cls.__init__).parameters
    options = {k: v for k, v in config.items() if k in accepted and k not in attributes and k != "chat_template"}
    chat_template = config.get("chat_template") or _read_chat_template(root) or tokenizer.chat_template
    return optional_subprocessors(processor_cls)(**parts, chat_template=chat_template, **options)


def _read_chat_template(root: Path) -> str | None:
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    legacy = root / "chat_template.json"
    if legacy.is_file():
        value = _read_json(legacy).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object")
    return data


# ---- the adapter ---------------------------------------------------------------------------------
class HFVLM:
    """A transformers image-text-to-text model behind `EvalModel` (see the module docstring)."""

    def __init__(self, model: nn.Module, processor: Any, name: str = "hf") -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.tokenizer = processor.tokenizer
        self.config = model.config
        self.model_type = str(getattr(model.config, "model_type", ""))
        self.family_info = family_for(self.model_type)
        self.family = self.family_info.name or self.model_type
        self.image_token = getattr(processor, "image_token", None)
        if not isinstance(self.image_token, str) and self.image_token is not None:
            self.image_token = str(getattr(self.image_token, "content", self.image_token))
        self.image_token_id = self._image_token_id()
        forward_params = inspect.signature(model.forward).parameters
        if self.family_info.splices_embeddings:
            self.path = "embeds"  # features spliced into the LLM's input embeddings (BLIP-2's own generate)
        elif "mm_encoder_outputs" in forward_params and hasattr(model, "get_image_features"):
            self.path = "mm"  # cached features handed to the model's forward / generate
        else:
            self.path = "pixels"  # no feature caching: the pixel inputs run at generation time
        self._mrope = hasattr(getattr(model, "model", model), "get_rope_index")
        self._tokens_by_size: dict[tuple[int, int], int] = {}
        self.compression: HFCompression | None = None  # --visual-tokens (set_visual_tokens)
        self.last_call: CallStats | None = None  # LLM visual tokens and prefill time of the last call
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0

    # ---- basics --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def eval(self) -> HFVLM:
        self.model.eval()
        return self

    def set_visual_tokens(self, spec: CompressionSpec, seed: int = 0) -> None:
        """Apply `--visual-tokens` to every later call; UserError when this model cannot take `spec`."""
        self.compression = configure_compression(self, spec, seed)

    def _image_token_id(self) -> int | None:
        for source in (self.processor, self.config):
            for attr in ("image_token_id", "image_token_index"):
                value = getattr(source, attr, None)
                if isinstance(value, int):
                    return value
        if self.image_token is not None:
            return int(self.tokenizer.convert_tokens_to_ids(self.image_token))
        return None

    # ---- images --------------------------------------------------------------------------------
    def prepare_image(self, image: Image.Image) -> HFPrepared:
        """The processor's pixel inputs for one image and the placeholder ids it expands the image to."""
        if not isinstance(image, Image.Image):
            raise UserError(f"expected a PIL image, got {type(image).__name__}")
        image = image.convert("RGB") if image.mode != "RGB" else image
        if self.compression is not None:
            image = downsample(image, self.compression.spec)
        if self.family_info.splices_embeddings:  # BLIP-2: query tokens, not a processor-expanded token
            pixels = self.processor.image_processor([image], return_tensors="pt")
            count = int(getattr(self.processor, "num_query_tokens", None) or self.config.num_query_tokens)
            placeholder = [self.image_token_id] * count
            inputs = {k: v for k, v in pixels.items() if isinstance(v, torch.Tensor)}
        else:
            if self.image_token is None:
                raise UserError(f"{self.name}: the processor defines no image token; this model is not supported")
            out = self.processor(images=[image], text=[self.image_token], return_tensors="pt", add_special_tokens=False)
            placeholder = [int(t) for t in out["input_ids"][0].tolist()]
            skip = {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"}
            inputs = {k: v for k, v in out.items() if k not in skip and isinstance(v, torch.Tensor)}
        return HFPrepared(inputs=inputs, placeholder_ids=placeholder, plan=self._plan(image, inputs))

    def _plan(self, image: Image.Image, inputs: dict[str, torch.Tensor]) -> HFPlan:
        strategy = self.family_info.strategy
        pixels = inputs.get("pixel_values")
        grid = inputs.get("image_grid_thw")
        if grid is not None:  # native resolution: one input of grid_h x grid_w patches
            patch = int(getattr(self.processor.image_processor, "patch_size", 14))
            _, rows, cols = (int(v) for v in grid[0].tolist())
            size = (cols * patch, rows * patch)
            return HFPlan(strategy, (size,), size)
        if pixels is None:
            return HFPlan(strategy, ((image.width, image.height),))
        side = (int(pixels.shape[-1]), int(pixels.shape[-2]))
        tiles = int(pixels.shape[1]) if pixels.ndim == 5 else int(pixels.shape[0])
        if pixels.ndim == 5 and "image_sizes" in inputs:
            tiles = self._anyres_tiles(inputs["image_sizes"][0])
        return HFPlan(strategy, (side,) * tiles)

    def _anyres_tiles(self, image_size: torch.Tensor) -> int:
        """Tiles LLaVA-NeXT encodes for an image (base view + grid), as the model counts them."""
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        return int(
            image_size_to_num_patches(
                image_size=image_size.tolist(),
                grid_pinpoints=self.config.image_grid_pinpoints,
                patch_size=self.config.vision_config.image_size,
            )
        )

    @torch.no_grad()
    def encode(self, images: Sequence[HFPrepared]) -> list[HFVisual]:
        """Projected features per image (one encoder call per image, so batches never change them)."""
        out: list[HFVisual] = []
        for prepared in images:
            count = sum(1 for t in prepared.placeholder_ids if t == self.image_token_id)
            if self.path == "pixels":
                out.append(HFVisual(prepared, count))
                continue
            accepted = inspect.signature(self.model.get_image_features).parameters
            kwargs = {k: v.to(self.device) for k, v in prepared.inputs.items() if k in accepted}
            if "pixel_values" in kwargs:
                kwargs["pixel_values"] = kwargs["pixel_values"].to(self.model.dtype)
            result = self.model.get_image_features(**kwargs, return_dict=True)
            pooled = result.pooler_output
            as_tensor = isinstance(pooled, torch.Tensor)
            parts = [pooled] if as_tensor else list(pooled)
            features = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])  # (M, D)
            if features.shape[0] != count:
                raise RuntimeError(
                    f"{self.name}: the processor expands the image to {count} placeholder tokens but the model "
                    f"produced {features.shape[0]} features; processor and model configs disagree"
                )
            # the runner caches what encode returns: keep the shape metadata, drop the pixels
            meta = {k: v for k, v in prepared.inputs.items() if not k.startswith("pixel_values")}
            placeholder, kept = prepared.placeholder_ids, None
            if self.compression is not None:
                features, placeholder, kept = self.compression.compress(features, placeholder, self.image_token_id, self._mrope)
                count = int(features.shape[0])
            slim = HFPrepared(meta, placeholder, prepared.plan)
            out.append(HFVisual(slim, count, features, as_tensor, kept))
        return out

    # ---- prompts -------------------------------------------------------------------------------
    def format_prompt(self, question: str, n_images: int = 1) -> str:
        """The model's chat template with `n_images` images and the question (images where the question
        has `IMAGE_MARKER`s, else in front); without a template the family's fallback (BLIP-2: its VQA prompt)."""
        limit = self.family_info.max_images
        if limit is not None and n_images > limit:
            raise ValueError(f"{self.name}: {self.family or 'this model'} takes one image only per prompt, got {n_images}")
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if template:
            messages = [{"role": "user", "content": _interleaved(question, n_images)}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.family_info.fallback_prompt(question, n_images, self.image_token)

    def _text_ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def _splice(self, prompt: str, visual: Sequence[HFVisual], suffix: Sequence[int] = ()) -> tuple[list[int], int]:
        """Token ids for one prompt with each image placeholder expanded, in order; (ids, leading
        unpadded count).

        BLIP-2 puts its query tokens before everything, padding included (its processor does the same),
        so the second value says how many ids stay at the very front when the row is left-padded."""
        ids = self._text_ids(prompt) + list(suffix)
        if self.family_info.splices_embeddings:
            if len(visual) != 1:
                raise ValueError(f"{self.name}: {self.family} takes one image only per prompt, got {len(visual)}")
            placeholder = visual[0].prepared.placeholder_ids
            return placeholder + ids, len(placeholder)
        positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(positions) != len(visual):
            raise ValueError(
                f"prompt must hold {len(visual)} image placeholder(s) {self.image_token!r}, found {len(positions)}: {prompt[:80]!r}"
            )
        out: list[int] = []
        start = 0
        for cut, image in zip(positions, visual, strict=True):
            out += ids[start:cut] + image.prepared.placeholder_ids
            start = cut + 1
        return out + ids[start:], 0

    def _batch(self, prompts: Sequence[str], visual: Sequence[Any], suffixes: Sequence[Sequence[int]] | None = None) -> _TextBatch:
        """Left-padded ids of the prompts; `visual[i]`: prompt i's image, or list of images."""
        per_row = _rows(visual)
        rows = [self._splice(p, v, suffixes[i] if suffixes else ()) for i, (p, v) in enumerate(zip(prompts, per_row, strict=True))]
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, front) in enumerate(rows):
            pad = length - len(ids)
            if front:  # BLIP-2's query tokens stay in front of the padding
                input_ids[i, :front] = torch.tensor(ids[:front], dtype=torch.long)
                mask[i, :front] = 1
            input_ids[i, front + pad :] = torch.tensor(ids[front:], dtype=torch.long)
            mask[i, front + pad :] = 1
        batch = _TextBatch(input_ids.to(self.device), mask.to(self.device))
        if "mm_token_type_ids" in getattr(self.processor, "model_input_names", []):
            types = self.processor.create_mm_token_type_ids(input_ids.tolist())
            batch.extra["mm_token_type_ids"] = torch.tensor(types, dtype=torch.long, device=self.device)
        if any(v.kept is not None for row in per_row for v in row):
            prune_batch(self, batch, per_row)
        return batch

    def _image_kwargs(self, visual: Sequence[HFVisual]) -> dict[str, Any]:
        """The model inputs that carry the images (all rows' images, in placeholder order): cached
        features, or pixel inputs (fallback)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        kwargs: dict[str, Any] = {}
        side = _concat_inputs([v.prepared.inputs for v in visual], device=self.device)
        if self.path == "pixels":
            if "pixel_values" in side:
                side["pixel_values"] = side["pixel_values"].to(self.model.dtype)
            return side
        # image-shape metadata (Qwen2-VL's image_grid_thw for M-RoPE, LLaVA-NeXT's image_sizes)
        kwargs.update({k: v for k, v in side.items() if not k.startswith("pixel_values")})
        feats = [v.features.to(self.device) for v in visual]  # type: ignore[union-attr]
        pooled: Any = torch.cat(feats) if visual[0].pooled_as_tensor else feats
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=pooled)}
        return kwargs

    def _embeds(self, batch: _TextBatch, visual: Sequence[HFVisual]) -> torch.Tensor:
        """BLIP-2: the LLM's input embeddings with the query features written over the image tokens."""
        embeds = self.model.get_input_embeddings()(batch.input_ids)
        feats = torch.cat([v.features for v in visual]).to(embeds.device, embeds.dtype)  # type: ignore[misc]
        mask = (batch.input_ids == self.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, feats)

    def _visual_rows(self, images: Sequence[Any] | None, visual: Sequence[Any] | None) -> list[list[HFVisual]]:
        """Per prompt, its encoded images (encoding `images` — one or a list per prompt — when no
        `visual` is given)."""
        if visual is None:
            return [self.encode(row) for row in _rows(images or [])]
        return _rows(visual)

    def _llm_rows(self, prompts: list[str], rows: list[list[HFVisual]]) -> list[list[HFVisual]]:
        """The rows' visual objects, FastV-pruned for these prompts under prune-attn:R@L."""
        if self.compression is None or self.compression.spec.llm_op is None:
            return rows
        return fastv_rows(self, prompts, rows)

    # ---- generation ----------------------------------------------------------------------------
    def _run_generate(self, batch: _TextBatch, visual: Sequence[HFVisual], **gen: Any) -> Any:
        """`visual`: every image of the batch, row by row, in placeholder order."""
        if self.path == "embeds":
            return self.model.language_model.generate(
                input_ids=batch.input_ids,
                inputs_embeds=self._embeds(batch, visual),
                attention_mask=batch.attention_mask,
                **gen,
            )
        return self.model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            **batch.extra,
            **self._image_kwargs(visual),
            **gen,
        )

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[HFPrepared] | None,
        prompts: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_cache: bool = True,
        visual: Sequence[Any] | None = None,
    ) -> list[str]:
        """Greedy (or sampled) answers for a left-padded batch, cut at the first stop string."""
        start = clock(self.device)
        rows = self._llm_rows(prompts, self._visual_rows(images, visual))
        probe_s = clock(self.device) - start
        batch = self._batch(prompts, rows)
        gen = self._generation_kwargs(max_new_tokens, stop, do_sample, temperature, top_p, use_cache)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), FirstForward(self.model, self.device) as timer:
            torch.manual_seed(0 if seed is None else seed)  # seeded sampling without touching the caller's RNG
            out = self._run_generate(batch, _flat(rows), **gen)
        self.last_call = CallStats(_row_tokens(rows), probe_s + (timer.seconds or 0.0))
        sequences = out.sequences if hasattr(out, "sequences") else out
        new = sequences[:, batch.input_ids.shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [_truncate(text, stop) for text in texts]

    def _generation_kwargs(
        self, max_new_tokens: int, stop: tuple[str, ...], do_sample: bool, temperature: float, top_p: float, use_cache: bool
    ) -> dict[str, Any]:
        """transformers `generate` arguments of one call (shared by `generate` and `generate_from`)."""
        gen: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "use_cache": use_cache,
            "pad_token_id": self._pad_id,
        }
        if do_sample:
            gen.update(temperature=temperature, top_p=top_p)
        else:
            gen.update(temperature=None, top_p=None, top_k=None)
        if stop:
            gen.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        return gen

    # ---- prefix sharing (PrefixSharing; the KV logic is in modeling/hf_prefix.py) ---------------
    @functools.cached_property
    def prefix_static_reason(self) -> str | None:
        """Why this model can never share an image prefix (family, cache layers, template); None: it can."""
        return hf_prefix.static_reason(self)

    def prefix_decline_reason(self) -> str | None:
        """Why `split_prompt` returns None for every prompt now (adds `--visual-tokens` FastV); None: it may split."""
        return hf_prefix.unavailable_reason(self)

    def split_prompt(self, prompt: str) -> tuple[str, str] | None:
        """(prefix up to the last image placeholder, suffix), or None where the image is not a shared prefix."""
        return hf_prefix.split_prompt(self, prompt)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """LLM text tokens of each text (placeholders not expanded; no special tokens added)."""
        return [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def prefill(self, prefixes: list[str], visual: Sequence[Any]) -> list[hf_prefix.HFPrefixState]:
        """One KV state per prefix (`visual[i]`: prefix i's image, or a list of them)."""
        return hf_prefix.prefill(self, prefixes, visual)

    def score_choices_from(self, states: Sequence[Any], suffixes: list[str], choices: list[str]) -> torch.Tensor:
        """`score_choices` of the prompts `prefix_i + suffixes[i]`, continuing from `states[i]`: (B, C)."""
        return hf_prefix.score_choices_from(self, states, suffixes, choices)

    def generate_from(
        self,
        states: Sequence[Any],
        suffixes: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """`generate` of the prompts `prefix_i + suffixes[i]`, continuing from `states[i]`."""
        gen = self._generation_kwargs(max_new_tokens, stop, do_sample, temperature, top_p, True)
        return hf_prefix.generate_from(self, states, suffixes, gen, stop, seed)

    # ---- choice scoring ------------------------------------------------------------------------
    def choice_token_ids(self, prompt: str, choice: str) -> list[int]:
        """The tokens the model's tokenizer produces for `choice` written right after `prompt`.

        An answer follows the prompt with one space when the prompt ends in a visible character
        ("... ASSISTANT:" → " Yes", as LLaVA's template is answered), directly otherwise (a newline or a
        special token ends Qwen/InternVL templates → "Yes"). The prompt + answer text is tokenized as a
        whole and the ids after the prompt's own ids are the answer's, so merges across the boundary and
        SentencePiece's "▁" prefix come out as in real text."""
        return self.choice_ids(prompt, [choice])[0]

    def choice_ids(self, prompt: str, choices: Sequence[str]) -> list[list[int]]:
        """`choice_token_ids(prompt, c)` for every choice, tokenizing the prompt once."""
        sep = "" if (not prompt or prompt[-1].isspace() or self._ends_with_special(prompt)) else " "
        head = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        out = []
        for choice in choices:
            full = list(self.tokenizer(prompt + sep + choice, add_special_tokens=False)["input_ids"])
            if len(full) > len(head) and full[: len(head)] == head:
                out.append(full[len(head) :])
            else:
                out.append(list(self.tokenizer(sep + choice, add_special_tokens=False)["input_ids"]))
        return out

    def _ends_with_special(self, prompt: str) -> bool:
        return any(prompt.endswith(tok) for tok in self.tokenizer.all_special_tokens if tok)

    @torch.no_grad()
    def score_choices(
        self,
        images: Sequence[HFPrepared] | None,
        prompts: list[str],
        choices: list[str],
        visual: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Log-probability of each choice as the answer, (B, C).

        Single-token choices are read off the logits of generation's first step (one forward, the same
        computation greedy generation makes, so a generated choice is also the top-scored one);
        multi-token choices are summed over one forward of B×C prompt+choice rows."""
        start = clock(self.device)
        rows = self._llm_rows(prompts, self._visual_rows(images, visual))
        probe_s = clock(self.device) - start
        ids = [self.choice_ids(p, choices) for p in prompts]
        if all(len(t) == 1 for row in ids for t in row):
            batch = self._batch(prompts, rows)
            gen = {
                "max_new_tokens": 1,
                "do_sample": False,
                "temperature": None,
                "top_p": None,
                "top_k": None,
                "output_logits": True,
                "return_dict_in_generate": True,
                "pad_token_id": self._pad_id,
            }
            with FirstForward(self.model, self.device) as timer:
                out = self._run_generate(batch, _flat(rows), **gen)
            self.last_call = CallStats(_row_tokens(rows), probe_s + (timer.seconds or 0.0))
            logprobs = F.log_softmax(out.logits[0].float(), dim=-1)  # (B, V)
            index = torch.tensor([[t[0] for t in row] for row in ids], device=logprobs.device)
            return logprobs.gather(1, index).cpu()
        scores = self._score_sequences(prompts, rows, ids).cpu()
        self.last_call = CallStats(_row_tokens(rows), clock(self.device) - start)
        return scores

    def _score_sequences(self, prompts: list[str], visual: Sequence[Any], ids: list[list[list[int]]]) -> torch.Tensor:
        n_choices = len(ids[0])
        rows_p = [p for p in prompts for _ in range(n_choices)]
        rows_v = [v for v in _rows(visual) for _ in range(n_choices)]
        suffixes = [t for row in ids for t in row]
        batch = self._batch(rows_p, rows_v, suffixes)
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask, "use_cache": False}
        if not self._mrope and "position_ids" not in batch.extra:  # pruned layouts bring their own
            kwargs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        if self.path == "embeds":
            logits = self.model.language_model(inputs_embeds=self._embeds(batch, _flat(rows_v)), **kwargs).logits
        else:
            logits = self.model(input_ids=batch.input_ids, **batch.extra, **self._image_kwargs(_flat(rows_v)), **kwargs).logits
        logprobs = F.log_softmax(logits.float(), dim=-1)
        totals = []
        length = batch.input_ids.shape[1]
        for r, suffix in enumerate(suffixes):
            start = length - len(suffix)
            target = torch.tensor(suffix, device=logprobs.device)
            picked = logprobs[r, start - 1 : length - 1].gather(-1, target.unsqueeze(-1))
            totals.append(picked.sum())
        return torch.stack(totals).view(len(prompts), n_choices)

    # ---- description ---------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component: vision, projector, llm (and total)."""
        groups = self.family_info.component_prefixes
        counts = {"vision": 0, "projector": 0, "llm": 0, "other": 0}
        for name, param in self.model.named_parameters():
            counts[_component_of(name, groups)] += param.numel()
        if not counts["other"]:
            counts.pop("other")
        counts["total"] = sum(counts.values())
        return counts

    def resolution_summary(self) -> dict[str, Any]:
        """The resolution strategy with DESIGN.md's parameter names, read from the image processor."""
        return self.family_info.resolution_summary(self.processor.image_processor, self.config)

    def inspect_plan(self, width: int, height: int) -> dict[str, Any]:
        """What the processor does to a `width` x `height` image: resized canvas, tile grid, encoder
        inputs and visual tokens (`UserError` for a family whose strategy vlmbench cannot describe)."""
        prepared = self.prepare_image(_blank_image(width, height))
        resized, grid = self.family_info.geometry(
            (width, height), prepared.plan.resized, self.processor.image_processor, self.config
        )
        return {
            "resized": list(resized),
            "grid": list(grid) if grid is not None else None,
            "tiles": len(prepared.plan.tile_sizes),
            "visual_tokens": sum(1 for t in prepared.placeholder_ids if t == self.image_token_id),
        }

    def visual_tokens_reference(self, width: int = REFERENCE_IMAGE[0], height: int = REFERENCE_IMAGE[1]) -> int:
        """Visual tokens for a blank image of the given size (processor only, no model run; remembered
        per size, since the runner asks for every sample when it sorts a task into batches)."""
        if (width, height) not in self._tokens_by_size:
            prepared = self.prepare_image(_blank_image(width, height))
            count = sum(1 for t in prepared.placeholder_ids if t == self.image_token_id)
            self._tokens_by_size[(width, height)] = self.compression.count(count) if self.compression else count
        return self._tokens_by_size[(width, height)]

    def summary(self, name: str, preset: str | None = None) -> dict[str, Any]:
        """results.json's `model` object (the runner adds the visual tokens measured on the data)."""
        vision = self.config.vision_config
        v_type = getattr(vision, "model_type", "vision")
        width = next((getattr(vision, a) for a in self.family_info.vision_width_attrs if getattr(vision, a, None)), None)
        layers = getattr(vision, "num_hidden_layers", getattr(vision, "depth", None))
        image_size = getattr(vision, "image_size", None)
        patch = getattr(vision, "patch_size", None)
        size_text = f" {_first(image_size)}px" if image_size else ""
        patch_text = f" p{_first(patch)}" if patch else ""
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config.text_config
        projector = self.family_info.projector
        return {
            "name": name,
            "preset": preset,
            "source": "huggingface",
            "model_type": self.model_type,
            "vision_encoder": f"{v_type}{size_text}{patch_text} d{width}x{layers}",
            "projector": projector,
            "resolution": self.resolution_summary(),
            "llm": f"{text.model_type} d{text.hidden_size}x{text.num_hidden_layers}",
            "params": self.parameter_counts(),
            "attn_implementation": getattr(self.config, "_attn_implementation", None),
            "visual_tokens_reference": {
                "image_size": list(REFERENCE_IMAGE),
                "visual_tokens": self.visual_tokens_reference(*REFERENCE_IMAGE),
            },
        }


# ---- helpers -------------------------------------------------------------------------------------
def _component_of(name: str, groups: dict[str, tuple[str, ...]]) -> str:
    short = name[len("model.") :] if name.startswith("model.") else name
    for component in ("projector", "vision", "llm"):
        if short.startswith(groups[component]) or name.startswith(groups[component]):
            return component
    return "other"


def _blank_image(width: int, height: int) -> Image.Image:
    """A mid-grey image: what the processor does depends on the size only."""
    return Image.new("RGB", (width, height), (127, 127, 127))


def _row_tokens(rows: Sequence[Sequence[HFVisual]]) -> tuple[int, ...]:
    """Visual tokens each prompt's LLM input holds (all its images)."""
    return tuple(sum(v.num_tokens for v in row) for row in rows)


def _rows(visual: Sequence[Any]) -> list[list[Any]]:
    """`visual[i]` — one image's object or a list of them — as a list per prompt."""
    return [list(v) if isinstance(v, (list, tuple)) else [v] for v in visual]


def _flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    return [item for row in rows for item in row]


def _interleaved(question: str, n_images: int) -> list[dict[str, str]]:
    """Chat-message content: the question's text pieces with an image at each `IMAGE_MARKER`, or
    `n_images` images followed by the question when it has no markers."""
    pieces = question.split(IMAGE_MARKER)
    if len(pieces) == 1:
        return [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    if len(pieces) - 1 != n_images:
        raise ValueError(f"the prompt holds {len(pieces) - 1} {IMAGE_MARKER} marker(s) for {n_images} image(s)")
    content: list[dict[str, str]] = []
    for index, piece in enumerate(pieces):
        if index:
            content.append({"type": "image"})
        if piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    return content


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def _concat_inputs(items: Sequence[dict[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    """Concatenate per-image processor inputs along dim 0 (padding LLaVA-NeXT's tile axis to the max)."""
    out: dict[str, torch.Tensor] = {}
    keys = [k for k in items[0] if all(k in item for item in items)] if items else []
    for key in keys:
        tensors = [item[key] for item in items]
        if tensors[0].ndim >= 2 and len({t.shape[1:] for t in tensors}) > 1:
            longest = max(t.shape[1] for t in tensors)
            tensors = [F.pad(t, (0, 0) * (t.ndim - 2) + (0, longest - t.shape[1])) for t in tensors]
        out[key] = torch.cat(tensors).to(device)
    return out


def _truncate(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        index = text.find(s)
        if index != -1:
            cut = min(cut, index)
    return text[:cut].strip()


__all__ = [
    "HFPlan",
    "HFPrepared",
    "HFVLM",
    "HFVisual",
    "assemble_processor",
    "default_attn_implementation",
    "load_hf_model",
    "load_processor",
    "optional_subprocessors",
    "resolve_hf_path",
]
