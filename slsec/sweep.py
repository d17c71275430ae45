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
import itertools
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from rich.table import Table

from slsec import progress
from slsec.config import RunConfig, load_toml, make_config
from slsec.errors import UserError
from slsec.results import append_row, check_writable, config_key, read_json, read_rows, write_json

FIELDS = [f.name for f in fields(RunConfig) if f.name != "source"]
LIST_FIELDS = {f.name for f in fields(RunConfig) if "tuple" in str(f.type)}
OPTIONAL = {f.name for f in fields(RunConfig) if "None" in str(f.type)}
NOT_AXES = {"out", "run_id", "data_root"}          # where results go: one value per sweep
# config fields that decide the public setup (data, shards, model, cuts): validated once each
SETUP_FIELDS = ("protocol", "dataset", "data_root", "download", "model", "cut", "cut2", "clients",
                "partition", "alpha", "seed", "aux_size", "max_train", "probe_size", "label_party",
                "attack")
LEAK_KEYS = ("attack_ssim_mean", "attack_psnr_mean", "label_auc", "label_accuracy")


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
    from slsec.setup import check_defenses, prepare

    seen: set[tuple] = set()
    for cfg in cells:
        try:
            if cfg.backend != "local":
                raise UserError("sweep cells run in this process: use --backend local "
                                "(run single evaluations under mpiexec with `slsec evaluate`)")
            if "split-select" in cfg.defense:
                raise UserError("split-select chooses the cut itself; sweep over --cut instead "
                                "(or see `slsec review`)")
            check_attack(cfg)
            check_defenses(cfg)
            key = tuple(getattr(cfg, f) for f in SETUP_FIELDS)
            if key not in seen:
                prepare(cfg)
                seen.add(key)
        except UserError as e:
            raise UserError(f"grid cell {cell_label(_varying(cfg, cells))}: {e}") from None


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
    from slsec.commands import cached_baseline
    from slsec.harness import evaluate

    result = evaluate(cfg)
    base = cached_baseline(cfg) if cfg.defense else None
    return result_row(cfg, result, base)  # type: ignore[arg-type]


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
    for p in folder.glob(".results.csv.*.tmp"):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the command

def run_sweep(config_path: str | None, flags: dict[str, str | None], resume: bool) -> Path:
    """Run every cell of the grid not yet in results.csv, then render the report; the folder."""
    from slsec.commands import console

    grid = parse_grid(config_path, flags)
    cells = grid_cells(grid)
    check_writable(cells[0].out)
    validate_cells(cells)
    folder = sweep_folder(cells[0], resume)
    check_writable(folder)
    results = folder / "results.csv"
    with FolderLock(folder):
        if results.exists() and not resume:
            raise UserError(f"{results} already exists: pass --resume to continue that sweep, "
                            "or choose another --run-id")
        _clean_temp(folder)
        done = {r.get("cell") for r in read_rows(results)}
        todo = [c for c in cells if config_key(c.to_dict()) not in done]
        write_json(folder / "sweep.json", {
            "config": config_path, "base": {k: _plain(v) for k, v in grid.base.items()},
            "axes": {k: [_plain(v) for v in vs] for k, vs in grid.axes.items()},
            "cells": [config_key(c.to_dict()) for c in cells]})
        console.print(f"sweep {folder.name}: {len(cells)} cell(s), {len(cells) - len(todo)} "
                      f"already done, {len(todo)} to run")
        # cells with ETA on stderr (slsec.progress: a status line, or plain lines when piped)
        with progress.phase("sweep", total=len(todo), unit="cells"):
            for cfg in todo:
                progress.tick("sweep", 0, note=cell_label(
                    {a: getattr(cfg, a) for a in grid.axes}))
                with progress.training("train"):
                    row = run_cell(cfg)
                append_row(results, row)
                progress.tick("sweep")
    render_sweep(folder)
    print_cells(folder, list(grid.axes))
    console.print(f"report: {folder}/report.html")
    return folder


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
    from slsec.commands import console
    from slsec.frontier import num, show

    rows = read_rows(folder / "results.csv")
    cols = [("accuracy", "accuracy"), ("attack_ssim_mean", "SSIM"), ("attack_psnr_mean", "PSNR"),
            ("label_auc", "label AUC"), ("epsilon", "ε"), ("dcs", "DCS")]
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


# --------------------------------------------------------------------------- the report

def _axes(folder: Path, records: list[dict[str, Any]]) -> list[str]:
    axes: list[str] = []
    if (folder / "sweep.json").exists():
        axes = [a for a in read_json(folder / "sweep.json").get("axes", {})
                if records and a in records[0]]
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
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as e:
        raise UserError(f"results file {path} cannot be read: {e}") from None
    records: list[dict[str, Any]] = df.astype(object).where(df.notna(), None).to_dict("records")
    if not records:
        raise UserError(f"{path} has no rows yet")
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
                                  for a in axes) or "one cell") + "."))]
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
    short = {"attack_ssim_mean": "SSIM", "attack_psnr_mean": "PSNR", "label_auc": "AUC"}
    method = any(r.get("attack_method") for r in records)
    header = ((axes or ["cell"]) + (["method"] if method else []) + [n for _, n in cols]
              + (["Pareto"] if pareto else []))
    rows = []
    for i, r in enumerate(records):
        vals = ([axis_text(r, a) for a in axes or ["cell"]]
                + ([r.get("attack_method") or "–"] if method else [])
                + [_value(r.get(k)) for k, _ in cols])
        if pareto:
            vals.append(", ".join(short[m] for m, mask in pareto.items() if mask[i]) or "–")
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


def _nan(x: float) -> bool:
    return x != x


def _value(v: Any) -> Any:
    """A table cell: floats as floats (formatted by the report), the rest as text."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v
