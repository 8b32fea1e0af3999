"""Visual-dependence controls (`vlmbench run --controls blank,shuffled`): the same questions asked
again with each image replaced, so that a metric's dependence on the image can be measured.

* ``blank``: every image becomes an image of the same size filled with that image's mean colour
  (per RGB channel, rounded), so the encoder sees the right resolution and tile plan but no content.
* ``shuffled``: every image becomes the image of another sample, by a derangement of the task's
  distinct images (see `shuffle_plan`), so the model sees a real image that is the wrong one.

A control sample is a `Sample` whose images are `ControlImage`s: the runner and the model see them
through the same interface as real images (`key`, `load`), so every model kind (preset, checkpoint,
``hf:``, served) gets the controls without model-specific code. Their feature-cache keys carry the
control's name, so a control image never shares visual tokens with a real one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vlmbench.errors import UserError
from vlmbench.tasks.base import Sample, SampleError, SampleImage

if TYPE_CHECKING:
    from PIL import Image as PILImage

CONTROLS: tuple[str, ...] = ("blank", "shuffled")
"""The controls `--controls` accepts, in the order they run."""

PASS_SEPARATOR = "@"
"""A control pass is logged and sampled under ``<task>@<control>`` (``logs/pope@blank.rank0.jsonl``,
``samples/pope@blank.jsonl``), beside the task's own files."""


def parse_controls(text: str | None) -> tuple[str, ...]:
    """``--controls``: a comma-separated subset of `CONTROLS` (``none`` or empty: no controls), in
    canonical order; an unknown or repeated name is a `UserError` naming the flag."""
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise UserError(f"--controls {text}: unknown control {', '.join(unknown)}; use a comma-separated subset of {','.join(CONTROLS)} (or none)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--controls {text} names {', '.join(repeated)} more than once; list each control once")
    return tuple(c for c in CONTROLS if c in names)


def pass_name(task: str, control: str | None) -> str:
    """The name a task's pass is logged under: the task itself, or ``<task>@<control>``."""
    return task if control is None else f"{task}{PASS_SEPARATOR}{control}"


def blank_like(image: PILImage.Image) -> PILImage.Image:
    """An RGB image of ``image``'s size filled with its mean colour (each channel rounded)."""
    from PIL import Image, ImageStat

    rgb = image.convert("RGB")
    colour = tuple(int(round(v)) for v in ImageStat.Stat(rgb).mean)
    return Image.new("RGB", rgb.size, colour)


@dataclass(frozen=True)
class ControlImage:
    """An image of a control sample: the ``source`` image, blanked (``blank``) or as it is (``shuffled``,
    where the source is another sample's image). ``key`` names the control, for the feature cache."""

    key: str
    source: SampleImage | None
    blank: bool = False
    problem: str = ""
    """Why no control image exists for this slot (then `load` raises `SampleError`)."""

    def load(self, question_id: str) -> PILImage.Image:
        if self.source is None:
            raise SampleError(f"no control image for question_id {question_id}: {self.problem}")
        image = self.source.load(question_id)
        return blank_like(image) if self.blank else image


@dataclass
class ControlSample(Sample):
    """A `Sample` whose images are replaced by `ControlImage`s (prompt, references and meta kept)."""

    control: str = ""
    control_images: list[ControlImage] = field(default_factory=list)

    @property
    def images(self) -> list[Any]:  # ControlImage has SampleImage's interface (key, load)
        return list(self.control_images)

    @property
    def source_keys(self) -> list[str | None]:
        """The real image key each control image was made from (for ``shuffled``: the donor's)."""
        return [image.source.key if image.source is not None else None for image in self.control_images]


def content_id(image: SampleImage) -> str:
    """A hash of the image's bytes (its file's bytes for a path), so that two keys holding the same
    picture count as one image for the derangement; the key itself when the file cannot be read."""
    data = image.image_bytes
    if data is None and image.image_path:
        try:
            with open(image.image_path, "rb") as handle:
                data = handle.read()
        except OSError:
            data = None
    if data is None:
        return "key:" + image.key
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _order_key(seed: int, content: str) -> str:
    return hashlib.sha256(f"{seed}\0{content}".encode()).hexdigest()


