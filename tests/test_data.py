"""Data layer: embedded sets, on-disk loaders (small generated fixtures), corrupt files,
client partitioners."""
from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import slsec
import slsec.data as sd
from slsec.data import (DATASETS, PARTITIONS, Split, dirichlet, iid, label_entropy, load_dataset,
                        partition)
from slsec.errors import DataError, UserError

# ------------------------------------------------------------------ helpers

_OPENED: list | None = None  # file opens recorded while a test sets it to a list


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0], "utf-8") if isinstance(args[0], bytes) else str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def only_package_files(tmp_path, monkeypatch):
    """Run from an empty folder with HOME elsewhere; afterwards every file opened must lie in
    the slsec package or the Python installation (so ../shared was never read)."""
    global _OPENED
    import torch_geometric.data  # noqa: F401  (import cost is not what we check)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    _OPENED = []
    yield
    opened, _OPENED = _OPENED, None
    allowed = [Path(slsec.__file__).resolve().parent, Path(sys.prefix).resolve(),
               Path(sys.base_prefix).resolve(), Path("/dev"), Path("/proc"), Path("/sys")]
    outside = [p for p in opened
               if not any(Path(p).resolve().is_relative_to(a) for a in allowed)]
    assert not outside, f"read outside the package: {outside}"
    assert any("_data" in p for p in opened)


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg


def write_idx(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (0x0800 + arr.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str, n_train: int = 30, n_test: int = 12):
    rng = np.random.default_rng(1)
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / folder / "raw" / f"{stem}-images-idx3-ubyte", x)
        write_idx(root / folder / "raw" / f"{stem}-labels-idx1-ubyte", y)
        arrays[stem] = (x, y)
    return arrays


# ------------------------------------------------------------------ embedded sets

def test_embedded_mnist_loads_without_shared(only_package_files):
    d = load_dataset("mnist")
    assert (d.name, d.kind, d.default_model, d.num_classes) == ("mnist", "image", "cnn", 10)
    assert d.input_shape == (1, 28, 28) and d.num_features is None
    assert d.train.inputs.shape == (4000, 1, 28, 28) and d.test.inputs.shape == (1000, 1, 28, 28)
    assert d.train.inputs.dtype == torch.float32 and d.train.y.dtype == torch.long
    assert 0.0 <= float(d.train.inputs.min()) and float(d.train.inputs.max()) == 1.0
    assert d.train.y.bincount().tolist() == [400] * 10
    assert d.test.y.bincount().tolist() == [100] * 10


def test_embedded_mnist_matches_shared_raw(shared_data):
    from torchvision.datasets import MNIST
    ref = MNIST(shared_data, train=False)
    d = load_dataset("mnist")
    assert torch.equal((d.test.inputs[:, 0] * 255).round().to(torch.uint8), ref.data)
    assert torch.equal(d.test.y, ref.targets)


def test_embedded_mutag_loads_without_shared(only_package_files):
    d = load_dataset("mutag")
    assert (d.kind, d.default_model, d.num_classes, d.num_features) == ("graph", "gin", 2, 7)
    assert d.input_shape is None
    assert (len(d.train), len(d.test)) == (150, 38)
    # stratified 80/20 of 63/125
    assert d.train.y.bincount().tolist() == [50, 100] and d.test.y.bincount().tolist() == [13, 25]
    g = d.train.inputs[0]
    assert g.x.shape[1] == 7 and bool((g.x.sum(1) == 1).all())  # one-hot node labels
    feats, y = d.train.batch([0, 5, 7])
    assert set(feats) == {"x", "edge_index", "batch"} and feats["x"].dtype == torch.float32
    assert feats["edge_index"].dtype == torch.long and feats["batch"].dtype == torch.long
    assert feats["batch"].max().item() == 2 and y.tolist() == d.train.y[[0, 5, 7]].tolist()
    assert feats["x"].shape[0] == sum(d.train.inputs[i].num_nodes for i in (0, 5, 7))


def test_mutag_split_is_fixed():
    a, b = load_dataset("mutag"), load_dataset("mutag")
    assert torch.equal(a.test.y, b.test.y)
    assert all(torch.equal(g.edge_index, h.edge_index) for g, h in zip(a.test.inputs, b.test.inputs))


def test_mutag_matches_pyg_tudataset(shared_data, tmp_path):
    import shutil
    from torch_geometric.datasets import TUDataset
    from slsec.data import read_tu_graphs
    shutil.copytree(shared_data / "TUDataset" / "MUTAG" / "raw", tmp_path / "MUTAG" / "raw")
    ref = TUDataset(str(tmp_path), "MUTAG")
    graphs, y = read_tu_graphs(sd.EMBEDDED_DIR / "MUTAG" / "raw", "MUTAG")
    assert len(graphs) == len(ref) == 188
    for g, r in zip(graphs, ref):
        assert torch.equal(g.x, r.x) and torch.equal(g.edge_index, r.edge_index)
        assert g.y.item() == r.y.item()


