"""Location alignment: the location tokens' twin of the word-alignment term.

Word alignment pulls a visual token showing a dog towards the LLM's embedding of " dog". Location
alignment does the same for where a token looks: every token with a known region
(`modeling.token_layout`: the tokens of a whole-image input) is read through two linear maps, one per
axis, and scored against the LLM's embeddings of the location tokens; the target is the token's
region, spread evenly over the location levels it covers. The gradient makes the visual tokens carry
their position in a form that the location tokens' embeddings (tied to the LM head) can read, and
orders those embeddings along each axis, so that answering with a box becomes reading the position
off the tokens of the object the question names. The two maps are discarded after the stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmbench.modeling.location_tokens import location_bins, location_token
from vlmbench.modeling.token_layout import token_layout


class LocationAlignmentHead(nn.Module):
    """Scores each laid-out visual token against the location tokens along x and along y."""

    def __init__(self, location_ids: Sequence[int], dim: int) -> None:
        super().__init__()
        self.location_ids = list(location_ids)
        self.read_x = nn.Linear(dim, dim, bias=False)
        self.read_y = nn.Linear(dim, dim, bias=False)

    def forward(self, model: nn.Module, images: Sequence[Any], visual: Sequence[Any]) -> torch.Tensor | None:
        """Mean KL divergence from the region targets over the laid-out tokens of each distinct image (a branch of an
        image already scored is skipped); None when no image in the batch has laid-out tokens."""
        embed = model.llm.get_input_embeddings().weight
        locations = embed[torch.tensor(self.location_ids, device=embed.device)].float()  # (L, D)
        levels = locations.shape[0]
        centres = (torch.arange(levels, device=embed.device, dtype=torch.float32) + 0.5) / levels
        seen: set[int] = set()
        losses = []
        for image, tokens in zip(images, visual, strict=True):
            plan = getattr(image, "plan", None)
            if plan is None or id(image) in seen:  # several images per sample, or a branch already scored
                continue
            seen.add(id(image))
            layout = token_layout(model, plan)
            if layout is None:
                continue
            tokens = torch.cat(list(tokens)) if not isinstance(tokens, torch.Tensor) else tokens
            picked = tokens[layout.indices.to(tokens.device)].float()
            regions = layout.regions.to(embed.device)
            for read, low, high in (
                (self.read_x, regions[:, 0], regions[:, 1]),
                (self.read_y, regions[:, 2], regions[:, 3]),
            ):
                logits = read(picked) @ locations.T / math.sqrt(locations.shape[1])  # (n, L)
                inside = (centres >= low[:, None]) & (centres < high[:, None])
                target = inside.float() / inside.sum(1, keepdim=True).clamp(min=1)
                # KL rather than cross-entropy: 0 at the target whatever the region's width
                losses.append(F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="batchmean"))
        if not losses:
            return None
        return torch.stack(losses).mean()


def location_head(model: nn.Module, tokenizer: Any, levels: int) -> LocationAlignmentHead:
    """The head for a model whose tokenizer holds the `levels` location tokens."""
    ids = tokenizer.convert_tokens_to_ids([location_token(b) for b in location_bins(levels)])
    return LocationAlignmentHead(ids, model.llm.config.hidden_size)


__all__ = ["LocationAlignmentHead", "location_head"]
