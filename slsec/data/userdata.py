"""Bring your own data: `--dataset images:DIR`, `--dataset npz:FILE` (and arrays from Python).

`images:DIR` reads a torchvision ImageFolder layout (DIR/<class>/<image>; classes are the
sub-folder names in sorted order, labels 0..K-1). If DIR/test exists, DIR/train and DIR/test
are two such folders (test classes must be train classes); otherwise 20% of each class is held
out as the test split (stratified, seed 0, the same for every run). Images are read with PIL:
1 channel (PIL 'L') when every image is grayscale, else 3 channels (RGB, alpha dropped); all are
resized (bilinear) to the size of the first training image in sorted order (the reading is
in slsec.data.imagefolder).

`npz:FILE` reads arrays `x`, `y` and optionally `x_test`, `y_test` (both or neither; without
them the same seeded 20% hold-out applies). `x` is [N, H, W] (one channel), [N, C, H, W] or
[N, H, W, C] (channels-last is recognised when the second axis is not 1-4 long and the last
is), uint8 (divided by 255) or float already in [0, 1]. `y` holds integer labels >= 0
(num_classes = largest label + 1). Arrays are read without pickle.

Both give the same Dataset as the built-in sets (same partitioners, aux split, probes, size
checks); inputs are capped at MAX_BYTES as float32. Errors are one line naming the file.
"""
from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slsec.data import DATASET_SCHEMES, Dataset, Split, stratified_split
from slsec.data.imagefolder import MAX_IMAGES, read_image_folder
from slsec.errors import DataError, UserError

SCHEMES = ("images", "npz", "arrays")
MAX_BYTES = 4 * 2**30           # inputs as float32 at most (4 GiB)
TEST_FRAC = 0.2
_ARRAYS: dict[str, Dataset] = {}   # in-memory sets registered by the Python API
_CACHE: dict[tuple, Dataset] = {}  # the last file-backed set read, by its fingerprint
_LOCK = threading.Lock()


def load_user_dataset(name: str) -> Dataset:
    """The Dataset named by an images:DIR, npz:FILE or arrays:KEY spec."""
    scheme, _, rest = name.partition(":")
    if scheme == "arrays":
        if name not in _ARRAYS:
            raise UserError(f"--dataset {name}: in-memory arrays exist only in the Python process "
                            f"that passed them (save them with numpy.savez and use npz:FILE)")
        return _ARRAYS[name]
    if not rest:
        raise UserError(f"--dataset {name}: give a path, e.g. {scheme}:/data/"
                        f"{'faces' if scheme == 'images' else 'faces.npz'}")
    key = (name, fingerprint(name))
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = _read(name, scheme, Path(rest).expanduser())
        return _CACHE[key]


def _read(name: str, scheme: str, path: Path) -> Dataset:
    where = f"--dataset {name}"
    if scheme == "npz":
        return _read_npz(name, path)
    return from_arrays(name, read_image_folder(path, where, MAX_BYTES), where)


def register_arrays(x: Any, y: Any, x_test: Any = None, y_test: Any = None) -> str:
    """Check arrays (or tensors) like an npz file's and keep them for this process; the spec
    ('arrays:<content hash>') that loads them."""
    arrs = {k: _numpy(v, k) for k, v in (("x", x), ("y", y), ("x_test", x_test),
                                          ("y_test", y_test)) if v is not None}
    h = hashlib.sha256()
    for k, a in sorted(arrs.items()):
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    name = f"arrays:{h.hexdigest()[:12]}"
    with _LOCK:
        if name not in _ARRAYS:
            _ARRAYS[name] = from_arrays(name, arrs, "dataset arrays")
    return name


def as_dataset_spec(dataset: Any) -> str | None:
    """The --dataset text for the Python API's `dataset=`: a name or spec as given, or arrays
    `(x, y)`, `(x, y, x_test, y_test)` or a dict of them, kept for this process."""
    if dataset is None or isinstance(dataset, str):
        return dataset
    if isinstance(dataset, dict):
        if set(dataset) - {"x", "y", "x_test", "y_test"} or not {"x", "y"} <= set(dataset):
            raise UserError("dataset= as a dict needs keys x, y (and optionally x_test, y_test)")
        return register_arrays(**dataset)
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 4):
        return register_arrays(*dataset)
    raise UserError(f"dataset= must be a name/spec, (x, y), (x, y, x_test, y_test) or a dict "
                    f"of those arrays, got {type(dataset).__name__}"
                    + (f" of length {len(dataset)}" if isinstance(dataset, (tuple, list)) else ""))


def _numpy(v: Any, key: str) -> np.ndarray:
    if isinstance(v, Tensor):
        return v.detach().cpu().numpy()
    try:
        a = np.asarray(v)
    except (ValueError, TypeError) as e:   # ragged nested lists, or objects numpy cannot hold
        raise UserError(f"dataset arrays: '{key}' is not a rectangular numeric array "
                        f"({str(e).split('.')[0]})") from None
    if a.dtype == object:
        raise UserError(f"dataset arrays: '{key}' is not a numeric array")
    return a


def fingerprint(name: str) -> str:
    """The state of the files behind a spec (names, sizes, mtimes): '' for other datasets."""
    scheme, _, rest = name.partition(":")
    if scheme not in ("images", "npz") or not rest:
        return ""
    root = Path(rest).expanduser()
    h = hashlib.sha256()
    try:
        paths = [root] if root.is_file() else sorted(
            Path(d) / f for d, _, fs in os.walk(root) for f in fs)
        for p in paths[:MAX_IMAGES + 10]:
            st = p.stat()
            h.update(f"{p.relative_to(root) if p != root else p.name}:{st.st_size}:"
                     f"{st.st_mtime_ns};".encode())
    except OSError:
        return ""
    return h.hexdigest()[:16]


