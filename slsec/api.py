"""The Python API: `slsec.evaluate`, `slsec.train`, `slsec.sweep` and their `Result`.

    import slsec
    r = slsec.evaluate(protocol="vanilla", attack="inversion", defense="dp", sigma=0.5)
    r.metrics["attack_ssim_mean"], r.twin.metrics["attack_ssim_mean"]   # defended, undefended
    r.to_frame()            # pandas, one row per run (this one and its undefended twin)
    r.save("reports/my-run")  # result.json, report.md, report.html, reconstructions.png

Keyword options are the RunConfig field names (`slsec evaluate --help` lists them as flags:
`--attack-iters` is `attack_iters=`); values may be Python types or the CLI's strings, and are
validated exactly as the CLI's (a bad one raises slsec.errors.UserError with the same one-line
message). `model=` also takes an nn.Module (a template: each build is a copy with its layers
re-initialised under the run's seed) or a factory; `dataset=` also takes arrays or tensors
`(x, y)` or `(x, y, x_test, y_test)` (rules as for `npz:FILE`, see slsec.data.userdata). Such
in-memory objects live in this process and run on the local backend. `evaluate` and `train`
run in this process, one after another: calls from several threads are serialised by one
process-wide lock (a run seeds torch's global generator, which every thread shares, so two at
once could not each give the numbers of the same call alone); `sweep` spreads its cells over
worker processes when given `jobs=N`, as `slsec sweep --jobs` does (not when a model or data
set is a Python object). Nothing is written unless you call `save` or give `out=` / `run_id=`
to `evaluate` or `train` (a new folder, as the CLI writes; `sweep` writes its results folder,
as the CLI does). `save` never replaces an earlier folder. Built on slsec.study.
"""
from __future__ import annotations

import difflib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slsec.config import RunConfig, make_config, merged_config
from slsec.errors import UserError

_RUNS = threading.Lock()   # one run at a time in this process (see the module docstring)


