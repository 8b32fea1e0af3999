"""What a synthetic scene is made of: the 16 COCO categories, their colours, the scene groups, and the
`Scene` / `SceneObject` records that sampling produces and the renderer, captions and exporters read."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_IMAGE_SIZE: tuple[int, int] = (128, 128)

RGB = tuple[int, int, int]

COLORS: MappingProxyType[str, RGB] = MappingProxyType(
    {
        "red": (210, 40, 40),
        "blue": (40, 80, 210),
        "green": (40, 160, 60),
        "yellow": (235, 200, 30),
        "pink": (235, 115, 170),
        "purple": (130, 60, 170),
        "brown": (125, 75, 35),
        "black": (30, 30, 30),
        "gray": (125, 125, 125),
    }
)


@dataclass(frozen=True)
class Category:
    """A COCO category as drawn here: glyph aspect ratio (width / height) and colour palette."""

    id: int
    name: str
    plural: str
    aspect: float
    colors: tuple[str, ...]
    supercategory: str


CATEGORIES: tuple[Category, ...] = (
    Category(1, "person", "people", 0.5, ("red", "blue", "green"), "person"),
    Category(2, "bicycle", "bicycles", 1.6, ("red", "blue", "black"), "vehicle"),
    Category(3, "car", "cars", 1.8, ("red", "blue", "yellow"), "vehicle"),
    Category(6, "bus", "buses", 2.3, ("yellow", "red", "green"), "vehicle"),
    Category(10, "traffic light", "traffic lights", 0.45, ("red", "yellow", "green"), "outdoor"),
    Category(13, "stop sign", "stop signs", 1.0, ("red",), "outdoor"),
    Category(17, "cat", "cats", 1.0, ("yellow", "gray", "black"), "animal"),
    Category(18, "dog", "dogs", 1.5, ("brown", "black", "gray"), "animal"),
    Category(28, "umbrella", "umbrellas", 1.0, ("red", "blue", "purple", "pink"), "accessory"),
    Category(44, "bottle", "bottles", 0.4, ("green", "brown", "blue"), "kitchen"),
    Category(47, "cup", "cups", 1.1, ("red", "blue", "yellow"), "kitchen"),
    Category(52, "banana", "bananas", 1.8, ("yellow", "green"), "food"),
    Category(53, "apple", "apples", 1.0, ("red", "green", "yellow"), "food"),
    Category(62, "chair", "chairs", 0.8, ("brown", "black", "red"), "furniture"),
    Category(67, "dining table", "dining tables", 2.0, ("brown", "gray"), "furniture"),
    Category(74, "clock", "clocks", 1.0, ("black", "red", "blue"), "indoor"),
)
CATEGORY_BY_NAME: MappingProxyType[str, Category] = MappingProxyType({c.name: c for c in CATEGORIES})
# Scene types: a scene draws most of its objects from one of these (overlapping) groups.
GROUPS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "kitchen": ("dining table", "cup", "bottle", "chair", "banana", "apple"),
        "street": ("car", "bus", "traffic light", "stop sign", "bicycle", "person"),
        "park": ("person", "dog", "umbrella", "bicycle", "bottle", "banana"),
        "living room": ("cat", "clock", "chair", "cup", "dog", "apple"),
    }
)


@dataclass(frozen=True)
class SceneObject:
    category: Category
    color: str
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels
    position: str  # left / center / right, by the bbox centre in thirds of the width


@dataclass(frozen=True)
class Scene:
    image_id: int
    width: int
    height: int
    group: str  # the scene type most objects were drawn from (a key of GROUPS)
    background: tuple[RGB, RGB]
    objects: tuple[SceneObject, ...]

    @property
    def file_name(self) -> str:
        return f"synth_{self.image_id:06d}.png"

    @property
    def category_names(self) -> list[str]:
        """Distinct categories present, in COCO id order."""
        present = {o.category.name for o in self.objects}
        return [c.name for c in CATEGORIES if c.name in present]
