"""The on-disk layout of a task's data directory, shared by the synthetic generators and the loaders.

A data directory is what `--data-dir` points at for one task:

    DIR/
      data/<split>-00000-of-00001.parquet   rows with the public release's own column names;
                                            the `image` column is a `datasets.Image` feature
      vlmbench_meta.json                    {"synthetic": true, "generator": ..., "generator_version": ...,
                                             "seed": ..., "task": ..., "n": ...}   (synthetic sets only)

Real releases in any layout `datasets` reads (parquet/arrow files, `save_to_disk`) are accepted too.
Column names per task (as the public Hugging Face releases spell them):
"""

from __future__ import annotations

META_FILE = "vlmbench_meta.json"

# task -> columns that must be present (the public release's names)
RELEASE_COLUMNS: dict[str, tuple[str, ...]] = {
    "pope": ("question_id", "question", "answer", "image_source", "image", "category"),
    "docvqa": ("questionId", "question", "answers", "image"),
    "textvqa": ("question_id", "question", "answers", "image"),
    "vqav2": ("question_id", "question", "answers", "image"),
    "chartqa": ("question", "answer", "image"),
    "ocr": ("question", "answer", "image"),
    "chair": ("image_id", "image", "gt_objects"),
}
