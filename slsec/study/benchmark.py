"""`slsec benchmark`: the SLPerf-style table (architecture x partition x dataset) on offline data.

Default grid: {vanilla, ushaped, splitfed} x {IID, Dirichlet alpha=0.5} x {embedded MNIST with
the CNN, embedded MUTAG with GIN}, K = 4 clients, training only (no attack). Comma lists in
--dataset, --protocol and --partition choose the grid; every other RunConfig flag (or TOML key
via --config) applies to every cell. Per-dataset defaults (rounds, batch size) apply only where
neither the TOML file nor a flag sets the value.

Output: <out>/benchmark-<run-id or timestamp>/results.csv (one row per cell, appended
atomically; rerunning with the same --run-id skips finished cells), report.md and report.html.
The seed's published CIFAR-10 / ResNet-18 figures are printed beside ours, labelled as the seed's.
Cells run `--jobs` at once through slsec.study.executor (one after another with --backend mpi,
where every rank runs the grid and rank 0 writes).

Over 300 lines: the grid's plan, its run (rank-0 rules under MPI, the executor, the convergence
rule's columns) and the aggregate rows are one sequence, read top to bottom.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from slsec.config import PARAMS, RunConfig, load_toml, make_config
from slsec.report.console import console, err, warn
from slsec.errors import UserError
from slsec.report.folders import quarantine_warned
from slsec.report.benchmark_report import (ARCHITECTURE, CSV_NAME, SEED_PUBLISHED,  # noqa: F401  (re-exported)
                                    TABLE_HEADER, _partition_label, print_tables,
                                    render_benchmark, seeds_text, table_rows, verdicts)
from slsec.run.result import RunResult
from slsec.report.results import append_row, check_writable, config_key, read_rows


AXES = ("dataset", "protocol", "partition")
DEFAULT_GRID: dict[str, tuple[str, ...]] = {
    "dataset": ("mnist", "mutag"),
    "protocol": ("vanilla", "ushaped", "splitfed"),
    "partition": ("iid", "dirichlet"),
}
# below the TOML file and the flags: K = 4 clients; no attack, so no auxiliary split is carved
BENCH_DEFAULTS: dict[str, Any] = {"clients": 4, "aux_size": 0}
# per dataset, chosen so the default grid finishes in under 15 minutes on 2 cores (bench/README.md)
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"rounds": 8},
    "mutag": {"rounds": 60, "batch_size": 16},
    "proteins": {"rounds": 30, "batch_size": 32},
    "mnist-full": {"rounds": 5},
    "fashion-mnist": {"rounds": 5},
    "cifar10": {"rounds": 20},   # hours per round on a CPU at 50k images: see the warning
}


# --------------------------------------------------------------------------- the grid

def _axis(raw: Any, name: str) -> list[str]:
    """A grid axis from a comma list (flag) or a list/str (TOML), duplicates dropped."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for i in items:
        s = str(i).strip()
        if s and s not in out:
            out.append(s)
    if not out:
        raise UserError(f"--{name} is empty")
    return out


def _toml_values(path: str) -> dict[str, Any]:
    raw = load_toml(path)
    run = raw.pop("run", {})
    bench = raw.pop("benchmark", {})
    values: dict[str, Any] = {}
    for table in (raw, run, bench):
        if not isinstance(table, dict):
            raise UserError(f"config file {path}: [run] and [benchmark] must be tables")
        for k, v in table.items():
            if isinstance(v, dict):
                raise UserError(f"config file {path}: unknown table [{k}]")
            values[k.replace("-", "_")] = v
    return values


# the convergence rule's TOML keys ([benchmark] or top level; the flags override them)
RULE_KEYS = ("min_delta", "patience", "max_rounds", "lr_grid")


def rule_values(path: str | None) -> dict[str, Any]:
    """The convergence rule's values in the TOML file at `path` (none when not given)."""
    return {k: v for k, v in _toml_values(path).items() if k in RULE_KEYS} if path else {}


