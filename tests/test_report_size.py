"""Size of the leaderboard site and of a comparison report built from ten realistic runs.

Each run looks like a demo run of the README (540 POPE, 200 DocVQA and 100 CHAIR samples, 96 px
thumbnails for the first 200 samples of each task, several POPE questions per image), and every
run directory holds its own copy of the same thumbnails, as runs on one data set do.

Budgets:

* site (10 runs, the site's default cap of 40 samples per task and run): under 2 MB in all. Before,
  each per-run report inlined its thumbnails again (a run's own report.html, 100 samples per task,
  was copied in) and the site came to about 1.1 MB per run.
* comparison report (10 runs, ``--max-samples 40`` as in the README): 1 MB. It holds each sample
  once (120 samples: thumbnail, question, references, about 5.5 KB with the image) plus one answer row
  per run and sample (1200 rows of a few hundred bytes), the per-pair significance table and the
  plots. Storing prompts, references and thumbnails per run, as before, needs about 4 MB here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures_runs import RunSpec, write_run

from vlmbench.report.html import render_report
from vlmbench.report.leaderboard import build_leaderboard

RUNS = 10
N = {"pope": 540, "docvqa": 200, "chair": 100}
SITE_BUDGET = 2_000_000
COMPARISON_BUDGET = 1_000_000
IMAGES_IN_40 = 7 + 27 + 40  # distinct images among the first 40 POPE, DocVQA and CHAIR samples
SUFFIX = "\nAnswer the question using a single word or phrase."


def _spec(i: int) -> RunSpec:
    return RunSpec(
        f"demo-run-{i}",
        model_name=f"demo-model-{i}",
        projector=("mlp", "qformer", "pixel_shuffle_mlp", "perceiver", "c_abstractor")[i % 5],
        tokens=16.0 * (i + 1),
        samples_per_s=5.0 + i,
        tasks=tuple(N),
        n=N,
        quality={"pope": 0.4 + 0.05 * i, "docvqa": 0.1 + 0.02 * i, "chair": 0.3 + 0.04 * i},
        thumbnails=200,
        questions_per_image={"pope": 6, "docvqa": 1.5, "chair": 1},
        thumbnail_px=96,
        prompt_suffix=SUFFIX,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("size-runs")
    return [write_run(root, _spec(i)) for i in range(RUNS)]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_ten_run_site_stays_under_two_megabytes(runs: list[Path], tmp_path: Path) -> None:
    site = tmp_path / "site"
    build_leaderboard(runs, site)
    total = _size(site)
    assert total < SITE_BUDGET, f"site is {total} bytes"
    # Each distinct image once: 40 POPE samples show 7 images, 40 DocVQA ones 27, CHAIR 40.
    thumbs = list((site / "thumbs").iterdir())
    assert len(thumbs) == IMAGES_IN_40
    assert sum(p.stat().st_size for p in thumbs) > 100_000  # realistic thumbnails, not placeholders
    # The sample browser is still complete in every per-run report.
    for report in (site / "reports").iterdir():
        page = report.read_text(encoding="utf-8")
        assert page.count('<tr class="sample') == 3 * 40
        assert page.count('<tr class="item"') == 3 * 40
        assert "data:image/png;base64," not in page
        assert len(set(re.findall(r'src="\.\./thumbs/([0-9a-f]{16})\.png"', page))) == IMAGES_IN_40


def test_ten_run_comparison_report_stays_small(runs: list[Path], tmp_path: Path) -> None:
    out = render_report(runs, tmp_path / "comparison.html", max_samples_per_task=40, n_resamples=200)
    page = out.read_text(encoding="utf-8")
    assert len(page.encode()) < COMPARISON_BUDGET, f"report is {len(page.encode())} bytes"
    assert page.count('<tr class="sample') == RUNS * 3 * 40  # every run's answer to every sample
    assert page.count('<tr class="item"') == 3 * 40  # each sample (question, image) once
    assert page.count(SUFFIX.strip()) == 3 * 40  # each prompt once per sample, not once per run
    assert page.count("data:image/png;base64,") == IMAGES_IN_40  # each distinct thumbnail once
