"""Training data over synthetic scenes (LLaVA formats): alignment captions, instructions, existence,
attribute/relation/count and grounding questions, preference pairs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vlmbench.data.synth.scenes.captions import join_phrases, listing_caption, object_phrases, with_article
from vlmbench.data.synth.scenes.coco import render_into, write_json
from vlmbench.data.synth.scenes.probes import probe_rows
from vlmbench.data.synth.scenes.questions import absent_negative, exists_question, scene_questions
from vlmbench.data.synth.scenes.refexp import expression, referable
from vlmbench.data.synth.scenes.sampling import (
    STREAM_ATTRIBUTES,
    STREAM_CAPTIONS,
    STREAM_EXISTENCE,
    STREAM_GROUNDING,
    STREAM_INSTRUCTIONS,
    STREAM_PREFERENCE,
    rng_for,
    sample_scenes,
)
from vlmbench.data.synth.scenes.vocabulary import CATEGORIES, CATEGORY_BY_NAME, Scene
from vlmbench.errors import UserError
from vlmbench.modeling.location_tokens import box_to_location_text

if TYPE_CHECKING:
    import numpy as np

_CAPTION_PROMPTS = (
    "Describe this image briefly.",
    "Give a short description of the image.",
    "What is in this picture?",
    "Summarize the visual content of the image.",
    "Write a brief caption for this image.",
)


def _turns(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """LLaVA conversation turns; the first human turn carries the `<image>` placeholder."""
    turns = []
    for i, (question, answer) in enumerate(pairs):
        turns.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def generate_training_captions(out: Path, seed: int, n: int) -> Path:
    """Alignment data: `n` scenes, one LLaVA record per (image, reference caption) in `out/captions.json`."""
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=STREAM_CAPTIONS)
    rng = rng_for(seed, 100 + STREAM_CAPTIONS)
    captions = render_into(out, scenes, seed, rng)
    records = []
    for scene, texts in zip(scenes, captions, strict=True):
        for k, text in enumerate(texts):
            prompt = _CAPTION_PROMPTS[int(rng.integers(len(_CAPTION_PROMPTS)))]
            records.append(
                {
                    "id": f"{scene.image_id:06d}-cap{k}",
                    "image": f"images/{scene.file_name}",
                    "conversations": _turns([(prompt, text)]),
                }
            )
    path = out / "captions.json"
    write_json(path, records)
    return path


def generate_instructions(out: Path, seed: int, n: int) -> Path:
    """Instruction-tuning data over `n` scenes in `out/instructions.json` (LLaVA conversation format).

    Per image: a captioning record, and a multi-turn QA record with balanced yes/no existence questions
    (as many "no" as "yes"; negatives alternate between random and co-occurring absent categories) and
    colour/count/position questions. Answers are short ("yes", "red", "2", "left").
    """
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=STREAM_INSTRUCTIONS)
    rng = rng_for(seed, 100 + STREAM_INSTRUCTIONS)
    captions = render_into(out, scenes, seed, rng)
    records = []
    adversarial = False
    for scene, texts in zip(scenes, captions, strict=True):
        image = f"images/{scene.file_name}"
        prompt = _CAPTION_PROMPTS[int(rng.integers(len(_CAPTION_PROMPTS)))]
        caption = texts[int(rng.integers(len(texts)))]
        records.append(
            {"id": f"{scene.image_id:06d}-cap", "image": image, "conversations": _turns([(prompt, caption)])}
        )
        present = scene.category_names
        n_yes = min(2, len(present))
        pairs: list[tuple[str, str]] = []
        for idx in rng.permutation(len(present))[:n_yes]:
            pairs.append((exists_question(CATEGORY_BY_NAME[present[int(idx)]]), "yes"))
        asked: set[int] = set()
        for _ in range(n_yes):
            negative = absent_negative(scene, rng, adversarial=adversarial)
            adversarial = not adversarial
            if negative is None or negative.id in asked:
                continue
            asked.add(negative.id)
            pairs.append((exists_question(negative), "no"))
        candidates = scene_questions(scene, rng)
        for kind in ("color", "count", "position"):
            if candidates[kind]:
                qa = candidates[kind][int(rng.integers(len(candidates[kind])))]
                pairs.append((qa.question, qa.answer))
        pairs = [pairs[int(i)] for i in rng.permutation(len(pairs))]
        records.append({"id": f"{scene.image_id:06d}-qa", "image": image, "conversations": _turns(pairs)})
    path = out / "instructions.json"
    write_json(path, records)
    return path


def generate_existence_questions(out: Path, seed: int, n: int) -> Path:
    """Existence QA over `n` scenes in `out/existence.json`: per image one record asking about every
    present category ("yes") and as many absent ones ("no"), the negatives cycling through POPE's three
    sampling rules (a random absent category, a frequent one, one that co-occurs with the scene's
    group), in random order. Dense and balanced: every question is answerable only from the image, and
    with `branches` each one becomes its own evaluation-shaped prompt."""
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=STREAM_EXISTENCE)
    rng = rng_for(seed, 100 + STREAM_EXISTENCE)
    render_into(out, scenes, seed, rng)
    frequency = Counter(name for scene in scenes for name in set(scene.category_names))
    records = []
    for scene in scenes:
        present = sorted(set(scene.category_names))
        absent = [c for c in CATEGORIES if c.name not in present]
        negatives: list[str] = []
        for k in range(len(present)):
            pool = [c.name for c in absent if c.name not in negatives]
            if not pool:
                break
            if k % 3 == 1:  # popular: the most frequent absent category of the set
                pick = max(pool, key=lambda name: (frequency[name], name))
            else:
                negative = absent_negative(scene, rng, adversarial=k % 3 == 2)
                pick = negative.name if negative is not None and negative.name in pool else pool[int(rng.integers(len(pool)))]
            negatives.append(pick)
        pairs = [(exists_question(CATEGORY_BY_NAME[name]), "yes") for name in present[: len(negatives)]]
        pairs += [(exists_question(CATEGORY_BY_NAME[name]), "no") for name in negatives]
        pairs = [pairs[int(i)] for i in rng.permutation(len(pairs))]
        records.append({"id": f"{scene.image_id:06d}-exists", "image": f"images/{scene.file_name}",
                        "conversations": _turns(pairs)})
    path = out / "existence.json"
    write_json(path, records)
    return path


def generate_attribute_questions(out: Path, seed: int, n: int) -> Path:
    """Attribute, relation and count QA over `n` scenes in `out/attributes.json`: per image one record
    with the probe task's questions (colour, left/right, count; yes and no for each of the random,
    popular and adversarial negative rules — `scenes/probes.py`), in random order. Its own stream and
    the recipe's seed keep it apart from every evaluation set."""
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=STREAM_ATTRIBUTES)
    rng = rng_for(seed, 100 + STREAM_ATTRIBUTES)
    render_into(out, scenes, seed, rng)
    by_image: dict[int, list[tuple[str, str]]] = {}
    for row in probe_rows(scenes, rng):
        by_image.setdefault(row["image_id"], []).append((row["question"], row["answer"]))
    return _write_qa_set(out, "attributes", scenes, lambda scene: by_image.get(scene.image_id, []), rng)


