"""The user's own model and data: every mistake is one line and exit 2 before training (a
factory that exits or interrupts, a folder named x.py, parts without weights, an in-place op
on the cut tensor, a last batch of one for BatchNorm1d, too small images for the CNN, a bare
pickle in an .npz, a folder named x.npz, a file given to images:, a folder link loop), and a
16-bit PNG is read to its 8-bit range, not saturated."""
from __future__ import annotations

import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from slsec.cli import main
from test_bad_input import check_one_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bad_inputs_more import MODELS, _png16  # noqa: E402

TINY = ["--max-train", "64", "--aux-size", "64", "--probe-size", "4", "--batch-size", "32"]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    (d / "models.py").write_text(MODELS)
    (d / "afolder.py").mkdir()
    (d / "importexit.py").write_text("import sys\nsys.exit(0)\n")
    rng = np.random.default_rng(0)
    y = np.arange(300) % 10
    np.savez(d / "tiny.npz", x=rng.random((300, 1, 3, 3), dtype=np.float32), y=y)
    with zipfile.ZipFile(d / "pickled.npz", "w") as z:
        z.writestr("x.npy", b"\x80\x04K\x01.")
        z.writestr("y.npy", b"\x80\x04K\x01.")
    (d / "adir.npz").mkdir()
    loop = d / "loop"
    for c in ("a", "b"):
        (loop / c).mkdir(parents=True)
        _png16(loop / c / "0.png")
    os.symlink("..", loop / "a" / "up")
    return d


CASES = [
    ("--model {d}/models.py:exits", r"the factory raised SystemExit \(it called sys.exit\(3\)\)"),
    ("--model {d}/models.py:interrupts", r"the factory raised KeyboardInterrupt"),
    ("--model {d}/importexit.py:f", r"importing \S+importexit.py failed: SystemExit"),
    ("--model {d}/afolder.py:f", r"afolder.py is a folder, not a Python file"),
    ("--model {d}/models.py:no_param_head", r"the part before cut '0' \(blocks 0\) has no "
                                             r"trainable parameters"),
    ("--model {d}/models.py:inplace --cut 0", r"a training step across cut\(s\) 0 fails: "
                                               r"RuntimeError.*in-place"),
    ("--model {d}/models.py:tuple_out", r"fails on an input batch.*'tuple'"),
    ("--model {d}/models.py:bn_head --cut 1 --max-train 65 --clients 1",
     r"--batch-size 32 leaves client 1 \(65 samples\) a last batch of one sample"),
    ("--dataset npz:{d}/tiny.npz", r"model 'cnn' needs images of at least 4x4 pixels"),
    ("--dataset npz:{d}/pickled.npz", r"member 'x' is not a .npy array \(no npy header"),
    ("--dataset npz:{d}/adir.npz", r"adir.npz is a folder, not an .npz file"),
    ("--dataset images:{d}/tiny.npz", r"tiny.npz is a file, not a folder of images"),
    ("--dataset images:{d}/loop", r"loop/a/up is a link to a folder"),
]


@pytest.mark.parametrize("args,pattern", CASES, ids=[c[0].split()[1].split("/")[-1]
                                                      for c in CASES])
def test_own_model_and_data_mistakes_are_one_line(args, pattern, d, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = args.replace("{d}", str(d)).split()
    base = [x for i in range(0, len(TINY), 2) if TINY[i] not in own for x in TINY[i:i + 2]]
    argv = ["train", *base, *own, "--out", str(tmp_path / "o")]
    code = main(argv)
    cap = capsys.readouterr()
    check_one_line(code, cap.out, cap.err, pattern)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir()), \
        list((tmp_path / "o").rglob("*"))


def test_a_16_bit_png_is_read_to_its_8_bit_range(tmp_path):
    from slsec.data.imagefolder import read_image_folder
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        _png16(tmp_path / c / "0.png")           # every pixel 40000 of 65535
    arrs = read_image_folder(tmp_path, "test", 1 << 30)
    assert arrs["x"].dtype == np.uint8 and int(arrs["x"].max()) == 40000 >> 8 == 156