def test_split_subset_and_batch_images():
    s = Split(torch.arange(5 * 4, dtype=torch.float32).reshape(5, 1, 2, 2) / 20, torch.arange(5))
    assert len(s) == 5
    sub = s.subset(np.array([4, 1]))
    assert sub.y.tolist() == [4, 1] and torch.equal(sub.inputs[0], s.inputs[4])
    feats, y = s.batch(torch.tensor([2, 3]))
    assert set(feats) == {"x"} and torch.equal(feats["x"], s.inputs[2:4]) and y.tolist() == [2, 3]
    assert s.subset(slice(1, 3)).y.tolist() == [1, 2]
    with pytest.raises(UserError):
        s.batch([7])


def test_unknown_dataset_lists_names():
    with pytest.raises(UserError) as err:
        load_dataset("imagenet")
    assert all(n in str(err.value) for n in ("mnist", "mutag", "cifar10", "proteins"))
    assert {"mnist", "mutag", "proteins", "mnist-full", "fashion-mnist", "cifar10"} <= set(
        DATASETS.names())


# ------------------------------------------------------------------ on-disk loaders

@pytest.mark.parametrize("name,folder", [("mnist-full", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_loaders_from_fixture(tmp_path, name, folder):
    arrays = make_mnist_like(tmp_path, folder)
    d = load_dataset(name, data_root=tmp_path)
    assert (d.kind, d.default_model, d.input_shape, d.num_classes) == ("image", "cnn", (1, 28, 28), 10)
    assert d.train.inputs.shape == (30, 1, 28, 28) and d.test.inputs.shape == (12, 1, 28, 28)
    assert d.train.inputs.dtype == torch.float32
    x, y = arrays["train"]
    assert torch.allclose(d.train.inputs[:, 0], torch.from_numpy(x).float() / 255)
    assert d.train.y.tolist() == y.tolist()


def _write_cifar(root: Path, n: int = 4) -> dict[str, str]:
    """Fixture in CIFAR-10's real python format (pickled dicts, the official layout); returns
    the md5 of each file for the test's stand-in of torchvision's official md5 list."""
    from torchvision.datasets import CIFAR10
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list]
    for k, fname in enumerate(names):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [(k + i) % 10 for i in range(n)]}
        (folder / fname).write_bytes(pickle.dumps(entry))  # test fixture only: CIFAR's own format
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}


@pytest.fixture
def cifar_fixture(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10
    md5 = _write_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5[f]] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5[f]] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path


