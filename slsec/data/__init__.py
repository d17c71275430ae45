"""Datasets (images and graphs) as in-memory train/test splits. The package also holds the
splittable models (models), the client partitioners (partitioners) and the user's own model
and data (usermodel, userdata, imagefolder).

Embedded (no network, no ../shared): `mnist` (the real 5k MNIST subset, 4,000/1,000), `mutag`
(raw TU files) and a real Fashion-MNIST subset (fashion: also --data-root, Debian's folder,
--download). From `--data-root` (or `--download`): `mnist-full` through torchvision, `cifar10`
(cifar: binary batches, or md5-checked python ones); `proteins` and any `tu:<NAME>` TU graph
set from raw txt files.
Graph sets are read into memory (nothing written, read-only roots work, no pickle cache).
Over 300 lines on purpose: one small loader per built-in set, each with its one-line errors
for a missing, partial or corrupt file, read together.
"""
from __future__ import annotations

import inspect
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from slsec.errors import DataError, UserError
from slsec.data.partitioners import (PARTITIONS, Partitioner, _labels, dirichlet,  # noqa: F401  (re-exported)
                                iid, label_entropy, partition)
from slsec.registry import Registry

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "_data"
Index = Sequence[int] | np.ndarray | Tensor | slice


def _as_index(idx: Index, n: int) -> Tensor:
    if isinstance(idx, slice):
        return torch.arange(n)[idx]
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, Tensor) else idx).long().reshape(-1)
    if t.numel() and (int(t.min()) < -n or int(t.max()) >= n):
        raise UserError(f"sample index out of range for a split of {n} samples")
    return t


