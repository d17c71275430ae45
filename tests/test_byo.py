"""Bring your own model and data (`--model FILE.py:FACTORY`, `--dataset images:DIR | npz:FILE`)
and the Python API (`slsec.evaluate/train/sweep`, `Result`)."""
from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import slsec
from slsec.cli import main
from slsec.errors import UserError
from slsec.data.models import SplitModel, build_model
from slsec.data.userdata import load_user_dataset

TINY = ["--max-train", "200", "--rounds", "1", "--probe-size", "4", "--aux-size", "100"]
KW = dict(max_train=200, rounds=1, probe_size=4, aux_size=100)

# the user's model file of examples/custom_model.py: a factory `mlp` of three named blocks (enc,
# hidden, out); its __main__ part does not run when it is imported as a model file
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model.py"
MLP_SRC = EXAMPLE.read_text()
mlp = runpy.run_path(str(EXAMPLE))["mlp"]

BAD_SRC = '''
from torch import nn
def raises(**kw): raise ValueError("no weights here")
def linear(**kw): return nn.Linear(784, 10)
def dup(**kw): return [("a", nn.Flatten()), ("a", nn.Linear(784, 10))]
def badname(**kw): return [("conv-1", nn.Flatten()), ("fc", nn.Linear(784, 10))]
def five(**kw): return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))
def wrongin(**kw): return nn.Sequential(nn.Flatten(), nn.Linear(100, 10))
def one(**kw): return nn.Sequential(nn.Flatten())
NOTCALL = 3
'''


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """mlp.py, bad.py, digits.npz (400/100 embedded MNIST digits) and an image folder."""
    d = tmp_path_factory.mktemp("byo")
    (d / "mlp.py").write_text(MLP_SRC)
    (d / "bad.py").write_text(BAD_SRC)
    (d / "syntax.py").write_text("def f(:\n")
    z = np.load(Path(slsec.__file__).parent / "_data" / "mnist.npz")
    np.savez(d / "digits.npz", x=z["x_train"][:400], y=z["y_train"][:400],
             x_test=z["x_test"][:100], y_test=z["y_test"][:100])
    np.savez(d / "noy.npz", x=z["x_train"][:10])
    np.savez(d / "range.npz", x=np.full((10, 8, 8), 2.0), y=np.arange(10) % 2)
    np.savez(d / "obj.npz", x=np.array([{"a": 1}] * 10, dtype=object), y=np.arange(10))
    (d / "corrupt.npz").write_bytes(b"not a zip")
    _png_folder(d / "images", {"disc": 12, "bars": 12}, size=(12, 12), rgb=True)
    (d / "badimg" / "cat").mkdir(parents=True)
    (d / "badimg" / "cat" / "x.png").write_bytes(b"garbage")
    (d / "testonly" / "test" / "a").mkdir(parents=True)
    return d


def _png_folder(root: Path, counts: dict[str, int], size: tuple[int, int], rgb: bool,
                seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 256, (size[1], size[0], 3) if rgb else (size[1], size[0]))
            a[:, : 2 + 3 * k] = 255
            Image.fromarray(a.astype(np.uint8)).save(root / name / f"{i:02d}.png")


# ---------------------------------------------------------------- data

def test_npz_layouts_give_nchw_in_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)      # NHWC
    y = np.arange(50) % 5
    np.savez(tmp_path / "nhwc.npz", x=x, y=y)
    np.savez(tmp_path / "nchw.npz", x=x.transpose(0, 3, 1, 2) / 255.0, y=y)
    a, b = (load_user_dataset(f"npz:{tmp_path / n}") for n in ("nhwc.npz", "nchw.npz"))
    assert a.input_shape == b.input_shape == (3, 6, 5) and a.num_classes == 5
    assert torch.allclose(a.train.inputs, b.train.inputs)
    assert len(a.train) == 40 and len(a.test) == 10               # seeded stratified 20%
    assert sorted(a.test.y.tolist()) == sorted(list(range(5)) * 2)
    assert float(a.train.inputs.min()) >= 0 and float(a.train.inputs.max()) <= 1


