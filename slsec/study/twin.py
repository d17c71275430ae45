"""Evaluate with its twin: the one pipeline behind `slsec evaluate`, each seed of `--seeds`,
each sweep cell and `slsec.evaluate` (the Python API).

A defended run is always read beside its undefended twin: the same config and seed without
defenses. The twin is computed once per (config, seed) and cached under <out>/.cache
(slsec.study.runs), or, for the Python API (which writes nothing), run in memory. On the local
backend the uncached twin may run in a second process while the defended run trains
(`parallel_twin`). A defense that chooses the cut before training (split-select) runs first
and the rest continues with its cut.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

from slsec.catalog import pre_training
from slsec.config import RunConfig


@dataclass
class Evaluation:
    """A defended run and its undefended twin. `cfg` is the config as run (the cut a
    pre-training defense chose); `result` is None off rank 0 under MPI; `twin` is the twin as
    result.json stores it (None without defenses or with twin=False), `twin_images` its
    reconstructions for the report's grid, `twin_result` the twin in memory when not cached."""

    cfg: RunConfig
    result: Any
    twin: dict[str, Any] | None = None
    twin_images: dict[str, Any] | None = None
    twin_result: Any = None


def evaluate_with_twin(cfg: RunConfig, *, twin: bool = True, cache: bool = True,
                       parallel_twin: bool = True, bars: bool = False, label: str = "",
                       check: Callable[[RunConfig], Any] | None = None,
                       progress: Callable[[Any], None] | None = None) -> Evaluation:
    """Run `cfg` and its twin. check(cfg): the caller's preflight (returns the prepared setup
    or None), called after the twin's process started so that its start-up overlaps ours.
    bars: progress bars on stderr named `label` (else `progress` gets each round)."""
    from slsec.run.harness import evaluate as run
    from slsec.study.runs import (baseline_config, baseline_path, cached_baseline, choose_cut,
                                  join_baseline, load_images, progress_bar, start_baseline)

    wants_twin = twin and bool(cfg.defense)
    side_ok = wants_twin and cache and parallel_twin
    side = start_baseline(cfg) if side_ok and not pre_training(cfg) else None
    try:
        setup = check(cfg) if check is not None else None
    except BaseException:
        if side is not None:
            join_baseline(side, failed=True)
        raise
    if pre_training(cfg):
        cfg = choose_cut(cfg)
        wants_twin = twin and bool(cfg.defense)
        side = start_baseline(cfg) if side_ok and wants_twin else None

    def phase(name: str) -> tuple[Any, Any]:
        if bars:
            return progress_bar(cfg, label + name)
        return contextlib.nullcontext(), progress

    bar, on_round = phase("defended" if cfg.defense else "train")
    try:
        with bar:
            result = run(cfg, progress=on_round,
                         setup=setup if setup is not None and cfg.cut == setup.cfg.cut else None)
    except BaseException:
        if side is not None:
            join_baseline(side, failed=True)
        raise
    if side is not None:
        from slsec.report.plots import pyplot
        pyplot()   # the report's imports while the twin still runs: off the critical path
        join_baseline(side)
    done = Evaluation(cfg, result)
    if not wants_twin:
        return done
    bar, on_round = phase("undefended")
    if cache:
        with bar:  # reads the cache the side process wrote (computes it here if that failed)
            done.twin = cached_baseline(cfg, on_round)
        if done.twin is not None:
            done.twin_images = load_images(baseline_path(cfg).with_suffix(".pt"))
        return done
    with bar:
        done.twin_result = run(baseline_config(cfg), progress=on_round)
    if done.twin_result is not None:
        done.twin = done.twin_result.to_dict()
        shown = done.twin_result.reconstructions
        done.twin_images = shown.to_tensors() if shown is not None else None
    return done
