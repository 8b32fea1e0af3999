"""`vlmbench data synth` and `vlmbench data pope-from-coco`, read back through the task loaders."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from vlmbench.cli import main
from vlmbench.data.layout import META_FILE
from vlmbench.tasks.registry import load_task

HAS_SYNTH = importlib.util.find_spec("vlmbench.data.synth") is not None and hasattr(
    importlib.import_module("vlmbench.data.synth"), "generate"
)
HAS_POPE_COCO = importlib.util.find_spec("vlmbench.data.pope_coco") is not None

needs_synth = pytest.mark.skipif(
    not HAS_SYNTH, reason="vlmbench.data.synth.generate is not in this checkout yet"
)
needs_pope_coco = pytest.mark.skipif(
    not HAS_POPE_COCO, reason="vlmbench.data.pope_coco is not in this checkout yet"
)


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@needs_synth
@pytest.mark.parametrize(("task", "n", "rows"), [("chartqa", 5, 5), ("pope", 2, 36)])
def test_synth_writes_a_loadable_deterministic_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, n: int, rows: int
) -> None:
    out = tmp_path / "set"
    assert main(["data", "synth", "--task", task, "--out", str(out), "--seed", "3", "--n", str(n)]) == 0
    assert f"wrote the synthetic {task} set ({rows} rows, seed 3) to {out}" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["synthetic"] is True and meta["seed"] == 3
    samples, info = load_task(task).load(out)
    assert len(samples) == rows and info.synthetic and info.source == f"local:{out}"
    assert all("error" not in s.meta for s in samples)
    again = tmp_path / "again"
    assert main(["data", "synth", "--task", task, "--out", str(again), "--seed", "3", "--n", str(n)]) == 0
    assert _files(again) == _files(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


@needs_synth
def test_synth_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--task", "nosuch", "--out", str(tmp_path / "a")]) == 2
    assert "no synthetic generator for task 'nosuch'" in capsys.readouterr().err
    assert main(["data", "synth", "--task", "ocr", "--out", str(tmp_path / "a"), "--n", "0"]) == 2
    assert "--n must be a positive integer" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert main(["data", "synth", "--task", "ocr", "--out", str(tmp_path / "full"), "--n", "1"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_data_without_action_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data"]) == 2
    assert "choose an action: synth or pope-from-coco" in capsys.readouterr().err


CATEGORIES = ("person", "dog", "cup", "car", "apple", "chair")


def _tiny_coco(root: Path, n_images: int = 4) -> tuple[Path, Path]:
    """A hand-made COCO instances file: image i holds categories i, i+1, i+2 (mod 6), plus the image files."""
    images_dir = root / "val2014"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n_images):
        name = f"COCO_val2014_{i + 1:012d}.jpg"
        Image.new("RGB", (16, 12), (40 * i, 90, 160)).save(images_dir / name, format="JPEG")
        images.append({"id": i + 1, "file_name": name, "width": 16, "height": 12})
        for k in range(3):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": (i + k) % len(CATEGORIES) + 1,
                    "bbox": [1.0, 1.0, 4.0, 4.0],
                    "area": 16.0,
                    "iscrowd": 0,
                    "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
                }
            )
    categories = [{"id": i + 1, "name": name, "supercategory": "x"} for i, name in enumerate(CATEGORIES)]
    path = root / "instances_val2014.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, images_dir


@needs_pope_coco
def test_pope_from_coco_builds_a_loadable_pope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annotations, images = _tiny_coco(tmp_path / "coco")
    out = tmp_path / "pope"
    argv = ["data", "pope-from-coco", "--annotations", str(annotations), "--images", str(images)]
    assert main([*argv, "--out", str(out), "--seed", "1", "--n-images", "3"]) == 0
    assert "wrote POPE (54 rows, seed 1)" in capsys.readouterr().out
    samples, info = load_task("pope").load(out)
    assert len(samples) == 3 * 18 and not info.synthetic
    assert Counter(s.meta["category"] for s in samples) == {"random": 18, "popular": 18, "adversarial": 18}
    assert Counter(s.references[0] for s in samples) == {"yes": 27, "no": 27}
    assert len({s.image_key for s in samples}) == 3
    assert samples[0].load_image().size == (16, 12)


@needs_pope_coco
def test_pope_from_coco_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annotations, images = _tiny_coco(tmp_path / "coco", n_images=1)
    missing = [
        "data",
        "pope-from-coco",
        "--annotations",
        str(tmp_path / "none.json"),
        "--images",
        str(images),
    ]
    assert main([*missing, "--out", str(tmp_path / "o")]) == 2
    assert "is not a file" in capsys.readouterr().err
    no_images = [
        "data",
        "pope-from-coco",
        "--annotations",
        str(annotations),
        "--images",
        str(tmp_path / "nope"),
    ]
    assert main([*no_images, "--out", str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{not json")
    broken = [
        "data",
        "pope-from-coco",
        "--annotations",
        str(tmp_path / "broken.json"),
        "--images",
        str(images),
    ]
    assert main([*broken, "--out", str(tmp_path / "o")]) == 2
    assert "not a COCO instances file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
