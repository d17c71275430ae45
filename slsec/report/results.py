"""Durable results: atomic file writes, append-only CSV rows, a cache of undefended runs.

Every row appended to a results CSV carries `row_check`, a hash of its non-empty fields: a row
cut short, edited or garbled by hand fails it (or has the wrong number of fields) and is never
trusted. `read_rows` returns only intact rows; `quarantine` moves damaged ones, with their raw
text, to `rejected-rows.csv` beside the file so their cells can run again. JSON is written
strictly (no NaN/Infinity: such numbers become null).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from slsec.errors import UserError


ROW_CHECK = "row_check"
REJECTED = "rejected-rows.csv"
MAX_RESULTS_BYTES = 512 << 20   # results CSV read back (a row is a few KiB)
MAX_JSON_BYTES = 64 << 20       # result.json / sweep.json / cached runs


class WriteError(UserError, OSError):
    """A file could not be written (disk full, permission lost): the old file is untouched."""


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write via a temp file in the same folder + fsync + rename: readers see old or new, never half."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(f"cannot write to {p.parent}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide reports from the rest of a team
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {p} ({e.strerror or e}); the earlier {p.name}, if any, "
                         "is unchanged") from None
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


def row_hash(row: dict[str, Any]) -> str:
    """The integrity check of one row: a hash of its non-empty fields (as the CSV holds them),
    so columns added later (empty in older rows) leave older rows' checks valid."""
    items = sorted((str(k), str(v)) for k, v in row.items()
                   if k != ROW_CHECK and v not in (None, ""))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def read_text_capped(path: str | Path, limit: int, what: str) -> str:
    """A user-supplied file's text, refusing more than `limit` bytes (/dev/zero, a huge log)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{p} does not exist") from None
    except OSError as e:
        raise UserError(f"{what} {p} cannot be read: {e.strerror or e}") from None
    if len(data) > limit:
        raise UserError(f"{what} {p} is larger than {limit >> 20} MiB; not an slsec file")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {p} is not UTF-8 text: {e}") from None


def scan_rows(path: str | Path) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(intact rows, damaged rows) of a results CSV. A row is damaged when its field count
    differs from the header's or, in files with a `row_check` column, its check fails. Damaged
    rows come back as {"line", "reason", "raw"} with their exact text. Intact rows lose the
    `row_check` key. Files written before row checks: rows are trusted on field count only."""
    p = Path(path)
    if not p.exists():
        return [], []
    text = read_text_capped(p, MAX_RESULTS_BYTES, "results file")
    lines = io.StringIO(text, newline="").readlines()   # the lines the csv reader counts
    reader = csv.reader(iter(lines))
    good: list[dict[str, str]] = []
    bad: list[dict[str, Any]] = []
    seen: dict[str, int] = {}   # row text -> its first line (a copy is not a second result)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise UserError(f"results file {p} has no readable header: {e}") from None
    if not header:
        return [], []
    checked = ROW_CHECK in header
    start = reader.line_num
    while True:
        try:
            rec = next(reader, None)
        except csv.Error as e:         # e.g. a NUL byte: the rest of the file is one bad row
            bad.append({"line": start + 1, "reason": f"unreadable: {e}",
                        "raw": "".join(lines[start:])})
            break
        if rec is None:
            break
        raw = "".join(lines[start:reader.line_num])
        line, start = start + 1, reader.line_num
        if not rec or rec == [""]:
            continue
        if len(rec) != len(header):
            bad.append({"line": line, "raw": raw,
                        "reason": f"{len(rec)} of {len(header)} fields (cut short or garbled)"})
            continue
        row = dict(zip(header, rec))
        first = seen.setdefault(raw.rstrip("\r\n"), line)   # timings make each row unique
        if (checked and row.get(ROW_CHECK) != row_hash(row)) or first != line:
            bad.append({"line": line, "raw": raw, "reason": "integrity check failed" if
                        first == line else f"a copy of line {first} (each row is written once)"})
            continue
        row.pop(ROW_CHECK, None)
        good.append(row)
    return good, bad


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The intact rows of a results CSV (empty list if it does not exist); damaged rows are
    never returned (see scan_rows / quarantine)."""
    return scan_rows(path)[0]


def rows_csv(rows: list[dict[str, Any]], check: bool = True) -> str:
    """CSV text of `rows` (every column any row has; `row_check` last when `check`)."""
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns and c != ROW_CHECK]
    out = []
    for r in rows:
        full = {c: ("" if r.get(c) is None else r.get(c)) for c in columns}
        if check:
            full[ROW_CHECK] = row_hash(full)
        out.append(full)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns + ([ROW_CHECK] if check else []), restval="")
    w.writeheader()
    w.writerows(out)
    return buf.getvalue()


def quarantine(path: str | Path) -> int:
    """Move damaged rows of a results CSV to rejected-rows.csv beside it (their raw text, line
    and reason, appended), then rewrite the file with the intact rows only. The rejected rows
    are written first, so a kill in between leaves them in both files, never in neither."""
    p = Path(path)
    good, bad = scan_rows(p)
    if not bad:
        return 0
    rejected = p.with_name(REJECTED)
    old, _ = scan_rows(rejected)
    known = {r.get("raw") for r in old}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    new = [{"rejected_at": stamp, "file": p.name, "line": b["line"], "reason": b["reason"],
            "raw": b["raw"]} for b in bad if b["raw"] not in known]
    atomic_write(rejected, rows_csv(old + new))
    atomic_write(p, rows_csv(good))
    return len(bad)


def intact_rows(path: Path, what: str, warn: Callable[[str], None]) -> list[dict[str, str]]:
    """The intact rows of a results CSV for a report; damaged ones are skipped with a warning
    (a UserError when none is intact). `what` is the command that reruns them."""
    good, bad = scan_rows(path)
    if bad and not good:
        raise UserError(f"{path} has no intact rows: {len(bad)} damaged (line {bad[0]['line']}: "
                        f"{bad[0]['reason']}); rerun the {what} with --resume to redo their cells")
    if bad:
        warn(f"warning: skipping {len(bad)} damaged row(s) of {path} (line "
             f"{', '.join(str(b['line']) for b in bad[:5])}{' ...' if len(bad) > 5 else ''}: "
             f"{bad[0]['reason']}); rerun the {what} with --resume to redo their cells")
    return good


def append_row(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row atomically: the whole file is rewritten to a temp file and renamed,
    so a kill at any point leaves either the old rows or the old rows plus this one. Damaged
    rows already in the file are moved to rejected-rows.csv first (never rewritten as if
    intact)."""
    if scan_rows(path)[1]:
        quarantine(path)
    rows: list[dict[str, Any]] = read_rows(path)
    rows.append({k: _cell(v) for k, v in row.items()})
    atomic_write(path, rows_csv(rows))


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(finite(v), allow_nan=False, default=_json_default)
    return v


def finite(obj: Any) -> Any:
    """`obj` with every NaN/inf float (also inside lists, dicts, tensors) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return finite(obj.tolist())
    return obj


def config_key(cfg_dict: dict[str, Any], drop: Iterable[str] = ()) -> str:
    """A stable hash of a config (minus `drop` fields), for caching and resuming."""
    skip = {"out", "run_id", "source", *drop}
    blob = json.dumps({k: v for k, v in sorted(cfg_dict.items()) if k not in skip}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (NaN/inf become null), written atomically."""
    return atomic_write(path, json.dumps(finite(obj), indent=2, default=_json_default,
                                         allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    text = read_text_capped(path, MAX_JSON_BYTES, "file")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{path} cannot be read: {e}") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
