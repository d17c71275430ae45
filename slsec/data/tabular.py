"""Tabular data: `--dataset csv:FILE` (label `--label-column`, default the last column), the
embedded `spam` set, and 2-D `npz:` arrays, as float feature rows [N, D].

Encoding (fit on the training rows only, recorded as `TabularDataset.encoding` so that a
reconstruction can be decoded back to columns):
- a numeric column is standardised with the training mean and standard deviation;
- a categorical (text) column is one-hot encoded over the training categories (a category
  seen only in the test rows encodes as all zeros);
- a column with a missing value gets an indicator column (1 where missing; the value itself
  encodes as the training mean, or no category).
Labels: classes in sorted order; for two classes the rarer one in the data is label 1 (the
"positive" class, as label-inference papers score it). The test split is a seeded stratified
20% of the rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from slsec.data import DATASET_SCHEMES, DATASETS, EMBEDDED_DIR, Dataset, Split
from slsec.errors import DataError

TEST_FRAC = 0.2
MAX_ROWS = 2_000_000
NUMERIC_SHARE = 0.9   # a column whose non-missing cells are >= 90% numbers is numeric


@dataclass(frozen=True, eq=False)
class TabularDataset(Dataset):
    """A tabular Dataset with its column encoding (one dict per original feature column)."""

    encoding: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def _stratified(y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:int(round(frac * len(idx)))])
    te = np.sort(np.concatenate(test)) if test else np.array([], dtype=int)
    tr = np.setdiff1d(np.arange(len(y)), te)
    return tr, te


def _numeric(col: pd.Series, name: str, where: str) -> bool:
    """Whether a column is numeric; a mostly numeric column with text in it is an error."""
    if pd.api.types.is_numeric_dtype(col):
        return True
    present = col.dropna().astype(str).str.strip()
    present = present[present != ""]
    if present.empty:
        return True
    nums = pd.to_numeric(present, errors="coerce")
    share = float(nums.notna().mean())
    if share >= NUMERIC_SHARE and share < 1.0:
        bad = present[nums.isna()]
        raise DataError(f"{where}: column '{name}' is numeric but row {int(bad.index[0]) + 2} "
                        f"holds text '{bad.iloc[0]}' (fix the cell or leave it empty)")
    return share == 1.0


def encode_columns(df: pd.DataFrame, train_rows: np.ndarray, where: str
                   ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Encode the feature columns of `df` with statistics of `train_rows`: (X [N, D], encoding)."""
    blocks, encoding, start = [], [], 0
    for name in df.columns:
        col = df[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col):
            col = col.where(~col.astype(str).str.strip().eq(""), None)
        missing = col.isna().to_numpy()
        entry: dict[str, Any] = {"column": str(name), "start": start}
        if _numeric(col, str(name), where):
            v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
            tr = v[train_rows][~missing[train_rows]]
            mean = float(tr.mean()) if len(tr) else 0.0
            std = float(tr.std()) if len(tr) > 1 else 1.0
            std = std if std > 1e-12 and math.isfinite(std) else 1.0
            block = ((np.where(missing, mean, v) - mean) / std)[:, None]
            entry.update(kind="numeric", mean=mean, std=std)
        else:
            text = col.astype(object)
            cats = sorted({str(c) for c in text.to_numpy()[train_rows] if c is not None
                           and not (isinstance(c, float) and math.isnan(c))})
            index = {c: i for i, c in enumerate(cats)}
            block = np.zeros((len(df), len(cats)))
            for r, c in enumerate(text.to_numpy()):
                if not missing[r] and str(c) in index:
                    block[r, index[str(c)]] = 1.0
            entry.update(kind="categorical", categories=cats)
        if missing.any():
            block = np.concatenate([block, missing[:, None].astype(np.float64)], 1)
            entry["missing_indicator"] = True
        entry["width"] = int(block.shape[1])
        start += entry["width"]
        blocks.append(block)
        encoding.append(entry)
    return np.concatenate(blocks, 1).astype(np.float32), encoding


