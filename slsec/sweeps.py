"""`slsec sweep`: run a grid of evaluations, one durable row per cell, then render the frontier.

Grid axes come from flags or a TOML file:
- flags: a comma list in any scalar option is an axis (`--sigma 0,0.01,0.1`, `--cut conv1,pool2`);
  for list options (`--defense`, `--knowledge`, `--straggler`) alternatives are separated by `|`
  and each alternative is a comma list (`--defense "none|dp|dp,nopeek"`; "none" = no defense);
- TOML: base keys (top level or a [run] table) as for `--config`, plus a [grid] table of lists
  (a list given directly to a single-valued key is an axis too); flags given on the command
  line replace the file's value or axis of the same name.
"none" in a grid stands for "not set" (default) in optional options.

Cells run one after another in this process (local backend). Each finished cell appends one
row to results.csv atomically (config + metrics + `cell` = hash of the cell's config), so a
sweep killed at any moment and rerun with --resume completes with no duplicated or lost rows.
"""
from __future__ import annotations

import fcntl
import io
import itertools
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from rich.table import Table

from slsec import progress
from slsec.catalog import pre_training
from slsec.config import RunConfig, load_toml, make_config
from slsec.console import console, warn
from slsec.errors import UserError
from slsec.folders import quarantine_warned
from slsec.results import (append_row, check_writable, config_key, intact_rows,
                           read_json, read_rows, rows_csv, write_json)

FIELDS = [f.name for f in fields(RunConfig) if f.name != "source"]
LIST_FIELDS = {f.name for f in fields(RunConfig) if "tuple" in str(f.type)}
OPTIONAL = {f.name for f in fields(RunConfig) if "None" in str(f.type)}
NOT_AXES = {"out", "run_id", "data_root", "seeds"}   # one value per sweep
# config fields that decide the public setup (data, shards, model, cuts): validated once each
SETUP_FIELDS = ("protocol", "dataset", "data_root", "download", "model", "cut", "cut2", "clients",
                "partition", "alpha", "seed", "aux_size", "max_train", "probe_size", "label_party",
                "attack")
LEAK_KEYS = ("attack_ssim_mean", "attack_psnr_mean", "label_auc", "label_accuracy",
             "prior_ssim_mean", "ssim_gain_mean", "reid_top1", "reid_top5")


@dataclass
class Grid:
    """Base values (raw, as TOML/CLI give them) and the axes: option -> alternatives, in order."""

    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    source: str | None = None

    def combos(self) -> Iterator[dict[str, Any]]:
        names = list(self.axes)
        for combo in itertools.product(*(self.axes[n] for n in names)):
            yield dict(zip(names, combo))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _alternative(name: str, raw: Any, where: str) -> Any:
    """One grid value as make_config takes it ('none' -> not set / no defense)."""
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            raise UserError(f"{where}: empty value in the list for {_flag(name)}")
        if raw.lower() == "none":
            return "" if name in LIST_FIELDS else (None if name in OPTIONAL else raw)
    if isinstance(raw, list):
        if name not in LIST_FIELDS:
            raise UserError(f"{where}: [grid] {name} must be a list of single values, got {raw!r}")
        return [str(x) for x in raw]
    if isinstance(raw, dict):
        raise UserError(f"{where}: [grid] {name} holds a table; give a list of values")
    return raw


def _split_flag(name: str, value: str) -> list[str] | None:
    """The alternatives of a flag value, or None when it is a single value."""
    sep = "|" if name in LIST_FIELDS else ","
    if name in NOT_AXES or sep not in value:
        return None
    return value.split(sep)


