"""`slsec compare RUN_OR_SWEEP...`: one table and overlay plots across runs, sweeps and seeds.

Each argument is a run folder (result.json, with its undefended twin when it has one) or a
sweep folder (results.csv, one row per cell). The comparison folder gets report.md,
report.html, accuracy_vs_<leak>.png (every source in its own colour, undefended runs as X)
and training_curves.png (every run's curve; sweeps store no curves). Rows that differ only in
the seed are also summarised as mean ± std over the seeds.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from slsec.errors import UserError
from slsec.report.folders import read_result
from slsec.report.results import check_writable, read_rows

LEAKS = [("attack_ssim_mean", "attack SSIM", "lower = less leakage"),
         ("label_auc", "label-inference AUC", "0.5 = no leakage")]
COLUMNS = [("accuracy", "accuracy"), ("attack_ssim_mean", "SSIM"), ("attack_psnr_mean", "PSNR dB"),
           ("label_auc", "label AUC"), ("epsilon", "ε"), ("train_seconds", "train s"),
           ("mb_on_wire", "MB")]
SETTING = ("protocol", "dataset", "model", "attack", "defense", "cut", "sigma", "clip",
           "noise_multiplier", "label_epsilon", "nopeek_weight", "rounds", "clients", "max_train")


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _grid_value(v: Any) -> Any:
    """A CSV grid value as a number when it is one ("0.0" -> 0.0, shown as 0)."""
    x = _num(v)
    return v if math.isnan(x) else x


def _plain(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) or "none"
    return "" if v is None else str(v)


def _run_rows(folder: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    stored = read_result(folder / "result.json")
    cfg, m = stored["config"], stored["metrics"]
    common = {k: _plain(cfg.get(k)) for k in SETTING if k != "cut"}
    common["cut"] = ",".join(m.get("cuts") or []) or "–"
    rows = [{"source": folder.name, "kind": "run", "seed": cfg.get("seed"),
             "method": m.get("attack_method"), **common,
             **{k: m.get(k) for k, _ in COLUMNS}, "undefended": False}]
    curves = {folder.name: stored.get("curve", [])}
    base = stored.get("undefended")
    if base:
        bm = base.get("metrics", {})
        rows.append({**rows[0], "source": f"{folder.name} (undefended)", "defense": "none",
                     "method": bm.get("attack_method"), **{k: bm.get(k) for k, _ in COLUMNS},
                     "undefended": True})
        curves[f"{folder.name} (undefended)"] = base.get("curve", [])
    return rows, curves


def _sweep_rows(folder: Path) -> list[dict[str, Any]]:
    from slsec.report.frontier import show
    records = read_rows(folder / "results.csv")
    if not records:
        raise UserError(f"{folder}/results.csv has no rows yet")
    axes = [a for a in SETTING if len({r.get(a) for r in records}) > 1]
    rows = []
    for r in records:
        label = " ".join(f"{a}={show(_grid_value(r.get(a)))}" for a in axes) or r.get("cell", "")
        rows.append({"source": f"{folder.name}: {label}", "kind": "sweep", "sweep": folder.name,
                     "seed": r.get("seed"), "method": r.get("attack_method") or None,
                     **{k: r.get(k) or "" for k in SETTING},
                     **{k: _num(r.get(k)) for k, _ in COLUMNS}, "undefended": False})
        if r.get("undefended_accuracy") not in (None, ""):
            rows[-1]["_undefended"] = {k: _num(r.get(f"undefended_{k}")) for k, _ in COLUMNS}
    return rows


def collect(paths: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Rows (one per run, twin or sweep cell) and training curves (runs only)."""
    if not paths:
        raise UserError("slsec compare needs at least one run or sweep folder")
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    for p in paths:
        folder = Path(p)
        if (folder / "result.json").exists():
            r, c = _run_rows(folder)
            rows += r
            curves.update(c)
        elif (folder / "results.csv").exists():
            rows += _sweep_rows(folder)
        else:
            raise UserError(f"{folder} is neither a run (result.json) nor a sweep (results.csv)")
    return rows, curves


