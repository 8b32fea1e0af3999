"""The caption grammar: counted, coloured object phrases, listing captions and position captions."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from vlmbench.data.synth.scenes.vocabulary import Category, Scene, SceneObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_POSITION_PHRASE = MappingProxyType(
    {"left": "on the left", "center": "in the center", "right": "on the right"}
)


def with_article(phrase: str) -> str:
    """'a red cup', 'an apple', 'an umbrella' (by the first letter, as POPE's template does)."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def join_phrases(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _counted_phrase(category: Category, colors: Sequence[str]) -> str:
    """'a red cup', 'two brown dogs', 'three cups' (colour only when all of them share it)."""
    count = len(colors)
    color = colors[0] + " " if len(set(colors)) == 1 else ""
    if count == 1:
        return with_article(color + category.name)
    return f"{NUMBER_WORDS[count]} {color}{category.plural}"


def group_by_category(objects: Sequence[SceneObject]) -> list[tuple[Category, list[str]]]:
    """Objects grouped by category in left-to-right order of first appearance, with their colours."""
    groups: dict[int, tuple[Category, list[str]]] = {}
    for obj in objects:
        groups.setdefault(obj.category.id, (obj.category, []))[1].append(obj.color)
    return list(groups.values())


def object_phrases(objects: Sequence[SceneObject]) -> list[str]:
    return [_counted_phrase(category, colors) for category, colors in group_by_category(objects)]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


_LIST_PREFIXES = ("A picture of {}.", "An image with {}.", "A simple scene with {}.", "This image shows {}.")


def listing_caption(phrases: Sequence[str], rng: np.random.Generator) -> str:
    template = _LIST_PREFIXES[int(rng.integers(len(_LIST_PREFIXES)))]
    return template.format(join_phrases(phrases))


def position_caption(objects: Sequence[SceneObject]) -> str:
    """'A red cup on the left, two brown dogs in the center and a blue umbrella on the right.'"""
    parts = []
    for position in ("left", "center", "right"):
        here = [o for o in objects if o.position == position]
        if here:
            parts.append(f"{join_phrases(object_phrases(here))} {_POSITION_PHRASE[position]}")
    return _capitalise(join_phrases(parts)) + "."


def scene_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """One or two reference captions that mention every object (with counts, colours, positions)."""
    captions = [listing_caption(object_phrases(scene.objects), rng)]
    if rng.random() < 0.75:
        captions.append(position_caption(scene.objects))
    return captions
