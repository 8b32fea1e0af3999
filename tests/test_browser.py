"""The report and the leaderboard in a real headless Chromium, opened from file://.

Needs the ``playwright`` Python package and Debian's ``/usr/bin/chromium`` (no browser download):
    pip install playwright && apt-get install -y chromium
Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_runs import XSS, RunSpec, write_run

CHROMIUM = Path(os.environ.get("VLMBENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if importlib.util.find_spec("playwright") is None:
    pytest.skip(
        "the playwright Python package is not installed (pip install playwright)", allow_module_level=True
    )
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from vlmbench.report.html import render_report  # noqa: E402
from vlmbench.report.leaderboard import build_leaderboard  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser")
    runs_dir = root / "runs"
    runs = [
        write_run(
            runs_dir,
            RunSpec(
                "llava-mlp",
                xss=True,
                projector="mlp",
                resolution="fixed",
                tokens=576,
                samples_per_s=30,
                n={"pope": 60},
            ),
        ),
        write_run(
            runs_dir,
            RunSpec(
                "internvl-tiles",
                projector="pixel_shuffle_mlp",
                tokens=1280,
                samples_per_s=12,
                n={"pope": 60},
                quality={"pope": 0.9, "docvqa": 0.85, "chair": 0.8, "ocr": 0.8},
            ),
        ),
        write_run(
            runs_dir,
            RunSpec(
                "qformer-32",
                projector="qformer",
                resolution="fixed",
                tokens=32,
                samples_per_s=80,
                n={"pope": 60},
                quality={"pope": 0.6, "docvqa": 0.3, "chair": 0.5, "ocr": 0.2},
                synthetic=False,
            ),
        ),
    ]
    report = render_report(runs, root / "report.html", max_samples_per_task=12, n_resamples=200)
    site = root / "site"
    build_leaderboard([runs_dir], site, max_samples_per_task=8)
    return {"report": report, "site": site}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class Opened:
    """A page plus every console error / page error it produced."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type in ("error", "warning") else None
        )
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "request",
            lambda req: (
                None if req.url.startswith(("file:", "data:")) else self.errors.append(f"network: {req.url}")
            ),
        )


@pytest.fixture
def opened(browser: Any) -> Iterator[Opened]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        yield Opened(context.new_page())
    finally:
        context.close()


def _visible(page: Page, selector: str) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        selector, "rows => rows.filter(r => !r.hidden).map(r => Object.assign({}, r.dataset))"
    )


def test_report_loads_clean(built: dict[str, Path], opened: Opened) -> None:
    page = opened.page
    page.goto(built["report"].as_uri())
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("window.vlmbenchReport.runs[0].model") == "tiny-vlm " + XSS
    assert page.locator("#sample-table img").count() > 0
    assert page.evaluate("document.querySelector('#sample-table img').naturalWidth") > 0  # data: URI decoded
    assert opened.errors == []


def test_report_sample_filters(built: dict[str, Path], opened: Opened) -> None:
    page = opened.page
    page.goto(built["report"].as_uri())
    everything = _visible(page, "#sample-table tr.sample")
    assert len(everything) == 3 * 4 * 12
    page.select_option("#filter-task", "pope")
    pope = _visible(page, "#sample-table tr.sample")
    assert pope and all(r["task"] == "pope" for r in pope) and len(pope) < len(everything)
    page.select_option("#filter-split", "adversarial")
    page.select_option("#filter-outcome", "wrong")
    wrong = _visible(page, "#sample-table tr.sample")
    assert wrong and all(r["split"] == "adversarial" and r["outcome"] == "wrong" for r in wrong)
    page.select_option("#filter-run", "1")
    assert all(r["run"] == "1" for r in _visible(page, "#sample-table tr.sample"))
    assert "of 144 samples shown" in page.text_content("#sample-count")
    page.select_option("#filter-task", "")
    page.select_option("#filter-split", "")
    page.select_option("#filter-outcome", "")
    page.select_option("#filter-run", "")
    assert len(_visible(page, "#sample-table tr.sample")) == len(everything)
    assert opened.errors == []


