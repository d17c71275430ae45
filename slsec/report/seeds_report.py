"""The documents of `slsec evaluate --seeds N`: the terminal table (mean ± 95% half-width per
metric, undefended beside defended) and report.md/html of the run folder (each seed's own
report is in seed-<s>/)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from slsec.config import RunConfig
from slsec.report.stats import fmt_ci, seeds_text

ROWS_EXTRA = [("attack SSIM gain over prior", "ssim_gain_mean", 3),
              ("prior SSIM (mean)", "prior_ssim_mean", 3),
              ("re-identification top-1", "reid_top1", 3)]


def summary_rows(stored: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(label, key, digits) of the metrics the aggregate holds: the evaluate summary's rows,
    then the prior-aware ones when present."""
    from slsec.report.summary import SUMMARY_ROWS
    agg = stored["aggregate"]
    keys = set(agg["metrics"]) | set(agg.get("undefended", {}))
    rows = {k: (label, k, d) for label, k, d in [*SUMMARY_ROWS, *ROWS_EXTRA] if k != "rounds"}
    return [r for k, r in rows.items() if k in keys]


def _ci(stats: dict[str, Any] | None, digits: int) -> str:
    if not stats:
        return "–"
    return fmt_ci(stats["mean"], stats["half_width"], max(digits, 1))


def print_seeds(cfg: RunConfig, stored: dict[str, Any]) -> None:
    from slsec.report.console import console
    agg, seeds = stored["aggregate"], stored["seeds"]
    first = stored["per_seed"][0]["metrics"]
    t = Table(title=f"{cfg.protocol} · {cfg.dataset}/{cfg.model_name} · cut "
                    f"{','.join(first['cuts'])} · attack {cfg.attack or '-'} · mean ± 95% CI "
                    f"half-width over {len(seeds)} seeds")
    t.add_column("metric")
    base = agg.get("undefended")
    if base is not None:
        t.add_column("undefended", justify="right")
    t.add_column("+".join(cfg.defense) or "value", justify="right")
    for label, key, d in summary_rows(stored):
        cells = ([_ci(base.get(key), d)] if base is not None else []) + [_ci(agg["metrics"].get(key), d)]
        t.add_row(label, *cells)
    console.print(t)
    console.print(seeds_text(len(seeds), seeds[0]) + ".", markup=False)


def render_seeds(folder: Path, stored: dict[str, Any]) -> None:
    """report.md/html of a multi-seed evaluation (each seed's own report is in seed-<s>/)."""
    from slsec import report as rpt
    cfg, agg, seeds = stored["config"], stored["aggregate"], stored["seeds"]
    base = agg.get("undefended")
    header = ["metric"] + (["undefended"] if base is not None else []) + \
        ["+".join(cfg["defense"]) or "value"]
    rows = [[label] + ([_ci(base.get(key), d)] if base is not None else [])
            + [_ci(agg["metrics"].get(key), d)] for label, key, d in summary_rows(stored)]
    blocks: list[tuple] = [
        ("p", f"Protocol {cfg['protocol']} on {cfg['dataset']}, {cfg['clients']} clients "
              f"({cfg['partition']}), {cfg['rounds']} round(s), attack {cfg.get('attack') or '-'}, "
              f"defense {'+'.join(cfg['defense']) or 'none'}. "
              + seeds_text(len(seeds), seeds[0]) + "."),
        ("h", "Summary (mean ± 95% half-width)"), ("table", header, rows),
        ("h", "Per seed"),
        ("p", "Each seed's full report (curve, threat model, reconstructions): "
              + ", ".join(f"seed-{s}/report.html" for s in seeds)
              + ". result.json holds every seed's result and the aggregate "
                "(mean, half_width, low, high, n, values per metric)."),
    ]
    rpt.write_document(folder, f"slsec evaluation over {len(seeds)} seeds: {cfg['protocol']} / "
                               f"{cfg.get('attack') or 'no attack'} / "
                               f"{'+'.join(cfg['defense']) or 'no defense'}", blocks)
