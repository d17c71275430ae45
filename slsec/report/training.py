"""What `slsec train` prints: the accuracy curve per round and when the run converged."""
from __future__ import annotations

from typing import Any

from rich.table import Table

from slsec.config import RunConfig
from slsec.report.console import console
from slsec.report.summary import shown


def print_training(cfg: RunConfig, result: Any) -> None:
    """The curve (round, test accuracy, loss, wall-clock, MB on the wire) and convergence."""
    cuts = result.metrics["cuts"]
    t = Table(title=f"{cfg.protocol} on {cfg.dataset} ({cfg.model_name})"
                    + (f", cut{'s' if len(cuts) > 1 else ''} {','.join(cuts)}" if cuts else ""))
    for c in ("round", "test acc", "loss", "wall-clock s", "MB on wire"):
        t.add_column(c, justify="right")
    for r in result.curve:
        t.add_row(str(r["round"]), f"{r['accuracy']:.4f}", f"{r['loss']:.4f}",
                  f"{r['wall_s']:.1f}", f"{r['bytes'] / 1e6:.2f}")
    console.print(t)
    m = result.metrics
    console.print(f"rounds to convergence: {shown(m, 'rounds_to_convergence')} "
                  f"(first round with accuracy >= {m['convergence_threshold']:.4f}: "
                  f"{'--target-accuracy' if cfg.target_accuracy else '98% of the best accuracy'})")
