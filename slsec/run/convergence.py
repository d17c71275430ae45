"""Training to convergence (what `slsec benchmark --min-delta/--patience/--max-rounds/--lr-grid`
uses): the stopping rule and the per-protocol learning-rate choice on a validation split.

Stopping rule (early stopping as Keras/PyTorch Lightning define it): a round improves when its
test accuracy beats the best so far by more than `min_delta`; the cell stops at the first round
`patience` rounds after its last improvement, or at `max_rounds`. On the local backend the
cell really stops there (`train`: the server's per-round hook raises `Converged`, every rank's
wait ends, no later round trains); under MPI (where the ranks cannot be stopped from one hook)
the run trains `max_rounds` rounds and the rule is read off its per-round curve, which gives
the same row (training up to round r does not depend on any later round), later.
`rounds_to_convergence` is the round of the last improvement; `converged` (1/0; over seeds, the
share) says whether the rule fired before `max_rounds` ran out.

Learning-rate choice (best of a few, as papers tune): `val_frac` of the private training set
is held out (seeded, from the clients' shards, so it follows the union of their data), each
candidate trains on the rest under the same stopping rule, and the one with the best validation
accuracy wins (the smaller learning rate on a tie). The test set is not looked at.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from slsec.config import RunConfig
from slsec.errors import UserError


# the benchmark's flags (cli builds them), in parse_rule's order
CONVERGENCE_FLAGS = (
    ("min-delta", "train to convergence: a round improves when test accuracy beats the best so "
     "far by more than this [default: 0.005 when any of these four is given]"),
    ("patience", "train to convergence: stop a cell this many rounds after its last "
     "improvement [default: 5]"),
    ("max-rounds", "train to convergence: at most this many rounds per cell (replaces --rounds) "
     "[default: 50]"),
    ("lr-grid", "choose each protocol's learning rate from this comma list on a 10% validation "
     "split of the training data (first seed and partition) [default: not set]"))


@dataclass(frozen=True)
class Rule:
    min_delta: float = 0.005
    patience: int = 5
    max_rounds: int = 50
    lrs: tuple[float, ...] = ()
    val_frac: float = 0.1


def _number(flag: str, raw: Any, kind: type, ok: Callable[[float], bool], rule: str) -> Any:
    try:
        v = kind(str(raw).strip())
    except ValueError:
        raise UserError(f"{flag} {raw!r}: not a{'n integer' if kind is int else ' number'}") from None
    if not (math.isfinite(v) and ok(v)):
        raise UserError(f"{flag} {raw!r}: must be {rule}")
    return v


def parse_rule(min_delta: Any = None, patience: Any = None, max_rounds: Any = None,
               lr_grid: Any = None) -> Rule | None:
    """The rule from the flags (text or numbers); None when none of them is given."""
    if all(v is None for v in (min_delta, patience, max_rounds, lr_grid)):
        return None
    base = Rule()
    lrs: tuple[float, ...] = ()
    if lr_grid is not None:
        items = lr_grid.split(",") if isinstance(lr_grid, str) else list(lr_grid)
        lrs = tuple(sorted({_number("--lr-grid", i, float, lambda v: v > 0, "positive")
                            for i in items if str(i).strip()}))
        if not lrs:
            raise UserError("--lr-grid is empty; give learning rates as a comma list, e.g. "
                            "0.0003,0.001,0.003")
    return Rule(
        min_delta=base.min_delta if min_delta is None else
        _number("--min-delta", min_delta, float, lambda v: 0 <= v < 1, "in [0, 1) (accuracy)"),
        patience=base.patience if patience is None else
        _number("--patience", patience, int, lambda v: v >= 1, "at least 1"),
        max_rounds=base.max_rounds if max_rounds is None else
        _number("--max-rounds", max_rounds, int, lambda v: v >= 1, "at least 1"),
        lrs=lrs)


def stop_point(acc: Sequence[float], min_delta: float, patience: int) -> tuple[int, int, bool]:
    """(stop index, index of the last improvement, whether the rule fired) over a curve."""
    best, last = -math.inf, -1
    for i, a in enumerate(acc):
        if a > best + min_delta:
            best, last = a, i
        if i - last >= patience:
            return i, last, True
    return len(acc) - 1, last, False


class Converged(Exception):
    """Raised from the server's per-round hook when the stopping rule fires (local backend)."""


