"""Leakage of tabular records, beside the prior: numeric columns as R² and RMSE in standardised
units, categorical columns as accuracy, records as re-identification among candidates.

Rows are in the encoded space of slsec.data.tabular (numeric columns standardised with the
training statistics, so an RMSE of 1 is one training standard deviation; categories one-hot).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def party_encoding(encoding: list[dict[str, Any]], cols: list[int]) -> list[dict[str, Any]]:
    """The encoding entries of the columns a party holds, with starts within its own rows."""
    where = {c: i for i, c in enumerate(cols)}
    out = []
    for e in encoding:
        if e["start"] in where:
            out.append({**e, "start": where[e["start"]]})
    return out


def column_scores(truth: Tensor, guess: Tensor, encoding: list[dict[str, Any]]) -> dict[str, float]:
    """Mean R² and RMSE over the numeric columns, accuracy over the categorical ones."""
    t, g = truth.double(), guess.double()
    r2, rmse, acc = [], [], []
    for e in encoding:
        s = e["start"]
        if e["kind"] == "numeric":
            a, b = t[:, s], g[:, s]
            sst = float(((a - a.mean()) ** 2).sum())
            sse = float(((a - b) ** 2).sum())
            if sst > 1e-12:
                r2.append(1.0 - sse / sst)
            rmse.append(float(((a - b) ** 2).mean().sqrt()))
        elif e["categories"]:
            k = len(e["categories"])
            block_t, block_g = t[:, s:s + k], g[:, s:s + k]
            has = block_t.sum(1) > 0.5
            if has.any():
                acc.append(float((block_t[has].argmax(1) == block_g[has].argmax(1))
                                 .double().mean()))
    out: dict[str, float] = {}
    if r2:
        out["numeric_r2"] = float(np.mean(r2))
    if rmse:
        out["numeric_rmse"] = float(np.mean(rmse))
    if acc:
        out["categorical_accuracy"] = float(np.mean(acc))
    return out


def reidentification(candidates: Tensor, guesses: Tensor, true_index: Tensor,
                     ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """How often the true record is among the k candidates nearest (Euclidean, encoded space)
    to each guess; ties count in expectation. Chance is k / N."""
    d = torch.cdist(guesses.double(), candidates.double())
    true = d[torch.arange(len(guesses)), true_index][:, None]
    closer = (d < true - 1e-9).sum(1).double()
    ties = ((d - true).abs() <= 1e-9).sum(1).double() - 1
    n = len(candidates)
    out: dict[str, float] = {"reid_candidates": float(n)}
    for k in ks:
        p = ((k - closer) / (ties + 1)).clamp(0, 1)
        out[f"reid_top{k}"] = float(p.mean())
        out[f"reid_chance_top{k}"] = min(1.0, k / n)
    return out


def record_scores(truth: Tensor, guess: Tensor, prior: Tensor, encoding: list[dict[str, Any]],
                  others: Tensor) -> dict[str, float]:
    """Column and record scores of `guess` and of the `prior`, and the gain over the prior.
    `others`: other records of the same columns (re-identification candidates beside truth)."""
    out = {f"attack_{k}": v for k, v in column_scores(truth, guess, encoding).items()}
    out.update({f"prior_{k}": v for k, v in column_scores(truth, prior, encoding).items()})
    for k in ("numeric_r2", "categorical_accuracy"):
        if f"attack_{k}" in out:
            out[f"{k}_gain"] = out[f"attack_{k}"] - out[f"prior_{k}"]
    if "attack_numeric_rmse" in out:
        out["numeric_rmse_gain"] = out["prior_numeric_rmse"] - out["attack_numeric_rmse"]
    cands = torch.cat([truth, others])
    idx = torch.arange(len(truth))
    out.update(reidentification(cands, guess, idx))
    prior_reid = reidentification(cands, prior, idx)
    out.update({f"prior_{k}": v for k, v in prior_reid.items() if k.startswith("reid_top")})
    return out
