"""The preset catalog: what `vlmbench models` lists, readable without importing torch.

A preset's design choices (vision encoder, projector, resolution strategy, description) are in its
YAML. Its tile count and visual tokens for the reference image and its parameter count are only known
once the model is built, which needs torch and transformers (seconds of start-up). Those three numbers
are therefore kept in ``models/catalog.json``, one entry per preset, each stamped with a fingerprint of
the preset's config. A listing uses an entry whose fingerprint matches the YAML as it is now, and
builds the model (importing torch) only for a preset that is new or was edited since the catalog was
written.

The numbers also depend on the model code; ``tests/test_startup.py`` rebuilds every preset and fails
when the catalog no longer matches. Refresh it with ``python -m vlmbench.modeling.catalog``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from vlmbench.modeling.config import VLMConfig
from vlmbench.modeling.presets import demo_checkpoint, load_preset, models_dir, preset_names

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
CATALOG_VERSION = 1
BUILT_FIELDS: tuple[str, ...] = ("tiles", "visual_tokens", "params")
"""The entry fields that need a built model; the rest of a listing row is read from the YAML."""

REFRESH_HINT = "python -m vlmbench.modeling.catalog"


def config_fingerprint(config: VLMConfig) -> str:
    """sha256 of the config fields that shape the model (the description is left out: prose only)."""
    fields = {k: v for k, v in config.to_dict().items() if k != "description"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def built_entry(config: VLMConfig) -> dict[str, Any]:
    """The catalog entry of a config, computed by building it with random weights (imports torch)."""
    from vlmbench.modeling.interface import REFERENCE_IMAGE
    from vlmbench.modeling.presets import build_random

    model = build_random(config)  # the weights are irrelevant for the token and parameter budget
    plan = model.resolution.plan(*REFERENCE_IMAGE)
    return {
        "fingerprint": config_fingerprint(config),
        "tiles": len(plan.tile_sizes),
        "visual_tokens": int(model.visual_tokens_for(plan)),
        "params": int(model.parameter_counts()["total"]),
    }


def read_catalog(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The catalog's entries by preset name; {} when the file is missing, unreadable or of another version."""
    path = (directory or models_dir()) / CATALOG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CATALOG_VERSION:
        return {}
    entries = data.get("presets")
    return {k: v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}


def _usable(entry: dict[str, Any] | None, fingerprint: str) -> bool:
    return (
        entry is not None
        and entry.get("fingerprint") == fingerprint
        and all(type(entry.get(key)) is int for key in BUILT_FIELDS)
    )


def preset_rows(directory: Path | None = None) -> list[dict[str, Any]]:
    """One row per preset, as `vlmbench models --json` prints them.

    Built-model numbers come from the catalog when its entry matches the preset's config, else from
    building the preset (logged: the catalog is stale for it)."""
    directory = directory or models_dir()
    catalog = read_catalog(directory)
    rows = []
    for name in preset_names(directory):
        config = load_preset(name, directory)
        entry = catalog.get(name)
        if not _usable(entry, config_fingerprint(config)):
            log.info(
                "preset %s is not in %s as configured now; building it to count (refresh: %s)",
                name,
                directory / CATALOG_FILE,
                REFRESH_HINT,
            )
            entry = built_entry(config)
        rows.append(
            {
                "name": name,
                "vision": f"{config.vision.kind}/{config.vision.style}",
                "projector": config.projector.kind + ("+xattn" if config.cross_attention_every else ""),
                "resolution": config.resolution.name,
                "tiles": entry["tiles"],
                "visual_tokens": entry["visual_tokens"],
                "params": entry["params"],
                "demo_checkpoint": demo_checkpoint(name, directory) is not None,
                "description": config.description,
            }
        )
    return rows


def build_catalog(directory: Path | None = None) -> dict[str, Any]:
    """The catalog document for every preset in ``directory``, each built afresh (imports torch)."""
    directory = directory or models_dir()
    presets = {name: built_entry(load_preset(name, directory)) for name in preset_names(directory)}
    return {"version": CATALOG_VERSION, "refresh": REFRESH_HINT, "presets": presets}


def write_catalog(directory: Path | None = None) -> Path:
    """Rebuild every preset and write ``catalog.json`` (atomically) into ``directory``."""
    directory = directory or models_dir()
    path = directory / CATALOG_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(build_catalog(directory), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(f"wrote {write_catalog()}")
