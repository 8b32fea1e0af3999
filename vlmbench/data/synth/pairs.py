"""Two-image questions over synthetic scenes (the `pair_compare` task): a multi-image set for the runner.

The scenes form a chain: pair k shows scenes k and k+1, so every scene except the two ends appears in
two pairs — once as the first image, once as the second — which is what the runner's per-image
feature cache must recognise. Each pair gets up to two questions:

- "Which image shows a cat, the first or the second?" about a category in exactly one of the two
  scenes (answer ``first`` / ``second``);
- "Is there a cat in both images?" about a category in both (``yes``) or in only one (``no``).

Rows follow a VQA-style release: ``question_id``, ``question``, ``answers`` (one reference),
``question_type``, ``image`` (the first image, a `datasets.Image`) and ``image_2`` (the second, PNG
bytes). Everything is drawn from a numpy generator seeded with ``(seed, PAIR_STREAM)``, so the same
seed gives byte-identical files and no image is shared with the other synthetic sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.scenes import Scene, draw_scene, sample_scene, with_article

PAIR_STREAM = 40  # apart from the scene sets' streams (scenes.sampling: 0-6): no image shared with them
QUESTION_TYPES: tuple[str, ...] = ("which_image", "in_both")


def pair_questions(first: Scene, second: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(question, answer, question type) for one pair of scenes, at most one of each type."""
    a, b = set(first.category_names), set(second.category_names)
    only = sorted(a ^ b)
    both = sorted(a & b)
    out: list[tuple[str, str, str]] = []
    asked: set[str] = set()
    if only:
        name = only[int(rng.integers(len(only)))]
        asked.add(name)
        answer = "first" if name in a else "second"
        out.append((f"Which image shows {with_article(name)}, the first or the second?", answer, "which_image"))
    ask_yes = bool(both) and (not only or rng.random() < 0.5)
    pool = both if ask_yes else ([c for c in only if c not in asked] or only)
    if pool:
        name = pool[int(rng.integers(len(pool)))]
        out.append((f"Is there {with_article(name)} in both images?", "yes" if ask_yes else "no", "in_both"))
    return out


def generate_pair_compare(out: Path, seed: int, n: int) -> Path:
    """`n` two-image questions over a chain of scenes (see the module docstring)."""
    rng = np.random.default_rng([int(seed), PAIR_STREAM])
    scenes = [sample_scene(rng, 1, min_categories=2)]
    images = [png_bytes(draw_scene(scenes[0]))]
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        scenes.append(sample_scene(rng, len(scenes) + 1, min_categories=2))
        images.append(png_bytes(draw_scene(scenes[-1])))
        pair = len(scenes) - 1
        for index, (question, answer, kind) in enumerate(pair_questions(scenes[-2], scenes[-1], rng)):
            if len(rows) >= n:
                break
            rows.append(
                {
                    "question_id": pair * 10 + index,
                    "question": question,
                    "answers": [answer],
                    "question_type": kind,
                    "image": images[-2],
                    "image_2": images[-1],
                }
            )
    return write_release(
        Path(out), rows, task="pair_compare", generator="synth-scenes-pairs", seed=seed,
        extra_meta={"scenes": len(scenes)},
    )


__all__ = ["PAIR_STREAM", "QUESTION_TYPES", "generate_pair_compare", "pair_questions"]