@dataclass(frozen=True, eq=False)
class Split:
    """One split: image tensor [N,C,H,W] in [0,1] or a list of PyG graphs, with long labels [N]."""

    inputs: Tensor | list
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: Index) -> "Split":
        """The samples at `idx`, as a new Split."""
        i = _as_index(idx, len(self))
        if isinstance(self.inputs, Tensor):
            return Split(self.inputs[i], self.y[i])
        return Split([self.inputs[k] for k in i.tolist()], self.y[i])

    def batch(self, idx: Index) -> tuple[dict[str, Tensor], Tensor]:
        """Model feats and labels for the samples at `idx` (graphs collated into one batch)."""
        i = _as_index(idx, len(self))
        if isinstance(self.inputs, Tensor):
            return {"x": self.inputs[i]}, self.y[i]
        from torch_geometric.data import Batch
        b = Batch.from_data_list([self.inputs[k] for k in i.tolist()])
        return {"x": b.x.float(), "edge_index": b.edge_index.long(), "batch": b.batch.long()}, self.y[i]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: train/test splits and what a model needs to know about them."""

    name: str
    kind: str  # "image" | "graph"
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...] | None
    num_features: int | None
    default_model: str


Loader = Callable[[Path | None, bool], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")
# "<scheme>:<path>" sets of the user's own (images:, npz:): registered by slsec.data.userdata,
# which slsec.run.setup imports (so data.py does not import it: no import circle)
DATASET_SCHEMES: Registry[Callable[[str], Dataset]] = Registry("dataset scheme")


def load_dataset(name: str, *, data_root: str | Path | None = None,
                 download: bool = False, need_train: int | None = None,
                 label_column: str | None = None) -> Dataset:
    """Load a registered dataset, any TU graph set as `tu:<NAME>` (e.g. tu:ENZYMES), or the
    user's own as `images:DIR` / `npz:FILE` (see slsec.data.userdata). `need_train`: how many
    training samples the run will use (a loader with an embedded subset, fashion-mnist, then
    goes to the full set when the subset is too small)."""
    scheme, sep, _ = name.partition(":")
    if sep and scheme in DATASET_SCHEMES:
        loader = DATASET_SCHEMES.get(scheme)
        if getattr(loader, "takes_label_column", False):   # csv: (slsec.data.tabular)
            return loader(name, label_column=label_column)
        return loader(name)
    root = Path(data_root).expanduser() if data_root is not None else None
    if name.startswith("tu:") and len(name) > 3:
        tu = name[3:]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", tu):
            raise DataError(f"--dataset {name}: a TU dataset name is letters, digits, '_' and "
                            "'-' (e.g. tu:ENZYMES, tu:IMDB-BINARY); it names a folder under "
                            "--data-root and a file to download, so no '/', '.' or spaces")
        return _tu_dataset(name, tu, _tu_raw_dir(tu, root, download))
    loader = DATASETS.get(name)
    if need_train is not None and "need_train" in inspect.signature(loader).parameters:
        return loader(root, download, need_train=need_train)
    return loader(root, download)


# ---------------------------------------------------------------- images

def _images(name: str, x: np.ndarray | Tensor, y, xt, yt, *, model: str,
            num_classes: int = 10) -> Dataset:
    """uint8 [N,H,W] or [N,C,H,W] arrays -> float32 in [0,1], [N,C,H,W]."""
    def conv(a) -> Tensor:
        t = torch.as_tensor(np.asarray(a)) if not isinstance(a, Tensor) else a
        t = t.unsqueeze(1) if t.dim() == 3 else t
        return t.to(torch.float32).div_(255.0).contiguous()

    train = Split(conv(x), torch.as_tensor(np.asarray(y)).long())
    test = Split(conv(xt), torch.as_tensor(np.asarray(yt)).long())
    for split in (train, test):
        if len(split) and (int(split.y.min()) < 0 or int(split.y.max()) >= num_classes):
            raise DataError(f"dataset '{name}' has labels outside 0..{num_classes - 1}")
    return Dataset(name, "image", train, test, num_classes, tuple(train.inputs.shape[1:]), None,
                   model)


def embedded_images(name: str, filename: str) -> Dataset:
    """A real image subset shipped in the package (`filename` in slsec/_data: uint8 x_train,
    y_train, x_test, y_test, ten classes), checked before use."""
    path = EMBEDDED_DIR / filename
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: z[k] for k in keys}
    except FileNotFoundError:
        raise DataError(f"embedded data file {path} is missing; reinstall slsec") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"embedded data file {path} is unreadable or corrupt ({_line(e)})") from None
    for k in ("x_train", "x_test"):
        a, lab = arrs[k], arrs["y" + k[1:]]
        if a.dtype != np.uint8 or a.ndim != 3 or lab.ndim != 1 or len(lab) != len(a) or lab.max() > 9:
            raise DataError(f"embedded data file {path} is corrupt: bad '{k}' array")
    return _images(name, arrs["x_train"], arrs["y_train"], arrs["x_test"], arrs["y_test"], model="cnn")


@DATASETS.register("mnist")
def mnist(data_root: Path | None = None, download: bool = False) -> Dataset:
    """The embedded real 5k MNIST subset (4,000 train / 1,000 test, 400/100 per class)."""
    return embedded_images("mnist", "mnist.npz")


def _line(e: BaseException) -> str:
    """First line of an exception's message (errors stay one line)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _cache_dir() -> Path:
    return Path(os.environ.get("SLSEC_CACHE", "~/.cache/slsec")).expanduser() / "data"


def _need_root(name: str, root: Path | None, download: bool, want: str) -> Path:
    if root is None:
        if download:
            return _cache_dir()
        raise DataError(f"dataset '{name}' is not embedded: pass --data-root (the folder holding "
                        f"{want}) or --download")
    if not root.is_dir() and not download:
        raise DataError(f"data root {root} does not exist; pass --data-root (the folder holding "
                        f"{want}) or --download")
    return root


