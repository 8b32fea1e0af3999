"""Sample-browser thumbnails, each distinct image stored once (keyed by a hash of its bytes).

Runs evaluated on the same data set carry the same thumbnails (one copy per run directory), and
one image often serves several questions (POPE asks about every image several times). A page
therefore names a thumbnail by content key and refers to each image once.

Two stores:

* :class:`InlineThumbnails` (a self-contained report): the page carries one ``KEY -> data: URI``
  table and ``<img data-thumb="KEY">`` tags; the report's script sets ``src`` from the table.
* :class:`FolderThumbnails` (the leaderboard site): the images are written once into a shared
  folder of the output (``thumbs/<key>.<ext>``) and ``<img src>`` names the file.

Everything read from a run directory is untrusted: a thumbnail must be a regular file inside its
run directory, at most ``MAX_THUMBNAIL_BYTES``, and start with the signature of a raster format we
accept; the output name is derived from the hash alone, so nothing can leave the output folder.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_THUMBNAIL_BYTES = 256 * 1024
KEY_CHARS = 16  # hex characters of sha256: 64 bits, no accidental collision among a site's images
_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
_NAME = re.compile(rf"[0-9a-f]{{{KEY_CHARS}}}\.(png|jpg|gif|webp)")


@dataclass(frozen=True)
class Image:
    """A validated thumbnail: its bytes, MIME type, file extension and content key."""

    data: bytes
    mime: str
    ext: str
    key: str


def sniff(data: bytes) -> tuple[str, str] | None:
    """(MIME type, extension) from the file signature, or None for anything but PNG/JPEG/GIF/WebP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif", "gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def read_image(run_dir: Path, relative: Any) -> Image | None:
    """The thumbnail ``relative`` of ``run_dir``, or None (missing, outside the run, too big, not an image)."""
    if not isinstance(relative, str) or not relative:
        return None
    base = run_dir.resolve()
    path = (base / relative).resolve()
    if path.suffix.lower() not in _SUFFIXES or not path.is_relative_to(base) or not path.is_file():
        return None
    if path.stat().st_size > MAX_THUMBNAIL_BYTES:
        return None
    data = path.read_bytes()
    kind = sniff(data)
    if kind is None:
        return None
    return Image(data, kind[0], kind[1], hashlib.sha256(data).hexdigest()[:KEY_CHARS])


def data_uri(image: Image) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


class ThumbnailStore:
    """Shared bookkeeping: content key -> URL, and a cache of (run dir, path) -> key."""

    csp_sources = "data:"
    inline = True  # the page carries the KEY -> URL table (else its <img> tags name the files)

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self._keys: dict[tuple[Path, str], str | None] = {}

    def add(self, run_dir: Path, relative: Any) -> str | None:
        """The content key of the thumbnail (stored on first sight), or None when it is unusable."""
        if not isinstance(relative, str):
            return None
        seen = (run_dir, relative)
        if seen not in self._keys:
            image = read_image(run_dir, relative)
            if image is not None and image.key not in self.urls:
                self.urls[image.key] = self._store(image)
            self._keys[seen] = None if image is None else image.key
        return self._keys[seen]

    def _store(self, image: Image) -> str:
        raise NotImplementedError


class InlineThumbnails(ThumbnailStore):
    """Distinct thumbnails as ``data:`` URIs, for a page that must open on its own."""

    def _store(self, image: Image) -> str:
        return data_uri(image)


class FolderThumbnails(ThumbnailStore):
    """Distinct thumbnails written once to ``folder``; pages refer to them as ``url_prefix + name``."""

    # 'self' serves http(s) hosting; Chromium does not count other file: URLs as 'self'.
    csp_sources = "data: 'self' file:"
    inline = False

    def __init__(self, folder: Path, url_prefix: str) -> None:
        super().__init__()
        self.folder = folder
        self.url_prefix = url_prefix
        self.written: set[str] = set()

    def _store(self, image: Image) -> str:
        name = f"{image.key}.{image.ext}"
        target = self.folder / name
        if not (target.is_file() and target.read_bytes() == image.data):
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(name + ".tmp")
            tmp.write_bytes(image.data)
            os.replace(tmp, target)
        self.written.add(name)
        return self.url_prefix + name

    def prune(self) -> list[str]:
        """Delete thumbnails of earlier builds that no page refers to now (only files named like ours)."""
        removed: list[str] = []
        if not self.folder.is_dir():
            return removed
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and _NAME.fullmatch(path.name) and path.name not in self.written:
                path.unlink()
                removed.append(path.name)
        return removed