GROUNDING_QUESTION = "Give the bounding box of {expression} as [x1, y1, x2, y2] in pixels."
"""The grounding task's prompt (tasks/grounding.yaml), so a trained answer has the evaluated form."""


def box_answer(bbox: Sequence[float]) -> str:
    """A COCO [x, y, w, h] box as the "[x1, y1, x2, y2]" pixel answer the grounding task parses."""
    x, y, w, h = bbox
    return f"[{round(x)}, {round(y)}, {round(x + w)}, {round(y + h)}]"


def generate_grounding_questions(out: Path, seed: int, n: int, location_levels: int | None = None) -> Path:
    """Referring-expression grounding over `n` scenes in `out/grounding.json`: per image one record
    asking for the box of every object whose colour + category is unique in the scene ("the red
    cup"), answered as `[x1, y1, x2, y2]` in pixels, or with `location_levels` as PaliGemma's four
    location tokens on that many levels per side (the scenes and questions are the same either way)."""
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=STREAM_GROUNDING)
    rng = rng_for(seed, 100 + STREAM_GROUNDING)
    render_into(out, scenes, seed, rng)

    def answer_of(bbox: Sequence[float], scene: Scene) -> str:
        if location_levels is None:
            return box_answer(bbox)
        return box_to_location_text(bbox, scene.width, scene.height, location_levels)

    def pairs_of(scene: Scene) -> list[tuple[str, str]]:
        return [
            (GROUNDING_QUESTION.format(expression=expression(obj)), answer_of(obj.bbox, scene))
            for obj in referable(scene)
        ]

    return _write_qa_set(out, "grounding", scenes, pairs_of, rng)


