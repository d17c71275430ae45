"""Optional experiment tracking: `--log tensorboard` writes the run's scalars (per round, and
the final metrics) through torch.utils.tensorboard when the `tensorboard` package is installed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slsec.errors import UserError

LOGGERS = ("tensorboard",)


def check(log: str | None) -> str | None:
    """Validate --log before any work starts (one clear line if it cannot be honoured)."""
    if not log:
        return None
    if log not in LOGGERS:
        raise UserError(f"--log must be one of {', '.join(LOGGERS)}, got {log!r}")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError("--log tensorboard needs the tensorboard package "
                        "(pip install tensorboard)") from None
    return log


def write(log: str | None, logdir: Path, result: dict[str, Any] | None) -> Path | None:
    """Scalars of one run into `logdir`: curve/* per round, metrics/* at the end (and
    undefended/* for the twin when there is one)."""
    if not log or result is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    logdir = Path(logdir)
    w = SummaryWriter(log_dir=str(logdir))
    try:
        for r in result.get("curve", []):
            for key in ("accuracy", "loss", "wall_s", "bytes"):
                w.add_scalar(f"curve/{key}", float(r[key]), int(r["round"]))
        rounds = len(result.get("curve", []))
        for prefix, m in (("metrics", result.get("metrics", {})),
                          ("undefended", (result.get("undefended") or {}).get("metrics", {}))):
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    w.add_scalar(f"{prefix}/{k}", float(v), rounds)
    finally:
        w.close()
    return logdir
