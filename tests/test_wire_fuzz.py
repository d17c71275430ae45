"""decode_header on random and mutated headers: WireError or valid specs, never anything else."""
from __future__ import annotations

import math
import random
import struct
import time
import tracemalloc

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slsec.wire.transport import MAX_HEADER, TensorSpec, WireError, decode_header, encode

FIXED = struct.Struct("<4sHHQ")
ITEMSIZE = {torch.float32: 4, torch.float64: 8, torch.float16: 2, torch.bfloat16: 2,
            torch.int64: 8, torch.int32: 4, torch.uint8: 1, torch.bool: 1}
DTYPES = list(ITEMSIZE)
INTERESTING_U64 = [0, 1, 2, 255, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 60, 2 ** 62,
                   2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
MB = 1 << 20


def entry(name: bytes, code: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    return (bytes((len(name),)) + name + bytes((code, len(shape)))
            + struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<Q", nbytes))


def header(*entries: bytes, total: int, magic: bytes = b"SLSC", version: int = 1,
           count: int | None = None) -> bytes:
    n = len(entries) if count is None else count
    return FIXED.pack(magic, version, n, total) + b"".join(entries)


def random_message(rng: random.Random) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(rng.randint(0, 4)):
        shape = tuple(rng.randint(0, 3) for _ in range(rng.randint(0, 4)))
        out[f"t{i}" + "x" * rng.randint(0, 20)] = torch.zeros(shape, dtype=rng.choice(DTYPES))
    return out


def mutate(rng: random.Random, buf: bytes) -> bytes:
    b = bytearray(buf)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op == 0 and b:                                   # flip a byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:                                 # set a byte to an edge value
            b[rng.randrange(len(b))] = rng.choice([0, 1, 8, 9, 64, 65, 127, 128, 255])
        elif op == 2 and len(b) >= 8:                       # overwrite a u64 field
            i = rng.randrange(len(b) - 7)
            b[i:i + 8] = struct.pack("<Q", rng.choice(INTERESTING_U64 + [rng.getrandbits(64)]))
        elif op == 3:                                       # truncate
            del b[rng.randrange(len(b) + 1):]
        elif op == 4:                                       # append junk
            b += rng.randbytes(rng.randint(1, 16))
        elif op == 5 and len(b) > 16:                       # delete a slice
            i = rng.randrange(16, len(b))
            del b[i:i + rng.randint(1, 8)]
    return bytes(b)


def check_outcome(buf: bytes, max_bytes: int) -> bool:
    """Decode; True if accepted (then the specs must be self-consistent), False on WireError."""
    try:
        specs = decode_header(buf, max_bytes=max_bytes)
    except WireError as e:
        assert str(e).startswith("malformed message from")
        return False
    assert all(isinstance(s, TensorSpec) for s in specs)
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert s.nbytes == math.prod(s.shape) * ITEMSIZE[s.dtype] and len(s.shape) <= 8
    assert sum(s.nbytes for s in specs) <= max_bytes
    return True


def test_ten_thousand_random_and_mutated_headers_only_raise_wire_error():
    rng = random.Random(20240607)
    outcomes = {True: 0, False: 0}
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        for i in range(12_000):
            kind = i % 4
            if kind == 0:                                     # pure noise
                buf = rng.randbytes(rng.randint(0, 200))
            elif kind == 1:                                   # noise behind a plausible prefix
                buf = FIXED.pack(b"SLSC", 1, rng.randint(0, 5), rng.choice(INTERESTING_U64)) \
                    + rng.randbytes(rng.randint(0, 150))
            else:                                             # mutated real headers
                buf = mutate(rng, encode(random_message(rng))[0])
            outcomes[check_outcome(buf, rng.choice([0, 64, MB, 1 << 30]))] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 120
    assert peak < 4 * MB, f"decoding allocated {peak} bytes at peak"
    assert outcomes[False] > 5_000 and outcomes[True] > 100, outcomes


@settings(max_examples=1500, deadline=None, database=None)
@given(st.binary(max_size=400))
def test_hypothesis_arbitrary_bytes(buf):
    check_outcome(buf, MB)


@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 32), st.integers(0, 2 ** 32))
def test_hypothesis_mutated_real_headers(msg_seed, mut_seed):
    buf = encode(random_message(random.Random(msg_seed)))[0]
    check_outcome(mutate(random.Random(mut_seed), buf), MB)


def test_valid_headers_roundtrip():
    rng = random.Random(1)
    for _ in range(200):
        msg = random_message(rng)
        specs = decode_header(encode(msg)[0], max_bytes=MB)
        assert [(s.name, s.dtype, s.shape) for s in specs] == \
            [(k, v.dtype, tuple(v.shape)) for k, v in msg.items()]


OK = entry(b"x", 1, (4,), 16)


@pytest.mark.parametrize("buf, match", [
    (header(OK, total=16, magic=b"EVIL"), "bad magic"),
    (header(OK, total=16, version=2), "wire version 2"),
    (header(OK, total=16, version=0), "wire version 0"),
    (header(entry(b"x", 0, (4,), 16), total=16), "unknown dtype code 0"),
    (header(entry(b"x", 9, (4,), 16), total=16), "unknown dtype code 9"),
    (header(entry(b"x", 255, (4,), 16), total=16), "unknown dtype code 255"),
    (header(entry(b"x", 1, (2 ** 64 - 1,), 2 ** 64 - 4), total=0), "negative dimension"),
    (header(entry(b"x", 1, (2 ** 63, 0), 0), total=0), "negative dimension"),
    (header(entry(b"x", 1, (2 ** 32, 2 ** 32), 0), total=0), "over the|overflows"),
    (header(entry(b"x", 1, (2 ** 40, 0), 0), total=0), "overflows"),
    (header(entry(b"x", 1, (2 ** 16,) * 8, 2 ** 66 % 2 ** 64), total=0), "over the"),
    (header(entry(b"x", 1, (4,), 12), total=12), "declares 12 bytes but"),
    (header(entry(b"x", 1, (4,), 16), total=20), "add up to 16 bytes, the header declares 20"),
    (header(entry(b"x", 1, (4,), 16), entry(b"y", 1, (4,), 16), total=16), "exceed the declared"),
    (header(OK, total=16) + b"\0", "stray bytes"),
    (header(OK, total=16)[:-1], "header ends inside"),
    (header(OK, total=16, count=2), "header ends inside"),
    (header(total=0)[:10], "shorter than the fixed"),
    (b"", "shorter than the fixed"),
    (header(entry(b"x" * 65, 1, (4,), 16), total=16), "name length 65"),
    (header(entry(b"", 1, (4,), 16), total=16), "name length 0"),
    (header(entry(b"\xff\xfe", 1, (4,), 16), total=16), "not valid utf-8"),
    (header(OK, OK, total=32), "appears twice"),
    (header(entry(b"x", 1, (1,) * 9, 4), total=4), "9 dimensions"),
    (header(entry(b"x", 1, (2 ** 20,), 2 ** 22), total=2 ** 22), "over the 1048576-byte limit"),
    (b"SLSC" + bytes(MAX_HEADER), "over the 65536-byte cap"),
])
def test_specific_malformed_headers(buf, match):
    with pytest.raises(WireError, match=match):
        decode_header(buf, max_bytes=MB)


def test_header_claiming_2_pow_60_bytes_is_refused_before_allocating():
    buf = header(entry(b"x", 7, (2 ** 60,), 2 ** 60), total=2 ** 60)
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match="declares 1152921504606846976 payload bytes"):
            decode_header(buf, max_bytes=1 << 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_max_bytes_is_configurable():
    buf = header(entry(b"x", 1, (256,), 1024), total=1024)
    assert decode_header(buf, max_bytes=1024)[0].nbytes == 1024
    with pytest.raises(WireError, match="over the 1023-byte limit"):
        decode_header(buf, max_bytes=1023)


def test_error_names_the_peer():
    with pytest.raises(WireError, match="^malformed message from rank 3: bad magic"):
        decode_header(header(OK, total=16, magic=b"XXXX"), max_bytes=MB, peer=3)
