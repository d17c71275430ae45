"""Fashion-MNIST's four places (embedded subset, --data-root, Debian's folder, --download) and
CIFAR-10's binary batches (no pickle): loaders, the one-line errors, --max-train into the
full set."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import slsec.data.fashion as fm
from slsec.cli import main
from slsec.data import load_dataset
from slsec.data.cifar import RECORD
from slsec.errors import DataError
from test_data import make_mnist_like, one_line_naming, only_package_files  # noqa: F401


@pytest.fixture
def no_system_dir(tmp_path, monkeypatch):
    """Debian's folder absent (whatever this machine has installed)."""
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-debian-package")


def gzip_folder(src: Path, dst: Path) -> None:
    """Debian's layout: the four idx files gzipped, in one folder."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))


def test_embedded_fashion_runs_offline(only_package_files, no_system_dir):  # noqa: F811
    d = load_dataset("fashion-mnist")
    assert (d.name, d.default_model, d.input_shape, d.num_classes) == ("fashion-mnist", "cnn",
                                                                        (1, 28, 28), 10)
    assert d.train.inputs.shape == (4000, 1, 28, 28) and d.test.inputs.shape == (1000, 1, 28, 28)
    assert d.train.y.bincount().tolist() == [400] * 10 and d.test.y.bincount().tolist() == [100] * 10


def test_embedded_fashion_is_real(shared_data):
    full = load_dataset("fashion-mnist", data_root=shared_data)
    assert (len(full.train), len(full.test)) == (60000, 10000)
    with np.load(fm.EMBEDDED_DIR / fm.EMBEDDED) as z:
        i, j = z["train_index"], z["test_index"]
    small = load_dataset("fashion-mnist")
    assert torch.equal(small.train.inputs, full.train.inputs[i])
    assert torch.equal(small.test.y, full.test.y[j])


@pytest.mark.parametrize("layout", ["torchvision", "flat-gz"])
def test_fashion_from_data_root(tmp_path, no_system_dir, layout):
    arrays = make_mnist_like(tmp_path / "src", "FashionMNIST")
    if layout == "torchvision":
        root = tmp_path / "src"
    else:  # the idx files gzipped straight in the folder given
        root = tmp_path / "flat"
        gzip_folder(tmp_path / "src" / "FashionMNIST" / "raw", root)
    d = load_dataset("fashion-mnist", data_root=root)
    assert d.train.inputs.shape == (30, 1, 28, 28) and d.test.inputs.shape == (12, 1, 28, 28)
    x, y = arrays["train"]
    assert torch.equal((d.train.inputs[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(x))
    assert d.train.y.tolist() == y.tolist()


def test_fashion_from_debian_folder(tmp_path, monkeypatch):
    make_mnist_like(tmp_path / "src", "FashionMNIST", n_train=4600)
    gzip_folder(tmp_path / "src" / "FashionMNIST" / "raw", tmp_path / "debian")
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "debian")
    # a --data-root without the files falls back to the package's folder
    assert len(load_dataset("fashion-mnist", data_root=tmp_path / "empty").train) == 4600
    # no --data-root: the embedded subset, unless the run needs more training images
    assert len(load_dataset("fashion-mnist").train) == 4000
    assert len(load_dataset("fashion-mnist", need_train=4001).train) == 4600
    assert len(load_dataset("fashion-mnist", need_train=4000).train) == 4000


def test_fashion_absent_names_all_three_places(tmp_path, no_system_dir):
    for root, need in ((tmp_path / "empty", None), (None, 4500)):
        with pytest.raises(DataError) as err:
            load_dataset("fashion-mnist", data_root=root, need_train=need)
        msg = str(err.value)
        assert "\n" not in msg and "--data-root" in msg and "--download" in msg, msg
        assert str(fm.SYSTEM_DIR) in msg and "dataset-fashion-mnist" in msg, msg


def test_max_train_reaches_into_full_set(shared_data, tmp_path, no_system_dir, capsys):
    from slsec.config import make_config
    from slsec.run.setup import prepare
    cfg = make_config({"dataset": "fashion-mnist", "data_root": str(shared_data),
                       "max_train": 8000, "aux_size": 100})
    s = prepare(cfg)
    assert len(s.data.train) == 60000 and sum(len(sh) for sh in s.shards) == 8000
    # without the full set, asking for more than the subset is a one-line error, exit 2
    code = main(["train", "--dataset", "fashion-mnist", "--max-train", "5000", "--rounds", "1",
                 "--out", str(tmp_path / "runs")])
    out = capsys.readouterr()
    assert code == 2, out
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert any("fashion-mnist" in ln and "--download" in ln for ln in lines), lines
    assert "Traceback" not in out.out + out.err


def test_fashion_corrupt_gzip_names_file(tmp_path, no_system_dir):
    make_mnist_like(tmp_path / "src", "FashionMNIST")
    gzip_folder(tmp_path / "src" / "FashionMNIST" / "raw", tmp_path / "flat")
    bad = tmp_path / "flat" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_root=tmp_path / "flat")
    one_line_naming(err, bad)
    (tmp_path / "flat" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_root=tmp_path / "flat")
    one_line_naming(err, tmp_path / "flat" / "t10k-labels-idx1-ubyte")


# ------------------------------------------------------------------ CIFAR-10 binary version

def write_cifar_bin(root: Path, n_train: int = 8, n_test: int = 6, seed: int = 0) -> Path:
    """CIFAR-10's binary layout (cifar-10-batches-bin: five data batches, one test batch, each
    a run of label byte + 3,072 pixel bytes R, G, B planes) with made-up pixels: smooth colour
    gradients per class so a model has something to learn."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0

    def batch(n: int, offset: int) -> bytes:
        recs = []
        for i in range(n):
            c = (i + offset) % 10
            planes = [(np.sin(xx * (c + 1) + k) * np.cos(yy * (k + 1)) + 1) / 2 for k in range(3)]
            img = np.stack(planes) * 200 + rng.integers(0, 55, (3, 32, 32))
            recs.append(bytes([c]) + img.astype(np.uint8).tobytes())
        return b"".join(recs)
    for k in range(1, 6):
        (folder / f"data_batch_{k}.bin").write_bytes(batch(n_train, k))
    (folder / "test_batch.bin").write_bytes(batch(n_test, 0))
    (folder / "batches.meta.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    return root


def test_cifar10_binary_batches_load_without_pickle(tmp_path, monkeypatch):
    import pickle
    root = write_cifar_bin(tmp_path)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load called"))
    d = load_dataset("cifar10", data_root=root)
    assert (d.default_model, d.input_shape, d.num_classes) == ("resnet18", (3, 32, 32), 10)
    assert d.train.inputs.shape == (40, 3, 32, 32) and d.test.inputs.shape == (6, 3, 32, 32)
    rec = np.frombuffer((root / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()[:RECORD],
                        np.uint8)
    assert d.test.y[0].item() == rec[0]
    assert torch.equal((d.test.inputs[0] * 255).round().to(torch.uint8),
                       torch.from_numpy(rec[1:].reshape(3, 32, 32).copy()))


@pytest.mark.parametrize("damage", ["truncated", "label"])
def test_cifar10_binary_damage_is_one_line(tmp_path, damage):
    root = write_cifar_bin(tmp_path)
    bad = root / "cifar-10-batches-bin" / "data_batch_2.bin"
    data = bytearray(bad.read_bytes())
    if damage == "truncated":
        data = data[:-7]
    else:
        data[RECORD] = 17
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_root=root)
    one_line_naming(err, bad)
