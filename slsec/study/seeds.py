"""`slsec evaluate --seeds N`: the evaluation repeated with seeds seed..seed+N-1.

Each seed is a full single-seed evaluation (defended run beside its cached undefended twin,
exactly as `slsec evaluate --seed s`), written to <run>/seed-<s>/. The run folder's result.json
holds every seed's result and the aggregate: for each numeric metric of the defended and of the
undefended runs, the mean and the 95% Student-t interval (slsec.report.stats). The terminal table shows
mean ± half-width per metric.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table

from slsec import progress
from slsec.catalog import pre_training
from slsec.config import RunConfig
from slsec.report.results import check_writable, read_json, write_json
from slsec.report.stats import aggregate, fmt_ci, seed_list, seeds_text

ROWS_EXTRA = [("attack SSIM gain over prior", "ssim_gain_mean", 3),
              ("prior SSIM (mean)", "prior_ssim_mean", 3),
              ("re-identification top-1", "reid_top1", 3)]


def run_seed(values: dict[str, Any]) -> dict[str, Any] | None:
    """One seed (in this process or a worker): the defended run and its cached undefended
    twin, written to <folder>/seed-<s>/; its stored result.json (None off rank 0 under MPI)."""
    from slsec.config import make_config
    from slsec.report.runreport import write_run
    from slsec.study.twin import evaluate_with_twin
    cfg, folder = make_config(values["cfg"]), Path(values["folder"])
    done = evaluate_with_twin(cfg, bars=values.get("bars", False),
                              parallel_twin=values.get("bars", False), label=f"seed {cfg.seed} ")
    if done.result is None:          # not rank 0 under MPI: rank 0 writes
        return None
    write_run(folder / f"seed-{cfg.seed}", done.result, done.twin,
              done.twin_images if done.twin else None)
    return read_json(folder / f"seed-{cfg.seed}" / "result.json")


def evaluate_seeds(cfg: RunConfig, folder: Path, *, force: bool = False,
                   jobs: Any = None) -> dict[str, Any] | None:
    """Run every seed (`jobs` at once, slsec.study.executor), write per-seed folders and the
    aggregate result.json, print the table."""
    from slsec.report.console import console
    from slsec.report.folders import mark
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses
    from slsec.study.executor import check_jobs, grid_jobs, run_cells
    from slsec.study.runs import choose_cut, command_seconds

    jobs = check_jobs(jobs)
    check_writable(cfg.out)
    check_attack(cfg)
    check_defenses(cfg)
    if pre_training(cfg):       # the cut is chosen once, on the first seed
        cfg = choose_cut(cfg)
    t0 = time.perf_counter()
    runs = [cfg.replace(seed=s, seeds=1) for s in seed_list(cfg.seed, cfg.seeds)]
    jobs = grid_jobs(runs, jobs)
    per_seed: list[dict[str, Any]] = []
    with progress.phase("seeds", total=len(runs), unit="seeds"):
        def done(i: int, stored: dict[str, Any] | None) -> None:
            if stored is not None:
                per_seed.append(stored)
            progress.tick("seeds")
        run_cells(run_seed, [{"cfg": one.to_dict(), "folder": str(folder), "bars": jobs == 1}
                             for one in runs], jobs=jobs, on_done=done)
    if not per_seed:
        return None
    stored = seeds_result(cfg, per_seed)
    mark(folder, "run", force=force)
    write_json(folder / "result.json", stored)
    render_seeds(folder, stored)
    print_seeds(cfg, stored)
    console.print(f"wall-clock {command_seconds(t0):.1f} s (the whole command, start-up "
                  f"included) · report: {folder}/report.html")
    return stored


def seeds_result(cfg: RunConfig, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """result.json of a multi-seed evaluation: config, seeds, per-seed results, aggregate."""
    agg: dict[str, Any] = {"metrics": aggregate([r["metrics"] for r in per_seed])}
    if all("undefended" in r for r in per_seed):
        agg["undefended"] = aggregate([r["undefended"]["metrics"] for r in per_seed])
    return {"config": cfg.to_dict(), "seeds": [r["config"]["seed"] for r in per_seed],
            "confidence": "95% Student-t interval of the mean over seeds",
            "aggregate": agg, "per_seed": per_seed}


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
