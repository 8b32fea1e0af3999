"""Build step that puts the top-level data folders into the wheel (everything else is in pyproject.toml).

The task YAMLs, presets with demo checkpoints, recipes and templates live once, at the top of the
checkout. When a wheel is built, `build_py` copies each of them into ``vlmbench/_bundled/<name>/`` of
the build tree, where `vlmbench.resources` finds them after `pip install .`. Editable installs skip
the copy: they read the checkout's folders directly.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vlmbench.resources import BUNDLED_FOLDERS, PACKAGED_SUBDIR  # noqa: E402  (needs HERE on sys.path)

# Never shipped, wherever they turn up inside a bundled folder. `stage-bases` holds the weights that the
# demo recipes start their last stage from (training inputs), `ablations` the one-axis variants that the
# README's effects table compares (research inputs): nothing a default evaluation loads.
_IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".DS_Store", ".ipynb_checkpoints", "stage-bases", "ablations"
)


class BuildWithBundledFolders(build_py):
    """`build_py` plus a copy of each bundled folder into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target_root = Path(self.build_lib) / "vlmbench" / PACKAGED_SUBDIR
        for name in BUNDLED_FOLDERS:
            source = HERE / name
            if not source.is_dir():
                raise SystemExit(f"cannot build vlmbench: the folder {source} is missing")
            target = target_root / name
            if target.exists():
                shutil.rmtree(target)  # a stale copy from an earlier build must not linger
            shutil.copytree(source, target, ignore=_IGNORED)


setup(cmdclass={"build_py": BuildWithBundledFolders})
