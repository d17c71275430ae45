"""What each CLI command does (the CLI module only parses options)."""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Iterator

from slsec.config import RunConfig
from slsec.report.console import console, err
from slsec.errors import UserError
from slsec.report.results import check_writable, read_json
from slsec.report.runreport import (defense_sections, grid_rows, render_run,  # noqa: F401  (and re-exported)
                             write_run)
from slsec.study.runs import (baseline_config, baseline_path, cached_baseline,  # noqa: F401  (ditto)
                        choose_cut, command_seconds, join_baseline, load_images, progress_bar,
                        run_folder, run_id, start_baseline)
from slsec.report.summary import (SUMMARY_ROWS, print_summary, run_title_parts,  # noqa: F401  (ditto)
                           shown)
from slsec.report.training import print_training


_JSON = {"on": False}


@contextlib.contextmanager
def json_stdout(on: bool) -> Iterator[None]:
    """--json: everything this module prints goes to stderr while the block runs; the command
    then prints its result object, alone, on stdout (see print_json)."""
    if not on:
        yield
        return
    before = console.file
    console.file = sys.stderr
    _JSON["on"] = True
    try:
        yield
    finally:
        console.file = before
        _JSON["on"] = False


def print_json(stored: dict[str, Any]) -> None:
    """The result object on stdout as strict JSON (non-finite numbers, e.g. ε = ∞, as null)."""
    import json

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    sys.stdout.write(json.dumps(clean(stored), indent=1, allow_nan=False) + "\n")
    sys.stdout.flush()


def list_registry() -> None:
    """Print every registry: what the CLI accepts (slsec.report.catalog_tables)."""
    from slsec.report.catalog_tables import catalog_tables
    for part in catalog_tables():
        console.print(part)


def train(cfg: RunConfig, *, force: bool = False) -> dict[str, Any] | None:
    """Train only; print the curve and write result.json + report."""
    from slsec.run.preflight import check_options, check_run
    check_options(cfg, "train")              # before the heavy imports: refused in a second
    if cfg.seeds > 1:
        raise UserError("--seeds applies to evaluate, sweep, review and benchmark; "
                        "train runs one seed (--seed)")
    check_writable(cfg.out)
    folder = run_folder(cfg, force)
    from slsec.run.harness import evaluate as run
    setup = check_run(cfg, "train")
    bar, on_round = progress_bar(cfg, "train")
    with bar:
        result = run(cfg.replace(attack=None), progress=on_round,
                     setup=setup if cfg.attack is None else None)
    if result is None:
        return None
    print_training(cfg, result)
    write_run(folder, result, None, force=force)
    console.print(f"report: {folder}/report.html")
    if _JSON["on"]:
        print_json(read_json(folder / "result.json"))
    return result.to_dict()


def evaluate(cfg: RunConfig, *, force: bool = False, jobs: str | None = None
             ) -> dict[str, Any] | None:
    """The card's command: defended run beside the cached undefended run of the same seed."""
    from slsec.run.preflight import check_options, check_run
    check_options(cfg, "evaluate")           # before the heavy imports: refused in a second
    check_writable(cfg.out)
    folder = run_folder(cfg, force)          # named before split-select replaces the cut
    if cfg.seeds > 1:                # mean and 95% CI over seeds (slsec/study/seeds.py)
        from slsec.study.seeds import evaluate_seeds
        return evaluate_seeds(cfg, folder, force=force, jobs=jobs)
    from slsec.study.twin import evaluate_with_twin
    done = evaluate_with_twin(cfg, bars=True, check=lambda c: check_run(c, "evaluate"))
    cfg, result, base = done.cfg, done.result, done.twin
    if result is None:
        return None
    write_run(folder, result, base, done.twin_images if base else None, force=force)
    print_summary(cfg, result.to_dict(), base)
    console.print(f"single seed (seed {cfg.seed}): no confidence interval; --seeds 3 gives "
                  "mean ± 95% CI")
    console.print(f"wall-clock {command_seconds():.1f} s (the whole command from the "
                  f"interpreter's start, imports included) · report: {folder}/report.html")
    if _JSON["on"]:
        print_json(read_json(folder / "result.json"))
    return result.to_dict()


