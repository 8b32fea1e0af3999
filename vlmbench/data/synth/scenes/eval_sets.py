"""The object-centric evaluation sets over synthetic scenes: POPE, CHAIR and VQAv2."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.scenes.captions import NUMBER_WORDS, scene_captions
from vlmbench.data.synth.scenes.coco import INSTANCES_FILE, render_scenes
from vlmbench.data.synth.scenes.glyphs import draw_scene
from vlmbench.data.synth.scenes.questions import SceneQA, scene_questions
from vlmbench.data.synth.scenes.sampling import (
    STREAM_CHAIR,
    STREAM_POPE,
    STREAM_VQAV2,
    rng_for,
    sample_scene,
    sample_scenes,
)
from vlmbench.data.synth.scenes.vocabulary import DEFAULT_IMAGE_SIZE


def generate_pope(out: Path, seed: int, n: int) -> Path:
    """POPE over `n` synthetic scenes (each with >= 3 categories): 18 questions per image."""
    from vlmbench.data.pope_coco import build_pope_from_coco

    with tempfile.TemporaryDirectory(prefix="vlmbench-scenes-") as tmp:
        source = render_scenes(Path(tmp), seed, n, min_categories=3, stream=STREAM_POPE)
        return build_pope_from_coco(
            source / INSTANCES_FILE,
            source / "images",
            Path(out),
            seed=seed,
            n_images=n,
            synthetic=True,
            extra_meta={
                "scene_generator": "vlmbench.data.synth.scenes",
                "image_size": list(DEFAULT_IMAGE_SIZE),
            },
        )


def generate_chair(out: Path, seed: int, n: int) -> Path:
    """CHAIR set: `n` scenes with their ground-truth objects and reference captions (prompt lives in the task YAML)."""
    scenes = sample_scenes(seed, n, stream=STREAM_CHAIR)
    caption_rng = rng_for(seed, 100 + STREAM_CHAIR)
    rows = []
    for scene in scenes:
        rows.append(
            {
                "question_id": str(scene.image_id),
                "image_id": scene.image_id,
                "image": png_bytes(draw_scene(scene)),
                "gt_objects": scene.category_names,
                "captions": scene_captions(scene, caption_rng),
            }
        )
    return write_release(Path(out), rows, task="chair", generator="synth-scenes-chair", seed=seed)


_VQA_TYPES = MappingProxyType(
    {
        "color": ("what color is the", "other"),
        "count": ("how many", "number"),
        "position": ("is the", "other"),
        "exists": ("is there a", "yes/no"),
    }
)


def _annotator_answers(qa: SceneQA, rng: np.random.Generator, noise: float = 0.12) -> list[str]:
    """Ten human-style answers: mostly the right one, a few wrong, and some counts spelled out."""
    answers = []
    for _ in range(10):
        if qa.wrong and rng.random() < noise:
            answers.append(qa.wrong[int(rng.integers(len(qa.wrong)))])
        elif qa.kind == "count" and rng.random() < 0.1:
            answers.append(NUMBER_WORDS[int(qa.answer)])  # "two": the official normalisation maps it to "2"
        else:
            answers.append(qa.answer)
    return answers


def generate_vqav2(out: Path, seed: int, n: int) -> Path:
    """`n` VQAv2-style questions (colour, count, position, yes/no existence) with ten noisy human answers each."""
    rng = rng_for(seed, STREAM_VQAV2)
    rows: list[dict[str, Any]] = []
    kinds = tuple(_VQA_TYPES)
    image_id = 0
    while len(rows) < n:
        image_id += 1
        scene = sample_scene(rng, image_id)
        image = png_bytes(draw_scene(scene))
        candidates = scene_questions(scene, rng)
        order = [kinds[i] for i in rng.permutation(len(kinds))]
        picked = 0
        for kind in order:
            pool = candidates[kind]
            if not pool or len(rows) >= n or picked >= 3:
                continue
            qa = pool[int(rng.integers(len(pool)))]
            answers = _annotator_answers(qa, rng)
            tally = Counter(answers)
            top = max(tally.values())
            mc = qa.answer if tally[qa.answer] == top else tally.most_common(1)[0][0]
            question_type, answer_type = _VQA_TYPES[kind]
            rows.append(
                {
                    "question_id": image_id * 1000 + picked,
                    "question": qa.question,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)
                    ],
                    "multiple_choice_answer": mc,
                    "image": image,
                    "image_id": image_id,
                    "question_type": question_type,
                    "answer_type": answer_type,
                }
            )
            picked += 1
    return write_release(Path(out), rows, task="vqav2", generator="synth-scenes-vqav2", seed=seed)
