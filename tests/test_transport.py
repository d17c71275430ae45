"""LocalHub/LocalLink: round trips, byte counts, timeouts, recv_any, no aliasing, encode checks."""
from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest
import torch

from slsec.errors import PeerError
from slsec.wire.transport import (MAX_NAME, PREFLIGHT_TAG, LocalHub, TensorSpec, WireError,
                             decode_header, encode)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int64, torch.int32, torch.uint8, torch.bool]
SHAPES = [(), (0,), (1,), (7,), (3, 0, 2), (4, 5), (2, 3, 4), (1, 2, 1, 3, 1, 2, 1, 2)]


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 100
    return (x > 0) if dtype == torch.bool else x.to(dtype)


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


def pair(timeout: float = 5.0):
    hub = LocalHub(2, timeout=timeout)
    return hub.link(0), hub.link(1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_roundtrip_every_shape_of_each_dtype(dtype):
    a, b = pair()
    sent = {f"s{i}": sample(dtype, s, i) for i, s in enumerate(SHAPES)}
    a.send(1, sent, 3)
    got = b.recv(0, 3)
    assert list(got) == list(sent)
    for k in sent:
        assert_same(got[k], sent[k])


def test_roundtrip_mixed_message_and_special_values():
    a, b = pair()
    f = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45])
    sent = {"f32": f, "f16": f.half(), "bf16": f.bfloat16(), "f64": f.double(),
            "i64": torch.tensor([-(2 ** 63), 2 ** 63 - 1]), "empty": torch.empty(0, 3, 0),
            "scalar": torch.tensor(7, dtype=torch.int32), "ünïcode-näme": torch.ones(2)}
    a.send(1, sent, 0)
    got = b.recv(0, 0)
    for k, v in sent.items():   # bitwise: NaN != NaN under torch.equal
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert torch.equal(got[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))


def test_non_contiguous_and_grad_tensors_are_sent_as_their_values():
    a, b = pair()
    w = torch.randn(4, 6, requires_grad=True)
    sent = {"t": w.t(), "slice": torch.arange(20)[::3], "grad": w * 2}
    a.send(1, sent, 1)
    got = b.recv(0, 1)
    for k, v in sent.items():
        assert_same(got[k], v.detach())
        assert got[k].is_contiguous() and not got[k].requires_grad


def test_bytes_counted_are_header_plus_payload():
    a, b = pair()
    msg = {"x": torch.randn(3, 5), "y": torch.arange(4), "e": torch.empty(0)}
    header, bufs = encode(msg)
    payload = sum(buf.nbytes for buf in bufs)
    assert payload == 3 * 5 * 4 + 4 * 8
    for _ in range(2):
        a.send(1, msg, 2)
        b.recv(0, 2)
    assert a.bytes_sent == {1: 2 * (len(header) + payload)}
    assert b.bytes_recv == {0: 2 * (len(header) + payload)}
    assert a.payload_sent == {1: 2 * payload} and b.payload_recv == {0: 2 * payload}
    assert not a.bytes_recv and not b.bytes_sent


def test_framing_overhead_of_smashed_batch_is_under_one_percent():
    a, b = pair()
    smashed = torch.randn(64, 32, 14, 14)
    a.send(1, {"smashed": smashed}, 2)
    b.recv(0, 2)
    ratio = a.bytes_sent[1] / a.payload_sent[1]
    print(f"wire/payload for 64x32x14x14 float32: {ratio:.6f} "
          f"({a.bytes_sent[1] - a.payload_sent[1]} header bytes)")
    assert a.payload_sent[1] == smashed.numel() * 4
    assert ratio <= 1.01


def test_recv_timeout_names_the_silent_rank_quickly():
    hub = LocalHub(3, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(PeerError, match=r"^rank 2 sent nothing for 0\.2 s \(tag 5\)$"):
        hub.link(0).recv(2, 5)
    assert 0.2 <= time.monotonic() - t0 < 1.5


def test_recv_any_timeout_names_the_peers():
    hub = LocalHub(3, timeout=0.2)
    with pytest.raises(PeerError, match=r"none of ranks 1, 2 sent anything for 0\.2 s"):
        hub.link(0).recv_any(4)


def test_recv_any_returns_the_sender():
    hub = LocalHub(3, timeout=5)
    server, c1, c2 = (hub.link(r) for r in range(3))
    c2.send(0, {"who": torch.tensor(2)}, 1)
    c1.send(0, {"who": torch.tensor(1)}, 9)   # other tag: not matched
    src, msg = server.recv_any(1)
    assert src == 2 and int(msg["who"]) == 2
    c1.send(0, {"who": torch.tensor(1)}, 1)
    src, msg = server.recv_any(1)
    assert src == 1 and int(msg["who"]) == 1
    assert server.recv(1, 9)["who"] == 1


def test_recv_any_collects_concurrent_senders_in_threads():
    hub = LocalHub(4, timeout=5)
    server = hub.link(0)

    def client(r: int) -> None:
        time.sleep(0.01 * (4 - r))
        hub.link(r).send(0, {"who": torch.full((3,), r)}, 1)

    threads = [threading.Thread(target=client, args=(r,)) for r in (1, 2, 3)]
    for t in threads:
        t.start()
    got = dict(server.recv_any(1) for _ in range(3))
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3]
    assert all(torch.equal(m["who"], torch.full((3,), r)) for r, m in got.items())


