"""The wheel is a working package: it carries the bundled folders and `vlmbench.resources` finds them.

The wheel is built from a copy of the checkout (so the build leaves nothing in the working tree) with
the venv's own setuptools and no network (`--no-build-isolation`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vlmbench
from vlmbench import resources
from vlmbench.modeling.presets import load_preset
from vlmbench.resources import BUNDLED_FOLDERS, PACKAGED_SUBDIR, bundled_dir

REPO = Path(__file__).resolve().parents[1]

# Runs inside the unpacked wheel (cwd outside the checkout) and reports what it found, as JSON.
_PROBE = """
import json, sys
import vlmbench
from vlmbench import resources
from vlmbench.modeling.presets import demo_checkpoint, load_preset, preset_names
from vlmbench.report.templating import asset_dir
from vlmbench.runner.run import _git_commit
from vlmbench.tasks.registry import list_tasks

print(json.dumps({
    "package": vlmbench.__file__,
    "version": vlmbench.__version__,
    "checkout_root": None if resources.checkout_root() is None else str(resources.checkout_root()),
    "folders": {name: str(resources.bundled_dir(name)) for name in resources.BUNDLED_FOLDERS},
    "tasks": [config.name for config in list_tasks()],
    "presets": preset_names(),
    "preset_projector": load_preset("internvl-style").projector.kind,
    "checkpoint": str(demo_checkpoint("internvl-style")),
    "report_templates": str(asset_dir("reports")),
    "git_commit": _git_commit(),
    "project_root": str(resources.project_root()),
}))
"""


def _bundled_files(name: str) -> list[str]:
    """Paths (relative to the checkout) of the files of one bundled folder that the wheel must carry."""
    folder = REPO / name
    return sorted(
        p.relative_to(REPO).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix != ".pyc"
        and not {"stage-bases", "ablations"} & set(p.parts)
    )


def _copy_checkout(target: Path) -> None:
    """The checkout's files without what git ignores (venv, runs, caches, earlier build output)."""
    patterns = [".git"]
    for line in (REPO / ".gitignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line.rstrip("/"))
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*patterns))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "src"
    _copy_checkout(source)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = sorted((work / "dist").glob("vlmbench-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_manifest_grafts_every_bundled_folder() -> None:
    """The sdist (MANIFEST.in) must carry the same folders that setup.py copies into the wheel."""
    lines = [line.split() for line in (REPO / "MANIFEST.in").read_text().splitlines()]
    grafted = {words[1] for words in lines if len(words) == 2 and words[0] == "graft"}
    assert grafted == set(BUNDLED_FOLDERS)


def test_wheel_carries_every_bundled_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    prefix = f"vlmbench/{PACKAGED_SUBDIR}/"
    for folder in BUNDLED_FOLDERS:
        expected = _bundled_files(folder)
        assert expected, f"{folder}/ is empty in the checkout"
        missing = [path for path in expected if prefix + path not in names]
        assert not missing, f"wheel lacks {missing[:5]}"
    # The kinds of data the issue names, spelled out.
    for path in (
        "tasks/pope.yaml",
        "models/internvl-style.yaml",
        "models/checkpoints/internvl-style/model.safetensors",
        "recipes/llava-1.5-style.yaml",
    ):
        assert prefix + path in names
    assert any(n.startswith(prefix + "reports/") for n in names)
    assert any(n.startswith(prefix + "leaderboard/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any("/stage-bases/" in n or "/ablations/" in n for n in names)  # not evaluation data


def test_wheel_carries_package_data_files(wheel: Path) -> None:
    """YAML/JSON files that live inside the vlmbench package itself ship too."""
    names = set(zipfile.ZipFile(wheel).namelist())
    package_dir = REPO / "vlmbench"
    data = [
        p.relative_to(REPO).as_posix()
        for pattern in ("*.yaml", "*.json")
        for p in package_dir.rglob(pattern)
        if PACKAGED_SUBDIR not in p.parts
    ]
    assert not [path for path in data if path not in names]


def test_resources_find_the_checkout_folders() -> None:
    assert resources.checkout_root() == REPO
    assert resources.project_root() == REPO
    for name in BUNDLED_FOLDERS:
        assert bundled_dir(name) == REPO / name
    with pytest.raises(ValueError, match="not a bundled folder"):
        bundled_dir("runs")


def test_unpacked_wheel_works_outside_the_checkout(unpacked: Path, wheel: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(unpacked), "HF_HUB_OFFLINE": "1"}
    env.pop("VLMBENCH_TASKS_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])

    bundled = unpacked / "vlmbench" / PACKAGED_SUBDIR
    assert Path(found["package"]).resolve() == (unpacked / "vlmbench" / "__init__.py").resolve()
    assert found["checkout_root"] is None
    assert found["git_commit"] is None  # not a checkout: no commit, and not the surrounding repo's
    assert Path(found["project_root"]).resolve() == tmp_path.resolve()  # recipes never write into the package
    for name in BUNDLED_FOLDERS:
        assert Path(found["folders"][name]).resolve() == (bundled / name).resolve()
    assert Path(found["report_templates"]).resolve() == (bundled / "reports").resolve()
    assert found["tasks"] == sorted(p.stem for p in (REPO / "tasks").glob("*.yaml"))
    assert found["presets"] == sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
    assert found["preset_projector"] == load_preset("internvl-style").projector.kind
    assert (Path(found["checkpoint"]) / "model.safetensors").is_file()
    assert Path(found["checkpoint"]).resolve().is_relative_to(bundled.resolve())
    # One version, pyproject's: the wheel's name, the installed metadata and the package agree.
    assert found["version"] == vlmbench.__version__ == wheel.name.split("-")[1]


def test_cli_version_from_the_unpacked_wheel(unpacked: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    proc = subprocess.run(
        [sys.executable, "-m", "vlmbench", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"vlmbench {vlmbench.__version__}"
