"""`vlmbench run` renders report.html after the runner returns; a report failure keeps the results."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vlmbench.cli import main
from vlmbench.commands.run import write_report
from vlmbench.runner.state import read_manifest

RUN = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "2", "--limit", "6",
       "--batch-size", "3", "--run-name", "r"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run-report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLMBENCH_CACHE", str(root / "cache"))
        assert main([*RUN, "--output-dir", str(root / "runs")]) == 0
    return root / "runs" / "r"


def test_run_leaves_report_next_to_results(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert report.lstrip().lower().startswith("<!doctype html") and results["run_name"] in report
    assert read_manifest(run_dir)["status"] == "finished"


def test_report_failure_keeps_the_results(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import vlmbench.report.html as html

    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "report.html"}

    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(html, "render_report", broken)
    with caplog.at_level(logging.ERROR, logger="vlmbench.run"):
        assert write_report(run_dir) is None
    assert "template exploded" in caplog.text and f"vlmbench report {run_dir}" in caplog.text
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "report.html"} == before
