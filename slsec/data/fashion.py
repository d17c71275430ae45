"""Fashion-MNIST (Zalando Research, MIT licence; 60,000 / 10,000 28x28 grey images, 10 classes).

Where it is looked up, in order:
1. `--data-root`: `<root>/FashionMNIST/raw/` (torchvision's layout) or `<root>` itself, with
   the four idx files plain or gzipped (`train-images-idx3-ubyte[.gz]`, ...);
2. Debian's `dataset-fashion-mnist` package folder, `/usr/share/datasets/fashion-mnist/`
   (gzipped idx files);
3. `--download`: torchvision fetches it into `--data-root` (or ~/.cache/slsec/data).
Without `--data-root` and `--download`, the embedded real subset (slsec/_data/fashion-mnist.npz:
the first 400 training and 100 test images of each class, 4,000 / 1,000) is the default, so the
set runs offline; when more training images are asked for (`--aux-size` + `--max-train` above
4,000), the full set is taken from 2 (or 1) instead. Nothing found: one line naming all three.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from slsec.data import (DATASETS, EMBEDDED_DIR, Dataset, _cache_dir, _images,  # noqa: F401
                        _line, embedded_images)
from slsec.errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED = "fashion-mnist.npz"
FILES = {"x_train": ("train-images-idx3-ubyte", 3), "y_train": ("train-labels-idx1-ubyte", 1),
         "x_test": ("t10k-images-idx3-ubyte", 3), "y_test": ("t10k-labels-idx1-ubyte", 1)}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 idx file (plain or .gz) as an array; DataError (one line) if it is not whole."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = bytearray(f.read())  # writable: torch takes it without a copy warning
    except FileNotFoundError:
        raise DataError(f"data file {path} is missing") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read data file {path} ({_line(e)})") from None
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != 0x0800 + ndim:
        raise DataError(f"data file {path} is not a uint8 idx{ndim} file (bad magic/header)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != head + int(np.prod(dims)):
        raise DataError(f"data file {path} is truncated or corrupt: {len(raw)} bytes, header "
                        f"{dims} says {head + int(np.prod(dims))}")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _files(folder: Path) -> dict[str, Path] | None:
    """The four idx files in `folder` (plain preferred over .gz); None if none is there; a
    DataError naming the first missing one if only some are."""
    found: dict[str, Path] = {}
    for key, (stem, _) in FILES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
    if not found:
        return None
    for key, (stem, _) in FILES.items():
        if key not in found:
            raise DataError(f"data file {folder / stem}[.gz] is missing (the other Fashion-MNIST "
                            f"files are in {folder})")
    return found


def _from_files(files: dict[str, Path]) -> Dataset:
    a = {k: read_idx(p, FILES[k][1]) for k, p in files.items()}
    for split in ("train", "test"):
        if len(a[f"x_{split}"]) != len(a[f"y_{split}"]):
            raise DataError(f"data files {files[f'x_{split}']} and {files[f'y_{split}'].name} "
                            f"disagree: {len(a[f'x_{split}'])} images, {len(a[f'y_{split}'])} labels")
    return _images("fashion-mnist", a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                   model="cnn")


def embedded() -> Dataset:
    """The embedded real subset (4,000 train / 1,000 test)."""
    return embedded_images("fashion-mnist", EMBEDDED)


@DATASETS.register("fashion-mnist")
def fashion_mnist(data_root: Path | None = None, download: bool = False,
                  need_train: int | None = None) -> Dataset:
    """Fashion-MNIST: --data-root, else Debian's folder, else --download; without any of them
    the embedded 4,000 / 1,000 subset unless `need_train` training images are more than it has."""
    if data_root is None and not download:
        small = embedded()
        if need_train is None or need_train <= len(small.train):
            return small
    places = [data_root / "FashionMNIST" / "raw", data_root] if data_root is not None else []
    for folder in places + [SYSTEM_DIR]:
        files = _files(folder)
        if files is not None:
            return _from_files(files)
    if download:
        from torchvision.datasets import FashionMNIST
        dest = data_root if data_root is not None else _cache_dir()
        try:
            FashionMNIST(dest, train=True, download=True)
        except Exception as e:  # network or disk: report one line
            raise DataError(f"download of fashion-mnist into {dest} failed ({_line(e)}); pass "
                            f"--data-root with the files instead") from None
        files = _files(dest / "FashionMNIST" / "raw")
        if files is None:
            raise DataError(f"download of fashion-mnist left no idx files in {dest}/FashionMNIST/raw")
        return _from_files(files)
    why = ("" if need_train is None else
           f"{need_train} training images (--aux-size + --max-train) are more than the embedded "
           f"subset's {len(small.train):,}, and ")
    where = f"--data-root {data_root} (FashionMNIST/raw)" if data_root else "--data-root (not given)"
    raise DataError(f"dataset 'fashion-mnist': {why}the full set is not in {where}, not in "
                    f"{SYSTEM_DIR} (apt-get install dataset-fashion-mnist), and --download was "
                    f"not given")
