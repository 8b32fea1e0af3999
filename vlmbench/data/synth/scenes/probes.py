"""Attribute, relation and count probes over synthetic scenes: POPE-style balanced yes/no questions.

Per scene and probe type one target is drawn; for each of the three negative-sampling regimes it is
asked once as a true statement ("yes") and once as a false one ("no"), so every type and regime is
balanced. Only unambiguous questions are asked:

* colour -- the object's category occurs once in the scene: "Is the cup red?";
* position -- two objects whose categories occur once each and whose boxes do not overlap
  horizontally (a gap of at least `_MIN_GAP` px): "Is the dog to the left of the car?";
* count -- every instance of a category is drawn without overlap: "Are there exactly two cats in the
  image?" (counts 1-5).

The false statement of each regime (the analogues of POPE's random / popular / adversarial negatives):

| type | random | popular | adversarial |
|---|---|---|---|
| colour | any other palette colour | the category's most frequent other colour in the set | the colour of another object in the scene |
| position | a false statement about a random eligible pair | same pair, relation word flipped | same pair and words, objects swapped |
| count | any other count in 1-5 | the set's most frequent other count | off by one |

When a regime has no candidate (a stop sign has one colour; a scene without another colour) the next
weaker rule is used (adversarial -> popular -> random) and the row's ``fallback`` is true. Ties of the
"most frequent" rules break by name / value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.scenes.captions import NUMBER_WORDS
from vlmbench.data.synth.scenes.glyphs import draw_scene
from vlmbench.data.synth.scenes.sampling import STREAM_PROBES, rng_for, sample_scenes
from vlmbench.data.synth.scenes.vocabulary import COLORS, DEFAULT_IMAGE_SIZE, Scene, SceneObject

REGIMES: tuple[str, ...] = ("random", "popular", "adversarial")
_MIN_GAP = 2  # px between the boxes of a left/right pair
_MAX_COUNT = 5
Statement = tuple[str, str, str]  # (subject category, "left" | "right", object category)


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _unique(scene: Scene) -> list[SceneObject]:
    counts = Counter(o.category.id for o in scene.objects)
    return [o for o in scene.objects if counts[o.category.id] == 1]


def _most_frequent(counter: Counter[Any], exclude: Any) -> Any | None:
    ranked = sorted((k for k in counter if k != exclude), key=lambda k: (-counter[k], str(k)))
    return ranked[0] if ranked else None


def color_question(name: str, color: str) -> str:
    return f"Is the {name} {color}?"


def position_question(statement: Statement) -> str:
    subject, side, other = statement
    return f"Is the {subject} to the {side} of the {other}?"


def count_question(name: str, plural: str, count: int) -> str:
    if count == 1:
        return f"Is there exactly one {name} in the image?"
    return f"Are there exactly {NUMBER_WORDS[count]} {plural} in the image?"


def _color_negative(
    regime: str, target: SceneObject, scene: Scene, prior: Counter[str], rng: np.random.Generator
) -> tuple[str, bool]:
    """(false colour, fallback used) for one regime."""
    if regime == "adversarial":
        others = sorted({o.color for o in scene.objects if o is not target and o.color != target.color})
        if others:
            return _pick(rng, others), False
    if regime in ("adversarial", "popular"):
        popular = _most_frequent(prior, target.color)
        if popular is not None:
            return popular, regime == "adversarial"
    return _pick(rng, [c for c in COLORS if c != target.color]), regime != "random"


def _left_pairs(scene: Scene) -> list[tuple[SceneObject, SceneObject]]:
    """Ordered pairs (a, b) of unique-category objects with a entirely left of b."""
    unique = _unique(scene)
    return [
        (a, b) for a in unique for b in unique if a is not b and a.bbox[0] + a.bbox[2] + _MIN_GAP <= b.bbox[0]
    ]


def _statement(pair: tuple[SceneObject, SceneObject], true: bool, rng: np.random.Generator) -> Statement:
    """A true (or false) left/right statement about the pair (a left of b), in either word order."""
    a, b = pair
    first, second = ("left", "right") if true else ("right", "left")
    if rng.random() < 0.5:
        return (a.category.name, first, b.category.name)
    return (b.category.name, second, a.category.name)


def _position_negative(
    regime: str,
    positive: Statement,
    pairs: Sequence[tuple[SceneObject, SceneObject]],
    rng: np.random.Generator,
) -> Statement:
    subject, side, other = positive
    if regime == "popular":
        return (subject, "right" if side == "left" else "left", other)
    if regime == "adversarial":
        return (other, side, subject)
    return _statement(_pick(rng, pairs), False, rng)


def _count_negative(
    regime: str, count: int, prior: Counter[int], rng: np.random.Generator
) -> tuple[int, bool]:
    if regime == "adversarial":
        options = [k for k in (count - 1, count + 1) if 1 <= k <= _MAX_COUNT]
        return _pick(rng, options), False
    if regime == "popular":
        popular = _most_frequent(prior, count)
        if popular is not None:
            return int(popular), False
    return _pick(rng, [k for k in range(1, _MAX_COUNT + 1) if k != count]), regime != "random"


def probe_rows(scenes: Sequence[Scene], rng: np.random.Generator) -> list[dict[str, Any]]:
    """The probe questions over ``scenes`` without images: rows {image_id, probe_type, category (the
    regime), question, answer, fallback}, in output order (scene, type, regime, yes then no)."""
    color_prior: dict[str, Counter[str]] = {}
    count_prior: Counter[int] = Counter()
    for scene in scenes:
        for obj in scene.objects:
            color_prior.setdefault(obj.category.name, Counter())[obj.color] += 1
        count_prior.update(Counter(o.category.id for o in scene.objects).values())
    rows: list[dict[str, Any]] = []

    def emit(scene: Scene, probe: str, regime: str, yes: str, no: str, fallback: bool) -> None:
        for answer, question in (("yes", yes), ("no", no)):
            rows.append({"image_id": scene.image_id, "probe_type": probe, "category": regime,
                         "question": question, "answer": answer, "fallback": fallback})  # fmt: skip

    for scene in scenes:
        unique = _unique(scene)
        if unique:
            target = _pick(rng, unique)
            name = target.category.name
            for regime in REGIMES:
                color, fallback = _color_negative(regime, target, scene, color_prior[name], rng)
                emit(
                    scene,
                    "color",
                    regime,
                    color_question(name, target.color),
                    color_question(name, color),
                    fallback,
                )
        pairs = _left_pairs(scene)
        if pairs:
            positive = _statement(_pick(rng, pairs), True, rng)
            for regime in REGIMES:
                negative = _position_negative(regime, positive, pairs, rng)
                emit(
                    scene, "position", regime, position_question(positive), position_question(negative), False
                )
        counts = Counter(o.category.id for o in scene.objects)
        category = _pick(rng, [o.category for o in scene.objects])  # weighted by instances: more counts > 1
        count = counts[category.id]
        for regime in REGIMES:
            wrong, fallback = _count_negative(regime, count, count_prior, rng)
            emit(
                scene, "count", regime,
                count_question(category.name, category.plural, count),
                count_question(category.name, category.plural, wrong), fallback,
            )  # fmt: skip
    return rows


def generate_probes(out: Path, seed: int, n: int) -> Path:
    """The probe set over `n` scenes (>= 3 categories each): up to 18 questions per image."""
    scenes = sample_scenes(seed, n, min_categories=3, stream=STREAM_PROBES)
    rows = probe_rows(scenes, rng_for(seed, 100 + STREAM_PROBES))
    images = {scene.image_id: png_bytes(draw_scene(scene)) for scene in scenes}
    release = [
        {
            "question_id": f"{row['image_id']}.{row['probe_type']}.{row['category']}.{row['answer']}",
            "question": row["question"],
            "answer": row["answer"],
            "category": row["category"],
            "probe_type": row["probe_type"],
            "fallback": row["fallback"],
            "image_id": row["image_id"],
            "image": images[row["image_id"]],
        }
        for row in rows
    ]
    meta = {
        "scene_generator": "vlmbench.data.synth.scenes",
        "image_size": list(DEFAULT_IMAGE_SIZE),
        "n_images": n,
    }
    return write_release(
        Path(out), release, task="probes", generator="synth-scenes-probes", seed=seed, extra_meta=meta
    )
