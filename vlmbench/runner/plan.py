"""Deterministic batching and sharding.

Batches are formed over the WHOLE task before sharding — samples sorted by shape (encoder
inputs, prompt length) so little padding is wasted, then cut into fixed batches — and whole
batches are dealt to ranks round-robin. A batch therefore has the same members whatever the
number of processes, and so gives bit-identical outputs: results do not depend on the shard count.

With prefix sharing (`make_image_batches`) the unit is an image group — every sample of the task
with the same image(s), e.g. POPE's 18 questions about one photo across its three splits — so one
prefill of the image prefix serves the whole group: groups are sorted by shape and packed whole
into batches where they fit; a group larger than a batch fills consecutive batches.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Batch:
    index: int
    question_ids: tuple[str, ...]


def image_size_of(sample: Any) -> tuple[int, int] | None:
    """(W, H) read from the image header only (no decoding); None when unreadable."""
    try:
        if sample.image_bytes is not None:
            with Image.open(io.BytesIO(sample.image_bytes)) as img:
                return img.size
        if sample.image_path:
            with Image.open(sample.image_path) as img:
                return img.size
    except Exception:  # noqa: BLE001 - unreadable images are reported per sample later
        return None
    return None


def make_batches(
    samples: Sequence[Any],
    batch_size: int,
    shape_key: Callable[[Any], tuple[int, ...]],
) -> list[Batch]:
    """Sort by (shape, first appearance of the image, original position) and chunk.

    Keeping an image's questions adjacent makes the per-image feature cache hit (for a multi-image
    sample, its first image decides; the others are cached under their own keys all the same)."""
    first_seen: dict[str, int] = {}
    for position, sample in enumerate(samples):
        first_seen.setdefault(sample.image_key, position)
    order = sorted(
        range(len(samples)),
        key=lambda i: (*shape_key(samples[i]), first_seen[samples[i].image_key], i),
    )
    batches = []
    for start in range(0, len(order), batch_size):
        ids = tuple(samples[i].question_id for i in order[start : start + batch_size])
        batches.append(Batch(index=len(batches), question_ids=ids))
    return batches


def make_image_batches(
    samples: Sequence[Any],
    batch_size: int,
    shape_key: Callable[[Any], tuple[int, ...]],
) -> list[Batch]:
    """Batches of whole image groups (samples with the same `image_keys`), deterministically.

    Groups are ordered by (shape of their first sample, first appearance); a group that does not fit
    in the current batch's remaining room starts a new batch, unless it is larger than a batch: then
    it fills the current batch and the next ones (the prefix LRU serves its later batches)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for position, sample in enumerate(samples):
        groups.setdefault(tuple(sample.image_keys), []).append(position)
    ordered = sorted(groups.values(), key=lambda members: (*shape_key(samples[members[0]]), members[0]))
    batches: list[Batch] = []
    current: list[int] = []

    def close() -> None:
        if current:
            batches.append(
                Batch(index=len(batches), question_ids=tuple(samples[i].question_id for i in current))
            )
            current.clear()

    for members in ordered:
        if len(current) + len(members) > batch_size and len(members) <= batch_size:
            close()
        for position in members:
            current.append(position)
            if len(current) == batch_size:
                close()
    close()
    return batches


def batches_for_rank(batches: Sequence[Batch], rank: int, world_size: int) -> list[Batch]:
    return [batch for batch in batches if batch.index % world_size == rank]
