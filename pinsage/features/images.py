"""Item images: paths checked against the dataset directory, Pillow decoding, resize and crop.

An ``image_path`` that is absolute or resolves outside the dataset directory (``..``, symlinks) is
refused with a :class:`~pinsage.data.dataset.DatasetError` naming the file and row; a file that is
missing or cannot be decoded is reported by :func:`decode`, never fatal.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pinsage.data.dataset import ITEMS, DatasetError, find_table
from pinsage.data.readers import csv_line_of

RESIZE = 256  # shorter side, then a centre crop of CROP (torchvision's ImageNet evaluation transform)
CROP = 224



def resolve_image_path(root: Path, rel: str, row: int | None = None, file: str = "items") -> Path:
    """``root / rel`` if it stays inside ``root`` (symlinks resolved), else a DatasetError.

    ``root`` must already be resolved.
    """
    def refuse(why: str) -> DatasetError:
        return DatasetError(f"image_path {rel!r} {why}; image paths must be relative to the dataset "
                            "directory and stay inside it", file=file, column="image_path", row=row)

    if "\x00" in rel:
        raise refuse("contains a NUL byte")
    if os.path.isabs(rel) or Path(rel).is_absolute() or re.match(r"^[A-Za-z]:[\\/]|^\\\\", rel):
        raise refuse("is absolute")
    try:
        full = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise refuse(f"cannot be resolved ({exc})") from None
    if not full.is_relative_to(root):
        raise refuse("escapes the dataset directory")
    return full


def items_row_locator(root: Path) -> tuple[str, Callable[[int], int]]:
    """(items file name, 0-based item index -> row as the user sees it in that file)."""
    try:
        f = find_table(root, ITEMS)
    except DatasetError:
        return "items", lambda i: i + 1
    if f.suffix == ".csv":
        return f.name, lambda i: csv_line_of(f, i)
    return f.name, lambda i: i + 1


def load_image(path: Path, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """Pillow decode -> RGB -> shorter side ``resize`` (bilinear, antialiased) -> centre crop.

    -> (crop, crop, 3) uint8. JPEGs are decoded at a reduced DCT scale when that still leaves the
    shorter side >= ``resize`` (``Image.draft``), which makes big photos several times cheaper.
    Raises on a file that cannot be decoded (the caller counts it).
    """
    from PIL import Image  # here: only a catalogue with images needs Pillow

    with Image.open(path) as img:
        img.draft("RGB", (resize, resize))
        img = img.convert("RGB")  # palette, greyscale, CMYK, alpha -> RGB (forces the decode)
    w, h = img.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image {w}x{h}")
    if w <= h:  # torchvision Resize(int): shorter side -> resize, the other scaled, truncated
        size = (resize, max(1, int(resize * h / w)))
    else:
        size = (max(1, int(resize * w / h)), resize)
    if size != (w, h):
        img = img.resize(size, Image.BILINEAR)
    w, h = size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8)  # (crop, crop, 3)


def decode(path: Path) -> tuple[np.ndarray | None, str]:
    """-> (pixels, "") | (None, "missing") | (None, "corrupt: <reason>")"""
    if not path.is_file():
        return None, "missing"
    try:
        return load_image(path), ""
    except Exception as exc:  # noqa: BLE001  untrusted files fail in many ways (OSError, SyntaxError, ...)
        return None, f"corrupt: {type(exc).__name__}: {exc}"


@dataclass
class ImageReport:
    with_path: int = 0  # items with a non-empty image_path
    embedded: int = 0
    missing: int = 0
    corrupt: int = 0
    examples: dict = field(default_factory=lambda: {"missing": [], "corrupt": []})

    def as_dict(self) -> dict:
        return {"with_path": self.with_path, "embedded": self.embedded, "missing": self.missing,
                "corrupt": self.corrupt, "examples": self.examples}


def checked_image_path(root: Path, rel: str, i: int, file: str, user_row: Callable[[int], int]) -> Path:
    """resolve_image_path with the user-facing row computed only when refusing."""
    try:
        return resolve_image_path(root, rel, row=None, file=file)
    except DatasetError as err:
        raise DatasetError(err.message, file=file, column="image_path", row=user_row(i)) from None
