"""The token operators on one image's visual tokens (see docs/compression.md for the definitions).

A `TokenSet` carries an image's tokens (M, D) with what later operators need: the 2-D grid of each
tile while the tokens still lie on one (`grids`, None once a merge or a subset loses it), the number
of original tokens each token stands for (`sizes`, ToMe's weights) and, for CLS-ranked pruning, one
attention score per token (`scores`), which every operator carries along (pooled, merged, subset)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vlmbench.modeling.compression.spec import Operator, kept_count, pooled_side

Grid = tuple[int, int]  # (rows, cols)


@dataclass(frozen=True)
class TokenSet:
    tokens: torch.Tensor  # (M, D), tiles concatenated in plan order
    grids: tuple[Grid, ...] | None  # one (rows, cols) per tile, rows*cols summing to M; None: no grid
    sizes: torch.Tensor  # (M,) original tokens per token (float)
    scores: torch.Tensor | None = None  # (M,) attention received, for prune-attn without a layer
    origin: torch.Tensor | None = None  # (M,) each token's (first) original index; None once pooled

    @classmethod
    def of(cls, tokens: torch.Tensor, grids: tuple[Grid, ...] | None, scores: torch.Tensor | None = None) -> TokenSet:
        n, device = tokens.shape[0], tokens.device
        return cls(tokens, grids, torch.ones(n, dtype=torch.float32, device=device), scores, torch.arange(n, device=device))

    def subset(self, index: torch.Tensor) -> TokenSet:
        """The tokens at `index` (ascending, so the order is kept); the grid is lost."""
        scores = None if self.scores is None else self.scores[index]
        origin = None if self.origin is None else self.origin[index]
        return TokenSet(self.tokens[index], None, self.sizes[index], scores, origin)


def pool(tokens: TokenSet, k: int) -> TokenSet:
    """K×K average pooling of every tile's token grid. A side K does not divide is padded: the windows
    on the bottom/right edge average only the tokens they cover (`ceil_mode`, no padding values)."""
    if tokens.grids is None:
        raise ValueError("pool needs tokens on a 2-D grid")
    if k == 1:
        return tokens
    pieces, sizes, scores, grids = [], [], [], []
    start = 0
    for rows, cols in tokens.grids:
        n = rows * cols
        block = tokens.tokens[start : start + n]
        pieces.append(_pool_map(block, (rows, cols), k))
        sizes.append(_pool_map(tokens.sizes[start : start + n, None], (rows, cols), k, total=True)[:, 0])
        if tokens.scores is not None:
            scores.append(_pool_map(tokens.scores[start : start + n, None].float(), (rows, cols), k)[:, 0])
        grids.append((pooled_side(rows, k), pooled_side(cols, k)))
        start += n
    return TokenSet(torch.cat(pieces), tuple(grids), torch.cat(sizes), torch.cat(scores) if scores else None, None)


def _pool_map(block: torch.Tensor, grid: Grid, k: int, total: bool = False) -> torch.Tensor:
    rows, cols = grid
    m = block.T.reshape(1, block.shape[1], rows, cols)
    dtype = m.dtype
    # sizes add (a window's sum of what it covers); features and scores are averaged
    out = F.avg_pool2d(m.float(), k, ceil_mode=True, divisor_override=1 if total else None)
    return out.to(dtype).flatten(2)[0].T


def tome(tokens: TokenSet, ratio: float) -> TokenSet:
    """ToMe's bipartite soft matching (Bolya et al. 2023) down to `kept_count(M, ratio)` tokens.

    One round splits the tokens alternately into sets A (even positions) and B (odd), links every A
    token to its most similar B token (cosine similarity of the token features), and merges the r
    A tokens with the most similar links into their B partners as size-weighted means (sizes add).
    One round removes at most |A| tokens; rounds repeat until the target is reached. The remaining
    tokens keep the order of their first original position (ToMe itself puts unmerged A before B)."""
    target = kept_count(tokens.tokens.shape[0], ratio)
    x = tokens.tokens.float()
    sizes = tokens.sizes.float()
    scores = None if tokens.scores is None else tokens.scores.float()
    # each token's first original position (rounds keep tokens sorted by it)
    order = tokens.origin if tokens.origin is not None else torch.arange(x.shape[0], device=x.device)
    while x.shape[0] > target:
        x, sizes, scores, order = _tome_round(x, sizes, scores, order, x.shape[0] - target)
    return TokenSet(x.to(tokens.tokens.dtype), None, sizes, scores, order if tokens.origin is not None else None)


def _tome_round(
    x: torch.Tensor, sizes: torch.Tensor, scores: torch.Tensor | None, order: torch.Tensor, remove: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    a, b = x[0::2], x[1::2]
    r = min(remove, a.shape[0])
    similarity = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (|A|, |B|)
    best, partner = similarity.max(dim=-1)  # first B index on ties
    ranked = torch.sort(best, descending=True, stable=True).indices  # lower A index first on ties
    merged, kept_a = ranked[:r], torch.sort(ranked[r:]).values
    sa, sb = sizes[0::2], sizes[1::2]
    target = partner[merged]
    new_sb = sb.index_add(0, target, sa[merged])
    new_b = (b * sb[:, None]).index_add(0, target, a[merged] * sa[merged, None]) / new_sb[:, None]
    new_scores = None
    if scores is not None:
        ca, cb = scores[0::2], scores[1::2]
        merged_b = (cb * sb).index_add(0, target, ca[merged] * sa[merged]) / new_sb
        new_scores = torch.cat([ca[kept_a], merged_b])
    oa, ob = order[0::2], order[1::2]
    new_order = torch.cat([oa[kept_a], ob.scatter_reduce(0, target, oa[merged], reduce="amin")])
    out = torch.cat([a[kept_a], new_b])
    sizes_out = torch.cat([sa[kept_a], new_sb])
    by_position = torch.argsort(new_order)
    scores_out = None if new_scores is None else new_scores[by_position]
    return out[by_position], sizes_out[by_position], scores_out, new_order[by_position]


def random_subset(tokens: TokenSet, ratio: float, seed: int) -> TokenSet:
    """A uniform random subset of `kept_count(M, ratio)` tokens, in their original order.

    The generator is seeded from the run seed and the tokens' own bytes, so an image gets the same
    subset whichever batch, process or cache order meets it."""
    n = tokens.tokens.shape[0]
    keep = kept_count(n, ratio)
    generator = torch.Generator().manual_seed(content_seed(tokens.tokens, seed))
    index = torch.sort(torch.randperm(n, generator=generator)[:keep]).values
    return tokens.subset(index.to(tokens.tokens.device))


def top_scored(tokens: TokenSet, ratio: float, scores: torch.Tensor | None = None) -> TokenSet:
    """The `kept_count(M, ratio)` tokens with the highest scores (ties: the earlier token), in order."""
    scores = tokens.scores if scores is None else scores
    if scores is None:
        raise ValueError("prune-attn needs an attention score per token")
    return tokens.subset(top_indices(scores, kept_count(tokens.tokens.shape[0], ratio)))


def top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores, ascending (ties go to the earlier position)."""
    ranked = torch.sort(scores.float(), descending=True, stable=True).indices
    return torch.sort(ranked[:keep]).values