def parse_grid(config_path: str | None, flags: dict[str, str | None]) -> Grid:
    """Base values and axes from the TOML file (if any) and the flags actually given."""
    grid = Grid(source=config_path)
    if config_path:
        raw = load_toml(config_path)
        where = f"config file {config_path}"
        axes = raw.pop("grid", {})
        run = raw.pop("run", {})
        if not isinstance(axes, dict) or not isinstance(run, dict):
            raise UserError(f"{where}: [grid] and [run] must be tables")
        listed: dict[str, list[Any]] = {}
        for k, v in {**raw, **run}.items():
            if isinstance(v, dict):
                raise UserError(f"{where}: unknown table [{k}] (expected [run] and [grid])")
            name = k.replace("-", "_")
            if isinstance(v, list) and name in FIELDS and name not in LIST_FIELDS:
                listed[k] = v           # a list in a single-valued option is an axis too
            else:
                grid.base[name] = v
        make_config(grid.base, source=config_path)   # bad base keys/values name the file
        axes = {**listed, **axes} if not (set(listed) & set(axes)) else _both(listed, axes, where)
        for k, values in axes.items():
            name = k.replace("-", "_")
            if name not in FIELDS:
                make_config({k: None}, source=config_path)   # raises: unknown key + suggestion
            if name in NOT_AXES:
                raise UserError(f"{where}: '{k}' cannot be a grid axis (one per sweep)")
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}: [grid] {k} must be a non-empty list, got {values!r}")
            if name in grid.base:
                raise UserError(f"{where}: '{k}' is both a base key and a [grid] axis")
            grid.axes[name] = [_alternative(name, v, where) for v in values]
    for name, value in flags.items():
        if value is None:
            continue
        if name not in FIELDS:
            raise UserError(f"unknown option {_flag(name)}")
        grid.base.pop(name, None)
        grid.axes.pop(name, None)
        alts = _split_flag(name, str(value))
        if alts is None:
            grid.base[name] = _alternative(name, value, _flag(name)) if name not in NOT_AXES \
                else value
        else:
            grid.axes[name] = [_alternative(name, a, _flag(name)) for a in alts]
    return grid


def _both(listed: dict[str, Any], axes: dict[str, Any], where: str) -> dict[str, Any]:
    k = sorted(set(listed) & set(axes))[0]
    raise UserError(f"{where}: '{k}' is both a base key and a [grid] axis")


def cell_label(values: dict[str, Any]) -> str:
    from slsec.frontier import show
    return " ".join(f"{k}={show(v if not isinstance(v, list) else ','.join(v))}"
                    for k, v in values.items())


def grid_cells(grid: Grid) -> list[RunConfig]:
    """Every cell's validated config (duplicates, e.g. '0.1' and '0.10', kept once)."""
    cells: dict[str, RunConfig] = {}
    for combo in grid.combos():
        try:
            cfg = make_config({**grid.base, **combo}, source=grid.source)
        except UserError as e:
            raise UserError(f"grid cell {cell_label(combo)}: {e}" if combo else str(e)) from None
        cells.setdefault(config_key(cfg.to_dict()), cfg)
    return list(cells.values())


def validate_cells(cells: list[RunConfig]) -> None:
    """Check attack, defenses, data, model and cuts of every cell before any training."""
    from slsec.harness import check_attack
    from slsec.setup import check_defenses

    from slsec.preflight import check_grid

    for cfg in cells:
        try:
            if cfg.backend != "local":
                raise UserError("sweep cells run in this process: use --backend local "
                                "(run single evaluations under mpiexec with `slsec evaluate`)")
            if pre_training(cfg):
                raise UserError(f"{pre_training(cfg)[0]} chooses the cut itself; sweep over "
                                "--cut instead (or see `slsec review`)")
            check_attack(cfg)
            check_defenses(cfg)
        except UserError as e:
            raise UserError(f"grid cell {cell_label(_varying(cfg, cells))}: {e}") from None
    # every cell's data, cuts, sizes and accountant, before the first cell trains
    check_grid(cells, lambda c: cell_label(_varying(c, cells)))


def _varying(cfg: RunConfig, cells: list[RunConfig]) -> dict[str, Any]:
    return {n: getattr(cfg, n) for n in FIELDS
            if len({str(getattr(c, n)) for c in cells}) > 1} if len(cells) > 1 else {}


