"""Durable results: atomic file writes, append-only CSV rows, a cache of undefended runs."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from slsec.errors import UserError


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write via a temp file in the same folder + fsync + rename: readers see old or new, never half."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write to {p.parent}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide reports from the rest of a team
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


FIGURE_FORMATS = ["png"]          # --plot-format; PNG is always written (the HTML embeds it)
PLOT_FORMATS = ("png", "svg", "pdf")


def set_figure_formats(spec: str | None) -> list[str]:
    """Parse --plot-format (a comma list of png, svg, pdf) into FIGURE_FORMATS."""
    formats = ["png"]
    for f in (spec or "").split(","):
        f = f.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in PLOT_FORMATS:
            raise UserError(f"--plot-format: unknown format {f!r}; use a comma list of "
                            f"{', '.join(PLOT_FORMATS)}")
        if f not in formats:
            formats.append(f)
    FIGURE_FORMATS[:] = formats
    return formats


def save_figure(fig: Any, path: str | Path) -> Path:
    """Render a matplotlib figure to PNG bytes in memory and write it atomically, plus one
    file per extra --plot-format beside it (same name, .svg / .pdf). Legends placed outside
    the axes are kept (tight bounding box)."""
    p = Path(path)
    for fmt in FIGURE_FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight")
        atomic_write(p if fmt == "png" else p.with_suffix(f".{fmt}"), buf.getvalue())
    return p


def legend_outside(ax: Any, **kw: Any) -> Any:
    """A legend to the right of the axes, never over the data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     frameon=False, **kw)


def check_writable(folder: str | Path) -> Path:
    """Fail early (one line) if reports cannot be written there."""
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=p, prefix=".write-test.", delete=True)
        probe.close()
    except OSError as e:
        raise UserError(f"report folder {p} is not writable: {e.strerror or e}") from None
    return p


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows of a results CSV (empty list if it does not exist)."""
    p = Path(path)
    if not p.exists():
        return []
    try:
        with p.open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"results file {p} cannot be read: {e}") from None


def append_row(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row atomically: the whole file is rewritten to a temp file and renamed,
    so a kill at any point leaves either the old rows or the old rows plus this one."""
    rows = read_rows(path)
    rows.append({k: _cell(v) for k, v in row.items()})
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v


def config_key(cfg_dict: dict[str, Any], drop: Iterable[str] = ()) -> str:
    """A stable hash of a config (minus `drop` fields), for caching and resuming."""
    skip = {"out", "run_id", "source", *drop}
    blob = json.dumps({k: v for k, v in sorted(cfg_dict.items()) if k not in skip}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read: {e}") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