def check_idx(path: Path, ndim: int) -> None:
    """Raise DataError unless `path` is a complete uint8 idx file with `ndim` dimensions."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except FileNotFoundError:
        raise DataError(f"data file {path} is missing; pass --data-root or --download") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path} ({_line(e)})") from None
    if len(head) < 4 + 4 * ndim or int.from_bytes(head[:4], "big") != 0x0800 + ndim:
        raise DataError(f"data file {path} is not a uint8 idx{ndim} file (bad magic/header)")
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expect = 4 + 4 * ndim + int(np.prod(dims))
    if size != expect:
        raise DataError(f"data file {path} is truncated or corrupt: {size} bytes, "
                        f"header {dims} says {expect}")


def _download(name: str, root: Path, cls: Any) -> None:
    """Let torchvision fetch a data set into `root`; a failure is one line."""
    try:
        cls(root, train=True, download=True)
    except Exception as e:  # network or disk: report one line
        raise DataError(f"download of {name} into {root} failed ({_line(e)}); "
                        f"pass --data-root with the files instead") from None


def _torchvision_mnist(name: str, cls_name: str, root: Path | None, download: bool) -> Dataset:
    import torchvision.datasets as tvd
    cls = getattr(tvd, cls_name)
    root = _need_root(name, root, download, f"{cls_name}/raw")
    if download:
        _download(name, root, cls)
    raw = root / cls_name / "raw"
    for stem in ("train", "t10k"):
        check_idx(raw / f"{stem}-images-idx3-ubyte", 3)
        check_idx(raw / f"{stem}-labels-idx1-ubyte", 1)
    tr, te = cls(root, train=True), cls(root, train=False)
    for s, stem in ((tr, "train"), (te, "t10k")):
        if len(s.data) != len(s.targets):
            raise DataError(f"data files {raw}/{stem}-*-ubyte disagree: {len(s.data)} images, "
                            f"{len(s.targets)} labels")
    return _images(name, tr.data, tr.targets, te.data, te.targets, model="cnn",
                   num_classes=len(cls.classes))


@DATASETS.register("mnist-full")
def mnist_full(data_root: Path | None = None, download: bool = False) -> Dataset:
    """Full MNIST (60k/10k) from <data_root>/MNIST/raw via torchvision."""
    return _torchvision_mnist("mnist-full", "MNIST", data_root, download)


# ---------------------------------------------------------------- graphs

def _read_txt(folder: Path, prefix: str, part: str, dtype: torch.dtype) -> Tensor | None:
    """<folder>/<prefix>_<part>.txt as a 2-D tensor, None if absent, DataError if unreadable."""
    from torch_geometric.io import read_txt_array
    path = folder / f"{prefix}_{part}.txt"
    if not path.is_file():
        return None
    try:
        t = read_txt_array(str(path), sep=",", dtype=dtype)
    except Exception as e:  # parse errors surface as ValueError/RuntimeError from torch
        raise DataError(f"data file {path} is corrupt ({_line(e)})") from None
    return t.unsqueeze(-1) if t.dim() == 1 else t


def _one_hot_columns(lab: Tensor) -> Tensor:
    lab = lab - lab.min(dim=0).values
    return torch.cat([torch.nn.functional.one_hot(c, int(c.max()) + 1) for c in lab.unbind(-1)],
                     dim=-1).float()


def read_tu_graphs(folder: Path, prefix: str) -> tuple[list, Tensor]:
    """Raw TU txt files -> (list of PyG Data with x, edge_index; graph labels 0..K-1)."""
    from torch_geometric.data import Data
    from torch_geometric.utils import coalesce, remove_self_loops
    need = {p: folder / f"{prefix}_{p}.txt" for p in ("A", "graph_indicator", "graph_labels")}
    for p, path in need.items():
        if not path.is_file():
            raise DataError(f"data file {path} is missing; pass --data-root (the folder holding "
                            f"{prefix}/raw) or --download")
    a = _read_txt(folder, prefix, "A", torch.long)
    gi = _read_txt(folder, prefix, "graph_indicator", torch.long)
    gl = _read_txt(folder, prefix, "graph_labels", torch.long)
    node_lab = _read_txt(folder, prefix, "node_labels", torch.long)
    node_attr = _read_txt(folder, prefix, "node_attributes", torch.float32)
    batch = gi.reshape(-1) - 1
    n_nodes, n_graphs = batch.numel(), gl.shape[0]
    if a.shape[-1] != 2 or a.numel() == 0 or int(a.min()) < 1 or int(a.max()) > n_nodes:
        raise DataError(f"data file {need['A']} is corrupt: edges must be 'i, j' with 1 <= i, j <= "
                        f"{n_nodes}")
    if n_nodes == 0 or int(batch.min()) != 0 or bool((batch[1:] < batch[:-1]).any()) \
            or int(batch.max()) + 1 != n_graphs:
        raise DataError(f"data file {need['graph_indicator']} is corrupt or disagrees with "
                        f"{need['graph_labels'].name} ({n_graphs} graphs)")
    for part, t in (("node_labels", node_lab), ("node_attributes", node_attr)):
        if t is not None and t.shape[0] != n_nodes:
            raise DataError(f"data file {folder / f'{prefix}_{part}.txt'} has {t.shape[0]} rows, "
                            f"expected {n_nodes} (one per node)")
    # Node features as TUDataset's default (use_node_attr=False): one-hot node labels; else
    # continuous attributes; else a constant 1.
    if node_lab is not None:
        x = _one_hot_columns(node_lab)
    elif node_attr is not None:
        x = node_attr.float()
    else:
        x = torch.ones(n_nodes, 1)
    _, y = gl[:, 0].unique(sorted=True, return_inverse=True)
    edge_index, _ = remove_self_loops(a.t() - 1)
    edge_index = coalesce(edge_index, num_nodes=n_nodes)
    node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(batch).cumsum(0)])
    edge_graph = batch[edge_index[0]]
    if bool((edge_graph != batch[edge_index[1]]).any()):
        raise DataError(f"data file {need['A']} has edges between different graphs")
    order = torch.argsort(edge_graph, stable=True)
    edge_index, edge_graph = edge_index[:, order], edge_graph[order]
    edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                          torch.bincount(edge_graph, minlength=n_graphs).cumsum(0)])
    graphs = []
    for g in range(n_graphs):
        lo, hi = int(node_ptr[g]), int(node_ptr[g + 1])
        ei = edge_index[:, int(edge_ptr[g]):int(edge_ptr[g + 1])] - lo
        graphs.append(Data(x=x[lo:hi], edge_index=ei, y=y[g:g + 1], num_nodes=hi - lo))
    return graphs, y


def stratified_split(y: np.ndarray | Tensor, test_frac: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, test) index split: round(test_frac * n_c) of each class to test."""
    y = _labels(y)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_frac * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _tu_dataset(name: str, prefix: str, folder: Path) -> Dataset:
    graphs, y = read_tu_graphs(folder, prefix)
    tr, te = stratified_split(y.numpy(), 0.2, seed=0)
    full = Split(graphs, y)
    return Dataset(name, "graph", full.subset(tr), full.subset(te), int(y.max()) + 1, None,
                   int(graphs[0].x.shape[1]), "gin")