def test_npz_with_test_arrays_and_hw_images(files):
    d = load_user_dataset(f"npz:{files / 'digits.npz'}")
    z = np.load(files / "digits.npz")
    assert (len(d.train), len(d.test), d.input_shape) == (400, 100, (1, 28, 28))
    assert torch.equal(d.test.inputs[3, 0], torch.from_numpy(z["x_test"][3]).float() / 255)


def test_image_folder_rgb_hold_out(files):
    d = load_user_dataset(f"images:{files / 'images'}")
    assert d.input_shape == (3, 12, 12) and d.num_classes == 2
    assert (len(d.train), len(d.test)) == (20, 4)


def test_image_folder_gray_resize_and_test_folder(tmp_path):
    _png_folder(tmp_path / "train", {"a": 3, "b": 3}, size=(10, 8), rgb=False)
    _png_folder(tmp_path / "test", {"b": 2}, size=(20, 16), rgb=False)
    d = load_user_dataset(f"images:{tmp_path}")
    assert d.input_shape == (1, 8, 10)                      # the first image's size, grayscale
    assert d.test.y.tolist() == [1, 1]                      # 'b' keeps its train index


# ---------------------------------------------------------------- models

@pytest.mark.parametrize("form", ["sequential", "ordereddict", "pairs", "unnamed"])
def test_model_forms_give_a_cut_at_every_boundary(form):
    blocks = [("enc", nn.Flatten()), ("hidden", nn.Linear(4, 3)), ("out", nn.Linear(3, 2))]
    obj = {"sequential": nn.Sequential(OrderedDict(blocks)), "ordereddict": OrderedDict(blocks),
           "pairs": blocks, "unnamed": nn.Sequential(*[m for _, m in blocks])}[form]
    from slsec.data.usermodel import register_object
    model = build_model(register_object(lambda: obj), num_classes=2, input_shape=(1, 2, 2))
    assert isinstance(model, SplitModel)
    assert model.cut_points == (["0", "1"] if form == "unnamed" else ["enc", "hidden"])
    head, tail = model.split([model.cut_points[1]])
    x = torch.rand(5, 1, 2, 2)
    expected = blocks[2][1](blocks[1][1](blocks[0][1](x)))    # the same module objects
    assert torch.allclose(tail(head({"x": x}))["x"], expected)


def test_module_template_is_copied_and_seeded():
    from slsec.data.usermodel import register_object
    template = mlp()
    before = [p.clone() for p in template.parameters()]
    spec = register_object(template)

    def init(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach() for p in build_model(spec, num_classes=10,
                                                input_shape=(1, 28, 28)).parameters()]
    assert all(torch.equal(a, b) for a, b in zip(init(1), init(1)))
    assert not torch.equal(init(1)[0], init(2)[0])
    assert all(torch.equal(a, b) for a, b in zip(before, template.parameters()))


# ---------------------------------------------------------------- one-line errors

BAD = [
    ("--model {d}/nosuch.py:f", r"--model: file .*nosuch.py does not exist"),
    ("--model {d}/mlp.py", r"expected FILE.py:FACTORY or MODULE:FACTORY"),
    ("--model {d}/mlp.py:nosuch", r"mlp.py has no attribute 'nosuch'"),
    ("--model {d}/bad.py:NOTCALL", r"'NOTCALL' in .*bad.py is not callable"),
    ("--model {d}/bad.py:raises", r"the factory raised ValueError: no weights here"),
    ("--model {d}/bad.py:linear", r"returned Linear, not an ordered set of named blocks"),
    ("--model {d}/bad.py:dup", r"block names must be unique; repeated: a"),
    ("--model {d}/bad.py:badname", r"block name 'conv-1' is not an identifier"),
    ("--model {d}/bad.py:five", r"outputs shape \[2, 5\] .* 10 classes"),
    ("--model {d}/bad.py:wrongin", r"fails on an input batch of shape \[2, 1, 28, 28\]"),
    ("--model {d}/bad.py:one", r"needs at least 2 blocks"),
    ("--model {d}/syntax.py:f", r"importing .*syntax.py failed: SyntaxError"),
    ("--model nosuchmod.sub:f", r"no module named 'nosuchmod.sub'"),
    ("--model {d}/mlp.py:mlp --cut nope", r"invalid cut 'nope' .* valid cuts: enc, hidden"),
    ("--dataset npz:{d}/missing.npz", r"file .*missing.npz does not exist"),
    ("--dataset npz:{d}/noy.npz", r"needs arrays 'x' and 'y' \(it has x\)"),
    ("--dataset npz:{d}/range.npz", r"'x' holds values outside \[0, 1\]"),
    ("--dataset npz:{d}/obj.npz", r"not a readable .npz file \(Object arrays"),
    ("--dataset npz:{d}/corrupt.npz", r"not a readable .npz file"),
    ("--dataset images:{d}/missing", r"folder .*missing does not exist"),
    ("--dataset images:{d}/badimg", r"cannot read image .*x.png"),
    ("--dataset images:{d}/testonly", r"has test/ but no train/ folder"),
]


