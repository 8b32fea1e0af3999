"""Start-up: listing commands and every `--help` import neither torch nor transformers.

The listing numbers that need a built model come from `models/catalog.json`; the catalog is checked
against freshly built presets here, so a change to a preset or to the model code that leaves it stale
fails this file (refresh: ``python -m vlmbench.modeling.catalog``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmbench.cli import COMMAND_MODULES
from vlmbench.data import loaders
from vlmbench.modeling import catalog
from vlmbench.modeling.presets import models_dir, preset_names

HEAVY = ("torch", "transformers")

# Runs each argv through `vlmbench.cli.main` in one fresh interpreter and prints, per argv, the heavy
# modules that were imported by then. One interpreter for all keeps the test fast; a heavy import is
# attributed to the first command that made it.
_DRIVER = """
import contextlib, io, json, sys
from vlmbench.cli import main
heavy = {heavy!r}
report = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    report.append({{"argv": argv, "code": code, "heavy": [m for m in heavy if m in sys.modules]}})
print(json.dumps(report))
"""


def _imports_of(commands: list[list[str]], watched: tuple[str, ...] = HEAVY) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER.format(heavy=watched), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_listing_and_help_import_no_torch_or_transformers() -> None:
    commands = [
        ["--help"],
        ["--version"],
        ["models"],
        ["models", "--json"],
        ["tasks"],
        ["tasks", "--json"],
        *([name, "--help"] for name in COMMAND_MODULES),
    ]
    report = _imports_of(commands)
    assert [r["argv"] for r in report] == commands
    offenders = [
        f"vlmbench {' '.join(r['argv'])} imported {', '.join(r['heavy'])}" for r in report if r["heavy"]
    ]
    assert not offenders, offenders[0]
    codes = {" ".join(r["argv"]): r["code"] for r in report}
    assert codes["models"] == 0 and codes["tasks"] == 0 and codes["run --help"] == 0


def test_the_driver_attributes_an_import_to_its_command() -> None:
    """The check above can fail: the driver reports a module as soon as a command imports it (here
    yaml, which `models` reads its presets with and `--version` does not need)."""
    report = _imports_of([["--version"], ["models"]], watched=("yaml",))
    assert [r["heavy"] for r in report] == [[], ["yaml"]]


# --- the preset catalog ---------------------------------------------------------------------------


def test_catalog_lists_every_preset() -> None:
    assert sorted(catalog.read_catalog()) == preset_names(), (
        f"refresh models/{catalog.CATALOG_FILE}: {catalog.REFRESH_HINT}"
    )


@pytest.mark.parametrize("name", preset_names())
def test_catalog_entry_matches_the_built_preset(name: str) -> None:
    """Equal to what building the preset gives now; else the catalog is stale (refresh it)."""
    from vlmbench.modeling.presets import load_preset

    assert catalog.read_catalog()[name] == catalog.built_entry(load_preset(name)), (
        f"preset {name}: models/{catalog.CATALOG_FILE} is stale: run {catalog.REFRESH_HINT}"
    )


def _copy_preset(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(models_dir() / f"{name}.yaml", folder / f"{name}.yaml")
    return folder


def test_an_edited_preset_is_built_instead_of_read(tmp_path: Path) -> None:
    folder = _copy_preset(tmp_path, "llava-1.5-style")
    shutil.copy(models_dir() / catalog.CATALOG_FILE, folder / catalog.CATALOG_FILE)
    (row,) = catalog.preset_rows(folder)
    assert row["visual_tokens"] == catalog.read_catalog()["llava-1.5-style"]["visual_tokens"]

    # a stored entry claiming other numbers is ignored once the config no longer matches its fingerprint
    stale = json.loads((folder / catalog.CATALOG_FILE).read_text())
    stale["presets"]["llava-1.5-style"]["fingerprint"] = "0" * 64
    stale["presets"]["llava-1.5-style"]["visual_tokens"] = 12345
    (folder / catalog.CATALOG_FILE).write_text(json.dumps(stale))
    (row,) = catalog.preset_rows(folder)
    assert row["visual_tokens"] == catalog.read_catalog()["llava-1.5-style"]["visual_tokens"] != 12345


def test_a_preset_without_a_catalog_is_built(tmp_path: Path) -> None:
    folder = _copy_preset(tmp_path, "blip2-style")
    (row,) = catalog.preset_rows(folder)
    assert {k: row[k] for k in catalog.BUILT_FIELDS} == {
        k: catalog.read_catalog()["blip2-style"][k] for k in catalog.BUILT_FIELDS
    }
    assert row["demo_checkpoint"] is False  # the copy has no checkpoints/ folder


# --- the HF cache lookup without `datasets` -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "POPE",
        "DocVQA",
        "VQAv2",
        "TextVQA",
        "ChartQA",
        "HallusionBench",
        "AMBER",
        "MMBench_EN",
        "ai2d",
        "X",
        "",
    ],
)
def test_snake_case_is_datasets_naming(name: str) -> None:
    from datasets.naming import camelcase_to_snakecase

    assert loaders.snake_case(name) == camelcase_to_snakecase(name)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HF_HOME": "{tmp}/home"},
        {"XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HF_DATASETS_CACHE": "{tmp}/ds", "HF_HUB_CACHE": "{tmp}/hub", "HF_HOME": "{tmp}/home"},
    ],
)
def test_cache_roots_are_the_libraries_own(tmp_path: Path, env: dict[str, str]) -> None:
    """`_hf_cache_roots` (no `datasets` import) resolves the same folders as datasets.config does."""
    script = (
        "import json, datasets, huggingface_hub.constants as c; from vlmbench.data import loaders; "
        "print(json.dumps([str(datasets.config.HF_DATASETS_CACHE), c.HF_HUB_CACHE, "
        "[str(p) for p in loaders._hf_cache_roots()]]))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_CACHE"))}
    clean.update({k: v.format(tmp=tmp_path) for k, v in env.items()})
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=clean, timeout=120, check=True
    )
    datasets_cache, hub_cache, ours = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ours == [datasets_cache, hub_cache]


# --- time to the first answered sample ------------------------------------------------------------


def test_seconds_since_process_start_counts_from_the_process_start() -> None:
    """Measured in a fresh interpreter that sleeps before importing the module: the sleep is counted."""
    code = (
        "import time; time.sleep(0.6); from vlmbench.runner.timing import seconds_since_process_start as s; "
        "import json; print(json.dumps(s()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    seconds, origin = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.6 <= seconds < 30 and origin.startswith("process start")


def test_the_clock_marks_only_the_first_answered_batch() -> None:
    from vlmbench.runner.timing import FirstAnswerClock

    seen: list[int] = []
    clock = FirstAnswerClock(announce=False)
    update = clock.wrap(seen.append)
    update(0)  # a batch whose samples were all done already answers nothing
    assert clock.first_sample_s is None and clock.record()["first_sample_s"] is None
    update(3)
    first = clock.first_sample_s
    assert first is not None and 0 < first <= clock.elapsed()
    update(2)
    assert clock.first_sample_s == first and seen == [0, 3, 2]


def test_a_run_logs_and_records_its_first_answer_time(tmp_path: Path, monkeypatch, caplog) -> None:
    from vlmbench.cli import main

    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "1", "--limit", "3",
            "--batch-size", "3", "--device", "cpu", "--no-report", "--output-dir", str(tmp_path), "--run-name", "t"]  # fmt: skip
    with caplog.at_level("INFO", logger="vlmbench.run"):
        assert main(args) == 0
    timing = json.loads((tmp_path / "t" / "results.json").read_text())["timing"]
    assert isinstance(timing["first_sample_s"], float) and 0 < timing["first_sample_s"] <= timing["process_s"]
    assert timing["measured_from"].startswith("process start")
    assert any("first answered sample" in r.getMessage() for r in caplog.records)
