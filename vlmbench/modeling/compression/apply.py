"""The runner's side of `--visual-tokens`: hand the spec to a loaded model, summarise what came back.

The runner never looks behind the model interface: a backend that takes compression implements
`VisualTokenCompression` (interface.py); any other backend given a spec is refused before any
prediction is made."""

from __future__ import annotations

from typing import Any

from vlmbench.errors import UserError
from vlmbench.modeling.compression.spec import parse_spec
from vlmbench.modeling.interface import VisualTokenCompression, protocol_mismatches


def apply_visual_tokens(model: Any, text: str | None, seed: int) -> str | None:
    """Configure `model` for the spec `text` (UserError when it cannot take it); the canonical spec, or None."""
    spec = parse_spec(text)
    if not spec:
        return None
    if not isinstance(model, VisualTokenCompression) or protocol_mismatches(model, VisualTokenCompression):
        raise UserError(
            f"--visual-tokens {spec.text}: this model backend ({type(model).__name__}) does not implement visual-token "
            "compression; run it without --visual-tokens"
        )
    model.set_visual_tokens(spec, seed=seed)
    return spec.text


def call_stats(model: Any, n: int) -> list[dict[str, Any]]:
    """Per prompt of the model's last call: `llm_visual_tokens` and `prefill_s` ({} each when it reports none)."""
    stats = getattr(model, "last_call", None)
    rows = stats.per_sample() if stats is not None else []
    return rows if len(rows) == n else [{} for _ in range(n)]


def compression_record(spec: str | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json's per-task `compression`: the spec, and the means over answered samples of the
    visual tokens the LLM saw and of the prefill time (None where the model reported none)."""
    tokens = [r["llm_visual_tokens"] for r in rows if not r.get("error") and r.get("llm_visual_tokens") is not None]
    prefill = [r["prefill_s"] for r in rows if not r.get("error") and r.get("prefill_s") is not None]
    return {
        "visual_tokens": spec or "none",
        "llm_visual_tokens_mean": round(sum(tokens) / len(tokens), 2) if tokens else None,
        "prefill_ms_mean": round(1000 * sum(prefill) / len(prefill), 3) if prefill else None,
        "samples_measured": len(prefill),
    }


__all__ = ["apply_visual_tokens", "call_stats", "compression_record", "parse_spec"]