@pytest.mark.parametrize("argv,pattern", BAD, ids=[b[0].split("/")[-1] for b in BAD])
def test_bad_model_or_data_is_one_line_exit_2(files, tmp_path, capsys, argv, pattern):
    args = ["train", *argv.format(d=files).split(), *TINY, "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(pattern, err), err
    assert not any(tmp_path.iterdir())     # nothing written


def test_api_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match=r"unknown keyword 'sigmaa' \(did you mean sigma\?\)"):
        slsec.evaluate(sigmaa=0.5)
    with pytest.raises(UserError, match=r"dataset= must be .* of length 3"):
        slsec.evaluate(dataset=(1, 2, 3))
    with pytest.raises(UserError, match="model= must be"):
        slsec.evaluate(model=3)
    with pytest.raises(UserError, match="the Python API runs the local backend"):
        slsec.evaluate(backend="mpi")
    with pytest.raises(UserError, match="'x' has shape \\[5\\]"):
        slsec.evaluate(dataset=(np.zeros(5), np.zeros(5, int)))


def test_baseline_cache_key_follows_the_model_file(files, tmp_path):
    from slsec.cli.commands import baseline_path
    from slsec.config import make_config
    src = tmp_path / "m.py"
    src.write_text(MLP_SRC)
    cfg = make_config({"model": f"{src}:mlp", "dataset": f"npz:{files / 'digits.npz'}",
                       "defense": "dp", "sigma": 0.1})
    first = baseline_path(cfg)
    src.write_text(MLP_SRC.replace("64", "48"))
    assert baseline_path(cfg) != first
    builtin = make_config({"defense": "dp"})
    from slsec.report.results import config_key
    from slsec.cli.commands import baseline_config
    assert baseline_path(builtin).name == \
        f"undefended-{config_key(baseline_config(builtin).to_dict())}.json"   # unchanged


def test_import_slsec_stays_light():
    code = "import sys, slsec; print('torch' in sys.modules, callable(slsec.sweep))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------- end to end

def test_cli_evaluate_custom_mlp_on_npz(files, tmp_path):
    argv = ["evaluate", "--model", f"{files}/mlp.py:mlp", "--dataset", f"npz:{files}/digits.npz",
            "--attack", "inversion", "--cut", "hidden", "--attack-iters", "10", *TINY,
            "--out", str(tmp_path), "--run-id", "mlp"]
    assert main(argv) == 0
    stored = json.loads((tmp_path / "mlp" / "result.json").read_text())
    assert stored["metrics"]["cuts"] == ["hidden"]
    assert 0 <= stored["metrics"]["attack_ssim_mean"] <= 1
    assert (tmp_path / "mlp" / "reconstructions.png").exists()


def test_cli_evaluate_image_folder(files, tmp_path):
    argv = ["evaluate", "--dataset", f"images:{files}/images", "--attack", "inversion",
            "--attack-iters", "10", "--max-train", "20", "--aux-size", "4", "--probe-size", "4",
            "--batch-size", "8", "--out", str(tmp_path), "--run-id", "img"]
    assert main(argv) == 0
    stored = json.loads((tmp_path / "img" / "result.json").read_text())
    assert stored["config"]["dataset"] == f"images:{files}/images"
    assert 0 <= stored["metrics"]["attack_ssim_mean"] <= 1


