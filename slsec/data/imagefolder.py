"""Image folders for `--dataset images:DIR`: a torchvision ImageFolder layout read into uint8
arrays (the rules are in slsec.data.userdata's docstring). Each unreadable folder or image is
one DataError naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slsec.errors import DataError

MAX_IMAGES = 200_000
MAX_PIXELS = 4096 * 4096   # per image: a 10,500 x 10,500 PNG is a mistake (or a bomb), not data


def read_image_folder(root: Path, where: str, max_bytes: int) -> dict[str, np.ndarray]:
    """The uint8 arrays x, y (and x_test, y_test with train/ and test/) of an image folder;
    `max_bytes` caps the images as float32 before any is decoded."""
    if not root.is_dir():
        what = f"{root} is a file, not a folder of images (<class>/<image>)" if root.exists() \
            else f"folder {root} does not exist"
        raise DataError(f"{where}: {what}")
    _no_folder_links(root, where)
    if (root / "test").is_dir():
        if not (root / "train").is_dir():
            raise DataError(f"{where}: {root} has test/ but no train/ folder (give both, or "
                            f"only class folders for a seeded 20% hold-out)")
        train_s, classes = _samples(root / "train", where)
        test_s, test_classes = _samples(root / "test", where)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(f"{where}: test classes not in train/: {', '.join(unknown[:5])}")
        test_s = [(p, classes.index(test_classes[c])) for p, c in test_s]
    else:
        train_s, classes = _samples(root, where)
        test_s = None
    if len(train_s) + len(test_s or []) > MAX_IMAGES:
        raise DataError(f"{where}: more than {MAX_IMAGES} images; at most that many are read")
    samples = train_s + (test_s or [])
    gray = all(_mode(p, where) in ("1", "L", "LA", "I", "I;16", "F") for p, _ in samples)
    size = _size(samples[0][0], where)
    c = 1 if gray else 3
    if len(samples) * c * size[0] * size[1] * 4 > max_bytes:
        raise DataError(f"{where}: {len(samples)} images of {size[0]}x{size[1]} would take more "
                        f"than {max_bytes / 2**30:.0f} GiB as float32 (resize or subsample)")
    x = np.stack([_pixels(p, gray, size, where) for p, _ in samples])
    y = np.array([t for _, t in samples], dtype=np.int64)
    if test_s is None:
        return {"x": x, "y": y}
    n = len(train_s)
    return {"x": x[:n], "y": y[:n], "x_test": x[n:], "y_test": y[n:]}


def _no_folder_links(root: Path, where: str) -> None:
    """A link to a folder inside the image folder is refused: followed, a loop (a link to a
    parent) counts the same images many times."""
    import os
    for here, dirs, _ in os.walk(root):   # does not follow links itself
        for d in dirs:
            if os.path.islink(os.path.join(here, d)):
                raise DataError(f"{where}: {os.path.join(here, d)} is a link to a folder; "
                                "image folders are read without following folder links "
                                "(copy the images in, or link the image files)")


def _samples(folder: Path, where: str) -> tuple[list[tuple[str, int]], list[str]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
    try:
        classes, index = find_classes(str(folder))
        samples = make_dataset(str(folder), index, IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"{where}: {folder} is not an image-folder layout (<class>/<image>): "
                        f"{str(e).strip().splitlines()[0]}") from None
    return samples, classes


def _open(path: str, where: str) -> Any:
    from PIL import Image, UnidentifiedImageError
    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: cannot read image {path} ({type(e).__name__})") from None


def _mode(path: str, where: str) -> str:
    with _open(path, where) as im:
        return im.mode


def _size(path: str, where: str) -> tuple[int, int]:
    with _open(path, where) as im:
        if im.size[0] * im.size[1] > MAX_PIXELS:
            raise DataError(f"{where}: image {path} is {im.size[0]}x{im.size[1]} pixels; at "
                            f"most {MAX_PIXELS // 2**20} Mpixel per image are read (resize it)")
        if im.mode in ("I", "F"):
            raise DataError(f"{where}: image {path} has {im.mode} (32-bit) pixels of no fixed "
                            "range; store 8- or 16-bit images")
        return im.size


def _pixels(path: str, gray: bool, size: tuple[int, int], where: str) -> np.ndarray:
    from PIL import Image
    try:
        with _open(path, where) as im:
            _size(path, where)
            if im.mode.startswith("I;16"):   # 16-bit: its top 8 bits, never saturated
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
            im = im.convert("L" if gray else "RGB")
            if im.size != size:
                im = im.resize(size, Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except OSError as e:   # truncated or corrupt after the header
        raise DataError(f"{where}: cannot decode image {path} ({type(e).__name__})") from None
    return a[None] if gray else a.transpose(2, 0, 1)
