"""The runner's side of prefix sharing: a byte-bounded LRU of prefix states and the work it counts.

`PrefixCache` holds the model's prefix states (`PrefixSharing.prefill`, interface.py) by the bytes
they report (`state.nbytes`), evicting the least recently used; a state bigger than the whole budget
is used for its batch and not kept. Batches hold whole image groups (runner/plan.py), so a state is
needed within its batch and, for a group that spans two consecutive batches, the next one: after each
batch the runner keeps only the states that batch used (`retain`), so memory stays flat however many
images a task has, and the byte budget bounds the rest.

`SharingStats` counts, per rank, what ran: questions answered from a prefix state and on the
unshared path (with why), prefix prefills and their tokens, suffix tokens, and the distinct prefixes
seen (for the limit: one prefill per image). `sharing_record` merges the ranks' counts into
results.json's per-task `prefix_sharing` block.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


class PrefixCache:
    """LRU of prefix states bounded by `capacity_bytes` (0 keeps nothing)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> Any | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, state: Any) -> None:
        """Keep `state` (its `nbytes`), evicting the least recently used until the budget holds."""
        size = int(state.nbytes)
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        if size > self.capacity_bytes:
            return
        self._items[key] = (state, size)
        self.bytes += size
        while self.bytes > self.capacity_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped
            self.evictions += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)


    def retain(self, keys: set[Hashable]) -> None:
        """Drop every state not in `keys` (the ones the batch just answered used): a finished image
        group is never asked about again in this pass."""
        for key in [k for k in self._items if k not in keys]:
            self.bytes -= self._items.pop(key)[1]


@dataclass
class SharingStats:
    """One rank's prefix-sharing work on one pass (plain data: gathered across ranks)."""

    shared: int = 0  # questions answered from a prefix state
    unshared: int = 0  # questions answered on the unshared path
    reasons: dict[str, int] = field(default_factory=dict)  # why, for the unshared ones
    prefix_prefills: int = 0
    prefix_tokens: int = 0  # prefix tokens prefilled (all prefills, re-prefills included)
    used_prefix_tokens: int = (
        0  # Σ over shared questions of their prefix's tokens (what unshared would prefill)
    )
    suffix_tokens: int | None = (
        0  # Σ over shared questions of their suffix tokens (None: the model cannot count)
    )
    distinct: dict[str, int] = field(default_factory=dict)  # prefix digest → its tokens
    state_bytes_max: int = 0  # the largest prefix state prefilled
    cache_bytes_peak: int = 0
    cache_evictions: int = 0

    def fell_back(self, reason: str, n: int = 1) -> None:
        self.unshared += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n


def prefix_digest(image_keys: Sequence[str], prefix: str) -> str:
    """A short stable name of one prefix (its images and its text), for counting distinct prefixes."""
    text = "\x1f".join([*image_keys, prefix])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def sharing_record(parts: Sequence[dict[str, Any]], enabled: bool) -> dict[str, Any]:
    """results.json's `prefix_sharing` for one task from every rank's `SharingStats` (as dicts).

    `prefill_tokens_per_question` is the LLM prefill work the shared questions cost: their prefixes'
    prefills plus their suffixes; `limit_tokens_per_question` what it would be with exactly one
    prefill per distinct prefix; `unshared_tokens_per_question` what the unshared path prefills."""
    shared = sum(p["shared"] for p in parts)
    unshared = sum(p["unshared"] for p in parts)
    reasons: Counter[str] = Counter()
    distinct: dict[str, int] = {}
    for p in parts:
        reasons.update(p["reasons"])
        distinct.update(p["distinct"])
    suffix = (
        None if any(p["suffix_tokens"] is None for p in parts) else sum(p["suffix_tokens"] for p in parts)
    )
    path = (
        None
        if not shared + unshared
        else ("shared" if not unshared else "unshared" if not shared else "mixed")
    )

    def per_question(total: float | None) -> float | None:
        return round(total / shared, 2) if shared and total is not None else None

    prefilled = sum(p["prefix_tokens"] for p in parts)
    return {
        "enabled": enabled,
        "path": path,
        "reason": "; ".join(f"{why} ({n} questions)" for why, n in sorted(reasons.items())) or None,
        "questions_shared": shared,
        "questions_unshared": unshared,
        "prefix_prefills": sum(p["prefix_prefills"] for p in parts),
        "distinct_prefixes": len(distinct),
        "prefill_tokens_per_question": per_question(None if suffix is None else prefilled + suffix),
        "limit_tokens_per_question": per_question(
            None if suffix is None else sum(distinct.values()) + suffix
        ),
        "unshared_tokens_per_question": per_question(
            None if suffix is None else sum(p["used_prefix_tokens"] for p in parts) + suffix
        ),
        "prefix_tokens_per_prefill": round(prefilled / max(1, sum(p["prefix_prefills"] for p in parts)), 2),
        "state_bytes_max": max((p["state_bytes_max"] for p in parts), default=0),
        "cache_bytes_peak": max((p["cache_bytes_peak"] for p in parts), default=0),
        "cache_evictions": sum(p["cache_evictions"] for p in parts),
    }


__all__ = ["PrefixCache", "SharingStats", "prefix_digest", "sharing_record"]
