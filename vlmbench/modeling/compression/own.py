"""How vlmbench's own `VLM` takes a compression spec (every preset; see docs/compression.md).

`configure` checks that the model can take the spec (a `UserError` naming the preset and why not),
applies the resolution budgets by rebuilding the strategy, and returns the `OwnCompression` the
model keeps. The model then calls it at three points: `prepare` (downsample), `compress` (token
operators per image after the projector) and `llm_inputs` (FastV inside the LLM)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vlmbench.errors import UserError
from vlmbench.modeling.compression import tokens as ops
from vlmbench.modeling.compression.attention import last_token_attention
from vlmbench.modeling.compression.images import budget_resolution
from vlmbench.modeling.compression.spec import CompressionSpec, kept_count
from vlmbench.modeling.inputs import images_of

if TYPE_CHECKING:
    from vlmbench.modeling.vlm import VLM

Grid = tuple[int, int]


@dataclass(frozen=True)
class OwnCompression:
    spec: CompressionSpec
    seed: int

    @property
    def needs_cls(self) -> bool:
        return any(op.name == "prune-attn" for op in self.spec.token_ops)

    # ---- token counts without pixels -----------------------------------------------------------
    def count(self, projector: Any, patch_grids: Sequence[Grid]) -> int:
        """Visual tokens `compress` returns for an image with these per-tile patch grids."""
        # queries without a grid count as one row of num_tokens (pool is refused for them)
        grids = [projector.token_grid(g) or (1, projector.num_tokens(g)) for g in patch_grids]
        return ops.count_after(grids, self.spec.token_ops)

    # ---- after the projector -------------------------------------------------------------------
    def compress_all(
        self, projector: Any, tiles: list[torch.Tensor], grids: list[Grid], counts: list[int], cls: list[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        """Per image (its `counts[i]` consecutive tiles), the compressed (M, D) tokens.

        `tiles[t]` is tile t's (M_t, D) tokens on patch grid `grids[t]`; `cls`, when captured, the
        encoder calls' (B, N) CLS attention rows, which concatenate to one row per tile."""
        cls_rows = [row for block in cls for row in block] if cls else None
        out, start = [], 0
        for count in counts:
            part = slice(start, start + count)
            scores = cls_rows[part] if cls_rows is not None else None
            out.append(self.compress(projector, torch.cat(tiles[part]), grids[part], scores))
            start += count
        return out

    def compress(
        self, projector: Any, tokens: torch.Tensor, patch_grids: Sequence[Grid], cls: Sequence[torch.Tensor] | None
    ) -> torch.Tensor:
        """One image's (M, D) tokens (tiles concatenated) after the token operators.

        `cls`: per tile, the CLS attention over its patches (row-major), for prune-attn without L."""
        token_grids = [projector.token_grid(g) for g in patch_grids]
        grids = None if any(g is None for g in token_grids) else tuple(token_grids)
        scores = None
        if cls is not None and grids is not None:
            scores = torch.cat([_scores_on_grid(s, p, g) for s, p, g in zip(cls, patch_grids, grids, strict=True)])
        return ops.apply_operators(ops.TokenSet.of(tokens, grids, scores), self.spec.token_ops, self.seed).tokens

    # ---- inside the LLM (FastV) ----------------------------------------------------------------
    def llm_inputs(
        self, model: VLM, prompts: list[str], visual: Sequence[Any], targets: list[str] | None = None
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The LLM inputs of a batch and the visual tokens each row holds, FastV-pruned when the spec
        ends in prune-attn:R@L: layer L's attention from each prompt's last token ranks every image's
        tokens; the kept ones keep their original position ids (FastV prunes mid-model, where the
        positions are already fixed), the pruned columns are removed and the rows left-padded again."""
        op = self.spec.llm_op
        assert op is not None, "llm_inputs is the FastV path"
        inputs = model.build_inputs(prompts, visual, targets, with_visual_mask=True)
        visual_mask = inputs.pop("visual_mask")
        probe = inputs if targets is None else model.build_inputs(prompts, visual, with_visual_mask=True)
        probe_mask = probe.pop("visual_mask") if targets is not None else visual_mask
        from vlmbench.modeling.vlm import _decoder_layers

        attention = last_token_attention(
            model.llm, _decoder_layers(model.llm), op.layer or 1,
            inputs_embeds=probe["inputs_embeds"], attention_mask=probe["attention_mask"], position_ids=probe["position_ids"],
        )
        keep = visual_mask.clone()
        for row in range(attention.shape[0]):
            scores = attention[row][probe_mask[row]]
            kept = _keep_per_image(scores, [v.shape[0] for v in images_of(visual[row])], op.value)
            columns = visual_mask[row].nonzero().squeeze(-1)
            keep[row, columns] = kept.to(keep.device)
        pruned = _drop_columns(inputs, ~visual_mask | keep)
        return pruned, [int(n) for n in keep.sum(-1).tolist()]


def configure(model: VLM, spec: CompressionSpec, seed: int = 0) -> OwnCompression | None:
    """Check that `model` can take `spec`, apply its budgets; the object `model` keeps (None: no spec)."""
    if not spec:
        return None
    name = getattr(model.config, "name", None) or "this model"
    projector_kind = model.config.projector.kind
    side = model.config.vision.image_size
    gridded = model.projector.token_grid(model.vision.grid(side, side)) is not None
    for op in spec.token_ops:
        if op.name == "pool" and not gridded:
            raise UserError(
                f"--visual-tokens {op.text}: {name}'s {projector_kind} projector outputs learned queries with no "
                "2-D grid to pool; use tome:R or random:R for it"
            )
        if op.name == "prune-attn":
            if model.config.vision.kind != "vit" or not model.config.vision.use_cls:
                raise UserError(
                    f"--visual-tokens {op.text}: {name}'s vision encoder has no CLS token to rank tokens by; "
                    "give an LLM layer, e.g. prune-attn:R@2"
                )
            if not gridded:
                raise UserError(
                    f"--visual-tokens {op.text}: {name}'s {projector_kind} queries do not map to image patches, so "
                    "CLS attention cannot rank them; use tome:R or random:R"
                )
    llm_op = spec.llm_op
    if llm_op is not None:
        if model.config.cross_attention_every:
            raise UserError(
                f"--visual-tokens {llm_op.text}: {name} reads images through cross-attention layers, not the LLM's "
                "token sequence, so there is no attention to visual tokens at an LLM layer; use tome:R or random:R"
            )
        layers = model.llm.config.num_hidden_layers
        if (llm_op.layer or 0) > layers:
            raise UserError(f"--visual-tokens {llm_op.text}: {name}'s LLM has {layers} layers; give L from 1 to {layers}")
    if any(op.name in ("max-tiles", "max-pixels") for op in spec.image_ops):
        from vlmbench.modeling.resolution import build_resolution

        budget = budget_resolution(model.config.resolution, spec, name)
        model.resolution = build_resolution(budget, image_mean=model.vision.config.image_mean)
    return OwnCompression(spec, seed)


def _scores_on_grid(scores: torch.Tensor, patch_grid: Grid, token_grid: Grid) -> torch.Tensor:
    """Patch scores (rows*cols,) → one score per token of the projector's grid (window means)."""
    rows, cols = patch_grid
    if (rows, cols) == token_grid:
        return scores.float()
    pooled = F.adaptive_avg_pool2d(scores.float().view(1, 1, rows, cols), token_grid)
    return pooled.flatten()


def _keep_per_image(scores: torch.Tensor, lengths: list[int], ratio: float) -> torch.Tensor:
    """Bool mask over a row's visual tokens: each image keeps its `kept_count` best-scored tokens."""
    keep = torch.zeros(scores.shape[0], dtype=torch.bool)
    start = 0
    for n in lengths:
        index = ops.top_indices(scores[start : start + n].cpu(), kept_count(n, ratio))
        keep[start + index] = True
        start += n
    return keep


def _drop_columns(inputs: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each row's kept real positions, left-padded again; position ids travel with their tokens."""
    keep = keep & (inputs["attention_mask"] == 1)
    lengths = keep.sum(-1)
    width = int(lengths.max())
    out: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        fill = -100 if key == "labels" else 0
        shape = (value.shape[0], width, *value.shape[2:])
        out[key] = value.new_full(shape, fill)
    for row in range(keep.shape[0]):
        n = int(lengths[row])
        for key, value in inputs.items():
            out[key][row, width - n :] = value[row][keep[row]]
    return out


__all__ = ["OwnCompression", "configure"]
