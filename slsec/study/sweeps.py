"""`slsec sweep`: run a grid of evaluations, one durable row per cell, then render the frontier.

Grid axes and cells: slsec/study/grid.py; tables and the report: slsec/report/sweep_report.py.

Cells run one after another in this process (local backend). Each finished cell appends one
row to results.csv atomically (config + metrics + `cell` = hash of the cell's config), so a
sweep killed at any moment and rerun with --resume completes with no duplicated or lost rows.
"""
from __future__ import annotations

import fcntl
import io
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from slsec import progress
from slsec.config import RunConfig, make_config
from slsec.report.console import console, warn
from slsec.errors import UserError
from slsec.report.folders import quarantine_warned
from slsec.study.grid import (FIELDS, NOT_AXES, Grid, _flag, _grid_text, cell_label, grid_cells,  # noqa: F401
                        parse_grid, validate_cells)
from slsec.run.result import RunResult
from slsec.report.results import (append_row, check_writable, config_key,
                           read_json, read_rows, rows_csv, write_json)
from slsec.report.sweep_report import (axis_text, methods_text, print_cells,  # noqa: F401  (re-exported)
                                render_sweep)

# config fields that decide the public setup (data, shards, model, cuts): validated once each
SETUP_FIELDS = ("protocol", "dataset", "data_root", "download", "model", "cut", "cut2", "clients",
                "partition", "alpha", "seed", "aux_size", "max_train", "probe_size", "label_party",
                "attack")
LEAK_KEYS = ("attack_ssim_mean", "attack_psnr_mean", "label_auc", "label_accuracy",
             "prior_ssim_mean", "ssim_gain_mean", "reid_top1", "reid_top5")


# --------------------------------------------------------------------------- rows

def _plain(v: Any) -> Any:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v


def result_row(cfg: RunConfig, result: RunResult,
               undefended: dict[str, Any] | None) -> dict[str, Any]:
    """One results.csv row: cell key, config fields, resolved model/cuts, metrics, DCS."""
    from slsec.report.frontier import attack_performance, row_dcs

    m = result.metrics
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
    from slsec.study.twin import evaluate_with_twin
    done = evaluate_with_twin(cfg, parallel_twin=False)
    return result_row(done.cfg, done.result, done.twin)  # type: ignore[arg-type]


def sweep_task(task: dict[str, Any]) -> dict[str, Any] | None:
    """One task of the grid (in this process or a worker): {"twin": values} computes and
    caches an undefended twin ahead of its cells (no row); {"cell": values} is a cell's row."""
    from slsec.study.runs import cached_baseline
    with progress.training("train"):
        if "twin" in task:
            cached_baseline(make_config(task["twin"]))
            return None
        return {**run_cell(make_config(task["cell"])), "row_kind": "seed"}


def run_grid(todo: list[RunConfig], task: Any, jobs: int,
             done: Any) -> list[int]:
    """The cells through the executor; with several workers the missing undefended twins go
    first (each once: cells sharing a twin then read it from the cache)."""
    from slsec.study.executor import grid_jobs, run_cells
    from slsec.study.runs import baseline_config, baseline_path
    jobs = grid_jobs(todo, jobs)
    tasks: list[dict[str, Any]] = []
    if jobs > 1:
        twins = {str(baseline_path(c)): baseline_config(c) for c in todo
                 if c.defense and not baseline_path(c).exists()}
        tasks = [{"twin": c.to_dict()} for c in twins.values()]
    tasks += [{"cell": c.to_dict()} for c in todo]
    return run_cells(task, tasks, jobs=jobs, on_done=done)


# --------------------------------------------------------------------------- seeds

def seed_cells(cells: list[RunConfig]) -> list[RunConfig]:
    """Every single-seed run the cells need (seed, seed+1, ...), each once, in order. With
    --seeds 1 these are the cells themselves (same config key as before seeds existed)."""
    from slsec.report.stats import seed_list
    runs: dict[str, RunConfig] = {}
    for c in cells:
        for s in seed_list(c.seed, c.seeds):
            one = c.replace(seed=s, seeds=1)
            runs.setdefault(config_key(one.to_dict()), one)
    return list(runs.values())


def aggregate_row(cfg: RunConfig, seed_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregate row of a multi-seed cell: every numeric column's mean over the per-seed
    rows and its 95% t half-width in `<column>_ci95` (slsec.report.stats); config columns are the
    cell's; `row_kind` = "aggregate", `cell` = the hash of the cell's config (seeds included)."""
    from slsec.report.stats import mean_row
    row = mean_row(seed_rows, skip=set(FIELDS) | {"cell", "row_kind"})
    return {"cell": config_key(cfg.to_dict()), "row_kind": "aggregate",
            **{n: _plain(getattr(cfg, n)) for n in FIELDS}, "n_seeds": len(seed_rows), **row}


def append_aggregates(results: Path, cells: list[RunConfig]) -> None:
    """Append the aggregate row of every multi-seed cell whose seeds are all in results.csv and
    which has none yet. It is computed from the stored per-seed rows only, so a resumed or
    rerun sweep gets the same aggregate and never counts a seed twice."""
    from slsec.report.stats import seed_list
    rows = read_rows(results)
    by_cell = {r.get("cell"): r for r in rows}
    for c in cells:
        if c.seeds == 1 or config_key(c.to_dict()) in by_cell:
            continue
        keys = [config_key(c.replace(seed=s, seeds=1).to_dict()) for s in seed_list(c.seed, c.seeds)]
        if all(k in by_cell for k in keys):
            append_row(results, aggregate_row(c, [by_cell[k] for k in keys]))


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
              force: bool = False, jobs: Any = None) -> Path:
    """Run every cell of the grid not yet in results.csv (`jobs` at once, see
    slsec.study.executor), then render the report; the folder."""
    from slsec.report.folders import claim, keeping, mark
    from slsec.study.executor import check_jobs, prestart

    jobs = check_jobs(jobs)
    grid = parse_grid(config_path, flags)
    cells = grid_cells(grid)
    prestart(cells, jobs)           # the workers' imports overlap the checks below
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
        # cells done across workers, with ETA, on stderr (slsec.progress)
        with progress.phase("sweep", total=len(todo), unit="cells"):
            def done(i: int, row: dict[str, Any] | None) -> None:
                if row is None:                       # a twin computed ahead of its cells
                    return
                with keeping(f"the {len(read_rows(results))} finished row(s) in {results} are "
                             f"kept; free space and rerun with --resume --run-id {folder.name}"):
                    append_row(results, row)
                progress.tick("sweep", note=cell_label(
                    {a: row.get(a) for a in grid.axes}
                    | ({"seed": row.get("seed")} if cells[0].seeds > 1 else {})))
            lost = run_grid(todo, sweep_task, jobs, done)
            if lost:
                warn(f"{len(lost)} cell(s) lost to a worker that died twice; rerun with "
                     f"--resume --run-id {folder.name} to run them")
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