def plan_grid(config_path: str | None, flags: dict[str, Any]) -> list[RunConfig]:
    """Every cell's validated RunConfig: defaults < dataset defaults < TOML file < flags."""
    from slsec.data import DATASET_SCHEMES, DATASETS
    from slsec.protocols.base import PROTOCOLS

    import slsec.data.tabular  # noqa: F401  (registers the embedded spam set and csv:FILE)
    import slsec.protocols  # noqa: F401  (registration)

    toml = _toml_values(config_path) if config_path else {}
    given = {k.replace("-", "_"): v for k, v in flags.items() if v is not None}
    if given.get("attack") or toml.get("attack"):
        raise UserError("slsec benchmark trains only; drop --attack (use `slsec evaluate` or "
                        "`slsec sweep` for attacks)")
    chosen = {a for a in AXES if a in given or a in toml}
    axes = {a: _axis(given.pop(a, toml.pop(a, DEFAULT_GRID[a])), a) for a in AXES}
    toml = {k: v for k, v in toml.items() if k not in AXES and k not in RULE_KEYS}
    # name the culprit: file values against the file, flag values against the flags
    if toml:
        make_config({**BENCH_DEFAULTS, **toml}, source=config_path)
    make_config({**BENCH_DEFAULTS, **toml, **given})
    for p in axes["protocol"]:
        PROTOCOLS.get(p)
    for d in axes["dataset"]:
        scheme, sep, rest = d.partition(":")
        if not (d in DATASETS or (sep and rest and (scheme == "tu" or scheme in DATASET_SCHEMES))):
            DATASETS.get(d)   # a UserError listing the valid names
    cells = []
    for d in axes["dataset"]:
        for p in axes["protocol"]:
            # vertical SL splits columns, not records: the default partition axis is IID only
            # there (a --partition dirichlet the user gave is refused in one line)
            parts = axes["partition"] if "partition" in chosen or \
                not PROTOCOLS.get(p).splits_columns else ["iid"]
            for part in parts:
                values = {**BENCH_DEFAULTS, **DATASET_DEFAULTS.get(d, {}), **toml, **given,
                          "dataset": d, "protocol": p, "partition": part}
                cells.append(make_config(values, source=config_path))
    return cells


# --------------------------------------------------------------------------- running

def _is_main_rank(cfg: RunConfig) -> bool:
    if cfg.backend != "mpi":
        return True
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank() == 0


def _gpu(cfg: RunConfig) -> bool:
    import torch
    return getattr(cfg, "device", "cpu") != "cpu" and torch.cuda.is_available()


def cell_row(cfg: RunConfig, result: RunResult, cpu_s: float, n_test: int) -> dict[str, Any]:
    """One results.csv row from an evaluation result."""
    m, curve = result.metrics, result.curve
    last = [r["accuracy"] for r in curve[-5:]]
    return {
        "architecture": ARCHITECTURE.get(cfg.protocol, cfg.protocol)
        + (f" ({cfg.variant})" if f"protocol {cfg.protocol}" in PARAMS["variant"][1] else ""),
        "protocol": cfg.protocol, "variant": cfg.variant,
        "partition": cfg.partition, "alpha": cfg.alpha if cfg.partition == "dirichlet" else "",
        "dataset": cfg.dataset, "model": cfg.model_name, "clients": cfg.clients,
        "rounds": cfg.rounds, "batch_size": cfg.batch_size, "lr": cfg.lr, "cuts": m["cuts"],
        "test_accuracy": m["accuracy"], "best_accuracy": m["best_accuracy"],
        "last5_mean_accuracy": statistics.fmean(last) if last else float("nan"),
        "last5_std_accuracy": statistics.pstdev(last) if len(last) > 1 else 0.0,
        "n_test": n_test,
        "rounds_to_convergence": m["rounds_to_convergence"],
        "convergence_threshold": m["convergence_threshold"],
        "wall_clock_s": m["train_seconds"], "cpu_s": cpu_s, "mb_on_wire": m["mb_on_wire"],
        "seed": cfg.seed, "backend": cfg.backend, "key": config_key(cfg.to_dict()),
        "curve": [round(r["accuracy"], 4) for r in curve],
    }


def bench_cell(task: dict[str, Any], on_round: Any = None) -> dict[str, Any] | None:
    """One cell (in this process or a worker): train it, its row (None off rank 0 under MPI);
    task: {"cfg": config values, "rule": the convergence Rule or None}."""
    from slsec.run.harness import evaluate
    from slsec.run.setup import prepare
    cfg, rule = make_config(task["cfg"]), task.get("rule")
    setup = prepare(cfg)
    cpu0 = time.process_time()
    if rule is None:
        result = evaluate(cfg, progress=on_round, setup=setup)
        if result is None:
            return None
        return cell_row(cfg, result, time.process_time() - cpu0, len(setup.data.test))
    from slsec.run.convergence import converged_row, train
    result, curve = train(cfg, rule, setup=setup, on_round=on_round)
    if result is None and not curve:
        return None    # an MPI rank other than 0
    if result is None:   # stopped at convergence: the row from the rounds that trained
        result = stopped_result(cfg, setup, curve)
    row = cell_row(cfg, result, time.process_time() - cpu0, len(setup.data.test))
    row.update(converged_row(curve, rule))   # the columns at the stopping round
    return row