def test_api_evaluate_arrays_and_module_with_twin(files, tmp_path):
    z = np.load(files / "digits.npz")
    r = slsec.evaluate(model=mlp(), dataset=(z["x"], z["y"]), attack="inversion",
                       defense="dp", sigma=0.5, cut="hidden", attack_iters=10, **KW)
    assert r.config.dataset.startswith("arrays:") and r.twin is not None
    assert r.twin.config.defense == () and "epsilon" in r.metrics
    assert r.images.shape == r.inputs.shape == (4, 1, 28, 28)
    frame = r.to_frame()
    assert frame["run"].tolist() == ["defended", "undefended"]
    assert frame["attack_ssim_mean"].tolist() == [r.metrics["attack_ssim_mean"],
                                                  r.twin.metrics["attack_ssim_mean"]]
    folder = r.save(tmp_path / "run")
    for name in ("result.json", "report.md", "report.html", "reconstructions.png"):
        assert (folder / name).exists()
    stored = json.loads((folder / "result.json").read_text())
    assert stored["undefended"]["metrics"]["accuracy"] == r.twin.metrics["accuracy"]


def test_api_evaluate_image_folder_spec(files):
    r = slsec.evaluate(dataset=f"images:{files}/images", attack="inversion", attack_iters=10,
                       max_train=20, aux_size=4, probe_size=4, batch_size=8, twin=False)
    assert r.twin is None and r.inputs.shape == (4, 3, 12, 12)


@pytest.mark.parametrize("protocol,attack", [
    ("vanilla", None), ("ushaped", "label-inference"), ("splitfed", "inversion"),
    ("splitfed-async", None), ("fedavg", "gradient-inversion")])
def test_custom_model_runs_every_protocol(files, protocol, attack):
    kw = dict(KW, protocol=protocol, attack=attack, attack_iters=5, twin=False)
    if attack == "gradient-inversion":
        kw["probe_size"] = 2
    r = slsec.evaluate(model=f"{files}/mlp.py:mlp", dataset=f"npz:{files}/digits.npz", **kw)
    assert 0 <= r.metrics["accuracy"] <= 1
    if attack:
        key = "label_auc" if attack == "label-inference" else "attack_ssim_mean"
        assert np.isfinite(r.metrics[key])


def test_graph_data_takes_a_factory_returning_a_split_model():
    from slsec.data.models import gin

    def my_gin(num_classes: int, num_features: int) -> SplitModel:
        return gin(num_classes=num_classes, num_features=num_features, hidden=16)
    r = slsec.train(model=my_gin, dataset="mutag", rounds=1, aux_size=20)
    assert r.metrics["cuts"] == ["gin1"] and 0 <= r.metrics["accuracy"] <= 1
    with pytest.raises(UserError, match="graph datasets need a factory returning"):
        slsec.train(model=mlp, dataset="mutag", rounds=1, aux_size=20)


def test_api_sweep_with_in_memory_model_and_arrays(files, tmp_path):
    z = np.load(files / "digits.npz")
    rows = slsec.sweep(model=mlp, dataset=(z["x"], z["y"]), defense=["none", "dp"], sigma=0.5,
                       out=str(tmp_path), run_id="s", **KW)
    assert rows["defense"].fillna("").tolist() == ["", "dp"]
    assert rows["model"].str.startswith("object:").all()
    assert (tmp_path / "s" / "results.csv").exists()
    assert rows["undefended_accuracy"].iloc[1] == rows["accuracy"].iloc[0]   # the same run


def test_module_factory_spec_from_the_current_folder(files, tmp_path, monkeypatch):
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mlps.py").write_text(MLP_SRC)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "mynets.mlps:mlp", "--dataset", f"npz:{files}/digits.npz",
            "--protocol", "ushaped", *TINY, "--out", str(tmp_path / "out"), "--run-id", "u"]
    assert main(argv) == 0
    stored = json.loads((tmp_path / "out" / "u" / "result.json").read_text())
    assert stored["metrics"]["cuts"] == ["enc", "hidden"]          # U-shaped default cuts


@pytest.mark.parametrize("method", ["whitebox", "decoder", "unsplit"])
def test_every_inversion_method_runs_on_a_custom_model(files, method):
    r = slsec.evaluate(model=f"{files}/mlp.py:mlp", dataset=f"npz:{files}/digits.npz",
                       attack="inversion", method=method, attack_iters=5, **KW)
    assert r.metrics["attack_method"] == method and r.images.shape == (4, 1, 28, 28)