def _write_qa_set(
    out: Path,
    name: str,
    scenes: Sequence[Scene],
    pairs_of: Callable[[Scene], list[tuple[str, str]]],
    rng: np.random.Generator,
) -> Path:
    """`out/<name>.json`: per scene with any question, one record of its (question, answer) pairs in
    random order (scenes without a question are left out)."""
    records = []
    for scene in scenes:
        pairs = pairs_of(scene)
        if not pairs:
            continue
        pairs = [pairs[int(i)] for i in rng.permutation(len(pairs))]
        records.append({"id": f"{scene.image_id:06d}-{name}", "image": f"images/{scene.file_name}",
                        "conversations": _turns(pairs)})  # fmt: skip
    path = out / f"{name}.json"
    write_json(path, records)
    return path


# Share of existence pairs that prefer "no" when no `yes_share` is given: what the shipped bases were
# trained on (DPO on them pushes answers towards "no"; docs/training.md, "Preference balance").
_DEFAULT_NO_SHARE = 2 / 3


def generate_preference_pairs(out: Path, seed: int, n: int, yes_share: float | None = None) -> Path:
    """`n` preference pairs over `n` scenes in `out/preferences.json`: {image, prompt, chosen, rejected}.

    Half are captions whose rejected side mentions an extra absent object (preferably one that co-occurs
    with the scene's objects); half are yes/no existence questions whose rejected answer is flipped
    (by default two thirds about an absent co-occurring object, the hallucination case, chosen "no").
    `yes_share` sets the share of existence pairs whose chosen answer is "yes" instead (a scene with no
    absent category to ask about always gets a "yes" pair, so the share can come out slightly above it).
    Without it the output is byte-identical to what the shipped base checkpoints were trained on: the
    same random draws in the same order.
    """
    if yes_share is not None and not 0.0 <= yes_share <= 1.0:
        raise UserError(
            f"yes_share must lie in [0, 1] (the share of existence pairs preferring 'yes'), got {yes_share}"
        )
    no_share = _DEFAULT_NO_SHARE if yes_share is None else 1.0 - yes_share
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=STREAM_PREFERENCE)
    rng = rng_for(seed, 100 + STREAM_PREFERENCE)
    render_into(out, scenes, seed, rng)
    records = []
    for scene in scenes:
        image = f"images/{scene.file_name}"
        negative = absent_negative(scene, rng, adversarial=True)
        if rng.random() < 0.5 and negative is not None:
            phrases = object_phrases(scene.objects)
            chosen = listing_caption(phrases, rng)
            injected = with_article(
                f"{negative.colors[int(rng.integers(len(negative.colors)))]} {negative.name}"
            )
            position = int(rng.integers(len(phrases) + 1))
            # Same wording as the chosen caption except for the injected object.
            rejected = chosen.replace(
                join_phrases(phrases), join_phrases([*phrases[:position], injected, *phrases[position:]])
            )
            prompt = _CAPTION_PROMPTS[int(rng.integers(len(_CAPTION_PROMPTS)))]
        else:
            if negative is not None and rng.random() < no_share:
                prompt, chosen, rejected = exists_question(negative), "no", "yes"
            else:
                present = scene.category_names
                category = CATEGORY_BY_NAME[present[int(rng.integers(len(present)))]]
                prompt, chosen, rejected = exists_question(category), "yes", "no"
        records.append(
            {"image": image, "prompt": "<image>\n" + prompt, "chosen": chosen, "rejected": rejected}
        )
    path = out / "preferences.json"
    write_json(path, records)
    return path
