"""CIFAR-10 (50,000 / 10,000 colour 32x32 images, 10 classes) from `--data-root`.

Two official layouts are read:
- `cifar-10-batches-bin/` (the "CIFAR-10 binary version"): `data_batch_1.bin` .. `_5.bin` and
  `test_batch.bin`, each a run of 3,073-byte records (1 label byte, then 1,024 red, 1,024 green,
  1,024 blue pixel bytes, row-major). Plain bytes, no pickle: any such file is read (its length
  and labels are checked), so a made-up batch in this layout works as well as the real one.
- `cifar-10-batches-py/` (the "python version", what torchvision downloads): pickled dicts.
  The project never unpickles untrusted bytes, so every file must first match the official md5
  in torchvision's list; a file that differs is refused (one line) and never opened by pickle.
The binary folder is preferred where both exist. `--download` fetches the python version
(torchvision checks its md5s too).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slsec.data import DATASETS, Dataset, _download, _images, _line, _need_root
from slsec.errors import DataError

BIN_FOLDER = "cifar-10-batches-bin"
BIN_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
BIN_TEST = ["test_batch.bin"]
RECORD = 1 + 3 * 32 * 32


def read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch -> (uint8 images [N,3,32,32], labels [N]); DataError if malformed."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"data file {path} is missing; pass --data-root or --download") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path} ({_line(e)})") from None
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(f"data file {path} is not a CIFAR-10 binary batch: {raw.size} bytes is "
                        f"not a whole number of {RECORD}-byte records")
    rec = raw.reshape(-1, RECORD)
    if int(rec[:, 0].max()) > 9:
        raise DataError(f"data file {path} is corrupt: a label byte is {int(rec[:, 0].max())} "
                        f"(CIFAR-10 labels are 0..9)")
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def _from_bin(folder: Path) -> Dataset:
    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [read_bin_batch(folder / n) for n in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    (x, y), (xt, yt) = read(BIN_TRAIN), read(BIN_TEST)
    return _images("cifar10", x, y, xt, yt, model="resnet18")


def _from_py(root: Path) -> Dataset:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity
    folder = root / CIFAR10.base_folder
    for fname, md5 in CIFAR10.train_list + CIFAR10.test_list + [
            (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"data file {path} is missing; pass --data-root (the folder holding "
                            f"{BIN_FOLDER} or {CIFAR10.base_folder}) or --download")
        if not check_integrity(str(path), md5):
            raise DataError(f"data file {path} failed its md5 check (corrupt or not the official "
                            f"CIFAR-10 file); it was not loaded")
    tr, te = CIFAR10(root, train=True), CIFAR10(root, train=False)
    to_chw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
    return _images("cifar10", to_chw(tr.data), tr.targets, to_chw(te.data), te.targets,
                   model="resnet18", num_classes=len(tr.classes))


@DATASETS.register("cifar10")
def cifar10(data_root: Path | None = None, download: bool = False) -> Dataset:
    """CIFAR-10 from <data_root>/cifar-10-batches-bin (no pickle) or, md5-checked,
    <data_root>/cifar-10-batches-py."""
    from torchvision.datasets import CIFAR10
    root = _need_root("cifar10", data_root, download, f"{BIN_FOLDER} or {CIFAR10.base_folder}")
    if (root / BIN_FOLDER).is_dir() and not download:
        return _from_bin(root / BIN_FOLDER)
    if download:
        _download("cifar10", root, CIFAR10)
    return _from_py(root)
