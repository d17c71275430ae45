"""`slsec audit`: parse the audit's own options, run it, write and print its report."""
from __future__ import annotations

import inspect
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import typer

from slsec.errors import UserError


def _option(name: str, metavar: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                             default=typer.Option(None, f"--{name}", metavar=metavar, help=help,
                                                  show_default=False))


AUDIT_OPTIONS = (
    _option("canaries", "INT", "canaries per audited defense [default: 1000]"),
    _option("confidence", "FLOAT", "confidence of the lower bounds [default: 0.95]"),
    _option("broken", "weak-noise|clip-after-noise|reused-noise",
            "audit a deliberately broken copy of the mechanism (same claim) [default: the "
            "real one]"))


def _number(flag: str, text: str | None, default: float, kind: type) -> Any:
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise UserError(f"{flag} must be {'a whole number' if kind is int else 'a number'}, "
                        f"got {text!r}") from None
    return value


def run_audit(cfg: Any, *, canaries: str | None, confidence: str | None, broken: str | None,
              force: bool = False) -> list[dict[str, Any]]:
    from slsec.report.console import console
    from slsec.report.folders import claim, unique_folder
    m = _number("--canaries", canaries, 1000, int)
    if m < 2:
        raise UserError(f"--canaries must be a whole number >= 2, got {canaries}")
    conf = _number("--confidence", confidence, 0.95, float)
    if not 0 < conf < 1:
        raise UserError(f"--confidence must be in (0, 1), got {confidence}")
    if broken is not None:
        from slsec.run.broken import KINDS
        if broken not in KINDS:
            raise UserError(f"--broken must be one of {', '.join(KINDS)}, got {broken!r}")
    name = cfg.run_id or f"audit-{'+'.join(cfg.defense) or 'none'}"
    if cfg.run_id:
        folder = Path(cfg.out) / cfg.run_id
        claim(folder, "audit", force=force)
    else:
        import time
        folder = unique_folder(cfg.out, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    from slsec.run.audit import audit_config
    results = audit_config(cfg, canaries_n=m, confidence=conf, broken_kind=broken)
    from slsec.report.audit import terminal_lines, write_audit
    from slsec.report.folders import mark
    mark(folder, "audit", force=force)
    write_audit(folder, results, asdict(cfg))
    for line in terminal_lines(results):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {folder}/report.html")
    return results