# --------------------------------------------------------------------------- rows

def _plain(v: Any) -> Any:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v


def result_row(cfg: RunConfig, result: dict[str, Any],
               undefended: dict[str, Any] | None) -> dict[str, Any]:
    """One results.csv row: cell key, config fields, resolved model/cuts, metrics, DCS."""
    from slsec.frontier import attack_performance, row_dcs

    m = result["metrics"]
    row: dict[str, Any] = {"cell": config_key(cfg.to_dict())}
    row.update({n: _plain(getattr(cfg, n)) for n in FIELDS})
    cuts = list(m.get("cuts") or [])
    row.update({"model_name": cfg.model_name, "cut": cuts[0] if cuts else "",
                "cut2": cuts[1] if len(cuts) > 1 else ""})
    for k, v in m.items():
        if k == "cuts":
            row[k] = ",".join(cuts)
        elif k in row:
            if str(row[k]) != str(_plain(v)):
                row[f"{k}_effective"] = _plain(v)    # e.g. label_party chosen by the attack
        else:
            row[k] = _plain(v)
    if undefended is not None:
        um = undefended["metrics"]
        row["undefended_accuracy"] = um.get("accuracy")
        for k in LEAK_KEYS:
            if k in um:
                row[f"undefended_{k}"] = um[k]
    row["attack_performance"] = attack_performance(row)
    row["dcs"] = row_dcs(row)
    return row


