"""Run folders are written once, by one kind of command.

Each folder under --out records its kind (run, sweep, review, benchmark) in `.slsec-kind`.
A command refuses a folder that already holds results unless asked to continue it
(`--resume`, sweeps and benchmarks) or to replace it (`--force`: the earlier files are moved
into a `replaced-<time>/` subfolder, never deleted), and never writes into a folder of another
kind. `slsec report` re-renders a folder by its recorded kind.

A command that claims a folder also holds it: an exclusive lock on `<folder>/.slsec.lock` for
the rest of the process (released by the OS even on SIGKILL), so a second command started at
the same moment with the same --run-id is refused in one line instead of overwriting the
first, and two generated names from the same second never meet in one folder.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from slsec.errors import UserError
from slsec.report.results import REJECTED, atomic_write, quarantine, read_json

KIND_FILE = ".slsec-kind"
LOCK_FILE = ".slsec.lock"
_HELD: dict[str, tuple[int, list[Path]]] = {}   # folder -> (lock descriptor, folders made)
_RANK_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
KINDS = ("run", "sweep", "review", "benchmark", "audit")
# written by `slsec train` / `evaluate`, `sweep`, `review`, `benchmark`
COMMANDS = {"run": "train/evaluate", "sweep": "sweep", "review": "review",
            "benchmark": "benchmark", "audit": "audit"}


def folder_kind(folder: str | Path) -> str | None:
    """The recorded kind, or (folders from before kinds were recorded) the kind its files show."""
    f = Path(folder)
    try:
        kind = (f / KIND_FILE).read_bytes()[:64].decode(errors="replace").strip()
    except OSError:
        kind = ""
    if kind:
        if kind not in KINDS:
            raise UserError(f"{f / KIND_FILE} names an unknown folder kind {kind!r} "
                            f"(expected one of {', '.join(KINDS)})")
        return kind
    has = {n: (f / n).exists() for n in ("result.json", "results.csv", "leakage_by_cut.png")}
    if has["result.json"] and has["results.csv"]:
        raise UserError(f"{f} holds both a run's result.json and a results.csv; it is ambiguous "
                        f"which to render (write {KIND_FILE} with run or sweep to choose)")
    if has["result.json"]:
        return "run"
    if has["leakage_by_cut.png"]:
        return "review"
    if has["results.csv"]:
        return "benchmark" if f.name.startswith("benchmark-") else "sweep"
    return None


def has_results(folder: str | Path) -> bool:
    """True when the folder holds anything but its kind file, a lock or temp files."""
    f = Path(folder)
    if not f.is_dir():
        return False
    return any(not (p.name in (KIND_FILE, ".sweep.lock", LOCK_FILE)
                    or p.name.startswith(".write-test.")
                    or ".tmp" in p.name) for p in f.iterdir())


def claim(folder: str | Path, kind: str, *, resume: bool = False, force: bool = False,
          can_resume: bool = False, run_id: str | None = None) -> None:
    """Refuse (one line) a folder that holds results of another kind, or results of this kind
    unless --resume (where the command can continue) or --force was given. Writes nothing.
    --resume of a folder with no results yet simply starts it (as it always did)."""
    f = Path(folder)
    if f.exists() and not f.is_dir():
        raise UserError(f"{f} exists and is not a folder; choose another --run-id")
    if not hold(f):
        raise UserError(f"--run-id {run_id or f.name}: another slsec command is writing {f} "
                        "right now; wait for it, or choose another --run-id")
    if not has_results(f):
        existing = folder_kind_recorded(f) if f.exists() else None
        if existing is not None and existing != kind:   # killed before its first result
            raise UserError(f"{f} belongs to slsec {COMMANDS.get(existing, existing)}; slsec "
                            f"{COMMANDS[kind]} will not write into it: choose another --run-id")
        return
    existing = folder_kind(f)
    if existing is not None and existing != kind:
        raise UserError(f"{f} holds a {existing} (written by slsec {COMMANDS[existing]}); slsec "
                        f"{COMMANDS[kind]} will not write into it: choose another --run-id")
    if resume and can_resume:
        return
    if resume:
        raise UserError(f"--resume does not apply to slsec {COMMANDS[kind]}; pass --force to "
                        f"replace {f.name}, or choose another --run-id")
    if not force:
        how = "pass --resume to continue it, --force to replace it" if can_resume else \
            "pass --force to replace it"
        raise UserError(f"--run-id {run_id or f.name} already exists ({f}, a "
                        f"{existing or kind}): {how} (earlier files are kept in a subfolder), "
                        f"or choose another --run-id")


def mark(folder: str | Path, kind: str, *, force: bool = False) -> str | None:
    """Record the folder's kind (creating it). With `force`, first move the earlier files into
    `replaced-<time>/` (returned), so replacing a run never loses what it held."""
    f = Path(folder)
    moved = None
    if force and has_results(f):
        dest = f / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 2
        while dest.exists():
            dest, n = f / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
        try:
            dest.mkdir()
            for p in list(f.iterdir()):
                if p != dest and p.name not in (KIND_FILE, ".sweep.lock", LOCK_FILE) \
                        and not p.name.startswith("replaced-"):
                    p.rename(dest / p.name)
        except OSError as e:
            raise UserError(f"--force: cannot move the earlier files of {f} aside: "
                            f"{e.strerror or e}") from None
        moved = str(dest)
    if folder_kind_recorded(f) != kind:
        atomic_write(f / KIND_FILE, kind + "\n")
    return moved


def folder_kind_recorded(folder: Path) -> str | None:
    try:
        return (folder / KIND_FILE).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def hold(folder: str | Path) -> bool:
    """Take this process's lock on `folder` (creating it); False when another process holds
    it. Only rank 0 of an MPI job writes folders: the other ranks hold nothing."""
    f = Path(folder)
    if any(os.environ.get(v, "0") != "0" for v in _RANK_VARS):
        return True
    key = str(f.resolve())
    if key in _HELD:
        return True
    made = [p for p in (f, *f.parents) if not p.exists()]
    try:
        f.mkdir(parents=True, exist_ok=True)
        fd = os.open(f / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot create {f / LOCK_FILE}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    if not _HELD:
        atexit.register(release_unused)
    _HELD[key] = (fd, made)
    return True


def release_unused() -> None:
    """A held folder that got nothing (the command failed first) is removed again, with the
    folders `hold` made for it; one that got results stays held until the process ends. The
    CLI calls this when a command ends, and it runs at exit."""
    for key, (fd, made) in list(_HELD.items()):
        f = Path(key)
        try:
            if [p.name for p in f.iterdir()] != [LOCK_FILE]:
                continue
            (f / LOCK_FILE).unlink()
            for d in made:   # innermost first; one that got other files stays
                d.rmdir()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            os.close(fd)
        del _HELD[key]


def unique_folder(out: str | Path, name: str) -> Path:
    """<out>/<name>, or <name>-2, -3, ... when a generated name is taken (holds results, or
    another process holds it right now): the folder returned is held by this process."""
    folder, n = Path(out) / name, 2
    while (folder.exists() and not folder.is_dir()) or not hold(folder) or has_results(folder):
        folder, n = Path(out) / f"{name}-{n}", n + 1
    return folder


@contextlib.contextmanager
def keeping(what: str) -> Iterator[None]:
    """Turn a failed write (disk full, permission lost) into one line that says what was
    kept, e.g. `with keeping("the 5 rows in results.csv are kept; ...")`."""
    try:
        yield
    except OSError as e:       # WriteError (atomic_write) or a plot library's own write
        first = str(e) if isinstance(e, UserError) else \
            f"cannot write {getattr(e, 'filename', None) or 'a file'} ({e.strerror or e})"
        raise UserError(f"{first}; {what}") from None


def quarantine_warned(path: Path, warn: Callable[[str], None]) -> None:
    """`quarantine` for a resumed sweep or benchmark: a failed write says what is kept, and
    moved rows are reported through `warn` (their cells run again)."""
    with keeping(f"{path} is unchanged (its damaged rows are still in it and still "
                 "skipped); free space and rerun with --resume"):
        rejected = quarantine(path)
    if rejected:
        warn(f"warning: {rejected} damaged row(s) of {path} moved to "
             f"{path.with_name(REJECTED)}; their cells run again")


def read_result(path: str | Path) -> dict[str, Any]:
    """A run's stored result (result.json, a cached undefended twin): an object with a config
    object and a metrics object holding the accuracy, or one line saying what it lacks."""
    stored = read_json(path)
    if not isinstance(stored, dict):
        raise UserError(f"{path} is not an slsec result (a JSON {type(stored).__name__}, "
                        "expected an object with config and metrics)")
    for part in ("config", "metrics"):
        if not isinstance(stored.get(part), dict):
            raise UserError(f"{path} is not an slsec result: no '{part}' object")
    if "accuracy" not in stored["metrics"]:
        raise UserError(f"{path} is not an slsec result: its metrics lack the accuracy")
    return stored