def _tu_raw_dir(tu: str, root: Path | None, download: bool) -> Path:
    """The folder with <tu>_*.txt: <root>/<tu>/raw or <root>/TUDataset/<tu>/raw."""
    root = _need_root(tu, root, download, f"{tu}/raw")
    for cand in (root / tu / "raw", root / "TUDataset" / tu / "raw"):
        if (cand / f"{tu}_A.txt").is_file():
            return cand
    if download:
        from torch_geometric.data import download_url, extract_zip
        from torch_geometric.datasets import TUDataset
        dest = root / tu
        try:
            path = download_url(f"{TUDataset.url}/{tu}.zip", str(dest))
            extract_zip(path, str(dest))
            os.unlink(path)
            (dest / tu).rename(dest / "raw")
        except Exception as e:  # network or disk: report one line
            raise DataError(f"download of TU dataset {tu} into {dest} failed ({_line(e)}); "
                            f"pass --data-root with the files instead") from None
        return dest / "raw"
    raise DataError(f"TU dataset files {root / tu / 'raw' / (tu + '_A.txt')} not found; pass "
                    f"--data-root (the folder holding {tu}/raw) or --download")


@DATASETS.register("mutag")
def mutag(data_root: Path | None = None, download: bool = False) -> Dataset:
    """Embedded MUTAG: 188 molecules, 2 classes, one-hot atom types; stratified 80/20 (seed 0)."""
    return _tu_dataset("mutag", "MUTAG", EMBEDDED_DIR / "MUTAG" / "raw")


@DATASETS.register("proteins")
def proteins(data_root: Path | None = None, download: bool = False) -> Dataset:
    """PROTEINS (1,113 graphs, 2 classes) from <data_root>/PROTEINS/raw; stratified 80/20."""
    return _tu_dataset("proteins", "PROTEINS", _tu_raw_dir("PROTEINS", data_root, download))


from slsec.data import cifar, fashion  # noqa: E402,F401  (registration: cifar10, fashion-mnist)
