"""The review's cells, run ahead through the grid executor (slsec.study.executor).

`slsec review` reads every evaluation through `split_search.evaluate_cached` (one result per
config in this process). With `--jobs` above 1 the configs it will ask for are computed first,
in workers, and remembered here, so the review itself then runs from memory and its rows are
those of the sequential review: first one stream of cells (so that no worker idles between
phases): the malicious-server runs, then the inversion attack on every candidate cut and seed
(last, because its methods run side by side on every core a worker has, which fills the cores
of workers that have nothing left); then, knowing from the inversion runs whether labels reach
the server, label inference on each cut.
"""
from __future__ import annotations

from typing import Any

from slsec import progress
from slsec.config import RunConfig, make_config
from slsec.report.results import config_key
from slsec.report.stats import seed_list


def measure_cell(values: dict[str, Any]) -> dict[str, Any]:
    """One evaluation's metrics (in a worker)."""
    from slsec.run.harness import evaluate
    result = evaluate(make_config(values))
    return dict(result.metrics)


def prefetch(cells: list[RunConfig], jobs: int, workers: Any = None) -> None:
    """Compute the cells not yet measured, `jobs` at once; the progress line counts them."""
    from slsec.run.split_search import is_measured, remember
    from slsec.study.executor import run_cells
    todo = list({config_key(c.to_dict()): c for c in cells if not is_measured(c)}.values())
    if not todo:
        return
    with progress.phase("review cells", total=len(todo), unit="cells"):
        def done(i: int, metrics: dict[str, Any]) -> None:
            remember(todo[i], metrics)
            progress.tick("review cells", note=f"{todo[i].protocol} {todo[i].attack} "
                                               f"cut {todo[i].cut} seed {todo[i].seed}")
        run_cells(measure_cell, [c.to_dict() for c in todo], jobs=jobs, on_done=done,
                  workers=workers)


def inversion_cells(inv: RunConfig) -> list[RunConfig]:
    """What split_search.measure evaluates for each seed of `inv`."""
    from slsec.run.split_search import attack_config, candidate_cuts
    out = []
    for s in seed_list(inv.seed, inv.seeds):
        acfg = attack_config(inv.replace(seed=s, seeds=1)).replace(backend="local")
        out += [acfg.replace(cut=c) for c in candidate_cuts(acfg)]
    return out


def malicious_cells(protocol: str, inv: RunConfig, hijack_steps: int) -> list[RunConfig]:
    """The malicious-server runs on every candidate cut (hijack, then each detector): they need
    no other cell's result, so they run beside the inversion cells."""
    from slsec.study import review_malicious as malicious
    if hijack_steps <= 0 or not malicious.applies(protocol):
        return []
    out: list[RunConfig] = []
    for first in inversion_cells(inv.replace(seeds=1)):
        run = malicious.hijack_config(inv, first.cut, hijack_steps)
        out += [run] + [run.replace(defense=(n,)) for n in malicious.detectors()]
    return out


def label_cells(protocol: str, inv: RunConfig, lab: RunConfig,
                label_roles: set[str]) -> list[RunConfig]:
    """Label inference on each cut where the inversion runs found that labels stay on the
    client (read from those runs: they go first)."""
    from slsec.run.split_search import evaluate_cached
    if protocol not in label_roles:
        return []
    out: list[RunConfig] = []
    for first in inversion_cells(inv.replace(seeds=1)):
        if not evaluate_cached(first).get("labels_sent_to_server"):
            out += [lab.replace(cut=first.cut, seed=s, seeds=1)
                    for s in seed_list(lab.seed, lab.seeds)]
    return out