def test_report_shows_each_sample_once_with_every_runs_answer(built: dict[str, Path], opened: Opened) -> None:
    page = opened.page
    page.goto(built["report"].as_uri())
    groups = page.eval_on_selector_all(
        "#sample-table tbody tr",
        """trs => trs.reduce((acc, tr) => {
            if (tr.classList.contains("item")) { acc.push({hidden: tr.hidden, rows: []}); }
            else { acc[acc.length - 1].rows.push({run: tr.dataset.run, hidden: tr.hidden}); }
            return acc;
        }, [])""",
    )
    assert len(groups) == 4 * 12 and all([r["run"] for r in g["rows"]] == ["0", "1", "2"] for g in groups)
    page.select_option("#filter-outcome", "wrong")
    page.select_option("#filter-run", "2")
    groups = page.eval_on_selector_all(
        "#sample-table tbody tr",
        """trs => trs.reduce((acc, tr) => {
            if (tr.classList.contains("item")) { acc.push({hidden: tr.hidden, shown: 0}); }
            else if (!tr.hidden) { acc[acc.length - 1].shown += 1; }
            return acc;
        }, [])""",
    )
    assert any(g["hidden"] for g in groups) and any(not g["hidden"] for g in groups)
    assert all(g["hidden"] == (g["shown"] == 0) for g in groups)  # a sample shows while any answer does
    assert opened.errors == []


def _column(page: Page, key: str) -> list[str]:
    index = page.eval_on_selector_all(
        "#board-head th", f"ths => ths.findIndex(th => th.dataset.key === {key!r})"
    )
    return page.eval_on_selector_all(
        "#board-body tr",
        f"trs => trs.map(tr => tr.children[{index}].querySelector('.value, a') ? tr.children[{index}].querySelector('.value, a').textContent : tr.children[{index}].textContent)",
    )


def test_leaderboard_sorts_and_filters(built: dict[str, Path], opened: Opened) -> None:
    page = opened.page
    page.goto((built["site"] / "index.html").as_uri())
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#board-body tr").count() == 3

    page.click('th[data-key="task:pope"] button')  # best first: highest F1 on top
    values = [float(v) for v in _column(page, "task:pope")]
    assert values == sorted(values, reverse=True)
    assert page.get_attribute('th[data-key="task:pope"]', "aria-sort") == "descending"
    page.click('th[data-key="task:pope"] button')
    assert [float(v) for v in _column(page, "task:pope")] == sorted(values)

    page.click('th[data-key="task:chair"] button')  # CHAIR_i: lower is better, so ascending first
    chair = [float(v) for v in _column(page, "task:chair")]
    assert chair == sorted(chair)

    page.click('th[data-key="visual_tokens"] button')
    tokens = _column(page, "visual_tokens")
    assert tokens == ["32", "576", "1.28k"]

    page.click('th[data-key="model"] button')
    assert _column(page, "model")[0].startswith("tiny-vlm")

    page.select_option("#filter-projector", "qformer")
    assert page.locator("#board-body tr").count() == 1
    assert page.get_attribute("#board-body tr", "data-slug").startswith("qformer-32")
    page.select_option("#filter-projector", "")
    page.select_option("#filter-data", "real")
    assert page.locator("#board-body tr").count() == 1
    page.select_option("#filter-data", "")
    page.fill("#filter-text", "pixel_shuffle")
    assert page.locator("#board-body tr").count() == 1
    assert "1 of 3 runs shown" in page.text_content("#row-count")
    page.fill("#filter-text", "")
    assert page.locator("#board-body tr").count() == 3
    assert opened.errors == []


def test_leaderboard_links_to_model_pages_and_reports(built: dict[str, Path], opened: Opened) -> None:
    page = opened.page
    page.goto((built["site"] / "index.html").as_uri())
    page.click("#board-body tr a.model-link >> nth=0")
    page.wait_for_load_state()
    assert "/models/" in page.url
    assert (
        page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
    )  # style.css applied
    page.click("#report-link")
    page.wait_for_load_state()
    assert "/reports/" in page.url
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#sample-table tr.sample").count() > 0
    assert opened.errors == []


def test_screenshots(built: dict[str, Path], opened: Opened, tmp_path: Path) -> None:
    """Keep a screenshot of each page (VLMBENCH_SCREENSHOTS=DIR copies them there for a look)."""
    page = opened.page
    shots = []
    for name, path in (("report", built["report"]), ("leaderboard", built["site"] / "index.html")):
        page.goto(path.as_uri())
        target = tmp_path / f"{name}.png"
        page.screenshot(path=str(target), full_page=name == "leaderboard")
        assert target.stat().st_size > 10_000
        shots.append(target)
    keep = os.environ.get("VLMBENCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, Path(keep) / shot.name)
    assert opened.errors == []
