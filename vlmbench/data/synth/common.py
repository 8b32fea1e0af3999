"""Writing a synthetic set in the layout of the public release (see `vlmbench.data.layout`)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from vlmbench.data.layout import META_FILE

GENERATOR_VERSION = "1"


def png_bytes(image: Image.Image) -> bytes:
    """Encode deterministically (no timestamps in PNG) so equal seeds give byte-identical files."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide `datasets`' progress bars for one call (they would clutter the run's own progress bar)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def write_release(
    out: Path,
    rows: list[dict[str, Any]],
    *,
    task: str,
    generator: str,
    seed: int,
    split: str = "test",
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write `rows` as `out/data/<split>-00000-of-00001.parquet` plus `out/vlmbench_meta.json`.

    Each row's `image` must be PNG bytes; it is stored as a `datasets.Image` feature
    ({"bytes", "path"}), which is how the Hugging Face releases store images.
    """
    import datasets

    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    table = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    if "image" in table:
        table["image"] = [{"bytes": b, "path": None} for b in table["image"]]
    dataset = datasets.Dataset.from_dict(table)
    if "image" in table:
        dataset = dataset.cast_column("image", datasets.Image())
    path = out / "data" / f"{split}-00000-of-00001.parquet"
    with quiet_datasets():
        dataset.to_parquet(str(path))
    meta = {
        "synthetic": True,
        "generator": generator,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "task": task,
        "n": len(rows),
        "split": split,
        **(extra_meta or {}),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path
