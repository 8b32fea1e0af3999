"""RePOPE (Neuhaus & Hein 2025): POPE's questions with RePOPE's corrected labels.

A task YAML switches POPE to RePOPE's labels by naming this adapter (``adapter: repope``, see
``tasks/repope.yaml``); everything else is the POPE task's. The label files are RePOPE's
``annotations/coco_repope_{random,popular,adversarial}.json`` (github.com/YanNeu/RePOPE), in the original
POPE format: one JSON object per line, ``{"question_id", "image", "text", "label"}``. They are looked for
in ``--data-dir`` (the POPE release folder) itself, its ``annotations/``, ``repope/`` and ``repope/annotations/``
folders, then in
``$VLMBENCH_CACHE/repope/`` and ``$VLMBENCH_CACHE/repope/annotations/``.

A POPE question is matched to a RePOPE entry by its split, its image (file stem: ``image_source`` in
lmms-lab/POPE, ``image`` in RePOPE) and its question text (case and spacing ignored); the RePOPE label
replaces POPE's. Questions RePOPE left out (the ambiguous ones, dropped as the release drops them) are
not evaluated. The data source and fingerprint in results.json name the label files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from vlmbench.errors import UserError
from vlmbench.metrics.pope import POPE_SPLITS
from vlmbench.tasks.base import DataInfo, Sample
from vlmbench.tasks.pope import Adapter as PopeAdapter

logger = logging.getLogger(__name__)

LABEL_FILE = "coco_repope_{split}.json"
Key = tuple[str, str, str]


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def label_key(split: str, image: str, question: str) -> Key:
    """How a POPE question and a RePOPE entry are matched: split, image file stem, question text."""
    return split, Path(str(image)).stem, _norm(question)


def label_dirs(data_dir: Path | None, cache_dir: Path) -> list[Path]:
    """Where RePOPE's label files are looked for, in order."""
    dirs = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        dirs += [root, root / "annotations", root / "repope", root / "repope" / "annotations"]
    return [*dirs, cache_dir / "repope", cache_dir / "repope" / "annotations"]


def find_labels(data_dir: Path | None, cache_dir: Path) -> Path:
    """The first folder holding all three RePOPE label files; `UserError` listing where it looked."""
    tried = label_dirs(data_dir, cache_dir)
    for folder in tried:
        if all((folder / LABEL_FILE.format(split=s)).is_file() for s in POPE_SPLITS):
            return folder
    raise UserError(
        "RePOPE's label files ("
        + ", ".join(LABEL_FILE.format(split=s) for s in POPE_SPLITS)
        + ") are not in "
        + ", ".join(str(t) for t in tried)
        + "; download them from github.com/YanNeu/RePOPE (annotations/) into one of these folders"
    )


def read_labels(folder: Path) -> dict[Key, str]:
    """Every RePOPE entry as ``{(split, image stem, question): "yes" | "no"}``."""
    labels: dict[Key, str] = {}
    for split in POPE_SPLITS:
        path = folder / LABEL_FILE.format(split=split)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                label = str(entry["label"]).strip().lower()
                key = label_key(split, entry["image"], entry["text"])
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(
                    f"{path}, line {number}: not a POPE label entry ({type(exc).__name__}: {exc})"
                ) from exc
            if label not in ("yes", "no"):
                raise UserError(f"{path}, line {number}: label {entry['label']!r} is neither yes nor no")
            labels[key] = label
    return labels


class Adapter(PopeAdapter):
    """POPE with RePOPE's labels: relabelled questions, ambiguous ones dropped."""

    family: ClassVar[str] = "repope"
    _labels: dict[Key, str] | None = None

    def load(
        self,
        data_dir: Path | None = None,
        limit: int | None = None,
        cache_dir: Path | None = None,
        synthetic_n: int | None = None,
    ) -> tuple[list[Sample], DataInfo]:
        from vlmbench.data.loaders import default_cache_dir

        folder = find_labels(data_dir, Path(cache_dir) if cache_dir else default_cache_dir())
        self._labels = read_labels(folder)
        self._counts: dict[str, int] = {}
        samples, info = super().load(data_dir, limit=limit, cache_dir=cache_dir, synthetic_n=synthetic_n)
        digest = hashlib.sha256(info.fingerprint.encode())
        for split in POPE_SPLITS:
            digest.update((folder / LABEL_FILE.format(split=split)).read_bytes())
        meta = {**info.meta, "labels": "RePOPE", "labels_dir": str(folder), **self._counts}
        return samples, replace(
            info, source=f"{info.source} + RePOPE labels:{folder}", fingerprint=digest.hexdigest(), meta=meta
        )

    def assign_ids(self, samples: list[Sample], where: str) -> None:
        """Before the ids are checked (and before ``--limit``): relabel every question RePOPE has and drop
        the others."""
        assert self._labels is not None
        kept: list[Sample] = []
        relabelled = 0
        for sample in samples:
            if sample.meta.get("error"):
                kept.append(sample)  # a malformed row stays an error
                continue
            label = self._labels.get(
                label_key(sample.meta.get("category", ""), sample.image_key, sample.question)
            )
            if label is None:
                continue
            if label != sample.reference_fields.get("answer"):
                relabelled += 1
                sample.references = [label]
                sample.reference_fields = {**sample.reference_fields, "answer": label}
            kept.append(sample)
        if not any(not s.meta.get("error") for s in kept):
            raise UserError(
                f"none of the {len(samples)} POPE questions in {where} has a RePOPE label; RePOPE relabels COCO POPE "
                "(lmms-lab/POPE, matched by split, image_source and question), not the synthetic set"
            )
        self._counts = {"dropped": len(samples) - len(kept), "relabelled": relabelled}
        logger.info(
            "%s: RePOPE labels: %d questions kept, %d relabelled, %d not in RePOPE (dropped)",
            self.config.name,
            len(kept),
            relabelled,
            len(samples) - len(kept),
        )
        samples[:] = kept
        super().assign_ids(samples, where)