def apply_operators(tokens: TokenSet, operators: Sequence[Operator], seed: int) -> TokenSet:
    """The token operators in order (prune-attn without a layer ranks by `tokens.scores`)."""
    for op in operators:
        if op.name == "pool":
            tokens = pool(tokens, int(op.value))
        elif op.name == "tome":
            tokens = tome(tokens, op.value)
        elif op.name == "random":
            tokens = random_subset(tokens, op.value, seed)
        else:
            tokens = top_scored(tokens, op.value)
    return tokens


def count_after(grids: Sequence[Grid], operators: Sequence[Operator]) -> int:
    """Tokens `apply_operators` leaves of tokens on these per-tile grids (arithmetic only)."""
    n = sum(r * c for r, c in grids)
    for op in operators:
        if op.name == "pool":
            grids = [(pooled_side(r, int(op.value)), pooled_side(c, int(op.value))) for r, c in grids]
            n = sum(r * c for r, c in grids)
        else:
            n = kept_count(n, op.value)
    return n


def content_seed(tensor: torch.Tensor, seed: int) -> int:
    """A 63-bit seed from `seed` and the tensor's bytes (its values as float32 on the CPU)."""
    digest = hashlib.sha256(str(seed).encode() + tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def with_scores(tokens: TokenSet, scores: torch.Tensor) -> TokenSet:
    return replace(tokens, scores=scores)


__all__ = ["TokenSet", "apply_operators", "content_seed", "count_after", "pool", "random_subset", "tome", "top_indices", "top_scored", "with_scores"]