def decode(x: torch.Tensor, encoding: list[dict[str, Any]]) -> pd.DataFrame:
    """Encoded rows [N, D] back to columns (numeric in original units, categorical as the
    most likely category)."""
    x = x.detach().double().cpu().numpy()
    out = {}
    for e in encoding:
        s = x[:, e["start"]:e["start"] + e["width"]]
        if e["kind"] == "numeric":
            out[e["column"]] = s[:, 0] * e["std"] + e["mean"]
        else:
            k = len(e["categories"])
            out[e["column"]] = [e["categories"][i] if k else None for i in s[:, :k].argmax(1)] \
                if k else [None] * len(s)
    return pd.DataFrame(out)


def from_frame(name: str, df: pd.DataFrame, label: str | None, where: str) -> TabularDataset:
    """A TabularDataset from a data frame (label column `label`, default the last)."""
    if df.shape[1] < 2:
        raise DataError(f"{where}: needs a label column and at least one feature column, got "
                        f"{df.shape[1]} column(s)")
    label = label if label is not None else str(df.columns[-1])
    if label not in df.columns:
        raise DataError(f"{where}: no label column '{label}' (columns: "
                        f"{', '.join(map(str, df.columns[:8]))}{', ...' if df.shape[1] > 8 else ''})")
    if len(df) == 0:
        raise DataError(f"{where}: the file has a header but zero rows")
    raw_y = df[label]
    if raw_y.isna().any():
        raise DataError(f"{where}: label column '{label}' is empty in row "
                        f"{int(np.flatnonzero(raw_y.isna().to_numpy())[0]) + 2}")
    ys = raw_y.astype(str).to_numpy()
    classes, counts = np.unique(ys, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"{where}: label column '{label}' has one class ('{classes[0]}'); "
                        "classification needs at least 2")
    if len(classes) == len(df) or len(classes) > max(100, len(df) // 2):
        raise DataError(f"{where}: label column '{label}' looks like an id ({len(classes)} "
                        f"distinct values in {len(df)} rows); name the class column with "
                        "--label-column")
    order = list(classes)
    if len(order) == 2 and counts[0] < counts[1]:
        order = [order[1], order[0]]     # binary: the rarer class is label 1
    y = np.array([order.index(v) for v in ys], dtype=np.int64)
    tr, te = _stratified(y, TEST_FRAC, seed=0)
    if len(tr) < 2 or len(te) < 1:
        raise DataError(f"{where}: needs at least 2 training and 1 test row, got {len(df)} rows")
    x, encoding = encode_columns(df.drop(columns=[label]).reset_index(drop=True), tr, where)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    train, test = Split(x_t[tr], y_t[tr]), Split(x_t[te], y_t[te])
    return TabularDataset(name, "tabular", train, test, len(order), (x.shape[1],), x.shape[1],
                          "mlp", encoding=encoding, classes=[str(c) for c in order])


def read_csv(name: str, path: Path, label: str | None) -> TabularDataset:
    where = f"--dataset {name}"
    if not path.is_file():
        raise DataError(f"{where}: file {path} does not exist")
    try:
        df = pd.read_csv(path, nrows=MAX_ROWS, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: {path} is empty (no header, zero rows)") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{where}: {path} is not a readable CSV file ({first})") from None
    return from_frame(name, df, label, where)


def tabular_from_arrays(name: str, x: np.ndarray, y: np.ndarray, where: str) -> TabularDataset:
    """A 2-D `x` (npz:) as a tabular set of numeric columns x0..x{D-1} with integer labels."""
    df = pd.DataFrame(np.asarray(x, dtype=np.float64),
                      columns=[f"x{i}" for i in range(x.shape[1])])
    df["label"] = np.asarray(y).astype(np.int64)
    return from_frame(name, df, "label", where)


def load_csv(spec: str, *, label_column: str | None = None) -> TabularDataset:
    """`csv:FILE`: the user's CSV, label in `label_column` (default: the last column)."""
    _, _, rest = spec.partition(":")
    if not rest:
        raise DataError(f"--dataset {spec}: give a file, e.g. csv:data.csv")
    return read_csv(spec, Path(rest).expanduser(), label_column)


load_csv.takes_label_column = True   # type: ignore[attr-defined]
DATASET_SCHEMES.register("csv", load_csv)


@DATASETS.register("spam")
def spam(root: Path | None = None, download: bool = False) -> TabularDataset:
    """Embedded: a stratified 2,000-row subset of UCI Spambase (57 numeric columns)."""
    return read_csv("spam", EMBEDDED_DIR / "spam.csv.gz", "type")
