"""Questions about one scene (colour, count, position, existence) with their answers and plausible wrong
answers; shared by the VQAv2 set, the instruction data and the preference pairs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from vlmbench.data.synth.scenes.captions import group_by_category, with_article
from vlmbench.data.synth.scenes.vocabulary import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLORS,
    GROUPS,
    Category,
    Scene,
)


@dataclass(frozen=True)
class SceneQA:
    kind: str  # color / count / position / exists
    question: str
    answer: str
    wrong: tuple[str, ...]  # plausible wrong answers, for annotator noise and preference pairs


def absent_negative(scene: Scene, rng: np.random.Generator, adversarial: bool) -> Category | None:
    """An absent category: with `adversarial`, one from the scene's group (a co-occurring one) when any is absent."""
    present = {o.category.id for o in scene.objects}
    absent = [c for c in CATEGORIES if c.id not in present]
    if adversarial:
        same_group = [c for c in absent if c.name in GROUPS[scene.group]]
        if same_group:
            absent = same_group
    return absent[int(rng.integers(len(absent)))] if absent else None


def exists_question(category: Category) -> str:
    return f"Is there {with_article(category.name)} in the image?"


def scene_questions(scene: Scene, rng: np.random.Generator) -> dict[str, list[SceneQA]]:
    """Candidate questions per kind about one scene; only unambiguous ones (colour/position of a unique object)."""
    counts = Counter(o.category.id for o in scene.objects)
    unique = [o for o in scene.objects if counts[o.category.id] == 1]
    out: dict[str, list[SceneQA]] = {"color": [], "count": [], "position": [], "exists": []}
    for obj in unique:
        others = tuple(c for c in COLORS if c != obj.color)
        out["color"].append(SceneQA("color", f"What color is the {obj.category.name}?", obj.color, others))
        if obj.position != "center":
            other = "right" if obj.position == "left" else "left"
            out["position"].append(
                SceneQA(
                    "position",
                    f"Is the {obj.category.name} on the left or the right?",
                    obj.position,
                    (other,),
                )
            )
    for category, colors in group_by_category(scene.objects):
        count = len(colors)
        wrong = tuple(str(k) for k in (count - 1, count + 1) if k >= 1)
        out["count"].append(SceneQA("count", f"How many {category.plural} are there?", str(count), wrong))
    present = [CATEGORY_BY_NAME[name] for name in scene.category_names]
    yes = present[int(rng.integers(len(present)))]
    out["exists"].append(SceneQA("exists", exists_question(yes), "yes", ("no",)))
    negative = absent_negative(scene, rng, adversarial=bool(rng.random() < 0.5))
    if negative is not None:
        out["exists"].append(SceneQA("exists", exists_question(negative), "no", ("yes",)))
    return out