@dataclass(frozen=True)
class ShufflePlan:
    """The derangement of a task's distinct images: ``cycle`` is the distinct contents in a seeded
    order; content ``cycle[i]`` is replaced by ``cycle[i + 1]`` (cyclically), skipping contents the
    same sample already shows; ``representative[c]`` is the image shown for content ``c``."""

    cycle: tuple[str, ...]
    representative: dict[str, SampleImage]

    def donors(self, own: Sequence[str]) -> list[str | None]:
        """For a sample showing contents ``own`` (in prompt order), the content shown instead of each:
        the next content along the cycle that the sample does not show (None when there is none)."""
        position = {c: i for i, c in enumerate(self.cycle)}
        mine = set(own)
        out: list[str | None] = []
        for content in own:
            start = position[content]
            out.append(
                next(
                    (self.cycle[(start + k) % len(self.cycle)] for k in range(1, len(self.cycle))
                     if self.cycle[(start + k) % len(self.cycle)] not in mine),
                    None,
                )
            )
        return out


def shuffle_plan(samples: Sequence[Sample], seed: int) -> ShufflePlan:
    """The seeded derangement over the distinct image contents of ``samples``.

    Distinct contents (not samples: POPE asks many questions about one image) are ordered by
    sha256(seed, content hash) and each is mapped to the next one in that order, a single cycle, so
    no content maps to itself. The plan depends only on the set of images and the seed — not on the
    order of the samples, the batch size or the number of processes. The representative of a content
    is its image with the smallest key."""
    representative: dict[str, SampleImage] = {}
    for sample in samples:
        if sample.meta.get("error"):
            continue
        for image in sample.images:
            content = content_id(image)
            kept = representative.get(content)
            if kept is None or image.key < kept.key:
                representative[content] = image
    cycle = tuple(sorted(representative, key=lambda c: (_order_key(seed, c), c)))
    return ShufflePlan(cycle, representative)


def control_samples(task: str, samples: Sequence[Sample], control: str, seed: int) -> list[Sample]:
    """The task's samples with every image replaced as ``control`` says (same ids, prompts, references).

    ``shuffled`` needs at least two distinct images in the task: otherwise `UserError`, before any
    inference. A sample showing every distinct image has no image to receive; its control images
    fail (`SampleError`) and the sample is counted in the control's errors."""
    if control == "blank":
        return [_replaced(s, control, [ControlImage(f"blank|{img.key}", img, blank=True) for img in s.images]) for s in samples]
    if control != "shuffled":
        raise ValueError(f"unknown control {control!r}")
    plan = shuffle_plan(samples, seed)
    if len(plan.cycle) < 2:
        raise UserError(
            f"--controls shuffled: task {task} has {len(plan.cycle)} distinct image(s); exchanging images "
            "needs at least 2 (raise --limit, or drop shuffled from --controls)"
        )
    out: list[Sample] = []
    for sample in samples:
        own = [content_id(image) for image in sample.images]
        images = []
        for donor in plan.donors(own):
            if donor is None:
                images.append(ControlImage("shuffled|none", None, problem="the sample shows every image of the task"))
            else:
                source = plan.representative[donor]
                images.append(ControlImage(f"shuffled|{source.key}", source))
        out.append(_replaced(sample, control, images))
    return out


def _replaced(sample: Sample, control: str, images: list[ControlImage]) -> ControlSample:
    first = images[0].source if images and images[0].source is not None else None
    base = replace(
        sample,
        image_key=images[0].key if images else sample.image_key,
        image_bytes=first.image_bytes if first else None,  # header reads (batch shapes) see the control's size
        image_path=first.image_path if first else None,
        extra_images=[],
    )
    fields = {f: getattr(base, f) for f in Sample.__dataclass_fields__}
    return ControlSample(**fields, control=control, control_images=images)
