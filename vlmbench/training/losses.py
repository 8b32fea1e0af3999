"""Training losses: CLIP's softmax contrastive loss, SigLIP's pairwise sigmoid loss, and DPO.

All are pure functions of tensors (no module state), so they are easy to test on toy data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021): each image must pick its own caption among the
    batch's captions and vice versa. image_emb, text_emb (B, E); logit_scale a scalar (log temperature⁻¹)."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    logits = logit_scale.float().exp() * image_emb @ text_emb.T  # (B, B)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def siglip_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP, Zhai et al. 2023): every (image, text) pair is an independent
    binary problem, positive on the diagonal; no softmax over the batch, so no global normalisation.
    Summed over pairs and divided by the batch size, as in the paper."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    logits = logit_scale.float().exp() * image_emb @ text_emb.T + logit_bias.float()  # (B, B)
    signs = 2 * torch.eye(logits.shape[0], device=logits.device) - 1  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct Preference Optimisation (Rafailov et al. 2023) on summed answer log-probabilities (B,).

    loss = -log σ(β [(π_c − ref_c) − (π_r − ref_r)]); also returns the reward accuracy (share of
    pairs where the implicit reward prefers the chosen answer)."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(beta * margin).mean()
    accuracy = (margin > 0).float().mean()
    return loss, accuracy


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over positions whose label is not -100; logits (B, L, V) predict labels
    shifted by one, as in causal LM training. Returns (B,)."""
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    valid = target != -100
    picked = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * valid).sum(-1)


__all__ = ["clip_loss", "dpo_loss", "sequence_logprobs", "siglip_loss"]