def stopped_result(cfg: RunConfig, setup: Any, curve: list[dict[str, Any]]) -> Any:
    """What cell_row reads of a RunResult, for a run stopped at convergence."""
    from types import SimpleNamespace
    from slsec.run.harness import rounds_to_convergence
    from slsec.run.runner import RoundRecord
    conv, thr = rounds_to_convergence([RoundRecord(**r) for r in curve], cfg.target_accuracy)
    return SimpleNamespace(curve=curve, metrics={
        "cuts": list(setup.cuts), "accuracy": curve[-1]["accuracy"],
        "best_accuracy": max(r["accuracy"] for r in curve), "rounds_to_convergence": conv,
        "convergence_threshold": thr, "train_seconds": curve[-1]["wall_s"],
        "mb_on_wire": curve[-1]["bytes"] / 1e6})


def run_benchmark(config_path: str | None, flags: dict[str, str | None], *,
                  resume: bool = False, force: bool = False, rule: Any = None,
                  jobs: Any = None) -> Path:
    """Run the grid (`jobs` cells at once, slsec.study.executor), append one row per cell,
    write report.md/html; return the folder. `rule` (slsec.run.convergence.Rule): train to
    convergence, learning rate chosen per protocol."""
    from slsec.report.folders import claim, keeping, mark, unique_folder
    from slsec.run.preflight import check_grid
    from slsec.study.executor import check_jobs, grid_jobs, prestart, run_cells

    jobs = check_jobs(jobs)
    if rule is not None:
        if flags.get("rounds") is not None:
            raise UserError("--rounds and --max-rounds: give one (a converging cell runs up to "
                            "--max-rounds rounds)")
        flags = {**flags, "rounds": str(rule.max_rounds)}
    cells = plan_grid(config_path, flags)
    prestart(cells, jobs)           # the workers' imports overlap the checks below
    first = cells[0]
    main = _is_main_rank(first)
    # every cell (cuts, data, sizes) before the first one trains
    check_grid(cells, lambda c: f"{c.protocol}/{c.partition}/{c.dataset}")
    folder = (Path(first.out) / f"benchmark-{first.run_id}" if first.run_id else
              unique_folder(first.out, f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"))
    done: set[str | None] = set()
    problem = None
    if main:
        try:
            claim(folder, "benchmark", resume=resume, force=force, can_resume=True,
                  run_id=first.run_id)
            check_writable(folder)
            moved = mark(folder, "benchmark", force=force)
            if moved:
                console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
            quarantine_warned(folder / CSV_NAME, warn)
            done = {r.get("key") for r in read_rows(folder / CSV_NAME)}
        except UserError as e:
            problem = str(e)
    if first.backend == "mpi":  # every rank must train the same cells: rank 0 decides
        from mpi4py import MPI
        from slsec.wire.transport import bcast_json
        folder_s, done_l, problem = bcast_json(MPI.COMM_WORLD, [str(folder), sorted(
            d for d in done if d is not None), problem])
        folder, done = Path(folder_s), set(done_l)
    if problem:
        raise UserError(problem)
    if main:
        for c in cells:
            if c.model_name == "resnet18" and c.max_train is None and not _gpu(c):
                err.print(f"[yellow]note: {c.dataset}/ResNet-18 trains on every training image "
                          f"each round ({c.rounds} rounds per cell); on a CPU that takes hours per "
                          f"round; --max-train 5000 --rounds 10 gives a quicker table[/yellow]")
                break
    if rule is not None and rule.lrs:
        from slsec.run.convergence import tune_cells
        cells = tune_cells(cells, rule, lambda t: (append_row(folder / "lr_choice.csv", t), console.print(
            f"lr {t['lr']:g} {t['protocol']}/{t['dataset']}: validation accuracy "
            f"{t['val_accuracy']:.4f} after {t['rounds_run']} rounds" + (" (chosen)" if t["chosen"] else ""))),
            read_rows(folder / "lr_choice.csv"))
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    bar = Progress(TextColumn("[bold]benchmark"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                   transient=True, disable=not (main and err.is_terminal))
    runs = seed_runs(cells)
    todo = [c for c in runs if config_key(c.to_dict()) not in done]
    jobs = grid_jobs(todo, jobs)
    task = bar.add_task("", total=len(runs), completed=len(runs) - len(todo))

    def sequential(one: dict[str, Any]) -> dict[str, Any] | None:
        cfg = make_config(one["cfg"])
        label = f"{cfg.protocol}/{cfg.partition}/{cfg.dataset}"
        bar.update(task, description=f"{label} round 0/{cfg.rounds}")

        def on_round(rec: Any) -> None:
            bar.update(task, description=f"{label} round {rec.round}/{cfg.rounds} "
                                         f"acc {rec.accuracy:.3f}")
        return bench_cell(one, on_round)

    def finished(i: int, row: dict[str, Any] | None) -> None:
        bar.update(task, advance=1)
        if row is None or not main:
            return
        cfg = todo[i]
        with keeping(f"the {len(read_rows(folder / CSV_NAME))} finished row(s) in "
                     f"{folder / CSV_NAME} are kept; free space and rerun with --resume"):
            append_row(folder / CSV_NAME, {**row, "row_kind": "seed"})
        bar.console.print(f"{row['architecture']:<14} {_partition_label(cfg.partition, cfg.alpha):<17} "
                          f"{cfg.dataset:<8} acc {row['test_accuracy']:.4f}  "
                          f"conv {row['rounds_to_convergence']}  "
                          f"{row['wall_clock_s']:.1f} s  {row['mb_on_wire']:.1f} MB")
    with bar:
        lost = run_cells(sequential if jobs == 1 else bench_cell,
                         [{"cfg": c.to_dict(), "rule": rule} for c in todo], jobs=jobs,
                         on_done=finished)
    if lost:
        warn(f"{len(lost)} cell(s) lost to a worker that died twice; rerun with --resume")
    if not main:
        return folder
    total = {"wall_s": time.perf_counter() - start_wall, "cpu_s": time.process_time() - start_cpu}
    append_aggregates(folder / CSV_NAME, cells)
    # one row per cell: the cell's own row (one seed) or its aggregate row (several seeds)
    order = {config_key(c.to_dict()): i for i, c in enumerate(cells)}
    rows = sorted((r for r in read_rows(folder / CSV_NAME) if r.get("key") in order),
                  key=lambda r: order[r["key"]])
    print_tables(rows)
    with keeping(f"all {len(rows)} row(s) in {folder / CSV_NAME} are kept; free space and run: "
                 f"slsec report {folder}"):
        render_benchmark(folder, rows, total=total)
    console.print(f"total wall-clock {total['wall_s']:.0f} s (CPU {total['cpu_s']:.0f} s) for "
                  f"{len(cells)} cells × {first.seeds} seed(s); "
                  + seeds_text(first.seeds, first.seed))
    console.print(f"results: {folder / CSV_NAME}\nreport: {folder / 'report.html'}")
    return folder


def seed_runs(cells: list[RunConfig]) -> list[RunConfig]:
    """Each cell once per seed (seed..seed+N-1) as a single-seed config; with --seeds 1 the
    cells themselves (so their keys, and --run-id resumes, are as before)."""
    from slsec.report.stats import seed_list
    return [c.replace(seed=s, seeds=1) for c in cells for s in seed_list(c.seed, c.seeds)]


# columns that describe the cell, copied from its first seed's row, never averaged
FIXED = ("architecture", "protocol", "variant", "partition", "alpha", "dataset", "model",
         "clients", "rounds", "batch_size", "lr", "cuts", "n_test", "backend", "curve")


def append_aggregates(path: Path, cells: list[RunConfig]) -> None:
    """The aggregate row of each multi-seed cell (once, from its stored per-seed rows): numeric
    columns are means with `<column>_ci95` the 95% t half-width (slsec.report.stats)."""
    from slsec.report.stats import mean_row, seed_list
    rows = {r.get("key"): r for r in read_rows(path)}
    for c in cells:
        key = config_key(c.to_dict())
        if c.seeds == 1 or key in rows:
            continue
        mine = [rows.get(config_key(c.replace(seed=s, seeds=1).to_dict()))
                for s in seed_list(c.seed, c.seeds)]
        if any(r is None for r in mine):
            continue
        skip = {"key", "row_kind", "seed", "seeds", *FIXED}
        append_row(path, {**{k: mine[0][k] for k in FIXED if k in mine[0]},
                          **mean_row(mine, skip=skip), "seed": c.seed, "seeds": c.seeds,
                          "n_seeds": len(mine), "key": key, "row_kind": "aggregate"})


__all__ = ["run_benchmark", "plan_grid", "render_benchmark", "SEED_PUBLISHED", "DATASET_DEFAULTS"]
