"""Synthetic object scenes: COCO-style images, instances and captions, and the object-centric task sets.

Each scene is a light background with 1–5 non-overlapping objects of 16 COCO categories. Every
category has its own simple glyph (so a tiny ViT can learn it) and a small fixed colour palette; the
colour and the horizontal position (left/center/right) of every object are annotated. Sizes vary from
~7 px to ~40 px at 128×128, so small objects need resolution.

Co-occurrence is built in on purpose: the categories form four overlapping groups of six (kitchen,
street, park, living room) and a scene draws most of its objects from one group; categories in two
groups are also more frequent. POPE's adversarial negatives (the categories
that co-occur most with a present one) are therefore harder than random ones, as on real COCO.

Everything is drawn from a numpy `Generator` seeded from `(seed, stream)`, where `stream` differs per
generator: the same seed gives byte-identical outputs, and the evaluation sets and the training sets
built with the same seed do not share images.

Modules, one job each: `vocabulary` (categories, colours, groups, the `Scene` records), `sampling`
(drawing scenes), `glyphs` (rendering them), `captions` (the caption grammar), `questions` (QA about a
scene), `coco` (COCO-style files), `eval_sets` (POPE, CHAIR, VQAv2) and `training_sets` (captions,
instructions, preference pairs). The names below are the public surface.
"""

from vlmbench.data.synth.scenes.captions import (
    listing_caption,
    object_phrases,
    position_caption,
    scene_captions,
    with_article,
)
from vlmbench.data.synth.scenes.coco import CAPTIONS_FILE, INSTANCES_FILE, render_scenes
from vlmbench.data.synth.scenes.eval_sets import generate_chair, generate_pope, generate_vqav2
from vlmbench.data.synth.scenes.glyphs import draw_scene
from vlmbench.data.synth.scenes.sampling import sample_scene, sample_scenes
from vlmbench.data.synth.scenes.training_sets import (
    generate_attribute_questions,
    generate_existence_questions,
    generate_grounding_questions,
    generate_instructions,
    generate_preference_pairs,
    generate_training_captions,
)
from vlmbench.data.synth.scenes.vocabulary import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLORS,
    DEFAULT_IMAGE_SIZE,
    GROUPS,
    Category,
    Scene,
    SceneObject,
)

__all__ = [
    "CAPTIONS_FILE",
    "CATEGORIES",
    "CATEGORY_BY_NAME",
    "COLORS",
    "DEFAULT_IMAGE_SIZE",
    "GROUPS",
    "INSTANCES_FILE",
    "Category",
    "Scene",
    "SceneObject",
    "draw_scene",
    "generate_chair",
    "generate_attribute_questions",
    "generate_existence_questions",
    "generate_grounding_questions",
    "generate_instructions",
    "generate_pope",
    "generate_preference_pairs",
    "generate_training_captions",
    "generate_vqav2",
    "listing_caption",
    "object_phrases",
    "position_caption",
    "render_scenes",
    "sample_scene",
    "sample_scenes",
    "scene_captions",
    "with_article",
]
