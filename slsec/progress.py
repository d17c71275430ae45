"""Progress of long phases (training batches, each attack method, the undefended twin, sweep
cells) on stderr, so stdout stays the result.

- On a terminal: one status line, rewritten in place (at most 10 times a second), cleared when
  the phase ends.
- Otherwise (a file, a pipe, CI logs): plain lines, at most one every 2 s per phase, the first
  once a phase has run for 2 s, a heartbeat every 10 s when nothing moved, and one closing
  line per phase that printed anything.

Deep code reports through `tick(name)` / `ctx.on_step`; a phase that is not open is a no-op,
so library calls (tests, the Python route) stay silent unless a command opens the phase.
A process with `SLSEC_PROGRESS_FILE` set (the undefended twin) writes its latest line to that
file instead; the parent shows it as the `undefended` phase.

Over 300 lines: one Reporter owns every open phase and its throttling, and the helpers the
engine calls (training, each attack method, methods side by side, the twin's status file) go
through its state; split apart, two modules would share the reporter's internals.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

FIRST_LINE_S = 2.0      # phases shorter than this print nothing in plain mode
PLAIN_EVERY_S = 2.0     # at most one plain line every 2 s per phase
HEARTBEAT_S = 10.0      # a plain line when nothing moved for this long
TTY_EVERY_S = 0.1
ENV_FILE = "SLSEC_PROGRESS_FILE"


def _secs(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"


@dataclass
class Phase:
    name: str
    total: int | None = None
    unit: str = ""
    done: int = 0
    note: str = ""
    start: float = field(default_factory=time.monotonic)
    last_line: float = 0.0          # when a line for this phase was last written
    last_change: float = field(default_factory=time.monotonic)
    printed: bool = False
    external: Callable[[], str | None] | None = None   # status read from elsewhere (the twin)

    def text(self) -> str:
        now = time.monotonic()
        elapsed = now - self.start
        if self.external is not None:
            return f"{self.name}: {self.note or f'starting · {_secs(elapsed)}'}"
        parts = [f"{self.name}:"]
        if self.total:
            parts.append(f"{self.done}/{self.total}{' ' + self.unit if self.unit else ''}")
            if 0 < self.done < self.total:
                eta = elapsed / self.done * (self.total - self.done)
                parts.append(f"· ETA {_secs(eta)}")
        elif self.done:
            parts.append(f"{self.done}{' ' + self.unit if self.unit else ''}")
        parts.append(f"· {_secs(elapsed)}" if len(parts) > 1 else _secs(elapsed))
        if self.note:
            parts.append(f"· {self.note}")
        return " ".join(parts)


class Reporter:
    """Open phases and how their lines reach the user."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.phases: dict[str, Phase] = {}
        self.stream: Any = None
        self.tty = False
        self.file = os.environ.get(ENV_FILE)
        self.enabled = True
        self._ticker: threading.Thread | None = None
        self._tty_last = 0.0

    # ------------------------------------------------------------------ output
    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    def _write_file(self, line: str) -> None:
        from slsec.report.results import atomic_write
        try:
            atomic_write(self.file, line)  # type: ignore[arg-type]
        except OSError:   # a status line only: never fail the run for it
            pass

    def _emit(self, phase: Phase, force: bool = False) -> None:
        now = time.monotonic()
        line = phase.text()
        if self.file:
            if force or now - phase.last_line >= 0.5:
                phase.last_line = now
                self._write_file(line)
            return
        out = self._out()
        if self.tty:
            if force or now - self._tty_last >= TTY_EVERY_S:
                self._tty_last = now
                active = " | ".join(p.text() for p in self.phases.values()) or line
                width = 200
                try:
                    width = os.get_terminal_size(out.fileno()).columns - 1
                except (OSError, ValueError, AttributeError):
                    pass
                out.write("\r\033[K" + active[:width])
                out.flush()
            return
        if now - phase.start < FIRST_LINE_S and not (force and phase.printed):
            return
        if not (force or phase.printed or phase.done or phase.total or phase.note):
            return      # nothing to report yet (e.g. still loading data, which may fail: then
            #             the user's one error line must stand alone)
        moved = phase.last_change > phase.last_line
        due = now - phase.last_line >= (PLAIN_EVERY_S if moved else HEARTBEAT_S)
        if force or due:
            phase.last_line = now
            phase.printed = True
            out.write(line + "\n")
            out.flush()

    def _clear_tty(self) -> None:
        if self.tty and not self.file:
            out = self._out()
            out.write("\r\033[K")
            if self.phases:
                self._tty_last = 0.0
            out.flush()

    # ------------------------------------------------------------------ phases
    def open(self, name: str, total: int | None = None, unit: str = "",
             external: Callable[[], str | None] | None = None) -> Phase:
        with self.lock:
            if not self.phases and self.stream is None:
                out = sys.stderr
                self.tty = bool(getattr(out, "isatty", lambda: False)())
            phase = Phase(name, total, unit, external=external)
            self.phases[name] = phase
            self._start_ticker()
            return phase

    def close(self, name: str, note: str | None = None, quiet: bool = False) -> None:
        """End a phase with its closing line (`quiet`: none, e.g. when it failed)."""
        with self.lock:
            phase = self.phases.pop(name, None)
            if phase is None:
                return
            if quiet:
                if self.tty and not self.file:
                    self._clear_tty()
                return
            if note is not None:
                phase.note = note
            phase.last_change = time.monotonic()
            if self.tty and not self.file:
                self._clear_tty()
            elif phase.printed or self.file or time.monotonic() - phase.start >= FIRST_LINE_S:
                phase.printed = True
                phase.last_line = 0.0
                self._emit(phase, force=True)

    def update(self, name: str, advance: int = 0, *, done: int | None = None,
               total: int | None = None, note: str | None = None) -> None:
        with self.lock:
            phase = self.phases.get(name)
            if phase is None or not self.enabled:
                return
            if total is not None:
                phase.total = total
            phase.done = done if done is not None else phase.done + advance
            if note is not None:
                phase.note = note
            phase.last_change = time.monotonic()
            self._emit(phase)

    def _start_ticker(self) -> None:
        if self._ticker is not None and self._ticker.is_alive():
            return
        self._ticker = threading.Thread(target=self._tick_loop, name="slsec-progress", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        while True:
            time.sleep(0.25)
            with self.lock:
                if not self.phases:
                    self._ticker = None
                    return
                for phase in list(self.phases.values()):
                    if phase.external is not None:
                        status = phase.external()
                        if status and status != phase.note:
                            phase.note = status
                            phase.last_change = time.monotonic()
                    if self.enabled:
                        self._emit(phase)


REPORTER = Reporter()


@contextlib.contextmanager
def phase(name: str, total: int | None = None, unit: str = "",
          external: Callable[[], str | None] | None = None) -> Iterator[Phase]:
    """Open a phase for the duration of the block; its closing line says how long it took."""
    p = REPORTER.open(name, total, unit, external)
    try:
        yield p
    except BaseException:
        REPORTER.close(name, quiet=True)    # the error says what happened; no "done" line
        raise
    REPORTER.close(name, note=(p.note + " · " if p.note else "") + "done"
                   if p.external is None else p.note)


def tick(name: str, advance: int = 1, **kw: Any) -> None:
    """Advance phase `name` if it is open (a no-op otherwise)."""
    if name in REPORTER.phases:
        REPORTER.update(name, advance, **kw)


# The training and attack phases are ticked from deep inside the run (client 1's steps, the
# attacks' loops), which do not know what the command called the phase: the opener sets it.
# An attack's methods may run side by side in threads (slsec/run/side_by_side.py): each
# thread ticks its own method's phase.
_current = {"train": ""}
_attack = threading.local()


def _attack_name() -> str:
    return getattr(_attack, "name", "")


class Stopped(Exception):
    """Raised by tick_attack in a method whose stop event was set (another one failed)."""


def stop_attack_when(event: threading.Event) -> None:
    """This thread's attack loops end (Stopped) at their next tick once `event` is set."""
    _attack.stop = event


@contextlib.contextmanager
def training(name: str) -> Iterator[Phase]:
    """The training phase: per batch of client 1 (total set by the runner) and per round."""
    _current["train"] = name
    with phase(name, unit="batches") as p:
        yield p


def end_training() -> None:
    """Training is over (the attack follows): close the training phase now."""
    name = _current["train"]
    p = REPORTER.phases.get(name)
    if p is not None:
        REPORTER.close(name, note=(p.note + " · " if p.note else "") + "done")
    _current["train"] = ""


def train_total(total: int) -> None:
    tick(_current["train"], 0, total=total, done=0)


def train_step() -> None:
    tick(_current["train"])


def train_note(note: str) -> None:
    """A note on the open training phase (e.g. a malicious server's client steps)."""
    tick(_current["train"], 0, note=note)


@contextlib.contextmanager
def attack(method: str) -> Iterator[Phase]:
    """One attack method's phase; its loops call tick_attack() per iteration or step."""
    name = f"attack {method}"
    _attack.name = name
    with phase(name, unit="iterations") as p:
        yield p


def tick_attack(advance: int = 1) -> None:
    stop = getattr(_attack, "stop", None)
    if stop is not None and stop.is_set():
        raise Stopped("stopped: another attack method failed or the run was interrupted")
    tick(_attack_name(), advance)


def is_open(name: str) -> bool:
    return name in REPORTER.phases


def read_status(path: str) -> Callable[[], str | None]:
    """A reader of the latest line another process wrote to `path` (see ENV_FILE)."""
    def read() -> str | None:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            return None
    return read


def attack_total(total: int) -> None:
    """Set the open attack phase's total (iterations or steps), for a progress bar."""
    tick(_attack_name(), 0, total=total, done=0)
