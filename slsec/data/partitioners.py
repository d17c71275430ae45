"""Client partitioners: how the private training set is split over the K clients (IID or
Dirichlet(alpha) over the labels), and the label entropy that describes a split."""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np
from torch import Tensor

from slsec.errors import UserError
from slsec.registry import Registry

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONS: Registry[Partitioner] = Registry("partition")


def _labels(labels: np.ndarray | Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels).reshape(-1).astype(np.int64)


def _check_clients(n_clients: int, n: int, min_size: int = 1) -> None:
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise UserError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    if n_clients * min_size > n:
        raise UserError(f"cannot give {n_clients} clients at least {min_size} samples each "
                        f"from {n} samples")


@PARTITIONS.register("iid")
def iid(labels: np.ndarray | Tensor, n_clients: int, seed: int) -> list[np.ndarray]:
    """A seeded permutation of all samples split into n_clients near-equal shards."""
    y = _labels(labels)
    _check_clients(n_clients, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    return [np.sort(s) for s in np.array_split(perm, n_clients)]


@PARTITIONS.register("dirichlet")
def dirichlet(labels: np.ndarray | Tensor, n_clients: int, seed: int, alpha: float = 0.5,
              min_size: int = 10) -> list[np.ndarray]:
    """Label-skewed shards: each class split over clients by proportions ~ Dir(alpha) (SLPerf)."""
    y = _labels(labels)
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise UserError(f"dirichlet alpha must be a number > 0, got {alpha!r}")
    if min_size < 0:
        raise UserError(f"min_size must be >= 0, got {min_size}")
    _check_clients(n_clients, len(y), max(min_size, 1))
    rng = np.random.default_rng(seed)
    n, classes = len(y), np.unique(y)
    for _ in range(1000):
        shards: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        sizes = np.zeros(n_clients, dtype=np.int64)
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(n_clients, float(alpha)))
            p = np.where(sizes < n / n_clients, p, 0.0)  # balance: full clients get no more
            if not np.isfinite(p).all() or p.sum() <= 0:
                continue  # degenerate draw (tiny alpha): this try fails the size check below
            cuts = (np.cumsum(p / p.sum()) * len(idx)).astype(np.int64)[:-1]
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].append(part)
                sizes[k] += len(part)
        if sizes.sum() == n and sizes.min() >= min_size:
            return [np.sort(np.concatenate(s)) if s else np.zeros(0, np.int64) for s in shards]
    raise UserError(f"dirichlet partition (alpha={alpha}) found no split giving each of "
                    f"{n_clients} clients >= {min_size} samples in 1000 tries; raise alpha or "
                    f"lower the client count")


def partition(name: str, labels: np.ndarray | Tensor, n_clients: int, seed: int,
              alpha: float = 0.5) -> list[np.ndarray]:
    """Shards (index arrays) from the named partitioner; alpha goes to those that take it."""
    fn = PARTITIONS.get(name)
    kw = {"alpha": alpha} if "alpha" in inspect.signature(fn).parameters else {}
    return fn(labels, n_clients, seed, **kw)


def label_entropy(labels: np.ndarray | Tensor, shards: Sequence[np.ndarray],
                  num_classes: int) -> float:
    """Mean over clients of the Shannon entropy (in nats) of each client's label distribution."""
    y = _labels(labels)
    ents = []
    for s in shards:
        counts = np.bincount(y[np.asarray(s, dtype=np.int64)], minlength=num_classes)
        if counts.sum() == 0:
            ents.append(0.0)
            continue
        p = counts[counts > 0] / counts.sum()
        ents.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(ents)) if ents else 0.0