# --------------------------------------------------------------------------- split selection


def sweep(config: str | None, flags: dict[str, Any], *, resume: bool, force: bool = False,
          jobs: str | None = None) -> None:
    from slsec.study.sweeps import run_sweep
    run_sweep(config, flags, resume=resume, force=force, jobs=jobs)


def review(cfg: RunConfig, *, min_accuracy: str | None, max_client_flops: str | None,
           force: bool = False, hijack_steps: int | None = None, jobs: str | None = None,
           privacy_target: str | None = None) -> None:
    from slsec.study.review import run_review
    from slsec.study.review_malicious import DEFAULT_STEPS
    steps = DEFAULT_STEPS if hijack_steps is None else hijack_steps
    if steps < 0:
        raise UserError(f"--hijack-steps must be >= 0 (0: no malicious-server column), got {steps}")
    run_review(cfg, min_accuracy=min_accuracy, max_client_flops=max_client_flops, force=force,
               hijack_steps=steps, jobs=jobs, privacy_target=privacy_target)


def rerender(path: str) -> None:
    """Re-render a folder's report by the kind recorded in it (never another kind's report)."""
    from slsec.report.folders import folder_kind, keeping
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; slsec report takes a run, sweep or benchmark folder")
    kind = folder_kind(folder) if folder.is_dir() else None
    kept = f"the rows and results in {folder} are kept; free space and run slsec report again"
    if kind == "run":
        stored = read_json(folder / "result.json")
        if not (isinstance(stored, dict) and "per_seed" in stored):
            check_result_shape(stored, folder / "result.json")
        with keeping(kept):
            try:
                if "per_seed" in stored:
                    from slsec.report.seeds_report import render_seeds
                    render_seeds(folder, stored)
                else:
                    render_run(folder, stored)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise UserError(f"{folder / 'result.json'} is not an slsec result "
                                f"({type(e).__name__}: {e})") from None
    elif kind == "review":
        raise UserError(f"{folder} is a security review: rerun slsec review to refresh it "
                        f"(its rows need the budgets it was run with)")
    elif kind == "benchmark":
        from slsec.study.benchmark import render_benchmark
        with keeping(kept):
            render_benchmark(folder)
    elif kind == "audit":
        from slsec.report.audit import render_audit
        with keeping(kept):
            render_audit(folder)
    elif kind == "sweep":
        from slsec.study.sweeps import render_sweep
        with keeping(kept):
            render_sweep(folder)
    else:
        raise UserError(f"{folder} holds neither result.json nor results.csv")
    console.print(f"report: {folder}/report.html")


def check_result_shape(stored: Any, path: Path) -> None:
    """A result.json must be what write_run stores: one line naming what is missing."""
    need = {"config": ("protocol", "dataset", "clients", "partition", "rounds", "seed",
                       "backend", "defense", "accountant"), "metrics": ("cuts",)}
    if not isinstance(stored, dict):
        raise UserError(f"{path} is not an slsec result (a JSON {type(stored).__name__}, "
                        "expected an object with config and metrics)")
    for part, keys in need.items():
        if not isinstance(stored.get(part), dict):
            raise UserError(f"{path} is not an slsec result: no '{part}' object")
        missing = [k for k in keys if k not in stored[part]]
        if missing:
            raise UserError(f"{path} is not an slsec result: '{part}' lacks {', '.join(missing)}")
    if not isinstance(stored["metrics"]["cuts"], list) or not isinstance(
            stored["config"]["defense"], list):
        raise UserError(f"{path} is not an slsec result: cuts and defense must be lists")
    for part in ("curve",):
        if part in stored and not (isinstance(stored[part], list) and all(
                isinstance(r, dict) and {"round", "accuracy", "loss", "wall_s", "bytes"} <= set(r)
                for r in stored[part])):
            raise UserError(f"{path} is not an slsec result: '{part}' is not a list of rounds")


def benchmark(config: str | None, flags: dict[str, Any], *, resume: bool = False,
              force: bool = False, rule: Any = None, jobs: str | None = None) -> None:
    from slsec.study.benchmark import run_benchmark
    run_benchmark(config, flags, resume=resume, force=force, rule=rule, jobs=jobs)