def test_recv_matches_source_and_tag_in_order():
    hub = LocalHub(3, timeout=0.2)
    server, c1, c2 = (hub.link(r) for r in range(3))
    for i in range(3):
        c1.send(0, {"i": torch.tensor(i)}, 1)
    c2.send(0, {"i": torch.tensor(10)}, 1)
    assert [int(server.recv(1, 1)["i"]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(PeerError, match="rank 1 sent nothing"):
        server.recv(1, 1)
    assert int(server.recv(2, 1)["i"]) == 10


def test_received_tensors_do_not_alias_sent_ones():
    a, b = pair()
    x = torch.zeros(1000)
    a.send(1, {"x": x}, 1)
    x += 1                                     # sender reuses its buffer after send
    got = b.recv(0, 1)["x"]
    assert torch.equal(got, torch.zeros(1000))
    got[0] = 5                                  # received tensors are writable and private
    assert x[0] == 1
    assert got.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    a.send(1, {"x": x, "y": x}, 1)             # one tensor under two names -> two copies
    two = b.recv(0, 1)
    two["x"].zero_()
    assert torch.equal(two["y"], x)


def test_role_programs_ping_pong_in_threads():
    hub = LocalHub(2, timeout=5)
    errors: list[BaseException] = []

    def server() -> None:
        try:
            link = hub.link(0)
            for _ in range(20):
                m = link.recv(1, 2)
                link.send(1, {"g": m["h"] * 2}, 3)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=server)
    t.start()
    client = hub.link(1)
    for i in range(20):
        client.send(0, {"h": torch.full((4,), float(i))}, 2)
        assert torch.equal(client.recv(0, 3)["g"], torch.full((4,), 2.0 * i))
    t.join()
    assert not errors


def test_decode_header_of_encode_gives_the_specs():
    header, bufs = encode({"a": torch.zeros(2, 3, dtype=torch.float16), "b": torch.tensor(True)})
    assert decode_header(header, max_bytes=100) == [
        TensorSpec("a", torch.float16, (2, 3), 12), TensorSpec("b", torch.bool, (), 1)]
    assert [b.nbytes for b in bufs] == [12, 1]
    assert decode_header(memoryview(header), max_bytes=100)[0].name == "a"


@pytest.mark.parametrize("msg, err", [
    ({"z": torch.zeros(2, dtype=torch.complex64)}, ValueError),
    ({"x" * (MAX_NAME + 1): torch.zeros(1)}, ValueError),
    ({"": torch.zeros(1)}, ValueError),
    ({"x": torch.zeros([1] * 9)}, ValueError),
    ({1: torch.zeros(1)}, TypeError),
    ({"x": [1.0]}, TypeError),
])
def test_encode_refuses_what_the_wire_cannot_carry(msg, err):
    with pytest.raises(err):
        encode(msg)


def test_bad_peer_and_tag_are_refused():
    a, _ = pair()
    with pytest.raises(ValueError):
        a.send(0, {}, 1)                      # to itself
    with pytest.raises(ValueError):
        a.send(5, {}, 1)
    with pytest.raises(ValueError):
        a.recv(1, PREFLIGHT_TAG)              # reserved
    with pytest.raises(ValueError):
        a.recv_any(-1)


def test_local_payload_that_disagrees_with_header_is_a_wire_error():
    hub = LocalHub(2, timeout=1)
    header, bufs = encode({"x": torch.zeros(4)})
    hub._boxes[0].put((1, 1, header, [bufs[0][:12].copy()]))
    with pytest.raises(WireError, match="rank 1"):
        hub.link(0).recv(1, 1)


def test_wire_error_is_a_peer_error():
    assert issubclass(WireError, PeerError)


def test_transport_imports_mpi4py_only_inside_functions():
    """`import slsec.wire.transport` must work without MPI: no module-level mpi4py import."""
    import slsec.wire.transport as transport

    tree = ast.parse(Path(transport.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top
                                                      if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("mpi4py")]


DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_tensors_on_an_accelerator_stay_there_with_the_same_byte_count(device):
    """LocalLink hands a tensor on an accelerator over where it is (one process shares it): no
    copy to the host and back. The header and byte counts are those of the same CPU tensor.
    The meta device stands in for a GPU where there is none."""
    cpu = {"x": sample(torch.float32, (3, 4)), "y": sample(torch.int64, (5,), seed=1)}
    counts = []
    for msg in (cpu, {k: v.to(device) for k, v in cpu.items()}):
        a, b = pair()
        a.send(1, msg, 1)
        a.give(1, msg, 2)
        for tag in (1, 2):
            got = b.recv(0, tag)
            for k, v in msg.items():
                assert (got[k].device, got[k].dtype, got[k].shape) == (v.device, v.dtype, v.shape)
        counts.append((dict(a.bytes_sent), dict(b.bytes_recv)))
    assert counts[0] == counts[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_tensors_sent_are_copied_and_given_are_shared():
    a, b = pair()
    x = torch.randn(3, 4, device="cuda")
    x0 = x.clone()
    a.send(1, {"x": x}, 1)
    a.give(1, {"x": x}, 2)
    sent, given = b.recv(0, 1)["x"], b.recv(0, 2)["x"]
    x += 1
    assert sent.device == given.device == x.device
    assert torch.equal(sent, x0) and torch.equal(given, x)
