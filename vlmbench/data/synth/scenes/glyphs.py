"""Rendering a scene: one simple glyph per category on a two-colour gradient, drawn supersampled."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from vlmbench.data.synth.scenes.vocabulary import COLORS, RGB, Scene, SceneObject

_SUPERSAMPLE = 4  # draw at 4x and box-filter down: smooth glyph edges even for 7 px objects

_DARK: RGB = (35, 35, 35)
_SKIN: RGB = (225, 180, 140)
_GLASS: RGB = (170, 210, 235)
_WHITE: RGB = (248, 248, 248)


def _dim(rgb: RGB, factor: float) -> RGB:
    return (int(rgb[0] * factor), int(rgb[1] * factor), int(rgb[2] * factor))


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    s = _SUPERSAMPLE
    x, y, w, h = obj.bbox
    x0, y0, W, H = x * s, y * s, w * s, h * s  # noqa: N806 - box size in supersampled pixels
    x1, y1 = x0 + W - 1, y0 + H - 1
    rgb = COLORS[obj.color]
    lw = max(2, round(min(W, H) * 0.09))  # stroke width for line-drawn parts
    name = obj.category.name

    if name == "person":
        head = min(W * 0.8, H * 0.26)
        cx = x0 + W / 2
        draw.ellipse((cx - head / 2, y0, cx + head / 2, y0 + head), fill=_SKIN)
        draw.rectangle((x0, y0 + H * 0.28, x1, y0 + H * 0.65), fill=rgb)  # shirt and arms
        draw.rectangle((x0 + W * 0.18, y0 + H * 0.64, x0 + W * 0.45, y1), fill=_DARK)
        draw.rectangle((x0 + W * 0.55, y0 + H * 0.64, x1 - W * 0.18, y1), fill=_DARK)
    elif name == "bicycle":
        r = H * 0.36
        rear, front = (x0 + r, y1 - r), (x1 - r, y1 - r)
        crank = (x0 + W * 0.45, y1 - r)
        seat = (x0 + W * 0.36, y0 + H * 0.2)
        head = (x0 + W * 0.68, y0 + H * 0.16)
        for cx, cy in (rear, front):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=_DARK, width=lw)
        draw.line(
            (rear, crank, head, seat, rear), fill=rgb, width=lw
        )  # chain stay, down tube, top tube, seat stay
        draw.line((seat, crank), fill=rgb, width=lw)
        draw.line((front, head, (x0 + W * 0.62, y0)), fill=rgb, width=lw)  # fork and stem
        draw.line(((x0 + W * 0.55, y0), (x0 + W * 0.72, y0)), fill=_DARK, width=lw)  # handlebar
        draw.line(
            ((x0 + W * 0.3, y0 + H * 0.14), (x0 + W * 0.42, y0 + H * 0.14)), fill=_DARK, width=lw
        )  # saddle
    elif name == "car":
        r = H * 0.2
        draw.polygon(
            [
                (x0 + W * 0.22, y0 + H * 0.4),
                (x0 + W * 0.34, y0),
                (x0 + W * 0.68, y0),
                (x0 + W * 0.8, y0 + H * 0.4),
            ],
            fill=rgb,
        )
        draw.polygon(
            [
                (x0 + W * 0.3, y0 + H * 0.38),
                (x0 + W * 0.38, y0 + H * 0.1),
                (x0 + W * 0.64, y0 + H * 0.1),
                (x0 + W * 0.72, y0 + H * 0.38),
            ],
            fill=_GLASS,
        )
        draw.rounded_rectangle((x0, y0 + H * 0.38, x1, y1 - r), radius=H * 0.1, fill=rgb)
        for cx in (x0 + W * 0.24, x0 + W * 0.76):
            draw.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=_DARK)
    elif name == "bus":
        r = H * 0.14
        draw.rounded_rectangle((x0, y0, x1, y1 - r), radius=H * 0.1, fill=rgb)
        n_win = 5
        pitch = W * 0.9 / n_win
        for i in range(n_win):
            wx = x0 + W * 0.05 + i * pitch
            draw.rectangle((wx + pitch * 0.12, y0 + H * 0.14, wx + pitch * 0.88, y0 + H * 0.48), fill=_GLASS)
        for cx in (x0 + W * 0.2, x0 + W * 0.8):
            draw.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=_DARK)
    elif name == "traffic light":
        draw.rounded_rectangle((x0, y0, x1, y1), radius=W * 0.2, fill=_DARK)
        lamps = ("red", "yellow", "green")
        d = min(W * 0.7, H * 0.26)
        cx = x0 + W / 2
        for i, lamp in enumerate(lamps):
            cy = y0 + H * (0.18 + 0.32 * i)
            fill = COLORS[lamp] if lamp == obj.color else _dim(COLORS[lamp], 0.3)
            draw.ellipse((cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2), fill=fill)
    elif name == "stop sign":
        cx, cy, r = x0 + W / 2, y0 + H / 2, min(W, H) / 2
        octagon = [
            (
                cx + r * math.cos(math.pi / 8 + k * math.pi / 4),
                cy + r * math.sin(math.pi / 8 + k * math.pi / 4),
            )
            for k in range(8)
        ]
        draw.polygon(octagon, fill=rgb)
        draw.rectangle((x0 + W * 0.22, y0 + H * 0.42, x1 - W * 0.22, y0 + H * 0.58), fill=_WHITE)
    elif name == "cat":
        draw.polygon([(x0, y0), (x0 + W * 0.4, y0 + H * 0.35), (x0 + W * 0.05, y0 + H * 0.55)], fill=rgb)
        draw.polygon([(x1, y0), (x1 - W * 0.4, y0 + H * 0.35), (x1 - W * 0.05, y0 + H * 0.55)], fill=rgb)
        draw.ellipse((x0, y0 + H * 0.22, x1, y1), fill=rgb)
        eye = W * 0.1
        for ex in (x0 + W * 0.32, x0 + W * 0.68):
            draw.ellipse((ex - eye, y0 + H * 0.5, ex + eye, y0 + H * 0.5 + 2 * eye), fill=(60, 170, 90))
    elif name == "dog":
        draw.ellipse((x0 + W * 0.1, y0 + H * 0.3, x0 + W * 0.78, y0 + H * 0.75), fill=rgb)  # body
        for lx in (0.18, 0.32, 0.56, 0.68):
            draw.rectangle((x0 + W * lx, y0 + H * 0.6, x0 + W * (lx + 0.08), y1), fill=rgb)
        draw.line(((x0 + W * 0.14, y0 + H * 0.45), (x0, y0 + H * 0.12)), fill=rgb, width=lw)  # tail
        draw.ellipse((x0 + W * 0.64, y0, x1 - W * 0.02, y0 + H * 0.48), fill=rgb)  # head
        draw.polygon(
            [(x1 - W * 0.08, y0 + H * 0.2), (x1, y0 + H * 0.26), (x1 - W * 0.08, y0 + H * 0.4)], fill=rgb
        )  # snout
        draw.ellipse((x0 + W * 0.66, y0 + H * 0.05, x0 + W * 0.76, y0 + H * 0.45), fill=_dim(rgb, 0.6))  # ear
    elif name == "umbrella":
        cx = x0 + W / 2
        draw.pieslice((x0, y0, x1, y0 + H * 1.1), 180, 360, fill=rgb)
        draw.line(((cx, y0 + H * 0.5), (cx, y1 - H * 0.12)), fill=_DARK, width=lw)
        hook = H * 0.14
        draw.arc((cx - hook, y1 - 2 * hook, cx + hook, y1), 0, 180, fill=_DARK, width=lw)
    elif name == "bottle":
        draw.rectangle((x0 + W * 0.3, y0, x1 - W * 0.3, y0 + H * 0.1), fill=_DARK)  # cap
        draw.rectangle((x0 + W * 0.3, y0 + H * 0.1, x1 - W * 0.3, y0 + H * 0.35), fill=rgb)  # neck
        draw.rounded_rectangle((x0, y0 + H * 0.3, x1, y1), radius=W * 0.2, fill=rgb)
        draw.rectangle((x0, y0 + H * 0.55, x1, y0 + H * 0.72), fill=_WHITE)  # label
    elif name == "cup":
        draw.ellipse((x0 + W * 0.55, y0 + H * 0.2, x1, y0 + H * 0.7), outline=rgb, width=lw)  # handle
        draw.polygon([(x0, y0), (x0 + W * 0.76, y0), (x0 + W * 0.66, y1), (x0 + W * 0.1, y1)], fill=rgb)
    elif name == "banana":
        cx = x0 + W / 2
        outer = [(cx + W / 2 * math.cos(t), y0 + H * math.sin(t)) for t in np.linspace(0, math.pi, 24)]
        inner = [
            (cx + W * 0.42 * math.cos(t), y0 + H * 0.45 * math.sin(t)) for t in np.linspace(math.pi, 0, 24)
        ]
        draw.polygon(outer + inner, fill=rgb)
        tip = max(2, lw)
        draw.ellipse((x0, y0, x0 + tip, y0 + tip), fill=_DARK)
        draw.ellipse((x1 - tip, y0, x1, y0 + tip), fill=_DARK)
    elif name == "apple":
        cx = x0 + W / 2
        draw.ellipse((x0, y0 + H * 0.18, x1, y1), fill=rgb)
        draw.line(((cx, y0 + H * 0.3), (cx, y0)), fill=(90, 55, 25), width=lw)
        leaf = (20, 110, 40) if obj.color != "green" else (20, 80, 30)
        draw.ellipse((cx + W * 0.04, y0, cx + W * 0.34, y0 + H * 0.16), fill=leaf)
    elif name == "chair":
        draw.rectangle((x0, y0, x0 + W * 0.2, y1), fill=rgb)  # back and back leg
        draw.rectangle((x0, y0 + H * 0.5, x1, y0 + H * 0.64), fill=rgb)  # seat
        draw.rectangle((x1 - W * 0.18, y0 + H * 0.5, x1, y1), fill=rgb)  # front leg
    elif name == "dining table":
        draw.rectangle((x0, y0, x1, y0 + H * 0.22), fill=rgb)
        for lx in (0.08, 0.84):
            draw.rectangle((x0 + W * lx, y0, x0 + W * (lx + 0.08), y1), fill=rgb)
    elif name == "clock":
        draw.ellipse((x0, y0, x1, y1), fill=rgb)
        inset = min(W, H) * 0.14
        draw.ellipse((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=_WHITE)
        cx, cy = x0 + W / 2, y0 + H / 2
        draw.line(((cx, cy), (cx, y0 + H * 0.24)), fill=_DARK, width=lw)
        draw.line(((cx, cy), (x0 + W * 0.7, cy)), fill=_DARK, width=lw)
    else:  # pragma: no cover - every category above has a glyph
        raise ValueError(f"no glyph for category {name!r}")


def draw_scene(scene: Scene) -> Image.Image:
    """Render a scene (RGB). The background is a vertical two-colour gradient."""
    s = _SUPERSAMPLE
    top, bottom = (np.array(c, dtype=np.float64) for c in scene.background)
    t = np.linspace(0.0, 1.0, scene.height * s)[:, None]
    column = np.rint(top * (1 - t) + bottom * t).astype(np.uint8)  # (H*s, 3)
    pixels = np.broadcast_to(column[:, None, :], (scene.height * s, scene.width * s, 3))
    canvas = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        _draw_object(draw, obj)
    return canvas.reduce(s)