def train(cfg: RunConfig, rule: Rule, setup: Any = None,
          on_round: Callable[[Any], None] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Train `cfg` (rounds = the cap) until the rule fires: (the RunResult, or None when the run
    was stopped early, and the per-round records as dicts up to the stopping round)."""
    from slsec.run.harness import evaluate
    records: list[dict[str, Any]] = []

    def hook(rec: Any) -> None:
        records.append(dict(rec.__dict__))
        if on_round is not None:
            on_round(rec)
        if cfg.backend == "local" and stop_point([r["accuracy"] for r in records],
                                                 rule.min_delta, rule.patience)[2]:
            raise Converged(f"converged at round {len(records)}")
    try:
        result = evaluate(cfg, progress=hook, setup=setup)
    except Converged:
        from slsec.progress import end_training
        end_training()
        return None, records
    return result, (records if result is None else list(result.curve))


def converged_row(curve: list[dict[str, Any]], rule: Rule) -> dict[str, Any]:
    """The benchmark row's columns at the stopping round (curve: per-round records)."""
    if not curve:
        return {"converged": 0, "rounds_run": 0}
    acc = [float(r["accuracy"]) for r in curve]
    stop, last, fired = stop_point(acc, rule.min_delta, rule.patience)
    at = curve[stop]
    return {"test_accuracy": acc[stop], "best_accuracy": max(acc[:stop + 1]),
            "rounds_to_convergence": last + 1, "rounds_run": stop + 1, "converged": int(fired),
            "wall_clock_s": float(at["wall_s"]), "mb_on_wire": float(at["bytes"]) / 1e6,
            "last5_mean_accuracy": float(np.mean(acc[max(0, stop - 4):stop + 1])),
            "last5_std_accuracy": float(np.std(acc[max(0, stop - 4):stop + 1])),
            "min_delta": rule.min_delta, "patience": rule.patience,
            "curve": [round(a, 4) for a in acc[:stop + 1]]}


def validation_setup(setup: Any, frac: float) -> Any:
    """A copy of `setup` whose clients train without `frac` of their samples, and whose test
    set (and probe) is those held-out samples instead."""
    rng = np.random.default_rng(setup.cfg.seed + 7919)
    private = np.concatenate(setup.shards)
    k = max(1, int(round(frac * len(private))))
    if k >= len(private):
        raise UserError(f"--lr-grid: {len(private)} training samples are too few to hold out a "
                        f"validation split")
    val = np.sort(rng.choice(private, size=k, replace=False))
    held = set(val.tolist())
    shards = [np.array([i for i in s if i not in held], dtype=np.int64) for s in setup.shards]
    if any(len(s) == 0 for s in shards):
        raise UserError("--lr-grid: a client has no training sample left after the validation "
                        "split; use more training data or fewer clients")
    vsplit = setup.data.train.subset(val)
    data = dataclasses.replace(setup.data, test=vsplit)
    out = dataclasses.replace(setup, data=data, shards=shards,
                              probe=vsplit.subset(slice(0, len(setup.probe))), memo={})
    return out


def choose_lr(cfg: RunConfig, rule: Rule) -> tuple[float, list[dict[str, Any]]]:
    """The best of `rule.lrs` for this cell's protocol on a validation split of its training
    data, and one record per candidate (lr, validation accuracy, rounds run). A candidate
    whose training diverges scores -1 (it loses); if every one does, the last error stands."""
    from slsec.run.setup import prepare
    tried, error = [], None
    for lr in rule.lrs:
        c = cfg.replace(lr=lr, rounds=rule.max_rounds, seeds=1)
        try:
            _, curve = train(c, rule, setup=validation_setup(prepare(c), rule.val_frac))
        except UserError as e:
            if "diverged" not in str(e):
                raise
            error = e
            tried.append({"lr": lr, "val_accuracy": -1.0, "rounds_run": 0})
            continue
        row = converged_row(curve, rule)
        tried.append({"lr": lr, "val_accuracy": row.get("best_accuracy", -1.0),
                      "rounds_run": row["rounds_run"]})
    if error is not None and all(t["val_accuracy"] < 0 for t in tried):
        raise error
    best = max(tried, key=lambda t: (t["val_accuracy"], -t["lr"]))
    return best["lr"], tried


def tune_cells(cells: list[RunConfig], rule: Rule, report: Callable[[dict[str, Any]], None],
               earlier: Sequence[dict[str, Any]] = ()) -> list[RunConfig]:
    """Each cell with its protocol's chosen learning rate: chosen once per (dataset, protocol,
    variant), on the first seed and the grid's first partition; `report` gets one record per
    candidate tried. `earlier`: the records of a resumed benchmark (their choices are kept
    when they tried the same candidates)."""
    chosen: dict[tuple[str, str, str], float] = {}
    for c in cells:
        group = (c.dataset, c.protocol, c.variant)
        if group in chosen:
            continue
        mine = [r for r in earlier if (r.get("dataset"), r.get("protocol"), r.get("variant"))
                == group]
        if sorted(float(r["lr"]) for r in mine) == list(rule.lrs):
            chosen[group] = next(float(r["lr"]) for r in mine if str(r["chosen"]) == "True")
            continue
        if c.backend != "local":
            raise UserError("--lr-grid runs on the local backend only; drop --backend mpi")
        lr, tried = choose_lr(c.replace(seeds=1), rule)
        chosen[group] = lr
        for t in tried:
            report({"dataset": c.dataset, "protocol": c.protocol, "variant": c.variant,
                    "partition": c.partition, "seed": c.seed, "val_frac": rule.val_frac, **t,
                    "chosen": t["lr"] == lr})
    return [c.replace(lr=chosen[(c.dataset, c.protocol, c.variant)]) for c in cells]
