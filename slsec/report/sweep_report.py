"""A sweep's tables and report: per-cell results (with seeds: mean ± 95% CI), the
privacy/utility frontier and the private-cell summary, rendered from results.csv."""
from __future__ import annotations

import io
import math
from pathlib import Path
from dataclasses import fields
from typing import Any

from rich.table import Table

from slsec.config import RunConfig

from slsec.report.console import console, warn
from slsec.errors import UserError
from slsec.report.results import intact_rows, read_json, read_rows, rows_csv

# the config columns of a row, in order (as slsec.study.grid.FIELDS)
FIELDS = [f.name for f in fields(RunConfig) if f.name != "source"]


def axis_text(row: dict[str, Any], axis: str) -> str:
    """A cell's grid value as the tables show it; sigma = 0 with a finite clip says that the
    cell is clipped but unnoised (so it can leak more than the undefended run: nothing is
    hidden, and the clip changes what the attack fits)."""
    from slsec.report.frontier import num, show
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
    from slsec.report.frontier import num, show

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
    from slsec.report.frontier import num
    from slsec.report.stats import CI_SUFFIX, fmt_ci
    return fmt_ci(num(r.get(key)), num(r.get(key + CI_SUFFIX)), 2 if "psnr" in key else 3)


def print_seed_cells(folder: Path, axes: list[str], rows: list[dict[str, Any]]) -> None:
    """The aggregate rows: mean ± 95% half-width per metric, and the private verdict."""
    from slsec.report.frontier import is_private, privacy_key, private_text, show

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
    from slsec.report.frontier import (DCS_TEXT, frontier_plot, num, point_label, present_metrics,
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
    blocks += tdcs_blocks(records, axes)
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


def tdcs_blocks(records: list[dict[str, Any]], axes: list[str]) -> list[tuple]:
    """VFLAIR's T-DCS per attack type and C-DCS per defense setting (the grid's axes other
    than the attack and its method)."""
    from slsec.report.frontier import comprehensive_dcs, show, type_dcs
    setting = [a for a in axes if a not in ("attack", "method", "knowledge")]
    per = type_dcs(records, setting)
    if not per:
        return []
    kinds = sorted({t for v in per.values() for t in v})
    rows = [[", ".join(f"{a}={show(v)}" for a, v in zip(setting, key)) or "all"]
            + [f"{v[t]:.3f}" if t in v else "–" for t in kinds]
            + [f"{comprehensive_dcs(v):.3f}"] for key, v in per.items()]
    return [("p", "T-DCS (VFLAIR): the mean DCS over the attacks of one type at one defense "
                  "setting; C-DCS: the mean of the T-DCS over the types present."),
            ("table", ["setting"] + [f"T-DCS {t}" for t in kinds] + ["C-DCS"], rows)]


def seed_text(records: list[dict[str, Any]], n_all: int) -> str:
    from slsec.report.stats import seeds_text
    n = int(float(records[0].get("n_seeds") or 1))
    return (seeds_text(n, int(float(records[0].get("seed") or 0))).capitalize()
            + f". Plots and tables show the {len(records)} aggregate rows (error bars: 95% "
            f"intervals of accuracy and of the leakage); results.csv also keeps the "
            f"{n_all - len(records)} per-seed rows (row_kind = seed).")


def private_blocks(records: list[dict[str, Any]], axes: list[str]) -> list[tuple]:
    """Which points are private (upper 95% bound of leakage within the threshold), and which of
    them keep >= 90% of the undefended accuracy."""
    from slsec.report.frontier import (is_private, num, point_label, privacy_key, private_threshold,
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


def is_aggregate(row: dict[str, Any]) -> bool:
    return str(row.get("row_kind") or "") == "aggregate"


def shown_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a report shows: the aggregate rows when the sweep ran several seeds, else all."""
    agg = [r for r in records if is_aggregate(r)]
    return agg or records
