"""HTML report and leaderboard site built from constructed runs (no browser needed)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fixtures_runs import XSS, RunSpec, write_run

from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.report.html import render_report
from vlmbench.report.leaderboard import build_leaderboard
from vlmbench.report.runs import find_runs, slugify, unique_slugs
from vlmbench.report.samples import highlight
from vlmbench.report.svg import ScatterPoint, pareto_front, scatter
from vlmbench.report.templating import script_json

_JSON_BLOCK = r'<script type="application/json" id="{}">(.*?)</script>'


def _embedded(page: str, element_id: str) -> dict:
    match = re.search(_JSON_BLOCK.format(element_id), page, re.S)
    assert match, f"no JSON block #{element_id}"
    return json.loads(match.group(1))


def _assert_no_raw_payload(page: str) -> None:
    assert "<script>window.__xss" not in page
    assert "<img src=x" not in page
    assert 'onerror="window' not in page


def _assert_offline(page: str) -> None:
    # The only URL allowed is the SVG namespace identifier (never fetched).
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("report-runs")
    return [
        write_run(
            root,
            RunSpec("llava-mlp", xss=True, projector="mlp", resolution="fixed", tokens=576, samples_per_s=30),
        ),
        write_run(
            root,
            RunSpec(
                "internvl-tiles",
                projector="pixel_shuffle_mlp",
                tokens=1280,
                samples_per_s=12,
                quality={"pope": 0.86, "docvqa": 0.85, "chair": 0.8, "ocr": 0.8},
            ),
        ),
        write_run(
            root,
            RunSpec(
                "qformer-32",
                projector="qformer",
                resolution="fixed",
                tokens=32,
                samples_per_s=80,
                quality={"pope": 0.6, "docvqa": 0.3, "chair": 0.5, "ocr": 0.2},
                synthetic=False,
            ),
        ),
    ]


def test_single_run_report(runs: list[Path], tmp_path: Path) -> None:
    out = render_report([runs[0]], tmp_path / "r" / "report.html")
    page = out.read_text(encoding="utf-8")
    _assert_no_raw_payload(page)
    _assert_offline(page)
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=1" in page  # shown, escaped
    data = _embedded(page, "report-data")
    assert data["runs"][0]["model"] == "tiny-vlm " + XSS  # round-trips exactly through the escaped JSON
    assert "SYNTHETIC DATA" in page
    assert "Official POPE parsing" in page  # the task's convention text
    assert page.count("<svg") >= 4
    assert "Pareto front" in page
    assert "POPE F1 per split" in page and "CHAIR (lower is better)" in page
    assert "data:image/png;base64," in page
    assert 'class="halluc"' in page  # hallucinated objects are highlighted
    assert "one run: nothing to compare" in page
    assert "simulated: CUDA out of memory" in page  # per-sample errors are shown


def test_multi_run_report_groups_and_significance(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.html"
    render_report(runs, out, max_samples_per_task=5)
    page = out.read_text(encoding="utf-8")
    _assert_no_raw_payload(page)
    assert "By projector" in page and "By resolution strategy" in page
    for projector in ("mlp", "pixel_shuffle_mlp", "qformer"):
        assert f'<tr class="group"><th colspan="10">{projector} ' in page
    assert "every pair of runs" in page
    assert "mcnemar" in page and "bootstrap" in page
    assert "B worse" in page or "B better" in page
    assert "Showing at most 5 samples per task and run" in page
    assert page.count('<tr class="sample') == 3 * 4 * 5
    assert "SYNTHETIC DATA (some runs)" in page  # qformer-32 used real data


def test_report_cli(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.html"
    assert (
        main(["report", str(runs[1]), str(runs[2] / "results.json"), "--out", str(out), "--max-samples", "3"])
        == 0
    )
    assert out.is_file()
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err


def test_script_json_escapes_everything_dangerous() -> None:
    value = {"a": "</script><!-- & \u2028 \u2029 >", "n": float("nan")}
    text = str(script_json(value))
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == {"a": value["a"], "n": None}


def test_highlight_marks_objects() -> None:
    segments = highlight("Two Dogs and a car near the dining table.", ["dog", "dining table"])
    marked = [s.text for s in segments if s.marked]
    assert marked == ["Dogs", "dining table"]
    assert "".join(s.text for s in segments) == "Two Dogs and a car near the dining table."
    assert highlight("hotdog", ["dog"])[0].marked is False


def test_pareto_front_and_svg_escaping() -> None:
    xs, ys = [32, 576, 1280, 600], [0.6, 0.8, 0.86, 0.7]
    assert pareto_front(xs, ys, x_higher_better=False, y_higher_better=True) == [0, 1, 2]
    svg = str(
        scatter(
            [ScatterPoint("<b>x</b>", 1.0, 0.5, "#000")],
            title="t<i>",
            x_label="x",
            y_label="y",
            x_higher_better=False,
            y_higher_better=True,
        )
    )
    assert "<b>" not in svg and "<i>" not in svg and "&lt;b&gt;" in svg


def test_slugs_are_sanitised_stable_and_unique(runs: list[Path]) -> None:
    assert slugify("Run 1 / <Model>!") == "run-1-model"
    assert slugify("") == "run"
    found = find_runs([runs[0].parent])
    first, second = unique_slugs(found), unique_slugs(find_runs([runs[0].parent]))
    assert first == second and len(set(first)) == len(first)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", s) and len(s) <= 80 for s in first)


def test_leaderboard_site(runs: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "results"
    nested = root / "team-a" / "sweep"
    nested.mkdir(parents=True)
    for run in runs:
        shutil.copytree(run, nested / run.name)
    (nested / "llava-mlp" / "report.html").write_text("<!doctype html><title>prebuilt</title>")
    site = tmp_path / "site"
    assert main(["leaderboard", str(root), "--out", str(site), "--max-samples", "3"]) == 0
    for name in ("index.html", "data.json", "app.js", "style.css"):
        assert (site / name).is_file()
    data = json.loads((site / "data.json").read_text(encoding="utf-8"))
    page = (site / "index.html").read_text(encoding="utf-8")
    _assert_no_raw_payload(page)
    _assert_offline(page)
    assert _embedded(page, "leaderboard-data") == data  # inlined copy for file://
    assert len(data["rows"]) == 3
    assert [t["name"] for t in data["tasks"]] == ["pope", "docvqa", "chair", "ocr"]
    row = next(r for r in data["rows"] if r["run_name"] == "llava-mlp")
    assert row["model"] == "tiny-vlm " + XSS
    assert row["tasks"]["chair"]["metric"] == "chair_i" and row["tasks"]["pope"]["ci"]
    assert row["provenance"]["kind"] == "synthetic"
    assert next(r for r in data["rows"] if r["run_name"] == "qformer-32")["provenance"]["kind"] == "real"
    for r in data["rows"]:
        model_page = (site / r["page"]).read_text(encoding="utf-8")
        _assert_no_raw_payload(model_page)
        assert f'href="../reports/{r["slug"]}.html"' in model_page
        assert (site / r["report"]).is_file()
    # A run's own report.html is foreign HTML: never republished, every report is rendered here.
    for r in data["rows"]:
        report = (site / r["report"]).read_text(encoding="utf-8")
        assert "prebuilt" not in report and "vlmbench report" in report
        _assert_no_raw_payload(report)
        _assert_offline(report)
        assert "data:image/png;base64," not in report  # thumbnails come from the shared folder
        assert '<img src="../thumbs/' in report
    thumbs = sorted(p.name for p in (site / "thumbs").iterdir())
    assert thumbs and all(re.fullmatch(r"[0-9a-f]{16}\.png", name) for name in thumbs)
    # Rebuilding keeps every URL.
    build_leaderboard([root], site)
    assert [r["slug"] for r in json.loads((site / "data.json").read_text())["rows"]] == [
        r["slug"] for r in data["rows"]
    ]


def test_leaderboard_without_runs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no results.json"):
        build_leaderboard([tmp_path / "empty"], tmp_path / "site")


def test_thumbnails_stay_inside_the_run(runs: list[Path], tmp_path: Path) -> None:
    from vlmbench.report.samples import thumbnail_uri

    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG fake")
    relative = Path("..") / ".." / outside.relative_to(outside.anchor)
    assert thumbnail_uri(runs[0], str(Path("../" * 20) / relative)) is None
    assert thumbnail_uri(runs[0], "results.json") is None  # not an image type
    assert thumbnail_uri(runs[0], None) is None
    name = next((runs[0] / "thumbnails").iterdir()).name
    assert thumbnail_uri(runs[0], f"thumbnails/{name}").startswith("data:image/png;base64,")


def test_thumbnails_are_checked_and_stored_once(runs: list[Path], tmp_path: Path) -> None:
    from vlmbench.report.thumbnails import FolderThumbnails, InlineThumbnails

    run = tmp_path / "run"
    (run / "thumbnails").mkdir(parents=True)
    (run / "thumbnails" / "fake.png").write_text("<script>alert(1)</script>")  # not a PNG inside
    name = next((runs[0] / "thumbnails").iterdir()).name
    real = (runs[0] / "thumbnails" / name).read_bytes()
    (run / "thumbnails" / "a.png").write_bytes(real)
    (run / "thumbnails" / "b.png").write_bytes(real)
    inline = InlineThumbnails()
    assert inline.add(run, "thumbnails/fake.png") is None
    key = inline.add(run, "thumbnails/a.png")
    assert key and inline.add(run, "thumbnails/b.png") == key and len(inline.urls) == 1  # same bytes
    site = tmp_path / "site" / "thumbs"
    site.mkdir(parents=True)
    (site / ("0" * 16 + ".png")).write_bytes(real)  # left over from an earlier build
    (site / "notes.txt").write_text("not ours")
    folder = FolderThumbnails(site, "../thumbs/")
    assert folder.add(run, "thumbnails/a.png") == key
    assert folder.urls == {key: f"../thumbs/{key}.png"} and (site / f"{key}.png").read_bytes() == real
    assert folder.add(runs[0], f"thumbnails/{name}") == key  # another run, same image: no new file
    assert folder.prune() == ["0" * 16 + ".png"]
    assert sorted(p.name for p in site.iterdir()) == sorted([f"{key}.png", "notes.txt"])
