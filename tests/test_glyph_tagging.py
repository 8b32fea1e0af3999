"""Glyph tagging: per-character boxes of rendered documents, their labels, and the tile view the tower
learns them from (the OCR pre-training stand-in of the region-tag stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbench.data.synth.documents import render_page
from vlmbench.data.synth.glyph_annotations import GLYPH_ID_BASE, GLYPHS, glyph_category_id
from vlmbench.data.synth.text_render import FontBook, TextRun, glyph_boxes
from vlmbench.modeling.resolution import DynamicTiles
from vlmbench.training.data import generate_documents
from vlmbench.training.region_tags import GLYPHS_FILE, load_region_labels, planned_tile_view


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    generate_documents(out, seed=5, n=4)
    return out


def test_glyph_boxes_cover_each_character_in_reading_order() -> None:
    fonts = FontBook()
    run = TextRun("TOTAL: 4821", (20, 30), 16)
    boxes = glyph_boxes(run, fonts)
    assert [c for c, _ in boxes] == list("TOTAL:4821")  # the space is skipped
    whole = fonts.text_box(run.text, run.size)
    for _, (x0, y0, x1, y1) in boxes:
        assert x0 < x1 and y0 < y1
        assert 20 + whole[0] - 1 <= x0 and x1 <= 20 + whole[2] + 1  # inside the run's own ink box
        assert 30 + whole[1] - 1 <= y0 and y1 <= 30 + whole[3] + 1
    lefts = [b[0] for _, b in boxes]
    assert lefts == sorted(lefts)


def test_each_character_box_holds_that_characters_ink() -> None:
    """Drawing one character of a run alone at its box's origin offset puts its ink inside the box."""
    fonts = FontBook()
    page = render_page(np.random.default_rng(2), 256, 320, fonts)
    array = 255 - np.asarray(page.image.convert("L"), dtype=np.int32)
    run = page.runs[0]  # the title
    for _, (x0, y0, x1, y1) in glyph_boxes(run, fonts):
        assert array[y0:y1, x0:x1].sum() > 0


def test_page_runs_list_every_field_key_and_value() -> None:
    fonts = FontBook()
    page = render_page(np.random.default_rng(4), 256, 320, fonts)
    texts = [run.text for run in page.runs]
    assert page.title in texts
    for field in page.fields:
        assert f"{field.key}:" in texts and field.value in texts


def test_training_documents_write_glyph_annotations(documents: Path) -> None:
    payload = json.loads((documents / GLYPHS_FILE).read_text())
    assert len(payload["images"]) == 4
    assert {c["id"] for c in payload["categories"]} == {glyph_category_id(c) for c in GLYPHS}
    assert all(a["category_id"] >= GLYPH_ID_BASE for a in payload["annotations"])
    for image in payload["images"]:
        assert (documents / "images" / image["file_name"]).exists()
    per_image = {im["id"]: 0 for im in payload["images"]}
    for ann in payload["annotations"]:
        per_image[ann["image_id"]] += 1
    assert min(per_image.values()) > 20  # title, keys, values, footer


def test_glyph_and_scene_labels_share_one_label_space(documents: Path, tmp_path: Path) -> None:
    from vlmbench.data.synth.scenes import generate_instructions

    scenes = tmp_path / "scenes"
    generate_instructions(scenes, 1, 3)
    labels = load_region_labels([scenes, documents])
    assert any(c < GLYPH_ID_BASE for c in labels.categories) and any(
        c >= GLYPH_ID_BASE for c in labels.categories
    )
    pages = {p for p in labels.boxes if p.parent.parent == documents.resolve()}
    assert pages and labels.text_images == frozenset(pages)
    assert all(p not in labels.text_images for p in labels.boxes if p not in pages)


def test_planned_tile_is_the_tile_the_model_sees(documents: Path) -> None:
    labels = load_region_labels([documents])
    page_path = sorted(labels.text_images)[0]
    image = Image.open(page_path).convert("RGB")
    strategy = DynamicTiles(tile_size=64, max_tiles=12)
    tiles, plan = strategy.prepare(image)
    rng = np.random.default_rng(0)
    view, lab = planned_tile_view(
        image, labels.of(page_path), plan.resized, plan.grid, 64, 8, len(labels.categories), rng
    )
    matches = [
        i
        for i, tile in enumerate(tiles[: plan.grid[0] * plan.grid[1]])
        if np.array_equal(np.asarray(tile), np.asarray(view))
    ]
    assert matches, "the view must be one of the strategy's own tiles"
    assert lab.shape == (64, len(labels.categories)) and lab.sum() > 0  # drawn among tiles that hold ink
    # patches with a glyph label hold ink; blank patches hold none
    ink = 255 - np.asarray(view.convert("L"), dtype=np.int32)
    grid = lab.view(8, 8, -1).sum(-1)
    for r in range(8):
        for c in range(8):
            if grid[r, c] > 0:
                assert ink[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].max() > 60


def test_tagging_collator_uses_planned_tiles_for_pages_only(documents: Path, tmp_path: Path) -> None:
    """Document pages are cut as the model's tiles; scene images keep the native-crop / thumbnail views."""
    from vlmbench.data.synth.scenes import generate_instructions
    from vlmbench.modeling.presets import load_preset
    from vlmbench.modeling.tokenizer import train_tokenizer
    from vlmbench.modeling.vlm import VLM
    from vlmbench.training.collate import Collator
    from vlmbench.training.data import Conversation
    from vlmbench.training.recipe import StageConfig

    scenes = tmp_path / "scenes"
    generate_instructions(scenes, 1, 2)
    labels = load_region_labels([scenes, documents])
    tokenizer = train_tokenizer(["Is there a cat? Yes No"], vocab_size=300)
    torch.manual_seed(0)
    model = VLM(load_preset("internvl-style"), tokenizer)
    stage = StageConfig(
        name="glyphs",
        kind="vision_tagging",
        train=["vision"],
        data={"d": 1.0},
        steps=1,
        batch_size=2,
        lr=1e-3,
    )
    page = sorted(labels.text_images)[0]
    scene = sorted(p for p in labels.boxes if p not in labels.text_images)[0]
    batch = Collator(stage, model, tokenizer, labels, seed=0)._tagging(
        [Conversation(page, (("q", "a"),)), Conversation(scene, (("q", "a"),))], step=0
    )
    page_labels, scene_labels = batch.patch_labels
    glyph = [i for i, c in enumerate(labels.categories) if c >= GLYPH_ID_BASE]
    assert page_labels[:, glyph].sum() > 0 and scene_labels[:, glyph].sum() == 0
