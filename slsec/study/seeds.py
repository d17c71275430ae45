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

from slsec import progress
from slsec.catalog import pre_training
from slsec.config import RunConfig
from slsec.report.results import check_writable, read_json, write_json
from slsec.report.seeds_report import print_seeds, render_seeds  # noqa: F401  (re-exported)
from slsec.report.stats import aggregate, seed_list



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
    from slsec.study.executor import check_jobs, grid_jobs, prestart, run_cells
    from slsec.study.runs import choose_cut, command_seconds

    jobs = check_jobs(jobs)
    prestart([cfg], jobs if cfg.seeds > 1 else 1)   # its imports overlap the checks below
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
