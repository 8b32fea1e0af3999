"""Synthetic text-heavy sets: DocVQA-, OCRBench-, ChartQA- and TextVQA-style generators."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlmbench.data.layout import META_FILE, RELEASE_COLUMNS
from vlmbench.data.synth.charts import QUESTION_KINDS, generate_chartqa, make_question, render_chart
from vlmbench.data.synth.documents import SMALL_FONT_PX, generate_docvqa, render_page
from vlmbench.data.synth.ocr import IMAGE_SIZES, generate_ocr
from vlmbench.data.synth.text_render import NAMES, SHORT_WORDS, WORDS, FontBook
from vlmbench.data.synth.textvqa import generate_textvqa

GENERATORS: dict[str, Callable[[Path, int, int], Path]] = {
    "docvqa": generate_docvqa,
    "ocr": generate_ocr,
    "chartqa": generate_chartqa,
    "textvqa": generate_textvqa,
}
EXTRA_COLUMNS = {
    "docvqa": ("docId", "question_types", "font_px", "answer_bbox"),
    "ocr": ("question_id", "dataset", "question_type", "font_px"),
    "chartqa": ("question_id", "type", "values_shown"),
    "textvqa": ("image_id", "ocr_tokens", "font_px"),
}


def _load(path: Path) -> list[dict]:
    import datasets

    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    return list(dataset)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict]]]:
    """Each generator run once with seed 0 (shared by the tests below to keep them fast)."""
    out = {}
    for task, generate in GENERATORS.items():
        path = generate(tmp_path_factory.mktemp(task), 0, 14)
        out[task] = (path, _load(path))
    return out


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_release_columns_and_meta(task: str, releases: dict) -> None:
    path, rows = releases[task]
    assert len(rows) == 14
    for column in RELEASE_COLUMNS[task] + EXTRA_COLUMNS[task]:
        assert column in rows[0], column
    assert isinstance(rows[0]["image"], Image.Image)
    meta = (path.parent.parent / META_FILE).read_text()
    assert f'"task": "{task}"' in meta and '"synthetic": true' in meta
    ids = [row.get("question_id", row.get("questionId")) for row in rows]
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_deterministic_per_seed(task: str, releases: dict, tmp_path: Path) -> None:
    path, _ = releases[task]
    again = GENERATORS[task](tmp_path / "same", 0, 14)
    other = GENERATORS[task](tmp_path / "other", 1, 14)
    assert again.read_bytes() == path.read_bytes()
    assert other.read_bytes() != path.read_bytes()


def _ink_matches(image: Image.Image, text: str, font_px: int, bbox: list[int]) -> bool:
    """Whether the crop at `bbox` is exactly `text` rendered in black on white at `font_px`."""
    fonts = FontBook()
    x0, y0, x1, y1 = fonts.text_box(text, font_px)
    reference = Image.new("RGB", (x1 + 2, y1 + 2), (255, 255, 255))
    ImageDraw.Draw(reference).text((0, 0), text, font=fonts.get(font_px), fill=(0, 0, 0))
    expected = np.asarray(reference.crop((x0, y0, x1, y1)))
    actual = np.asarray(image.convert("RGB").crop(tuple(bbox)))
    return expected.shape == actual.shape and bool(np.array_equal(expected, actual))


def test_docvqa_answers_are_the_rendered_field_values(releases: dict) -> None:
    _, rows = releases["docvqa"]
    for row in rows:
        assert row["answers"] and all(answer for answer in row["answers"])
        assert row["question"].endswith("?")
        # The first answer is exactly what is drawn at answer_bbox, at font_px.
        assert _ink_matches(row["image"], row["answers"][0], row["font_px"], row["answer_bbox"])
        assert row["image"].size == (256, 320)
    sizes = {row["font_px"] for row in rows}
    assert min(sizes) <= SMALL_FONT_PX < max(sizes)


def test_docvqa_pages_have_small_fields_that_vanish_at_64px() -> None:
    rng = np.random.default_rng(3)
    fonts = FontBook()
    for _ in range(10):
        page = render_page(rng, 256, 320, fonts)
        assert 3 <= len(page.fields) <= 6
        assert len({field.key for field in page.fields}) == len(page.fields)
        small = [field for field in page.fields if field.font_px <= SMALL_FONT_PX]
        assert small and len(small) < len(page.fields)
        for field in page.fields:
            assert field.value in field.answers
            assert _ink_matches(page.image, field.value, field.font_px, list(field.bbox))
        for field in small:
            ink_h = field.bbox[3] - field.bbox[1]
            # Capitals 7–9 px high at full size (legible in a 64-px tile) ...
            assert 7 <= ink_h <= 10
            # ... but under 2.5 px once the 320-px page is squeezed into 64 rows.
            assert ink_h * 64 / 320 < 2.5


def test_docvqa_answer_variants() -> None:
    rng = np.random.default_rng(11)
    fonts = FontBook()
    fields = [field for _ in range(20) for field in render_page(rng, 256, 320, fonts).fields]
    totals = [field for field in fields if field.key == "TOTAL" and len(field.value) == 4]
    assert totals and all(f"{int(f.value):,}" in f.answers for f in totals)
    names = [field for field in fields if field.key == "NAME"]
    assert names and all(f.value in NAMES and f.value.title() in f.answers for f in names)


def test_ocr_answers_use_the_vocabulary(releases: dict) -> None:
    _, rows = releases["ocr"]
    for row in rows:
        assert row["question"] == "What is written in the image?"
        assert row["dataset"] == "synthetic" and row["question_type"] == "Regular Text Recognition"
        (text,) = row["answer"]
        assert 1 <= len(text.split()) <= 3
        assert all(token in WORDS or token.isalnum() and token.upper() == token for token in text.split())
        assert row["image"].size in IMAGE_SIZES


def test_chart_questions_match_chart_data() -> None:
    rng = np.random.default_rng(5)
    fonts = FontBook()
    for _ in range(10):
        chart = render_chart(rng, fonts)
        assert chart.image.size == (160, 128)
        assert 3 <= len(chart.values) <= 5 and len(set(chart.values)) == len(chart.values)
        assert all(1 <= v <= 99 for v in chart.values) and set(chart.labels) <= set(SHORT_WORDS)
        by_label = dict(zip(chart.labels, chart.values, strict=True))
        for kind in QUESTION_KINDS:
            question, answer = make_question(rng, chart, kind)
            named = [label for label in chart.labels if f" {label}" in question]
            if kind == "value":
                assert answer == str(by_label[named[0]])
            elif kind == "difference":
                assert answer == str(abs(by_label[named[0]] - by_label[named[1]]))
            elif kind == "sum":
                assert answer == str(by_label[named[0]] + by_label[named[1]])
            elif kind == "highest":
                assert by_label[answer] == max(chart.values)
            else:
                assert by_label[answer] == min(chart.values)


def test_chartqa_rows(releases: dict) -> None:
    _, rows = releases["chartqa"]
    for row in rows:
        assert row["type"] == "augmented_test"
        assert row["answer"].isdigit() or row["answer"] in SHORT_WORDS


def test_textvqa_answers_agree_with_ocr_tokens(releases: dict) -> None:
    _, rows = releases["textvqa"]
    for row in rows:
        answers = row["answers"]
        assert len(answers) == 10 and all(answers)
        tokens = [token.lower() for token in row["ocr_tokens"]]
        majority = max(set(a.lower() for a in answers), key=[a.lower() for a in answers].count)
        assert majority in tokens
        assert sum(a.lower() == majority for a in answers) >= 8
        if "number" in row["question"]:
            assert majority.isdigit()
        assert row["image"].size == (160, 120)


def test_images_are_png(releases: dict) -> None:
    import pyarrow.parquet as pq

    for task, (path, _) in releases.items():
        first = pq.read_table(path).column("image")[0].as_py()
        assert first["bytes"][:8] == b"\x89PNG\r\n\x1a\n", task
        Image.open(io.BytesIO(first["bytes"])).verify()