@dataclass(frozen=True)
class Result:
    """One evaluation: its config, metrics, per-round curve, reconstructions (if the attack
    made any) with the private inputs they target, and the undefended twin (same config and
    seed without defenses; None when there were no defenses or `twin=False`)."""

    config: RunConfig
    metrics: dict[str, Any]
    curve: list[dict[str, Any]]
    images: Any = None          # torch.Tensor [N, C, H, W] reconstructions, or None
    inputs: Any = None          # torch.Tensor [N, C, H, W] the private inputs behind them
    twin: "Result | None" = None
    raw: Any = field(default=None, repr=False, compare=False)   # the engine's RunResult

    def to_frame(self) -> Any:
        """A pandas DataFrame: one row per run ('run' = defended/undefended, or 'result'),
        columns = config fields then metrics (lists joined by ',', dicts as 'key.sub')."""
        import pandas as pd
        rows = [_flat(self, "defended" if self.twin is not None else "result")]
        if self.twin is not None:
            rows.append(_flat(self.twin, "undefended"))
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Write the CLI's report files into folder `path`: result.json (with the undefended
        twin), report.md, report.html and reconstructions.png (when there are images)."""
        from slsec.report.folders import has_results, hold
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"Result.save: {folder} exists and is not a folder")
        if not hold(folder) or has_results(folder):
            raise UserError(f"Result.save: {folder} already holds results (or another process "
                            "is writing it); save into a new folder")
        return _write(self, folder)


def _write(r: Result, folder: Path) -> Path:
    """The report files of `r` into `folder` (held by this process, empty)."""
    from slsec.report.runreport import write_run
    from slsec.report.results import check_writable
    check_writable(folder)
    twin = r.twin.raw if r.twin is not None else None
    write_run(folder, r.raw, twin.to_dict() if twin is not None else None,
              twin.reconstructions.to_tensors()
              if twin is not None and twin.reconstructions is not None else None)
    return folder


def _flat(r: Result, run: str) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run}
    for k, v in [*r.config.to_dict().items(), *r.metrics.items()]:
        if isinstance(v, dict):
            row.update({f"{k}.{s}": x for s, x in v.items()})
        else:
            row[k] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return row


def _result(run: Any, cfg: RunConfig, twin: Result | None = None) -> Result:
    shown = run.reconstructions
    return Result(cfg, run.metrics, run.curve, shown and shown.images, shown and shown.inputs,
                  twin, run)


def _check_keywords(fn: str, options: dict[str, Any], own: tuple[str, ...]) -> None:
    """An unknown keyword names the closest valid one and lists them all (one line)."""
    from dataclasses import fields
    valid = [f.name for f in fields(RunConfig) if f.name != "source"]
    for key in options:
        if key not in valid:
            names = [*own, *(v for v in valid if v not in own)]
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UserError(f"slsec.{fn}: unknown keyword '{key}'{hint}; valid: "
                            f"{', '.join(names)}")


def _check_call(fn: str, options: dict[str, Any], progress: Any,
                own: tuple[str, ...]) -> None:
    _check_keywords(fn, options, own)
    if progress is not None and not callable(progress):
        raise UserError(f"slsec.{fn}: progress must be a function called with each round's "
                        f"record (or None), got {type(progress).__name__}")


def make_run_config(model: Any = None, dataset: Any = None, config: str | Path | None = None,
                    **options: Any) -> RunConfig:
    """The validated RunConfig for API keywords (defaults < TOML `config` < keywords)."""
    _check_keywords("make_run_config", options, ("model", "dataset", "config"))
    values = {k: v for k, v in options.items() if v is not None}
    from slsec.data.userdata import as_dataset_spec
    from slsec.data.usermodel import as_model_spec
    spec_model, spec_data = as_model_spec(model), as_dataset_spec(dataset)
    if spec_model is not None:
        values["model"] = spec_model
    if spec_data is not None:
        values["dataset"] = spec_data
    cfg = merged_config(str(config), values) if config is not None else make_config(values)
    if cfg.backend != "local":
        raise UserError("the Python API runs the local backend; for MPI use the CLI: "
                        "slsec evaluate --backend mpi ...")
    return cfg


def evaluate(*, model: Any = None, dataset: Any = None, twin: bool = True,
             config: str | Path | None = None, progress: Callable[[Any], None] | None = None,
             **options: Any) -> Result:
    """Train with the protocol, attack from the attacked role, score; like `slsec evaluate`.

    model, dataset: a built-in name or spec (as the CLI's --model/--dataset), or your own
    nn.Module / factory and arrays `(x, y[, x_test, y_test])`. twin: also run the same config
    without defenses (when there are any) as `result.twin`. config: a TOML experiment file.
    progress: called with each round's record. options: RunConfig fields (attack="inversion",
    defense="dp", sigma=0.5, rounds=2, ...)."""
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses
    from slsec.study.runs import baseline_config
    from slsec.study.twin import evaluate_with_twin

    _check_call("evaluate", options, progress, EVALUATE_OWN)
    if not isinstance(twin, bool):
        raise UserError(f"slsec.evaluate: twin must be True or False, got {twin!r}")

    def check(c: RunConfig) -> None:
        check_attack(c)
        check_defenses(c)
    cfg = make_run_config(model, dataset, config, **options)
    check(cfg)
    folder = _out_folder(cfg, options)
    with _RUNS:
        done = evaluate_with_twin(cfg, twin=twin, cache=False, parallel_twin=False,
                                  progress=progress)
    base = None
    if done.twin_result is not None:
        base = _result(done.twin_result, baseline_config(done.cfg))
    result = _result(done.result, done.cfg, base)
    if folder is not None:
        _write(result, folder)
    return result


EVALUATE_OWN = ("model", "dataset", "twin", "config", "progress")
TRAIN_OWN = ("model", "dataset", "config", "progress")


def _out_folder(cfg: RunConfig, options: dict[str, Any]) -> Path | None:
    """Where `out=` / `run_id=` ask the result to be written (held now, refused if taken)."""
    if options.get("out") is None and options.get("run_id") is None:
        return None
    from slsec.study.runs import run_id
    from slsec.report.folders import claim, unique_folder
    from slsec.report.results import check_writable
    check_writable(cfg.out)
    if cfg.run_id is None:
        return unique_folder(cfg.out, run_id(cfg))
    folder = Path(cfg.out) / cfg.run_id
    claim(folder, "run")
    return folder


def train(*, model: Any = None, dataset: Any = None, config: str | Path | None = None,
          progress: Callable[[Any], None] | None = None, **options: Any) -> Result:
    """Train with the protocol (no attack), like `slsec train`; the Result has the accuracy
    curve and utility metrics. Same arguments as `evaluate` but `twin`; an attack is refused
    (as `slsec train --attack`: use `evaluate`)."""
    from slsec.run.harness import evaluate as run
    _check_call("train", options, progress, TRAIN_OWN)
    if options.get("attack") is not None:
        raise UserError(f"slsec.train: attack={options['attack']!r}: train runs no attack; use "
                        "slsec.evaluate to attack the run")
    cfg = make_run_config(model, dataset, config, **options).replace(attack=None)
    folder = _out_folder(cfg, options)
    with _RUNS:
        result = _result(run(cfg, progress=progress), cfg)  # type: ignore[arg-type]
    if folder is not None:
        _write(result, folder)
    return result


def sweep(*, model: Any = None, dataset: Any = None, config: str | Path | None = None,
          resume: bool = False, **options: Any) -> Any:
    """Run a grid like `slsec sweep` and return its rows as a pandas DataFrame.

    A list in a keyword is a grid axis: `slsec.sweep(attack="inversion", defense="dp",
    sigma=[0, 0.1, 0.5], cut=["conv1", "fc1"])`; for list options (defense, knowledge,
    straggler) each alternative is a name, a comma list or a list of names
    (`defense=["none", "dp", ["dp", "nopeek"]]`). Rows are appended to
    <out>/<run_id>/results.csv (resume=True skips finished cells), as the CLI does. jobs=N:
    cells run N at once in worker processes (default 1: in this process; models and data sets
    given as Python objects keep their cells in this process). Worker processes are spawned
    and import your script again, so a script that passes jobs > 1 must call slsec.sweep under
    `if __name__ == "__main__":`."""
    import pandas as pd

    from slsec.data.userdata import as_dataset_spec
    from slsec.data.usermodel import as_model_spec
    from slsec.study.grid import _grid_text
    from slsec.study.sweeps import run_sweep
    jobs = options.pop("jobs", 1)
    _check_keywords("sweep", options, ("model", "dataset", "config", "resume", "jobs"))
    flags = {k: _grid_text(k, v) for k, v in options.items() if v is not None}
    for key, spec in (("model", as_model_spec(model)), ("dataset", as_dataset_spec(dataset))):
        if spec is not None:
            flags[key] = spec
    with _RUNS:
        folder = run_sweep(str(config) if config is not None else None, flags, resume=resume,
                           jobs=jobs)
    return pd.read_csv(folder / "results.csv")


def load(path: str | Path) -> dict[str, Any]:
    """The stored result.json of a saved run (config, metrics, curve, undefended twin)."""
    return json.loads((Path(path) / "result.json").read_text())


__all__ = ["Result", "evaluate", "load", "make_run_config", "sweep", "train"]
