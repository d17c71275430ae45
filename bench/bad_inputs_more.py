"""More bad inputs for bench/bad_inputs.py: plug-ins, own models and data, config files,
numbers at the edges, options that do not apply, results, MPI launches (issue classes 1-9).

`prepare(w)` writes the files they use under <scratch>/more; `cases(w)` returns them as
(name, argv, expect, may_change, env) like bad_inputs.cases (env: extra variables).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

TINY = ["--max-train", "200", "--rounds", "1", "--probe-size", "4", "--aux-size", "100",
        "--batch-size", "64"]

DEFENSE = '''from slsec.defenses.base import DEFENSES
@DEFENSES.register("{name}")
class P:
    point = "cut"
    protocols = frozenset({{"vanilla"}})
{extra}'''

PLUGINS = {
    "syntax.py": "def (:\n",
    "nothing.py": "x = 1\n",
    "raises.py": "raise RuntimeError('boom at import')\n" + DEFENSE.format(name="r1", extra=""),
    "exits.py": "import sys\nsys.exit(0)\n" + DEFENSE.format(name="r2", extra=""),
    "exits3.py": "import sys\nsys.exit(3)\n" + DEFENSE.format(name="r3", extra=""),
    "kbint.py": "raise KeyboardInterrupt\n" + DEFENSE.format(name="r4", extra=""),
    "noattrs.py": 'from slsec.defenses.base import DEFENSES\n@DEFENSES.register("na")\n'
                  'class P:\n    pass\n',
    "attack_noattrs.py": 'from slsec.attacks.base import ATTACKS\n@ATTACKS.register("an")\n'
                         'class P:\n    roles = {"vanilla": "server"}\n',
    "attack_badorder.py": 'from slsec.attacks.base import ATTACKS\n@ATTACKS.register("ab")\n'
                          'class P:\n    roles = {"vanilla": "server"}\n'
                          '    methods = {"m": frozenset({"aux_data"})}\n'
                          '    default_order = ("x",)\n',
    "clash.py": DEFENSE.format(name="dp", extra=""),
    "clash_attack.py": 'from slsec.attacks.base import ATTACKS\n@ATTACKS.register("inversion")\n'
                       'class P:\n    roles = {"vanilla": "server"}\n'
                       '    methods = {"m": frozenset({"aux_data"})}\n'
                       '    default_order = ("m",)\n',
    "clash_protocol.py": 'from slsec.protocols.base import PROTOCOLS\n'
                         '@PROTOCOLS.register("vanilla")\nclass P:\n    pass\n',
    "pclash.py": "from slsec.params import Param\n" + DEFENSE.format(
        name="pc", extra='    params = (Param("lr", "float", 1.0),)\n'),
    "pclash2.py": "from slsec.params import Param\n" + DEFENSE.format(
        name="pc2", extra='    params = (Param("out", "str", "x"),)\n'),
    "pbad.py": DEFENSE.format(name="pb", extra='    params = ("lr",)\n'),
    "pdiffer.py": "from slsec.params import Param\n" + DEFENSE.format(
        name="pd", extra='    params = (Param("sigma", "int", 3),)\n'),
}

MODELS = '''
import sys
import torch
from torch import nn

class Pair(nn.Module):
    def forward(self, x):
        return x, x

class Inplace(nn.Module):
    def forward(self, x):
        return x.relu_()

def tuple_out():
    return nn.Sequential(Pair(), nn.Flatten(), nn.Linear(784, 10))

def inplace():
    return nn.Sequential(nn.Conv2d(1, 4, 3), Inplace(), nn.Flatten(), nn.Linear(2704, 10))

def no_param_head():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

def bn_head():
    return nn.Sequential(nn.Flatten(), nn.BatchNorm1d(784), nn.Linear(784, 10))

def wrong_out():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))

def one_block():
    return nn.Sequential(nn.Flatten())

def exits():
    sys.exit(3)

def interrupts():
    raise KeyboardInterrupt

def returns_none():
    return None

def returns_int():
    return 5

def bad_name():
    return [("a b", nn.Flatten()), ("c", nn.Linear(784, 10))]

def dup_names():
    return [("a", nn.Flatten()), ("a", nn.Linear(784, 10))]

def not_module():
    return [("a", nn.Flatten()), ("b", 5)]

def nan_out():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), Nan())

class Nan(nn.Module):
    def forward(self, x):
        return x * float("nan")

not_callable = 5
'''


def _png16(path: Path, size: int = 28) -> None:
    """A 16-bit grayscale PNG (what PIL would read as 8-bit I;16 and saturate)."""
    raw = b"".join(b"\x00" + np.full(size, 40000, ">u2").tobytes() for _ in range(size))
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", size, size, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def prepare(w: Path) -> None:
    m = w / "more"
    (m / "plugins").mkdir(parents=True)
    for name, body in PLUGINS.items():
        (m / "plugins" / name).write_text(body)
    (m / "plugins" / "binary.py").write_bytes(bytes(range(256)) * 4)
    (m / "plugins" / "adir.py").mkdir()
    (m / "models.py").write_text(MODELS)
    (m / "afolder.py").mkdir()
    (m / "importexit.py").write_text("import sys\nsys.exit(0)\n")
    (m / "importraise.py").write_text("raise ValueError('at import')\n")
    (m / "syntaxmodel.py").write_text("def (:\n")
    rng = np.random.default_rng(0)
    x = rng.random((300, 1, 28, 28), dtype=np.float32)
    y = np.arange(300) % 10
    np.savez(m / "ok.npz", x=x, y=y)
    np.savez(m / "onecls.npz", x=x, y=np.zeros(300, int))
    np.savez(m / "nanx.npz", x=np.full_like(x, np.nan), y=y)
    np.savez(m / "tiny.npz", x=rng.random((300, 1, 3, 3), dtype=np.float32), y=y)
    np.savez(m / "wide.npz", x=rng.random((300, 1, 1, 4096), dtype=np.float32), y=y)
    np.savez(m / "mismatch.npz", x=x, y=y[:100])
    np.savez(m / "nolabels.npz", x=x)
    np.savez(m / "floaty.npz", x=x, y=y + 0.5)
    np.savez(m / "negy.npz", x=x, y=y - 5)
    import zipfile
    with zipfile.ZipFile(m / "pickled.npz", "w") as z:   # a member that is a bare pickle
        z.writestr("x.npy", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
        z.writestr("y.npy", b"\x80\x04K\x01.")
    (m / "notzip.npz").write_bytes(b"not a zip at all" * 10)
    (m / "adir.npz").mkdir()
    (m / "empty.npz").write_bytes(b"")
    img = m / "imgs"
    for c in ("a", "b"):
        (img / c).mkdir(parents=True)
        for i in range(3):
            _png16(img / c / f"{i}.png")
    loop = m / "loop"
    (loop / "a").mkdir(parents=True)
    (loop / "b").mkdir()
    shutil.copy(img / "a" / "0.png", loop / "a" / "0.png")
    shutil.copy(img / "b" / "0.png", loop / "b" / "0.png")
    os.symlink("..", loop / "a" / "up")
    (m / "emptyimgs").mkdir()
    (m / "oneclass" / "a").mkdir(parents=True)
    shutil.copy(img / "a" / "0.png", m / "oneclass" / "a" / "0.png")
    (m / "notimg" / "a").mkdir(parents=True)
    (m / "notimg" / "b").mkdir(parents=True)
    (m / "notimg" / "a" / "x.png").write_text("not a png")
    (m / "notimg" / "b" / "y.png").write_text("not a png either")
    toml = {
        "deep": "x = " + "[" * 3000 + "]" * 3000 + "\n",
        "deept": "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
        "dup": "rounds = 1\n[run]\nrounds = 2\n",
        "bomtypo": "\ufeffroundz = 1\n",
        "listval": "rounds = [1, 2]\n",
        "tableval": "rounds = {a = 1}\n",
        "datetime": "rounds = 1979-05-27\n",
        "boolint": "rounds = true\n",
        "hugeint": "batch_size = 99999999999999999999\n",
        "negthreads": "threads = -1\n",
        "unknowntable": "[model]\nx = 1\n",
        "runnotable": "run = 5\n",
        "emptykey": '"" = 1\n',
        "dupkey": "rounds = 1\nrounds = 2\n",
        "utf16": None,
        "alphaiid": "alpha = 0.2\n",
        "cutfedavg": 'protocol = "fedavg"\ncut = "conv2"\n',
        "defensetwice": 'defense = ["dp", "dp"]\n',
    }
    for name, body in toml.items():
        if body is None:
            (m / f"{name}.toml").write_bytes("rounds = 1\n".encode("utf-16"))
        else:
            (m / f"{name}.toml").write_text(body, encoding="utf-8")
    o = w / "o"
    keep = json.loads((o / "keep" / "result.json").read_text())
    for name, body in {"nullcfg": {**keep, "config": None}, "list": [1, 2],
                       "metricsless": {"config": keep["config"]}}.items():
        shutil.copytree(o / "keep", m / f"rj-{name}")
        (m / f"rj-{name}" / "result.json").write_text(json.dumps(body))
    shutil.copytree(o / "sw", m / "sw-dup")
    text = (m / "sw-dup" / "results.csv").read_text()
    (m / "sw-dup" / "results.csv").write_text(text + text.splitlines(keepends=True)[1])


def cases(w: Path) -> list[tuple]:
    t, o = TINY, ["--out", "o"]
    p = "more/plugins/"
    c: list[tuple] = []
    # plug-ins (class 4): every broken file is one line naming it
    for name in sorted([*PLUGINS, "binary.py", "adir.py", "missing.py"]):
        c.append((f"plug-in {name}: train", ["train", *t, *o], "fail", [],
                  {"SLSEC_PLUGINS": p + name}))
    for name in ("syntax.py", "binary.py", "clash.py"):
        c.append((f"plug-in {name}: list names it", ["list"], "ok", [],
                  {"SLSEC_PLUGINS": p + name}))
    c += [("plug-in /dev/zero", ["train", *t, *o], "fail", [], {"SLSEC_PLUGINS": "/dev/zero"}),
          ("plug-in /dev/null", ["train", *t, *o], "fail", [], {"SLSEC_PLUGINS": "/dev/null"}),
          ("plug-in folder of broken files", ["train", *t, *o], "fail", [],
           {"SLSEC_PLUGINS": "more/plugins"})]
    # own model (class 1)
    mm = "more/models.py:"
    for fn in ("tuple_out", "inplace", "no_param_head", "bn_head", "wrong_out", "one_block",
               "exits", "interrupts", "returns_none", "returns_int", "bad_name", "dup_names",
               "not_module", "nan_out", "not_callable", "missing_fn"):
        c.append((f"--model {fn}", ["train", *t, "--model", mm + fn, *o], "fail"))
    c += [("--model a folder named x.py", ["train", *t, "--model", "more/afolder.py:f", *o],
           "fail"),
          ("--model exits at import", ["train", *t, "--model", "more/importexit.py:f", *o],
           "fail"),
          ("--model raises at import", ["train", *t, "--model", "more/importraise.py:f", *o],
           "fail"),
          ("--model syntax error", ["train", *t, "--model", "more/syntaxmodel.py:f", *o], "fail"),
          ("--model missing file", ["train", *t, "--model", "more/nope.py:f", *o], "fail"),
          ("--model no factory", ["train", *t, "--model", "more/models.py", *o], "fail"),
          ("--model module missing", ["train", *t, "--model", "no_such_mod:f", *o], "fail"),
          ("--model cut on a no-param head", ["train", *t, "--model", mm + "no_param_head",
                                              "--cut", "0", *o], "fail"),
          ("--model cnn on 3x3 images", ["train", *t, "--dataset", "npz:more/tiny.npz", *o],
           "fail"),
          ("--model cnn on 1x4096 images", ["train", *t, "--dataset", "npz:more/wide.npz", *o],
           "fail"),
          ("--model gin on images", ["train", *t, "--model", "gin", *o], "fail"),
          ("--model resnet18 cut conv1", ["train", *t, "--model", "resnet18", "--cut", "conv1",
                                          *o], "fail")]
    # own data (class 2)
    for name in ("onecls", "nanx", "mismatch", "nolabels", "floaty", "negy", "pickled",
                 "notzip", "adir", "empty", "missing"):
        c.append((f"--dataset npz:{name}", ["train", *t, "--dataset", f"npz:more/{name}.npz",
                                            *o], "fail"))
    c += [("--dataset images: a file", ["train", *t, "--dataset", "images:more/ok.npz", *o],
           "fail"),
          ("--dataset images: missing", ["train", *t, "--dataset", "images:more/nope", *o],
           "fail"),
          ("--dataset images: empty", ["train", *t, "--dataset", "images:more/emptyimgs", *o],
           "fail"),
          ("--dataset images: one class", ["train", *t, "--dataset", "images:more/oneclass",
                                           *o], "fail"),
          ("--dataset images: not images", ["train", *t, "--dataset", "images:more/notimg", *o],
           "fail"),
          ("--dataset images: 16-bit PNGs (read, not saturated)",
           ["train", *t[:2], "--aux-size", "2", "--probe-size", "2", "--clients", "1",
            "--dataset", "images:more/imgs", *o], "ok"),
          ("--dataset images: symlink loop", ["train", *t, "--dataset", "images:more/loop", *o],
           "fail"),
          ("--dataset bogus scheme", ["train", *t, "--dataset", "foo:bar", *o], "fail"),
          ("--dataset npz: empty path", ["train", *t, "--dataset", "npz:", *o], "fail"),
          ("--dataset images: empty path", ["train", *t, "--dataset", "images:", *o], "fail")]
    # config files (class 3)
    for name in ("deep", "deept", "dup", "bomtypo", "listval", "tableval", "datetime",
                 "boolint", "hugeint", "negthreads", "unknowntable", "runnotable", "emptykey",
                 "dupkey", "utf16", "alphaiid", "cutfedavg", "defensetwice"):
        c.append((f"--config {name}.toml", ["train", "--config", f"more/{name}.toml", *t, *o],
                  "fail"))
    # numbers at the edges (class 5)
    for flag, value in [("--batch-size", str(2**64)), ("--batch-size", "-1"),
                        ("--rounds", str(2**70)), ("--clients", "0"), ("--clients", str(2**64)),
                        ("--lr", "1e-320"), ("--lr", "-1"), ("--alpha", "5e-324"),
                        ("--threads", "100000"), ("--threads", "0"), ("--timeout", "0"),
                        ("--timeout", "nan"), ("--probe-batch", "0"), ("--observe-samples", "0"),
                        ("--max-train", "0"), ("--aux-size", "-1"), ("--delta", "1"),
                        ("--delta", "0"), ("--target-accuracy", "1.5"),
                        ("--target-accuracy", "0"), ("--seed", "-1"), ("--seeds", "0"),
                        ("--aux-size", str(2**64))]:
        c.append((f"{flag} {value[:24]}", ["train", *t, flag, value, *o], "fail"))
    for flag, value, extra in [("--sigma", "1e-320", ["--defense", "dp"]),
                               ("--sigma", "-0.5", ["--defense", "dp"]),
                               ("--clip", "1e-320", ["--defense", "dp"]),
                               ("--label-epsilon", "1e-320", ["--defense", "label-rr"]),
                               ("--nopeek-weight", "-1", ["--defense", "nopeek"])]:
        c.append((f"{flag} {value} ({extra[1]})", ["train", *t, *extra, flag, value, *o],
                  "fail"))
    for value in ("-5", "0", str(2**64), "1.5"):
        c.append((f"--attack-iters {value}", ["evaluate", "--attack", "inversion",
                                               "--attack-iters", value, *t, *o], "fail"))
    # options that do not apply (class 6)
    c += [("--alpha with iid", ["train", *t, "--alpha", "0.1", *o], "fail"),
          ("--cut with fedavg", ["train", *t, "--protocol", "fedavg", "--cut", "conv2", *o],
           "fail"),
          ("--cut2 with fedavg", ["train", *t, "--protocol", "fedavg", "--cut2", "fc1", *o],
           "fail"),
          ("--cut2 with vanilla", ["train", *t, "--cut2", "fc1", *o], "fail"),
          ("--straggler same client twice", ["train", *t, "--straggler", "1:0.1,1:0.2", *o],
           "fail"),
          ("--straggler client 3 of 2", ["train", *t, "--straggler", "3:0.1", *o], "fail"),
          ("--defense dp,dp", ["train", *t, "--defense", "dp,dp", *o], "fail"),
          ("--knowledge twice", ["evaluate", "--attack", "inversion", "--knowledge",
                                 "aux_data,aux_data", *t, *o], "fail"),
          ("train --attack", ["train", *t, "--attack", "inversion", *o], "fail"),
          ("--attack-iters without --attack", ["train", *t, "--attack-iters", "5", *o], "fail"),
          ("--knowledge without --attack", ["train", *t, "--knowledge", "aux_data", *o], "fail"),
          ("--fraction on vanilla", ["train", *t, "--fraction", "0.5", *o], "fail"),
          ("--mechanism without dp", ["train", *t, "--mechanism", "laplace", *o], "fail"),
          ("--label-epsilon without label-rr", ["train", *t, "--label-epsilon", "1", *o],
           "fail"),
          ("--max-grad-norm without dpsgd", ["train", *t, "--max-grad-norm", "1", *o], "fail"),
          ("--async-order on vanilla", ["train", *t, "--async-order", "random", *o], "fail"),
          ("--seeds on train", ["train", *t, "--seeds", "2", *o], "fail"),
          ("--sigma and --target-epsilon", ["train", *t, "--defense", "dp", "--sigma", "1",
                                            "--target-epsilon", "2", *o], "fail")]
    # results lost or half-trusted (class 7)
    c += [("compare --run-id into a run", ["compare", "o/keep", "--out", "o", "--run-id",
                                           "keep"], "fail"),
          ("compare --run-id into a sweep", ["compare", "o/keep", "--out", "o", "--run-id",
                                             "sw"], "fail"),
          ("compare a JSON list", ["compare", "more/rj-list", "--out", "more/cmp"], "fail"),
          ("compare a null config", ["compare", "more/rj-nullcfg", "--out", "more/cmp"],
           "fail"),
          ("compare no metrics", ["compare", "more/rj-metricsless", "--out", "more/cmp"],
           "fail"),
          ("report no metrics", ["report", "more/rj-metricsless"], "fail"),
          ("report a copied row", ["report", "more/sw-dup"], "warn", ["more/sw-dup/report"]),
          ("compare a missing folder", ["compare", "more/nope", "--out", "more/cmp"], "fail"),
          ("compare a file", ["compare", "more/ok.npz", "--out", "more/cmp"], "fail"),
          ("compare --run-id with a slash", ["compare", "o/keep", "--out", "more/cmp",
                                             "--run-id", "a/b"], "fail")]
    # MPI launches without --backend mpi (class 9)
    for env in ({"PMI_SIZE": "3", "PMI_RANK": "0"},
                {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "0"},
                {"PMIX_SIZE": "2", "PMIX_RANK": "0"}):
        c.append((f"under mpiexec ({next(iter(env))}) without --backend mpi",
                  ["train", *t, *o], "fail", [], env))
    c.append(("sweep under mpiexec without --backend mpi", ["sweep", *t, "--lr", "0.001,0.002",
                                                            *o], "fail", [],
              {"PMI_SIZE": "3", "PMI_RANK": "0"}))
    return c
