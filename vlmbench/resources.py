"""Where the bundled folders (task YAMLs, presets and demo checkpoints, recipes, templates) are.

The folders live once, at the top of the source checkout (``tasks/``, ``models/``, ...). A built
wheel carries a copy of each inside the package, under ``vlmbench/_bundled/<name>/`` (setup.py's
``build_py`` step makes it). This module is the only place that knows both locations:

- a source checkout or an editable install uses the checkout's folders, so edits show at once;
- an installed wheel uses the copy inside the package, found through `importlib.resources`.

Nothing here imports beyond the standard library, because setup.py reads `BUNDLED_FOLDERS` from it
while the wheel is being built.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import vlmbench
from vlmbench.errors import UserError

# The top-level folders that ship inside the wheel, in the order they are documented.
BUNDLED_FOLDERS: tuple[str, ...] = ("tasks", "models", "recipes", "reports", "leaderboard")

# Sub-package of `vlmbench` that holds the copies in a built wheel.
PACKAGED_SUBDIR = "_bundled"


def checkout_root() -> Path | None:
    """The source checkout this package was imported from, or None for an installed wheel.

    A checkout is recognised by its ``pyproject.toml`` next to the ``vlmbench/`` package directory
    (an installed wheel sits in ``site-packages/``, which has no such file of ours).
    """
    package_dir = Path(vlmbench.__file__).resolve().parent
    root = package_dir.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "vlmbench"' in text else None


def packaged_root() -> Path | None:
    """``vlmbench/_bundled`` of an installed wheel, or None when the package carries no copies."""
    candidate = importlib.resources.files("vlmbench") / PACKAGED_SUBDIR
    # A regular (unzipped) install gives a real path; zipped imports are not supported.
    if isinstance(candidate, Path) and candidate.is_dir():
        return candidate
    return None


def bundled_dir(name: str) -> Path:
    """The folder ``name`` (one of `BUNDLED_FOLDERS`): the checkout's own, else the wheel's copy.

    Raises UserError naming both places looked at when neither exists.
    """
    if name not in BUNDLED_FOLDERS:
        raise ValueError(f"{name!r} is not a bundled folder; bundled: {', '.join(BUNDLED_FOLDERS)}")
    looked: list[Path] = []
    root = checkout_root()
    if root is not None:
        folder = root / name
        if folder.is_dir():
            return folder
        looked.append(folder)
    packaged = packaged_root()
    if packaged is not None and (packaged / name).is_dir():
        return packaged / name
    looked.append(Path(str(importlib.resources.files("vlmbench") / PACKAGED_SUBDIR / name)))
    raise UserError(
        f"the bundled folder '{name}' is missing (looked in {', '.join(map(str, looked))}); "
        "reinstall vlmbench (pip install . builds a wheel that carries it)"
    )


def project_root() -> Path:
    """The directory that relative paths in recipes (outputs, work dirs, init weights) resolve against.

    The checkout when running from one (the recipes name ``runs/...`` and ``models/...`` there);
    else the current directory, so that an installed vlmbench never writes into ``site-packages``.
    """
    return checkout_root() or Path.cwd()