def user_fingerprint(model: str | None, dataset: str) -> dict[str, str]:
    """Cache-key entries for a user's model code and data files (empty for built-in ones, so
    built-in keys do not change)."""
    from slsec.data.usermodel import fingerprint as model_fingerprint
    out = {"model_code": model_fingerprint(model or ""), "data_files": fingerprint(dataset)}
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------- npz and arrays

def _read_npz(name: str, path: Path) -> Dataset:
    if not path.is_file():
        what = f"{path} is a folder, not an .npz file" if path.is_dir() else \
            f"{path} is not a regular file" if path.exists() else f"file {path} does not exist"
        raise DataError(f"--dataset {name}: {what}")
    if not os.access(path, os.R_OK):
        raise DataError(f"--dataset {name}: file {path} is not readable")
    try:
        with zipfile.ZipFile(path) as z:
            size = sum(i.file_size for i in z.infolist())
        if size > MAX_BYTES:
            raise DataError(f"--dataset {name}: {path} holds {size / 2**30:.1f} GiB of arrays; "
                            f"at most {MAX_BYTES / 2**30:.0f} GiB is read (subsample it)")
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: z[k] for k in ("x", "y", "x_test", "y_test") if k in z.files}
            other = sorted(set(z.files) - set(arrs))
        for k, v in arrs.items():   # a member without the .npy header comes back as bytes
            if not isinstance(v, np.ndarray):
                raise DataError(f"--dataset {name}: {path}: member '{k}' is not a .npy array "
                                "(no npy header; a pickle is never loaded)")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"--dataset {name}: {path} is not a readable .npz file "
                        f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
                        ) from None
    if "x" not in arrs or "y" not in arrs:
        raise DataError(f"--dataset {name}: {path} needs arrays 'x' and 'y' (it has "
                        f"{', '.join(sorted(arrs) + other) or 'none'})")
    return from_arrays(name, arrs, f"--dataset {name}")


def _images_nchw(x: np.ndarray, key: str, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: '{key}' has shape {list(x.shape)}; expected [N, H, W], "
                        f"[N, C, H, W] or [N, H, W, C]")
    if x.shape[1] <= 4:
        return x
    if x.shape[3] <= 4:
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{where}: '{key}' has shape {list(x.shape)}: no channel axis of 1-4 "
                    f"(expected [N, C, H, W] or [N, H, W, C])")


def _to_float(x: np.ndarray, key: str, where: str) -> Tensor:
    if x.nbytes and x.size * 4 > MAX_BYTES:
        raise DataError(f"{where}: '{key}' would take {x.size * 4 / 2**30:.1f} GiB as float32; "
                        f"at most {MAX_BYTES / 2**30:.0f} GiB is loaded (subsample it)")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: '{key}' has dtype {x.dtype}; use uint8 (0-255) or floats "
                        f"in [0, 1]")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.numel() and not (bool(torch.isfinite(t).all()) and float(t.min()) >= 0
                          and float(t.max()) <= 1):
        raise DataError(f"{where}: '{key}' holds values outside [0, 1] (or NaN); scale float "
                        f"images to [0, 1] or store uint8")
    return t


def _labels(y: np.ndarray, n: int, key: str, where: str) -> Tensor:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: '{key}' must be 1-D with one label per sample ({n}), got "
                        f"shape {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer) and not (
            np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{where}: '{key}' must hold integer class labels, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: '{key}' has negative labels; use 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def from_arrays(name: str, arrs: dict[str, np.ndarray], where: str) -> Dataset:
    """A Dataset from x, y [, x_test, y_test] arrays (see the module docstring for the rules)."""
    if ("x_test" in arrs) != ("y_test" in arrs):
        raise DataError(f"{where}: give both 'x_test' and 'y_test' or neither")
    if "x" not in arrs or "y" not in arrs:
        raise UserError(f"{where}: needs 'x' and 'y'")
    if np.asarray(arrs["x"]).ndim == 2 and "x_test" not in arrs:   # rows of features: tabular
        from slsec.data.tabular import tabular_from_arrays
        y = _labels(np.asarray(arrs["y"]), len(arrs["x"]), "y", where)
        return tabular_from_arrays(name, np.asarray(arrs["x"]), y.numpy(), where)
    x = _images_nchw(arrs["x"], "x", where)
    y = _labels(arrs["y"], len(x), "y", where)
    if "x_test" in arrs:
        xt = _images_nchw(arrs["x_test"], "x_test", where)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: 'x_test' samples are {list(xt.shape[1:])}, 'x' samples "
                            f"{list(x.shape[1:])}")
        train = Split(_to_float(x, "x", where), y)
        test = Split(_to_float(xt, "x_test", where), _labels(arrs["y_test"], len(xt), "y_test", where))
    else:
        full = Split(_to_float(x, "x", where), y)
        tr, te = stratified_split(y.numpy(), TEST_FRAC, seed=0) if len(y) else ([], [])
        train, test = full.subset(tr), full.subset(te)
    return _dataset(name, train, test, where)


def _dataset(name: str, train: Split, test: Split, where: str) -> Dataset:
    if len(train) < 2 or len(test) < 1:
        raise DataError(f"{where}: needs at least 2 training and 1 test sample, got "
                        f"{len(train)} and {len(test)}")
    k = int(max(int(train.y.max()), int(test.y.max()))) + 1
    if k < 2:
        raise DataError(f"{where}: needs at least 2 classes, every label is 0")
    return Dataset(name, "image", train, test, k, tuple(train.inputs.shape[1:]), None, "cnn")


for _scheme in SCHEMES:
    DATASET_SCHEMES.register(_scheme, load_user_dataset)