def seed_groups(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows that differ only in the seed (two or more seeds), by their shared setting."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = tuple(str(r.get(k)) for k in SETTING) + (r.get("undefended"),)
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in groups.items():
        if len({str(r.get("seed")) for r in rs}) > 1:
            label = ", ".join(f"{k}={v}" for k, v in zip(SETTING, key) if v not in ("", "None"))
            out.append((label + (" (undefended)" if key[-1] else ""), rs))
    return out


def overlay_plot(rows: list[dict[str, Any]], metric: str, label: str, hint: str,
                 path: Path) -> Path | None:
    """Accuracy against one leakage metric, every run/sweep in its own colour."""
    from slsec.report.plots import pyplot
    from slsec.report.results import legend_outside, save_figure
    plt = pyplot()

    points = [r for r in rows if not (math.isnan(_num(r.get(metric)))
                                      or math.isnan(_num(r.get("accuracy"))))]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 5.2), dpi=110)
    cmap = plt.get_cmap("tab10")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in points:
        name = r.get("sweep") or r["source"].removesuffix(" (undefended)")
        groups.setdefault(name, []).append(r)
    for gi, (name, rs) in enumerate(groups.items()):
        colour = cmap(gi % 10)
        own = [r for r in rs if not r.get("undefended")]
        twin = [r for r in rs if r.get("undefended")]
        ax.scatter([_num(r[metric]) for r in own], [_num(r["accuracy"]) for r in own], s=50,
                   color=colour, label=name, zorder=3, alpha=0.9)
        if twin:
            ax.scatter([_num(r[metric]) for r in twin], [_num(r["accuracy"]) for r in twin],
                       marker="X", s=80, color=colour, edgecolors="black", linewidths=0.8,
                       zorder=3, label=f"{name} (undefended)")
        refs = {(r["_undefended"].get(metric), r["_undefended"].get("accuracy"))
                for r in own if r.get("_undefended")}
        refs = {p for p in refs if not (math.isnan(p[0]) or math.isnan(p[1]))}
        if refs:
            ax.scatter([p[0] for p in refs], [p[1] for p in refs], marker="X", s=80,
                       color=colour, edgecolors="black", linewidths=0.8, zorder=3,
                       label=f"{name} (undefended)")
    ax.set_xlabel(f"{label}  ({hint})")
    ax.set_ylabel("test accuracy  (higher = better)")
    ax.set_title(f"accuracy vs {label}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.12)
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def run_compare(paths: Sequence[str], *, out: str = "reports", run_id: str | None = None) -> Path:
    """Write the comparison folder; returns it."""
    from slsec import report as rpt
    from slsec.report.console import console
    from slsec.report.plots import training_curves

    rows, curves = collect(paths)
    check_writable(out)
    if run_id and ("/" in run_id or run_id in (".", "..")):
        raise UserError(f"--run-id must be a plain folder name, got {run_id!r}")
    folder = _compare_folder(out, run_id)
    check_writable(folder)
    cols = [(k, n) for k, n in COLUMNS if any(not math.isnan(_num(r.get(k))) for r in rows)]
    header = ["source", "protocol", "attack", "method", "defense", "cut", "seed"] + [n for _, n in cols]
    table = [[r["source"], r.get("protocol"), r.get("attack") or "–", r.get("method") or "–",
              r.get("defense") or "none", r.get("cut") or "–", r.get("seed")]
             + [_num(r.get(k)) for k, _ in cols] for r in rows]
    n_runs = len({r["source"] for r in rows if r["kind"] == "run" and not r["undefended"]})
    n_sweeps = len({r.get("sweep") for r in rows if r["kind"] == "sweep"})
    blocks: list[tuple] = [("p", f"{len(rows)} row(s) from {n_runs} run(s) (each with its "
                                 f"undefended twin when it has one) and {n_sweeps} sweep(s): "
                                 + ", ".join(str(p) for p in paths) + "."),
                           ("h", "All rows"), ("table", header, table)]
    groups = seed_groups(rows)
    if groups:
        blocks += [("h", "Across seeds"),
                   ("table", ["setting", "seeds"] + [f"{n} (mean ± std)" for _, n in cols],
                    [[label, len(rs)] + [_mean_std([_num(r.get(k)) for r in rs]) for k, _ in cols]
                     for label, rs in groups])]
    for metric, label, hint in LEAKS:
        png = overlay_plot(rows, metric, label, hint, folder / f"accuracy_vs_{metric}.png")
        if png is not None:
            blocks += [("h", f"Accuracy vs {label}"),
                       ("img", str(png), f"test accuracy vs {label} for every run and sweep "
                                         "cell; X: undefended runs")]
    curve = training_curves(curves, folder / "training_curves.png",
                            title="training curves of the compared runs")
    if curve is not None:
        blocks += [("h", "Training curves"),
                   ("img", str(curve), "test accuracy and loss against round and training "
                                       "wall-clock, every run and its undefended twin")]
    elif n_sweeps:
        blocks.append(("p", "Sweeps keep no per-round curves; compare runs to overlay them."))
    rpt.write_document(folder, "slsec comparison", blocks)
    console.print(f"compared {len(rows)} row(s) · report: {folder}/report.html")
    return folder


def _compare_folder(out: str, run_id: str | None) -> Path:
    """A new folder, held by this process: never an earlier comparison, run or sweep."""
    from slsec.report.folders import has_results, hold, unique_folder
    if not run_id:
        return unique_folder(out, f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = Path(out) / run_id
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; choose another --run-id")
    if not hold(folder) or has_results(folder):
        raise UserError(f"--run-id {run_id} already exists ({folder}); slsec compare writes a "
                        "new folder: choose another --run-id")
    return folder


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.3f} ± {sd:.3f}"