def test_cifar10_from_fixture(cifar_fixture):
    d = load_dataset("cifar10", data_root=cifar_fixture)
    assert (d.default_model, d.input_shape, d.num_classes) == ("resnet18", (3, 32, 32), 10)
    assert d.train.inputs.shape == (20, 3, 32, 32) and d.test.inputs.shape == (4, 3, 32, 32)
    raw = pickle.loads((cifar_fixture / "cifar-10-batches-py" / "test_batch").read_bytes())
    first = torch.from_numpy(raw["data"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(d.test.inputs[0], first) and d.test.y.tolist() == raw["labels"]


def test_cifar10_refuses_file_failing_md5(cifar_fixture):
    bad = cifar_fixture / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_root=cifar_fixture)
    one_line_naming(err, bad)


def test_proteins_from_shared(shared_data):
    d = load_dataset("proteins", data_root=shared_data / "TUDataset")
    assert (d.kind, d.num_classes, d.num_features, d.default_model) == ("graph", 2, 3, "gin")
    assert len(d.train) + len(d.test) == 1113 and len(d.test) == 223
    assert (d.train.y.bincount() + d.test.y.bincount()).tolist() == [663, 450]
    # tu:<NAME> takes the same files; a root holding TUDataset/<NAME>/raw also works
    assert len(load_dataset("tu:PROTEINS", data_root=shared_data).test) == 223


@pytest.mark.parametrize("name", ["proteins", "tu:ENZYMES", "mnist-full", "fashion-mnist", "cifar10"])
def test_missing_data_root_says_what_to_pass(tmp_path, monkeypatch, name):
    import slsec.data.fashion as fm
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-debian-package")
    # fashion-mnist without --data-root is the embedded subset (tests/test_fashion_cifar.py)
    for root in ((None,) if name != "fashion-mnist" else ()) + (tmp_path / "nowhere", tmp_path):
        with pytest.raises(DataError) as err:
            load_dataset(name, data_root=root)
        msg = str(err.value)
        assert "\n" not in msg and "--data-root" in msg and "--download" in msg, msg


# ------------------------------------------------------------------ corrupt files

def test_corrupt_embedded_npz(tmp_path, monkeypatch):
    monkeypatch.setattr(sd, "EMBEDDED_DIR", tmp_path)
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    one_line_naming(err, path)
    np.savez_compressed(path, x_train=np.zeros((2, 28, 28), np.uint8))  # keys missing
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    one_line_naming(err, path)
    good = Path(slsec.__file__).parent / "_data" / "mnist.npz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    one_line_naming(err, path)


@pytest.mark.parametrize("damage", ["magic", "truncated", "extra"])
def test_corrupt_idx_file(tmp_path, damage):
    make_mnist_like(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / ("train-images-idx3-ubyte" if damage != "extra"
                                         else "t10k-labels-idx1-ubyte")
    data = path.read_bytes()
    data = {"magic": b"\x00\x00\x09\x03" + data[4:], "truncated": data[:-100],
            "extra": data + b"\x00"}[damage]
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        load_dataset("mnist-full", data_root=tmp_path)
    one_line_naming(err, path)


def test_corrupt_tu_file(tmp_path, monkeypatch):
    import shutil
    shutil.copytree(sd.EMBEDDED_DIR / "MUTAG", tmp_path / "MUTAG")
    monkeypatch.setattr(sd, "EMBEDDED_DIR", tmp_path)
    path = tmp_path / "MUTAG" / "raw" / "MUTAG_A.txt"
    path.write_text("1, 2\n2, x\n")
    with pytest.raises(DataError) as err:
        load_dataset("mutag")
    one_line_naming(err, path)
    path.write_text("1, 2\n2, 99999\n")  # node out of range
    with pytest.raises(DataError) as err:
        load_dataset("mutag")
    one_line_naming(err, path)
    gl = tmp_path / "MUTAG" / "raw" / "MUTAG_graph_indicator.txt"
    shutil.copy(Path(slsec.__file__).parent / "_data" / "MUTAG" / "raw" / "MUTAG_A.txt", path)
    gl.write_text("\n".join(gl.read_text().splitlines()[:-40]) + "\n")  # truncated
    with pytest.raises(DataError) as err:
        load_dataset("mutag")
    assert "\n" not in str(err.value) and "MUTAG" in str(err.value)


# ------------------------------------------------------------------ partitions

@pytest.fixture(scope="module")
def mnist_labels() -> np.ndarray:
    return load_dataset("mnist").train.y.numpy()


@pytest.mark.parametrize("name", ["iid", "dirichlet"])
@pytest.mark.parametrize("n_clients", [1, 3, 10])
def test_partition_disjoint_covering_deterministic(mnist_labels, name, n_clients):
    shards = partition(name, mnist_labels, n_clients, seed=7)
    assert len(shards) == n_clients
    flat = np.concatenate(shards)
    assert len(flat) == len(mnist_labels) and len(np.unique(flat)) == len(flat)  # disjoint, covering
    assert all(s.dtype.kind == "i" for s in shards)
    again = partition(name, torch.as_tensor(mnist_labels), n_clients, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))
    if n_clients > 1:
        other = partition(name, mnist_labels, n_clients, seed=8)
        assert not all(np.array_equal(a, b) for a, b in zip(shards, other))


def test_iid_is_even(mnist_labels):
    assert sorted(len(s) for s in iid(mnist_labels, 3, seed=0)) == [1333, 1333, 1334]


def test_dirichlet_min_size_and_alpha_is_used(mnist_labels):
    shards = dirichlet(mnist_labels, 10, seed=0, alpha=0.5, min_size=50)
    assert min(len(s) for s in shards) >= 50
    a = dirichlet(mnist_labels, 10, seed=0, alpha=0.5)
    b = partition("dirichlet", mnist_labels, 10, seed=0, alpha=100.0)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


def test_dirichlet_is_label_skewed(mnist_labels):
    """Dir(0.5) over 10 clients: mean client label entropy >= 25% below IID's."""
    h_iid = label_entropy(mnist_labels, iid(mnist_labels, 10, seed=0), 10)
    h_dir = label_entropy(mnist_labels, dirichlet(mnist_labels, 10, seed=0, alpha=0.5), 10)
    print(f"\nmean per-client label entropy (nats), 10 clients, embedded MNIST: "
          f"iid {h_iid:.4f}, dirichlet(alpha=0.5) {h_dir:.4f} ({1 - h_dir / h_iid:.1%} lower)")
    assert h_dir <= 0.75 * h_iid


def test_label_entropy_values():
    y = np.array([0, 0, 1, 1])
    assert label_entropy(y, [np.array([0, 1]), np.array([2, 3])], 2) == 0.0
    assert label_entropy(y, [np.array([0, 2]), np.array([1, 3])], 2) == pytest.approx(np.log(2))


@pytest.mark.parametrize("call", [
    lambda y: iid(y, 0, 0),
    lambda y: iid(y, 101, 0),
    lambda y: dirichlet(y, 0, 0),
    lambda y: dirichlet(y, 5, 0, alpha=0.0),
    lambda y: dirichlet(y, 5, 0, alpha=-1.0),
    lambda y: dirichlet(y, 11, 0, min_size=10),  # 11 * 10 > 100
    lambda y: partition("powerlaw", y, 2, 0),
])
def test_partition_validation(call):
    with pytest.raises(UserError) as err:
        call(np.arange(100) % 10)
    assert "\n" not in str(err.value)


def test_dirichlet_gives_up_with_user_error():
    y = np.arange(100) % 2
    with pytest.raises(UserError) as err:
        dirichlet(y, 5, seed=0, alpha=0.05, min_size=20)  # needs an exactly even split
    assert "1000 tries" in str(err.value)


def test_partitions_registry():
    assert {"iid", "dirichlet"} <= set(PARTITIONS.names())
