"""Links between roles: MPI (raw buffers after a small fixed header) or threads in one process.

Wire format of one message (little-endian), the same for both backends:

    fixed   magic b"SLSC" | version u16 | n_tensors u16 | total payload bytes u64   (16 bytes)
    per tensor   name length u8 (1..64) | utf-8 name | dtype code u8 | ndim u8 (<= 8)
                 | shape: ndim x u64 | nbytes u64
    payload  each tensor's raw contiguous bytes, in header order

Under MPI the header is one uint8 message and each non-empty tensor is its own message on the
same (source, tag), sent straight from the tensor's buffer (uppercase Isend, no copy); MPI's
non-overtaking rule keeps them in order. The receiver matches the header with Improbe, validates
it completely before allocating anything, then checks each payload message's probed size
against it. Nothing is ever pickled.

Waits poll (every ~0.05 ms for ~1 ms, then sleeping a tenth of the time waited, at most 1 ms)
so an idle rank leaves the CPU to busy ones, and give up after `timeout` with a PeerError
naming the peer.

A link is used by one thread (its role program). WireError is fatal for that peer's stream.

Over 300 lines on purpose: the wire format, the check of every header field and the two links
that speak it are one unit, read and fuzzed together (tests/test_wire_fuzz.py).
"""
from __future__ import annotations

import collections
import json
import math
import os
import signal
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from slsec.errors import PeerError, UserError

MAGIC = b"SLSC"
VERSION = 1
MAX_HEADER = 64 * 1024          # bytes; a larger header is refused unread
MAX_NAME = 64                   # bytes of utf-8 per tensor name
MAX_NDIM = 8
MAX_TENSORS = 0xFFFF
PREFLIGHT_TAG = 32767           # reserved (MPI guarantees tags up to 32767); user tags are below
_FIXED = struct.Struct("<4sHHQ")
_U64 = struct.Struct("<Q")

_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.float64, 3: torch.float16, 4: torch.bfloat16,
    5: torch.int64, 6: torch.int32, 7: torch.uint8, 8: torch.bool,
}
_CODES = {dt: code for code, dt in _DTYPES.items()}
_ITEMSIZE = {dt: torch.empty((), dtype=dt).element_size() for dt in _CODES}

_SPIN_S = 1e-3                  # poll every _NAP_S this long, then sleep longer between polls
_NAP_S = 50e-6                  # (a short sleep, not a busy spin: ~10x less CPU, <= ~0.1 ms late)
_MAX_GIVEN = 16                 # MPI: given messages in flight before `give` waits for the oldest
_QUIET = 0.8                    # a channel's waits: sleep through this share of its shortest
_HISTORY = 4                    # ... of the last _HISTORY waits before polling hard
_MIN_SLEEP, _MAX_SLEEP = 20e-6, 1e-3
_LIVENESS_S = 0.02              # how often a wait checks that a same-host peer process still exists
                                # (~20 us a check; hydra may SIGKILL survivors ~0.1 s after a death)
_DEATH_GRACE_S = 0.5            # a peer found gone is named only this long after: when the peer
                                # ended the job itself (MPI_Abort after naming the real fault), the
                                # launcher kills this rank first, and no second, misleading line
                                # ("rank 0 died") follows the real one
R = TypeVar("R")


class WireError(PeerError):
    """A peer sent a malformed or hostile message (bad header, sizes that do not add up)."""


class TensorSpec(NamedTuple):
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int


# ----------------------------------------------------------------------------- encoding