def run_cell(cfg: RunConfig) -> dict[str, Any]:
    """Evaluate one cell (+ its cached undefended twin when it has defenses) into a row."""
    from slsec.runs import cached_baseline
    from slsec.harness import evaluate

    result = evaluate(cfg)
    base = cached_baseline(cfg) if cfg.defense else None
    return result_row(cfg, result, base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- seeds

def seed_cells(cells: list[RunConfig]) -> list[RunConfig]:
    """Every single-seed run the cells need (seed, seed+1, ...), each once, in order. With
    --seeds 1 these are the cells themselves (same config key as before seeds existed)."""
    from slsec.stats import seed_list
    runs: dict[str, RunConfig] = {}
    for c in cells:
        for s in seed_list(c.seed, c.seeds):
            one = c.replace(seed=s, seeds=1)
            runs.setdefault(config_key(one.to_dict()), one)
    return list(runs.values())


def aggregate_row(cfg: RunConfig, seed_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregate row of a multi-seed cell: every numeric column's mean over the per-seed
    rows and its 95% t half-width in `<column>_ci95` (slsec.stats); config columns are the
    cell's; `row_kind` = "aggregate", `cell` = the hash of the cell's config (seeds included)."""
    from slsec.stats import mean_row
    row = mean_row(seed_rows, skip=set(FIELDS) | {"cell", "row_kind"})
    return {"cell": config_key(cfg.to_dict()), "row_kind": "aggregate",
            **{n: _plain(getattr(cfg, n)) for n in FIELDS}, "n_seeds": len(seed_rows), **row}


def append_aggregates(results: Path, cells: list[RunConfig]) -> None:
    """Append the aggregate row of every multi-seed cell whose seeds are all in results.csv and
    which has none yet. It is computed from the stored per-seed rows only, so a resumed or
    rerun sweep gets the same aggregate and never counts a seed twice."""
    from slsec.stats import seed_list
    rows = read_rows(results)
    by_cell = {r.get("cell"): r for r in rows}
    for c in cells:
        if c.seeds == 1 or config_key(c.to_dict()) in by_cell:
            continue
        keys = [config_key(c.replace(seed=s, seeds=1).to_dict()) for s in seed_list(c.seed, c.seeds)]
        if all(k in by_cell for k in keys):
            append_row(results, aggregate_row(c, [by_cell[k] for k in keys]))


def is_aggregate(row: dict[str, Any]) -> bool:
    return str(row.get("row_kind") or "") == "aggregate"


def shown_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a report shows: the aggregate rows when the sweep ran several seeds, else all."""
    agg = [r for r in records if is_aggregate(r)]
    return agg or records


# --------------------------------------------------------------------------- folder + lock

def sweep_folder(cfg: RunConfig, resume: bool) -> Path:
    """<out>/<run-id>, or a new <out>/sweep-<timestamp> (--resume: the latest one)."""
    out = Path(cfg.out)
    if cfg.run_id:
        if "/" in cfg.run_id or cfg.run_id in ("", ".", ".."):
            raise UserError(f"--run-id must be a plain folder name, got {cfg.run_id!r}")
        return out / cfg.run_id
    if resume:
        earlier = sorted((p for p in out.glob("sweep-*") if (p / "results.csv").exists()),
                         key=lambda p: p.stat().st_mtime)
        if not earlier:
            raise UserError(f"--resume: no earlier sweep with results in {out}; "
                            "pass the --run-id of the sweep to continue")
        return earlier[-1]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = out / f"sweep-{stamp}", 2
    while folder.exists():
        folder, n = out / f"sweep-{stamp}-{n}", n + 1
    return folder


class FolderLock:
    """An exclusive flock on <folder>/.sweep.lock (released by the OS even on SIGKILL)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".sweep.lock"
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another sweep is writing to {self.path.parent}; wait for it or "
                            "use another --run-id") from None
        except OSError as e:
            raise UserError(f"cannot lock {self.path}: {e.strerror or e}") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _clean_temp(folder: Path) -> None:
    """Remove temp files a killed atomic write left behind (never the results themselves)."""
    for p in folder.glob(".*.tmp"):     # atomic_write's temp files (rows, reports, plots)
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the command

def run_sweep(config_path: str | None, flags: dict[str, str | None], resume: bool,
              force: bool = False) -> Path:
    """Run every cell of the grid not yet in results.csv, then render the report; the folder."""
    from slsec.folders import claim, keeping, mark

    grid = parse_grid(config_path, flags)
    cells = grid_cells(grid)
    check_writable(cells[0].out)
    folder = sweep_folder(cells[0], resume)
    claim(folder, "sweep", resume=resume, force=force, can_resume=True)
    if resume:
        check_same_base(folder, grid)
    validate_cells(cells)
    check_writable(folder)
    results = folder / "results.csv"
    with FolderLock(folder):
        if results.exists() and not (resume or force):
            raise UserError(f"{results} already exists: pass --resume to continue that sweep, "
                            "or choose another --run-id")
        moved = mark(folder, "sweep", force=force)
        if moved:
            console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
        _clean_temp(folder)
        quarantine_warned(results, warn)
        done = {r.get("cell") for r in read_rows(results)}
        todo = [c for c in seed_cells(cells) if config_key(c.to_dict()) not in done]
        write_json(folder / "sweep.json", {
            "config": config_path, "base": {k: _plain(v) for k, v in grid.base.items()},
            "axes": {k: [_plain(v) for v in vs] for k, vs in grid.axes.items()},
            "cells": [config_key(c.to_dict()) for c in cells]})
        runs = seed_cells(cells)
        console.print(f"sweep {folder.name}: {len(cells)} cell(s) × {cells[0].seeds} seed(s) = "
                      f"{len(runs)} run(s), {len(runs) - len(todo)} already done, {len(todo)} to "
                      f"run; {'single seed' if cells[0].seeds == 1 else 'per-seed rows + one aggregate row (mean, 95% CI) per cell'}")
        # cells with ETA on stderr (slsec.progress: a status line, or plain lines when piped)
        with progress.phase("sweep", total=len(todo), unit="cells"):
            for cfg in todo:
                progress.tick("sweep", 0, note=cell_label(
                    {a: getattr(cfg, a) for a in grid.axes}
                    | ({"seed": cfg.seed} if cells[0].seeds > 1 else {})))
                with progress.training("train"):
                    row = {**run_cell(cfg), "row_kind": "seed"}
                with keeping(f"the {len(read_rows(results))} finished row(s) in {results} are "
                             f"kept; free space and rerun with --resume --run-id {folder.name}"):
                    append_row(results, row)
                progress.tick("sweep")
        with keeping(f"the per-seed rows in {results} are kept; free space and rerun with "
                     f"--resume --run-id {folder.name}"):
            append_aggregates(results, cells)
    with keeping(f"all {len(read_rows(results))} row(s) in {results} are kept; free space and "
                 f"run: slsec report {folder}"):
        render_sweep(folder)
    print_cells(folder, list(grid.axes))
    console.print(f"report: {folder}/report.html")
    return folder


def check_same_base(folder: Path, grid: Grid) -> None:
    """--resume must continue the same experiment: refuse base options that differ from those
    recorded in sweep.json (one line listing the differing keys)."""
    from slsec.config import _coerce
    path = folder / "sweep.json"
    if not path.exists():
        return
    stored = read_json(path)
    if not isinstance(stored, dict) or not isinstance(stored.get("base"), dict):
        raise UserError(f"{path} is not an slsec sweep record (no 'base' object); cannot check "
                        "that --resume continues the same sweep")
    defaults = RunConfig()

    def norm(name: str, base: dict[str, Any]) -> str:
        if name not in base:
            return str(_plain(getattr(defaults, name)))
        v = base[name]
        try:
            v = _coerce(name, v, "")
        except UserError:
            pass
        return str(_plain(v))
    old = {k: v for k, v in stored["base"].items() if k in FIELDS}
    names = sorted((set(old) | set(grid.base)) - set(NOT_AXES) - set(grid.axes)
                   - set(stored.get("axes") or {}))
    diff = [n for n in names if norm(n, old) != norm(n, grid.base)]
    if diff:
        raise UserError(f"--resume: the base options differ from {path}: " + ", ".join(
            f"{_flag(n)} {norm(n, old)} → {norm(n, grid.base)}" for n in diff)
            + "; rerun with the sweep's options, or start a new sweep with another --run-id")


def axis_text(row: dict[str, Any], axis: str) -> str:
    """A cell's grid value as the tables show it; sigma = 0 with a finite clip says that the
    cell is clipped but unnoised (so it can leak more than the undefended run: nothing is
    hidden, and the clip changes what the attack fits)."""
    from slsec.frontier import num, show
    text = show(row.get(axis))
    if axis == "sigma" and num(row.get("sigma")) == 0 and math.isfinite(num(row.get("clip_used"))):
        text += " (clipped, no noise)"
    return text


def methods_text(records: list[dict[str, Any]]) -> str:
    """Which attack method each cell reported, counted ("decoder ×3, whitebox ×1")."""
    from collections import Counter
    counts = Counter(str(r.get("attack_method")) for r in records if r.get("attack_method"))
    if len(counts) == 1:
        return next(iter(counts))
    return "per cell: " + ", ".join(f"{m} ×{n}" for m, n in counts.most_common())


def print_cells(folder: Path, axes: list[str]) -> None:
    """A compact terminal table of the rows: grid values, accuracy, leakage, DCS."""
    from slsec import report as rpt
    from slsec.frontier import num, show

    rows = shown_rows(read_rows(folder / "results.csv"))
    cols = [("accuracy", "accuracy"), ("attack_ssim_mean", "SSIM"), ("attack_psnr_mean", "PSNR"),
            ("label_auc", "label AUC"), ("epsilon", "ε"), ("dcs", "DCS")]
    if any(is_aggregate(r) for r in rows):
        return print_seed_cells(folder, axes, rows)
    cols = [(k, n) for k, n in cols if any(r.get(k) not in (None, "") for r in rows)]
    method = any(r.get("attack_method") for r in rows)
    t = Table(title=f"sweep {folder.name}")
    for a in axes or ["cell"]:
        t.add_column(a)
    if method:
        t.add_column("method")
    for _, n in cols:
        t.add_column(n, justify="right")
    for r in rows:
        t.add_row(*[axis_text(r, a) for a in axes or ["cell"]],
                  *([str(r.get("attack_method") or "–")] if method else []),
                  *[rpt.fmt(num(r.get(k)), 2 if k == "attack_psnr_mean" else 3) for k, _ in cols])
    console.print(t)


def seed_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, name) of the numeric columns a multi-seed table shows, the prior-aware ones included
    when the rows have them."""
    cols = [("accuracy", "accuracy"), ("attack_ssim_mean", "SSIM"),
            ("prior_ssim_mean", "prior SSIM"), ("ssim_gain_mean", "SSIM gain"),
            ("attack_psnr_mean", "PSNR"), ("reid_top1", "re-id top-1"),
            ("label_auc", "label AUC"), ("epsilon", "ε"),
            ("rounds_to_convergence", "rounds to conv."), ("dcs", "DCS")]
    return [(k, n) for k, n in cols if any(r.get(k) not in (None, "") for r in rows)]


def ci_text(r: dict[str, Any], key: str) -> str:
    from slsec.frontier import num
    from slsec.stats import CI_SUFFIX, fmt_ci
    return fmt_ci(num(r.get(key)), num(r.get(key + CI_SUFFIX)), 2 if "psnr" in key else 3)


def print_seed_cells(folder: Path, axes: list[str], rows: list[dict[str, Any]]) -> None:
    """The aggregate rows: mean ± 95% half-width per metric, and the private verdict."""
    from slsec.frontier import is_private, privacy_key, private_text, show

    n = rows[0].get("n_seeds")
    t = Table(title=f"sweep {folder.name}: mean ± 95% t half-width over {n} seeds")
    for a in axes or ["cell"]:
        t.add_column(a)
    cols = seed_columns(rows)
    for _, name in cols:
        t.add_column(name, justify="right")
    key = privacy_key(rows)
    t.add_column("private", justify="center")
    for r in rows:
        t.add_row(*[show(r.get(a)) for a in axes or ["cell"]], *[ci_text(r, k) for k, _ in cols],
                  "yes" if is_private(r, key) else "no")
    console.print(t)
    console.print(private_text(key), markup=False)


# --------------------------------------------------------------------------- the report

def _axes(folder: Path, records: list[dict[str, Any]]) -> list[str]:
    axes: list[str] = []
    if (folder / "sweep.json").exists():
        stored = read_json(folder / "sweep.json")
        if not isinstance(stored, dict) or not isinstance(stored.get("axes", {}), dict):
            raise UserError(f"{folder / 'sweep.json'} is not an slsec sweep record "
                            "(expected an object with 'axes')")
        axes = [a for a in stored.get("axes", {}) if records and a in records[0]]
    if not axes and len(records) > 1:
        axes = [n for n in FIELDS if n in records[0]
                and len({str(r.get(n)) for r in records}) > 1]
    return axes


def render_sweep(folder: Path) -> None:
    """report.md + report.html with the frontier plots, Pareto points, DCS and every cell."""
    import pandas as pd

    from slsec import report as rpt
    from slsec.frontier import (DCS_TEXT, frontier_plot, num, point_label, present_metrics,
                                show)

    folder = Path(folder)
    path = folder / "results.csv"
    if not path.exists():
        raise UserError(f"{path} does not exist")
    good = intact_rows(path, "sweep", warn)
    if not good:
        raise UserError(f"{path} has no intact rows yet")
    try:
        df = pd.read_csv(io.StringIO(rows_csv(good, check=False)), keep_default_na=True)
    except (OSError, ValueError) as e:
        raise UserError(f"results file {path} cannot be read: {e}") from None
    records: list[dict[str, Any]] = df.astype(object).where(df.notna(), None).to_dict("records")
    if not records:
        raise UserError(f"{path} has no rows yet")
    n_all = len(records)
    records = shown_rows(records)           # several seeds: the aggregate row of each cell
    multi = any(is_aggregate(r) for r in records)
    axes = _axes(folder, records)
    numeric = {a for a in axes if all(isinstance(r.get(a), (int, float)) or r.get(a) is None
                                      for r in records)}
    color_by = next((a for a in axes if a not in numeric), None) if len(axes) > 1 else None
    first = records[0]
    attack = show(first.get("attack")) if first.get("attack") else "no attack"
    blocks: list[tuple] = [("p", (
        f"{len(records)} cell(s): protocol {show(first.get('protocol'))}, dataset "
        f"{show(first.get('dataset'))} ({show(first.get('model_name'))}), attack {attack}"
        + (f" (method {methods_text(records)}, as the {show(first.get('attack_role'))})"
           if first.get("attack_method") else "")
        + ". Grid: " + ("; ".join(f"{a} ∈ {{{', '.join(sorted({show(r.get(a)) for r in records}, key=str))}}}"
                                  for a in axes) or "one cell") + ". "
        + (seed_text(records, n_all) if multi else
           f"Single seed (seed {show(first.get('seed'))}): no confidence intervals and no "
           "private verdict; rerun with --seeds 3 for them.")))]
    if multi:
        blocks += private_blocks(records, axes)
    pareto: dict[str, list[bool]] = {}
    for metric, label in present_metrics(records):
        png = folder / f"frontier_{metric}.png"
        mask = frontier_plot(records, metric, label, png, axes=axes, color_by=color_by)
        pareto[metric] = mask
        front = [point_label(r, axes) for r, on in zip(records, mask) if on]
        blocks += [("h", f"Accuracy vs {label}"),
                   ("img", str(png), f"test accuracy vs {label}; ringed: Pareto points"),
                   ("p", "Pareto points (no other cell has both higher accuracy and less "
                         f"leakage{' (|AUC - 0.5|)' if metric == 'label_auc' else ''}): "
                         + ("; ".join(front) or "none") + ".")]
    if not pareto:
        blocks.append(("p", "No attack metric in these rows (run the sweep with --attack) — "
                            "only utility is reported."))
    blocks += [("h", "Defense Capability Score"), ("p", DCS_TEXT)]
    scored = [r for r in records if not _nan(num(r.get("dcs")))]
    if scored:
        best = max(scored, key=lambda r: num(r.get("dcs")))
        blocks.append(("p", f"Highest DCS: {num(best.get('dcs')):.3f} at "
                            f"{point_label(best, axes)} (accuracy {num(best.get('accuracy')):.3f}, "
                            f"normalised attack performance "
                            f"{num(best.get('attack_performance')):.3f})."))
    cols = [("accuracy", "accuracy"), ("undefended_accuracy", "undefended acc"),
            ("attack_ssim_mean", "SSIM"), ("baseline_ssim_mean", "SSIM mean-image"),
            ("attack_psnr_mean", "PSNR dB"), ("label_auc", "label AUC"),
            ("label_accuracy", "label acc"), ("label_leak", "label leak"), ("epsilon", "ε"),
            ("mb_on_wire", "MB"), ("train_seconds", "train s"), ("attack_performance", "AP"),
            ("dcs", "DCS")]
    cols = [(k, n) for k, n in cols if any(r.get(k) is not None for r in records)]
    short = {"attack_ssim_mean": "SSIM", "attack_psnr_mean": "PSNR", "label_auc": "AUC",
             "ssim_gain_mean": "SSIM gain"}
    method = any(r.get("attack_method") for r in records)
    header = ((axes or ["cell"]) + (["method"] if method else []) + [n for _, n in cols]
              + (["Pareto"] if pareto else []))
    rows = []
    for i, r in enumerate(records):
        vals = ([axis_text(r, a) for a in axes or ["cell"]]
                + ([r.get("attack_method") or "–"] if method else [])
                + [ci_text(r, k) if multi and r.get(k + "_ci95") not in (None, "")
                   else _value(r.get(k)) for k, _ in cols])
        if pareto:
            vals.append(", ".join(short.get(m, m) for m, mask in pareto.items() if mask[i]) or "–")
        rows.append(vals)
    if any(axis_text(r, "sigma").endswith("(clipped, no noise)") for r in records):
        blocks.append(("p", "sigma = 0 (clipped, no noise): DP at the cut still clips every "
                            "smashed row to C but adds no noise, so it claims nothing (ε = ∞); "
                            "it is its own training run, and the attack fits the clipped "
                            "activations it knows the rule of, so its score can land above the "
                            "undefended run's."))
    blocks += [("h", "All cells"), ("table", header, rows),
               ("p", "One row per cell in results.csv (config, resolved cuts, every metric; "
                     "`cell` is the hash of the cell's config). Continue an interrupted sweep "
                     f"with the same options plus --resume --run-id {folder.name}.")]
    title = "slsec sweep: privacy/utility frontier" + (f" ({folder.name})")
    rpt.write_document(folder, title, blocks)


def seed_text(records: list[dict[str, Any]], n_all: int) -> str:
    from slsec.stats import seeds_text
    n = int(float(records[0].get("n_seeds") or 1))
    return (seeds_text(n, int(float(records[0].get("seed") or 0))).capitalize()
            + f". Plots and tables show the {len(records)} aggregate rows (error bars: 95% "
            f"intervals of accuracy and of the leakage); results.csv also keeps the "
            f"{n_all - len(records)} per-seed rows (row_kind = seed).")


def private_blocks(records: list[dict[str, Any]], axes: list[str]) -> list[tuple]:
    """Which points are private (upper 95% bound of leakage within the threshold), and which of
    them keep >= 90% of the undefended accuracy."""
    from slsec.frontier import (is_private, num, point_label, privacy_key, private_threshold,
                                private_text, upper_bound)
    key = privacy_key(records)
    if key is None:
        return []
    lines = []
    for r in records:
        if is_private(r, key):
            acc, acc0 = num(r.get("accuracy")), num(r.get("undefended_accuracy"))
            keeps = not _nan(acc0) and acc >= 0.9 * acc0
            lines.append(f"{point_label(r, axes)}: upper bound {upper_bound(r, key):.3f} <= "
                         f"{private_threshold(r, key):.3f}; accuracy {acc:.3f}"
                         + (f" ({acc / acc0:.0%} of undefended {acc0:.3f})" if not _nan(acc0)
                            else "") + (" — keeps >= 90% of undefended accuracy" if keeps else ""))
    return [("h", "Private points"), ("p", private_text(key)),
            ("p", ("; ".join(lines) + ".") if lines else
             "No point is private by this rule (its upper 95% bound is above the threshold, or "
             "there is no interval).")]


def _nan(x: float) -> bool:
    return x != x


def _value(v: Any) -> Any:
    """A table cell: floats as floats (formatted by the report), the rest as text."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


# --------------------------------------------------------------------------- Python API

def _grid_text(name: str, value: Any) -> str:
    """A Python keyword as flag text: a list is an axis (for list options, '|' between
    alternatives, each a comma list or a list of names)."""
    if not isinstance(value, (list, tuple)):
        return str(value)
    if name in LIST_FIELDS:
        return "|".join(",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                        for v in value)
    return ",".join(map(str, value))


def sweep_rows(*, model: Any = None, dataset: Any = None, config: str | Path | None = None,
               resume: bool = False, **options: Any) -> Any:
    """`slsec.sweep(...)` (see slsec.api.sweep): run the grid, return results.csv as a DataFrame."""
    import pandas as pd

    from slsec.userdata import as_dataset_spec
    from slsec.usermodel import as_model_spec
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        make_config({unknown[0]: None})   # raises the config's "unknown key" message
    flags = {k: _grid_text(k, v) for k, v in options.items() if v is not None}
    for key, spec in (("model", as_model_spec(model)), ("dataset", as_dataset_spec(dataset))):
        if spec is not None:
            flags[key] = spec
    folder = run_sweep(str(config) if config is not None else None, flags, resume=resume)
    return pd.read_csv(folder / "results.csv")
