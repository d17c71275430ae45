"""Build the data embedded in the package (slsec/_data) from ../shared/data.

    python tools/build_embedded.py [--src ../shared/data]

Writes slsec/_data/mnist.npz (the real 5k MNIST subset: 4,000 train / 1,000 test, uint8
images and labels, np.savez_compressed, no pickle), slsec/_data/fashion-mnist.npz (a real
Fashion-MNIST subset: the first 400 training and the first 100 test images of each class, in
file order, with their indices into the full set; ~2.2 MB) and copies the raw MUTAG txt files
to slsec/_data/MUTAG/raw/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "slsec" / "_data"


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx (uint8) file as a numpy array, checking magic and length."""
    raw = path.read_bytes()
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        sys.exit(f"{path}: bad idx magic {magic:#x}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        sys.exit(f"{path}: expected {int(np.prod(dims))} bytes of data, found {body.size}")
    return body.reshape(dims).copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    raw = args.src / "MNIST" / "raw"
    arrays = {
        "x_train": read_idx(raw / "train-images-idx3-ubyte", 3),
        "y_train": read_idx(raw / "train-labels-idx1-ubyte", 1),
        "x_test": read_idx(raw / "t10k-images-idx3-ubyte", 3),
        "y_test": read_idx(raw / "t10k-labels-idx1-ubyte", 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "mnist.npz", **arrays)
    print(f"wrote {OUT / 'mnist.npz'} ({(OUT / 'mnist.npz').stat().st_size} bytes): "
          + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))

    fm = args.src / "FashionMNIST" / "raw"
    x, y = read_idx(fm / "train-images-idx3-ubyte", 3), read_idx(fm / "train-labels-idx1-ubyte", 1)
    xt, yt = read_idx(fm / "t10k-images-idx3-ubyte", 3), read_idx(fm / "t10k-labels-idx1-ubyte", 1)
    first = lambda lab, k: np.sort(np.concatenate(  # noqa: E731
        [np.flatnonzero(lab == c)[:k] for c in range(10)]))
    i, j = first(y, 400), first(yt, 100)
    np.savez_compressed(OUT / "fashion-mnist.npz", x_train=x[i], y_train=y[i], x_test=xt[j],
                        y_test=yt[j], train_index=i.astype(np.int32), test_index=j.astype(np.int32))
    print(f"wrote {OUT / 'fashion-mnist.npz'} ({(OUT / 'fashion-mnist.npz').stat().st_size} bytes)")

    src = args.src / "TUDataset" / "MUTAG" / "raw"
    dst = OUT / "MUTAG" / "raw"
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.suffix == ".txt":
            shutil.copyfile(f, dst / f.name)
            (dst / f.name).chmod(0o644)
    print(f"copied MUTAG raw files to {dst}")


if __name__ == "__main__":
    main()