def encode(tensors: Mapping[str, Tensor], *, on_device: bool = False
           ) -> tuple[bytes, list[np.ndarray | Tensor]]:
    """Header bytes and one flat uint8 buffer per tensor (views of CPU-contiguous data, no copy).
    With `on_device` (one process: LocalLink), a tensor on an accelerator stays there: its
    buffer is a flat uint8 view of it, with the same header and byte count."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"a message is a dict of name -> tensor, got {type(tensors).__name__}")
    if len(tensors) > MAX_TENSORS:
        raise ValueError(f"a message holds at most {MAX_TENSORS} tensors, got {len(tensors)}")
    parts: list[bytes] = []
    bufs: list[np.ndarray] = []
    total = 0
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        raw = name.encode("utf-8")
        if not 1 <= len(raw) <= MAX_NAME:
            raise ValueError(f"tensor name {name!r} must be 1..{MAX_NAME} utf-8 bytes")
        if not isinstance(t, Tensor):
            raise TypeError(f"'{name}' is a {type(t).__name__}, not a torch.Tensor")
        code = _CODES.get(t.dtype)
        if code is None:
            raise ValueError(f"'{name}' has dtype {t.dtype}; the wire carries "
                             + ", ".join(str(d).removeprefix("torch.") for d in _CODES))
        if t.dim() > MAX_NDIM:
            raise ValueError(f"'{name}' has {t.dim()} dimensions; the wire carries at most "
                             f"{MAX_NDIM}")
        t = t.detach()
        if t.device.type != "cpu" and not on_device:
            t = t.cpu()
        t = t.contiguous()
        buf = t.reshape(-1).view(torch.uint8)
        buf = buf.numpy() if t.device.type == "cpu" else buf
        parts += [bytes((len(raw),)), raw, bytes((code, t.dim())),
                  struct.pack(f"<{t.dim()}Q", *t.shape), _U64.pack(buf.nbytes)]
        bufs.append(buf)
        total += buf.nbytes
    header = _FIXED.pack(MAGIC, VERSION, len(tensors), total) + b"".join(parts)
    if len(header) > MAX_HEADER:
        raise ValueError(f"message header is {len(header)} bytes (over {MAX_HEADER}): "
                         "send fewer tensors per message or shorter names")
    return header, bufs


def decode_header(buf: bytes | bytearray | memoryview, *, max_bytes: int,
                  peer: int | None = None) -> list[TensorSpec]:
    """Validate a header completely and return its tensor specs; any flaw raises WireError."""
    who = "a peer" if peer is None else f"rank {peer}"

    def bad(why: str) -> WireError:
        return WireError(f"malformed message from {who}: {why}")

    n = memoryview(buf).nbytes
    if n > MAX_HEADER:
        raise bad(f"header is {n} bytes, over the {MAX_HEADER}-byte cap")
    if n < _FIXED.size:
        raise bad(f"header is {n} bytes, shorter than the fixed {_FIXED.size}")
    data = bytes(buf)
    magic, version, count, total = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise bad(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise bad(f"wire version {version}, this build speaks {VERSION}")
    if total > max_bytes:
        raise bad(f"declares {total} payload bytes, over the {max_bytes}-byte limit")
    pos, seen, running = _FIXED.size, set(), 0
    specs: list[TensorSpec] = []

    def need(k: int, i: int) -> None:
        if pos + k > n:
            raise bad(f"header ends inside the entry of tensor {i} of {count}")

    for i in range(count):
        need(1, i)
        ln = data[pos]
        pos += 1
        if not 1 <= ln <= MAX_NAME:
            raise bad(f"tensor {i} name length {ln} is outside 1..{MAX_NAME}")
        need(ln, i)
        try:
            name = data[pos:pos + ln].decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"tensor {i} name is not valid utf-8") from None
        pos += ln
        if name in seen:
            raise bad(f"tensor name '{name}' appears twice")
        seen.add(name)
        need(2, i)
        code, ndim = data[pos], data[pos + 1]
        pos += 2
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise bad(f"tensor '{name}' has unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise bad(f"tensor '{name}' has {ndim} dimensions (at most {MAX_NDIM})")
        need(8 * ndim + 8, i)
        shape = struct.unpack_from(f"<{ndim}Q", data, pos)
        (nbytes,) = _U64.unpack_from(data, pos + 8 * ndim)
        pos += 8 * ndim + 8
        for d in shape:
            if d >= 1 << 63:
                raise bad(f"tensor '{name}' has a negative dimension in shape "
                          f"{tuple(x - (1 << 64) if x >= 1 << 63 else x for x in shape)}")
            if d > max_bytes:
                raise bad(f"tensor '{name}' dimension {d} overflows the {max_bytes}-byte limit")
        size = math.prod(shape) * _ITEMSIZE[dtype]
        if size > max_bytes:
            raise bad(f"tensor '{name}' of shape {shape} needs {size} bytes, "
                      f"over the {max_bytes}-byte limit")
        if size != nbytes:
            raise bad(f"tensor '{name}' declares {nbytes} bytes but {dtype} {shape} "
                      f"is {size} bytes")
        running += nbytes
        if running > total:
            raise bad(f"tensor sizes exceed the declared payload of {total} bytes")
        specs.append(TensorSpec(name, dtype, tuple(shape), nbytes))
    if pos != n:
        raise bad(f"{n - pos} stray bytes after the last tensor entry")
    if running != total:
        raise bad(f"tensor sizes add up to {running} bytes, the header declares {total}")
    return specs


def _tensor(spec: TensorSpec, flat: np.ndarray | Tensor) -> Tensor:
    """A uint8 buffer of spec.nbytes, owned by the result, viewed as the spec's dtype and shape
    (a LocalLink's buffer may be a tensor on an accelerator: the result stays there)."""
    if spec.nbytes == 0:
        return torch.empty(spec.shape, dtype=spec.dtype)
    flat = flat if isinstance(flat, Tensor) else torch.from_numpy(flat)
    return flat.view(spec.dtype).reshape(spec.shape)


def _secs(t: float) -> str:
    return f"{t:.0f}" if t >= 10 else f"{t:.3g}"


# ----------------------------------------------------------------------------- links


class Link(ABC):
    """One rank's end of the point-to-point links to every other rank; counts bytes per peer."""

    carries_device_tensors = False   # True: tensors on an accelerator travel as they are

    def __init__(self, rank: int, world_size: int, timeout: float, max_bytes: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.timeout, self.max_bytes = float(timeout), int(max_bytes)
        self.bytes_sent: collections.Counter[int] = collections.Counter()
        self.bytes_recv: collections.Counter[int] = collections.Counter()
        self.payload_sent: collections.Counter[int] = collections.Counter()
        self.payload_recv: collections.Counter[int] = collections.Counter()

    @abstractmethod
    def send(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        """Send named tensors (detached, contiguous, CPU) to rank `dest` under `tag`."""

    def give(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        """Send tensors that neither side will ever write to again (per-batch activations and
        gradients): a link may then hand them over without a copy. Otherwise as `send`."""
        self.send(dest, tensors, tag)

    @abstractmethod
    def recv(self, source: int, tag: int) -> dict[str, Tensor]:
        """The next message from `source` under `tag` (fresh tensors); PeerError after timeout."""

    @abstractmethod
    def recv_any(self, tag: int) -> tuple[int, dict[str, Tensor]]:
        """The first message under `tag` from any rank, with its source."""

    def flush(self) -> None:
        """Wait until every message given (`give`) has left this rank's buffers."""

    def close(self) -> None:
        """Release the link (a no-op for the MPI communicator, which the caller owns)."""
        self.flush()

    def _check(self, peer: int | None, tag: int) -> None:
        """Refuse a peer outside the world (or oneself) and tags outside 0..PREFLIGHT_TAG-1."""
        if peer is not None and (not isinstance(peer, int) or not 0 <= peer < self.world_size
                                 or peer == self.rank):
            raise ValueError(f"rank {self.rank} cannot talk to rank {peer!r} "
                             f"(world of {self.world_size})")
        if not (isinstance(tag, int) and 0 <= tag < PREFLIGHT_TAG):
            raise ValueError(f"tag must be an int in 0..{PREFLIGHT_TAG - 1}, got {tag!r}")

    def _count_sent(self, dest: int, header: bytes, payload: int) -> None:
        self.bytes_sent[dest] += len(header) + payload
        self.payload_sent[dest] += payload

    def _count_recv(self, source: int, header_len: int, payload: int) -> None:
        self.bytes_recv[source] += header_len + payload
        self.payload_recv[source] += payload

    def _silent(self, source: int, tag: int) -> PeerError:
        return PeerError(f"rank {source} sent nothing for {_secs(self.timeout)} s (tag {tag})")

    def _none_sent(self, tag: int) -> PeerError:
        peers = ", ".join(str(r) for r in range(self.world_size) if r != self.rank)
        return PeerError(f"none of ranks {peers} sent anything for {_secs(self.timeout)} s "
                         f"(tag {tag})")


# ---- one process: threads + mailboxes


@dataclass
class _Mailbox:
    cond: threading.Condition = field(default_factory=threading.Condition)
    # (source, tag, header, payload): payload buffers are numpy, or tensors on an accelerator
    items: list[tuple[int, int, bytes, list[np.ndarray | Tensor]]] = field(default_factory=list)
    turns: Any = None    # slsec.wire.turns.Turns: the ranks are greenlets of one thread
    waiter: Any = None   # with turns: the rank waiting on this box
    aborted: str = ""    # LocalHub.abort's reason: every wait ends with it

    def put(self, item: tuple[int, int, bytes, list[np.ndarray | Tensor]]) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()
        if self.waiter is not None:
            self.turns.wake(self.waiter)

    def take(self, match: Callable[[int, int], bool], deadline: float, what: str = ""):
        with self.cond:
            while True:
                for i, item in enumerate(self.items):
                    if match(item[0], item[1]):
                        return self.items.pop(i)
                if self.aborted:
                    raise PeerError(self.aborted)
                if self.turns is not None:
                    self.waiter = self.turns.current()
                    self.cond.release()   # (one rank's program runs at a time)
                    try:
                        self.turns.wait(what)
                    finally:
                        self.cond.acquire()
                        self.waiter = None
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class LocalHub:
    """Connects `world_size` role programs running as threads of one process, or, with `turns`
    (slsec.wire.turns.Turns), as greenlets of one thread that switch when they wait."""

    def __init__(self, world_size: int, *, timeout: float = 120.0,
                 max_bytes: int = 1 << 30, turns: Any = None) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self.world_size, self.timeout, self.max_bytes = world_size, timeout, max_bytes
        self._boxes = [_Mailbox(turns=turns) for _ in range(world_size)]

    def abort(self, why: str) -> None:
        """End every wait on this hub, now and later, with a PeerError saying `why` (a rank
        failed, or the run was interrupted): the other rank threads stop at their next wait."""
        for box in self._boxes:
            with box.cond:
                box.aborted = why
                box.cond.notify_all()

    def link(self, rank: int) -> "LocalLink":
        """The link that rank `rank` uses."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a world of {self.world_size}")
        return LocalLink(self, rank)


class LocalLink(Link):
    """In-process link: same header/payload path and byte counts as MPI; send never blocks.
    Tensors on an accelerator stay there (every rank of the process shares it): no copy to the
    host and back per message."""

    carries_device_tensors = True

    def __init__(self, hub: LocalHub, rank: int) -> None:
        super().__init__(rank, hub.world_size, hub.timeout, hub.max_bytes)
        self._hub = hub

    def send(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        self._put(dest, tensors, tag, copy=True)

    def give(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        """No copy: the receiver's tensors share the sender's memory, which neither writes."""
        self._put(dest, tensors, tag, copy=False)

    def _put(self, dest: int, tensors: dict[str, Tensor], tag: int, *, copy: bool) -> None:
        self._check(dest, tag)
        header, bufs = encode(tensors, on_device=True)
        # the receiver's copy, taken now (as MPI does), unless the sender hands the buffers over
        payload = [b.clone() if isinstance(b, Tensor) else b.copy() for b in bufs] if copy else bufs
        self._count_sent(dest, header, sum(b.nbytes for b in payload))
        self._hub._boxes[dest].put((self.rank, tag, header, payload))

    def recv(self, source: int, tag: int) -> dict[str, Tensor]:
        self._check(source, tag)
        item = self._hub._boxes[self.rank].take(lambda s, t: s == source and t == tag,
                                                time.monotonic() + self.timeout,
                                                f"rank {self.rank} waits for rank {source} (tag {tag})")
        if item is None:
            raise self._silent(source, tag)
        return self._open(item)

    def recv_any(self, tag: int) -> tuple[int, dict[str, Tensor]]:
        self._check(None, tag)
        item = self._hub._boxes[self.rank].take(lambda s, t: t == tag,
                                                time.monotonic() + self.timeout,
                                                f"rank {self.rank} waits for any rank (tag {tag})")
        if item is None:
            raise self._none_sent(tag)
        return item[0], self._open(item)

    def _open(self, item: tuple[int, int, bytes, list[np.ndarray | Tensor]]) -> dict[str, Tensor]:
        source, _, header, payload = item
        specs = decode_header(header, max_bytes=self.max_bytes, peer=source)
        if len(specs) != len(payload) or any(s.nbytes != p.nbytes for s, p in zip(specs, payload)):
            raise WireError(f"malformed message from rank {source}: payload does not match header")
        self._count_recv(source, len(header), sum(p.nbytes for p in payload))
        return {s.name: _tensor(s, p) for s, p in zip(specs, payload)}


# ---- MPI


def _poll(test: Callable[[], R | None], deadline: float, on_timeout: Callable[[], Exception],
          died: Callable[[], Exception | None] | None = None,
          past: collections.deque | None = None) -> R:
    """Call `test` until it returns non-None, or raise on_timeout() at `deadline`.

    Tries every ~0.05 ms for ~1 ms (short sleeps: a busy spin that yields the core costs a whole
    core meanwhile, and MPI ranks ~5% more CPU per epoch; bench/overhead.py --mpi), then sleeps
    between tries for a tenth of the time waited so far (20 us .. 1 ms), so a long wait costs
    almost no CPU and a reply is noticed at most ~10% late. `past` holds a
    channel's last waits (seconds; this wait is appended): when even the shortest of them was
    long (a client waiting while the server computes), the wait first sleeps through _QUIET of
    it and only then spins, so the answer is still caught within the spin but the CPU is not
    burnt.
    Every _LIVENESS_S it asks `died()` whether the peer waited on is gone and raises what it
    returns.
    """
    r = test()
    start = time.monotonic()
    if r is not None:
        if past is not None:
            past.append(0.0)
        return r
    quiet = _QUIET * min(past) if past is not None and len(past) == past.maxlen else 0.0
    quiet_until = start + (quiet if quiet > 2 * _SPIN_S else 0.0)
    spin_until = quiet_until + _SPIN_S
    next_check = start + _LIVENESS_S
    while True:
        r = test()
        now = time.monotonic()
        if r is not None:
            if past is not None:
                past.append(now - start)
            return r
        if now >= deadline:
            raise on_timeout()
        if died is not None and now >= next_check:
            next_check = now + _LIVENESS_S
            gone = died()
            if gone is not None:
                raise gone
        if now < quiet_until:
            nap = min(quiet_until, deadline, next_check if died is not None else deadline) - now
            time.sleep(max(nap, 0.0))
        elif now < spin_until:
            time.sleep(_NAP_S)
        else:
            time.sleep(min(max(_MIN_SLEEP, (now - start) / 10), _MAX_SLEEP, deadline - now))


class Proc(NamedTuple):
    """The process behind a rank, as it reported itself in the preflight."""
    pid: int
    host: str


def this_proc() -> Proc:
    return Proc(os.getpid(), socket.gethostname())


def process_gone(pid: int) -> bool:
    """True when no live process has this pid on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False   # no /proc (not Linux): the signal test above is all we have


class MPILink(Link):
    """Link over an mpi4py communicator (default COMM_WORLD): uppercase Isend/Irecv of raw bytes.

    `send` returns once MPI has taken every buffer (the receiver matched it, or MPI copied a
    small one), so the caller may modify its tensors afterwards; it waits at most `timeout`.
    """

    def __init__(self, comm: Any = None, *, timeout: float = 120.0,
                 max_bytes: int = 1 << 30, procs: Mapping[int, Proc] | None = None) -> None:
        from mpi4py import MPI  # lazy: importing slsec.wire.transport must not initialise MPI

        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), timeout, max_bytes)
        self._orphans: list[Any] = []   # requests/buffers abandoned by an error; kept alive for MPI
        self._given: collections.deque = collections.deque()   # (dest, tag, requests, buffers)
        self._waits: dict[tuple[int, int], collections.deque] = {}   # (source, tag): last waits
        # peers on this host whose process a wait can watch (from the preflight); a dead one is
        # named at once instead of after `timeout` (when mpiexec lets the survivors live)
        host = this_proc().host
        self._watch = {r: p.pid for r, p in (procs or {}).items()
                       if r != self.rank and p.host == host}

    def _died(self, *ranks: int) -> Callable[[], PeerError | None] | None:
        watched = [(r, self._watch[r]) for r in ranks if r in self._watch]
        if not watched:
            return None

        seen: dict[int, float] = {}   # rank -> when its process was first found gone

        def check() -> PeerError | None:
            for r, pid in watched:
                if r in seen or process_gone(pid):
                    seen.setdefault(r, time.monotonic())
                    if time.monotonic() - seen[r] >= _DEATH_GRACE_S:
                        return PeerError(f"rank {r} died: its process (pid {pid}) is gone "
                                         "(killed or crashed)")
            return None
        return check

    def send(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        self._check(dest, tag)
        self._send(dest, tensors, tag)

    def give(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        """Returns once MPI has the message, not once the receiver has taken it: the tensors
        (which nobody writes again) stay referenced here until then, and this rank goes on
        computing meanwhile instead of waiting for the receiver to match and copy them."""
        self._check(dest, tag)
        self._given.append(self._post(dest, tensors, tag))
        self._settle(_MAX_GIVEN)

    def flush(self) -> None:
        self._settle(0)

    def _send(self, dest: int, tensors: Mapping[str, Tensor], tag: int) -> None:
        """Post the message and wait until MPI has finished with its buffers (no tag check:
        the preflight uses its own tag)."""
        self._wait(self._post(dest, tensors, tag))

    def _post(self, dest: int, tensors: Mapping[str, Tensor], tag: int) -> tuple:
        MPI, comm = self._MPI, self.comm
        header, bufs = encode(tensors)
        reqs = [comm.Isend([header, MPI.BYTE], dest, tag)]
        reqs += [comm.Isend([b, MPI.BYTE], dest, tag) for b in bufs if b.nbytes]
        self._count_sent(dest, header, sum(b.nbytes for b in bufs))
        return dest, tag, reqs, header, bufs

    def _settle(self, keep: int) -> None:
        """Forget the given messages MPI has finished with; wait for the oldest while more than
        `keep` are still in flight."""
        while self._given and (len(self._given) > keep
                               or self._MPI.Request.Testall(self._given[0][2])):
            self._wait(self._given.popleft())

    def _wait(self, sent: tuple) -> None:
        dest, tag, reqs = sent[:3]
        MPI = self._MPI
        try:
            _poll(lambda: True if MPI.Request.Testall(reqs) else None,
                  time.monotonic() + self.timeout,
                  lambda: PeerError(f"rank {dest} did not take a message within "
                                    f"{_secs(self.timeout)} s (tag {tag})"), self._died(dest))
        except BaseException:
            self._orphans.append(sent)
            raise

    def recv(self, source: int, tag: int) -> dict[str, Tensor]:
        self._check(source, tag)
        return self._recv(source, tag)

    def _recv(self, source: int, tag: int) -> dict[str, Tensor]:
        deadline = time.monotonic() + self.timeout
        st = self._MPI.Status()
        msg = _poll(lambda: self.comm.Improbe(source, tag, st), deadline,
                    lambda: self._silent(source, tag), self._died(source),
                    self._waits.setdefault((source, tag), collections.deque(maxlen=_HISTORY)))
        return self._take(msg, st, source, tag, deadline)

    def recv_any(self, tag: int) -> tuple[int, dict[str, Tensor]]:
        self._check(None, tag)
        deadline = time.monotonic() + self.timeout
        st = self._MPI.Status()
        msg = _poll(lambda: self.comm.Improbe(self._MPI.ANY_SOURCE, tag, st), deadline,
                    lambda: self._none_sent(tag), self._died(*self._watch))
        source = st.Get_source()
        return source, self._take(msg, st, source, tag, deadline)

    def _take(self, msg: Any, st: Any, source: int, tag: int, deadline: float) -> dict[str, Tensor]:
        """Receive a matched header message, validate it, then receive its payload messages."""
        MPI = self._MPI
        died = self._died(source)
        n = st.Get_count(MPI.BYTE)
        if n > MAX_HEADER:
            self._drain(msg)
            raise WireError(f"malformed message from rank {source}: header is {n} bytes, "
                            f"over the {MAX_HEADER}-byte cap (tag {tag})")
        header = bytearray(n)
        req = msg.Irecv([header, MPI.BYTE])   # not Recv: a stalled sender must not hang us
        try:
            _poll(lambda: True if req.Test() else None, deadline,
                  lambda: PeerError(f"rank {source} did not finish sending a header within "
                                    f"{_secs(self.timeout)} s (tag {tag})"), died)
        except BaseException:
            self._orphans.append((req, header))
            raise
        specs = decode_header(header, max_bytes=self.max_bytes, peer=source)
        out: dict[str, Tensor] = {}
        reqs: list[Any] = []
        try:
            for spec in specs:
                if spec.nbytes == 0:
                    out[spec.name] = torch.empty(spec.shape, dtype=spec.dtype)
                    continue
                pst = MPI.Status()
                part = _poll(lambda: self.comm.Improbe(source, tag, pst), deadline,
                             lambda: PeerError(f"rank {source} sent a header but not the payload "
                                               f"of '{spec.name}' within {_secs(self.timeout)} s "
                                               f"(tag {tag})"), died)
                got = pst.Get_count(MPI.BYTE)
                if got != spec.nbytes:
                    self._drain(part)
                    raise WireError(f"malformed message from rank {source}: tensor '{spec.name}' "
                                    f"carries {got} bytes, its header declared {spec.nbytes} "
                                    f"(tag {tag})")
                flat = np.empty(spec.nbytes, np.uint8)   # numpy reuses freed heap pages;
                reqs.append(part.Irecv([flat, MPI.BYTE]))  # torch.empty faults fresh ones
                out[spec.name] = _tensor(spec, flat)
            if reqs:
                _poll(lambda: True if MPI.Request.Testall(reqs) else None, deadline,
                      lambda: PeerError(f"rank {source} did not finish sending a message within "
                                        f"{_secs(self.timeout)} s (tag {tag})"), died)
        except BaseException:
            self._orphans.append((reqs, out))
            raise
        self._count_recv(source, n, sum(s.nbytes for s in specs))
        return out

    def _drain(self, msg: Any) -> None:
        """Consume a matched message we refuse, into a 1-byte buffer (MPI reports truncation)."""
        sink = bytearray(1)
        try:
            req = msg.Irecv([sink, self._MPI.BYTE])
            end = time.monotonic() + min(self.timeout, 1.0)
            while not req.Test():
                if time.monotonic() > end:
                    self._orphans.append((req, sink))
                    return
                time.sleep(_MIN_SLEEP)
        except self._MPI.Exception:
            pass


def preflight(comm: Any, *, expected_world: int, timeout: float) -> dict[int, Proc]:
    """Check the world size, then every rank pings rank 0 and hears back within `timeout` s.

    Wrong size: UserError on every rank. A rank that never pings: rank 0 raises PeerError
    naming it after `timeout` s; the others give up on rank 0's answer after 2 x `timeout`.
    Each ping carries the rank's pid and host; rank 0's answer carries everyone's, which every
    rank returns (rank -> Proc) so that its links can name a peer whose process died.
    """
    _survive_peer_failure_signal()
    size = comm.Get_size()
    if size != expected_world:
        k = expected_world - 1
        raise UserError(f"mpiexec started {size} ranks but --clients {k} needs {k + 1} "
                        f"(run: mpiexec -n {k + 1} ...)")
    me = this_proc()
    if size == 1:
        return {0: me}
    link = MPILink(comm, timeout=timeout, max_bytes=MAX_HEADER)
    deadline = time.monotonic() + timeout
    if link.rank == 0:
        procs = {0: me}
        st = link._MPI.Status()

        def silent() -> PeerError:
            waiting = sorted(set(range(1, size)) - set(procs))
            who = ", ".join(map(str, waiting))
            return PeerError(f"rank{'s' if len(waiting) > 1 else ''} {who} did not answer the "
                             f"preflight ping within {_secs(timeout)} s")
        while len(procs) < size:
            msg = _poll(lambda: comm.Improbe(link._MPI.ANY_SOURCE, PREFLIGHT_TAG, st),
                        deadline, silent)
            source = st.Get_source()
            procs[source] = _read_procs(link._take(msg, st, source, PREFLIGHT_TAG, deadline),
                                        source, 1)[0]
        answer = _json_tensor([procs[r] for r in range(size)])
        for r in range(1, size):
            link._send(r, {"procs": answer}, PREFLIGHT_TAG)
        return procs
    # rank 0 answers only once everyone pinged: give it the timeout again to report first
    link._send(0, {"procs": _json_tensor([me])}, PREFLIGHT_TAG)
    st = link._MPI.Status()
    msg = _poll(lambda: comm.Improbe(0, PREFLIGHT_TAG, st), deadline + timeout,
                lambda: PeerError(f"rank 0 did not answer the preflight ping within "
                                  f"{_secs(timeout)} s"))
    return dict(enumerate(_read_procs(link._take(msg, st, 0, PREFLIGHT_TAG, deadline), 0, size)))


def _survive_peer_failure_signal() -> None:
    """Under `mpiexec -disable-auto-cleanup`, hydra tells the survivors of a dead rank with
    SIGUSR1, whose default action ends the process: then nobody is left to name the dead rank.
    Ignore it (the links' liveness checks notice the death within _LIVENESS_S)."""
    if (hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _json_tensor(procs: list[Proc]) -> Tensor:
    return torch.frombuffer(bytearray(json.dumps([list(p) for p in procs]).encode()),
                            dtype=torch.uint8)


def _read_procs(message: dict[str, Tensor], source: int, count: int) -> list[Proc]:
    """The [[pid, host], ...] list a preflight message carries; WireError if it is not one."""
    try:
        data = json.loads(bytes(message["procs"].numpy()).decode())
    except (KeyError, ValueError) as e:   # UnicodeDecodeError and JSONDecodeError included
        raise WireError(f"malformed preflight message from rank {source}: {e}") from None
    if not (isinstance(data, list) and len(data) == count
            and all(isinstance(e, list) and len(e) == 2 and type(e[0]) is int
                    and isinstance(e[1], str) for e in data)):
        raise WireError(f"malformed preflight message from rank {source}: expected {count} "
                        "[pid, host] pairs")
    return [Proc(pid, host) for pid, host in data]


def bcast_json(comm: Any, obj: Any = None, root: int = 0) -> Any:
    """Broadcast a JSON-able value from `root` with uppercase Bcast of raw bytes (no pickle):
    first the length, then the UTF-8 bytes. Every rank returns the decoded value."""
    from mpi4py import MPI
    size = np.zeros(1, dtype=np.int64)
    data = b""
    if comm.Get_rank() == root:
        data = json.dumps(obj).encode()
        size[0] = len(data)
    comm.Bcast([size, MPI.INT64_T], root=root)
    buf = np.frombuffer(bytearray(data), dtype=np.uint8) if data else np.zeros(int(size[0]), np.uint8)
    comm.Bcast([buf, MPI.UINT8_T], root=root)
    return json.loads(buf.tobytes().decode())
