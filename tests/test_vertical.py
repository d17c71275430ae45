"""Vertical split learning on tabular data: the CSV reader, the protocol, who sees what."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slsec.config import make_config
from slsec.data import load_dataset
from slsec.data.tabular import decode
from slsec.errors import UserError
from slsec.run.experiment import resolve
from slsec.run.runner import run_local
from slsec.run.setup import prepare
from slsec.wire import transport

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tabular"
SMALL = {"protocol": "vertical", "dataset": "spam", "clients": "2", "rounds": "2",
         "batch_size": "64", "max_train": "400", "aux_size": "200", "probe_size": "16",
         "threads": "1", "lr": "0.005"}


def _csv(tmp_path: Path, text: str) -> str:
    p = tmp_path / "t.csv"
    p.write_text(text)
    return f"csv:{p}"


def test_csv_with_categories_and_missing_values_is_encoded_and_decodes(tmp_path):
    rows = ["age,city,income,label"] + [
        f"{20 + i % 30},{['oslo', 'rome', ''][i % 3]},{'' if i % 7 == 0 else 1000 + 10 * i},"
        f"{'yes' if i % 4 == 0 else 'no'}" for i in range(60)]
    d = load_dataset(_csv(tmp_path, "\n".join(rows) + "\n"))
    enc = {e["column"]: e for e in d.encoding}
    assert d.kind == "tabular" and d.num_classes == 2
    assert d.classes == ["no", "yes"]            # binary: the rarer class is label 1
    assert enc["age"]["kind"] == "numeric" and enc["age"]["width"] == 1
    assert enc["city"]["categories"] == ["oslo", "rome"] and enc["city"]["missing_indicator"]
    assert enc["income"]["missing_indicator"] and enc["income"]["width"] == 2
    x = d.train.inputs
    assert x.shape[1] == 1 + 3 + 2 == d.num_features
    assert abs(float(x[:, 0].mean())) < 1e-5 and abs(float(x[:, 0].std(unbiased=False)) - 1) < 1e-3
    back = decode(x, d.encoding)
    assert back["age"].between(19.5, 49.5).all()
    assert set(back["city"]) <= {"oslo", "rome"}


def test_label_column_can_be_named(tmp_path):
    text = "label,a,b\n" + "".join(f"{i % 3},{i},{i * 2}\n" for i in range(30))
    d = load_dataset(_csv(tmp_path, text), label_column="label")
    assert d.num_classes == 3 and d.num_features == 2


@pytest.mark.parametrize("text,label,match", [
    ("a,b\n1,x\n2,y\n", "nope", "no label column 'nope'"),
    ("a,b\n1,x\n2,x\n3,x\n", None, "has one class"),
    ("a,b\n" + "".join(f"{i},{i % 2}\n" for i in range(40)) + "zz,1\n", None,
     "column 'a' is numeric but row 42 holds text 'zz'"),
    ("a,b\n", None, "zero rows"),
    ("a,id\n" + "".join(f"{i},r{i}\n" for i in range(30)), None, "looks like an id"),
])
def test_bad_csv_is_one_line(tmp_path, text, label, match):
    with pytest.raises(UserError, match=match) as e:
        load_dataset(_csv(tmp_path, text), label_column=label)
    assert "\n" not in str(e.value)


def test_bad_csv_exits_2_on_the_command_line(tmp_path):
    spec = _csv(tmp_path, "a,b\n1,x\n2,x\n3,x\n")
    slsec = str(Path(sys.executable).parent / "slsec")
    proc = subprocess.run([slsec, "evaluate", "--protocol", "vertical", "--dataset", spec,
                           "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "one class" in lines[0], lines


def test_npz_with_2d_x_is_tabular(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(50, 6)).astype(np.float32),
             y=np.arange(50) % 2)
    d = load_dataset(f"npz:{tmp_path / 't.npz'}")
    assert d.kind == "tabular" and d.num_features == 6 and d.input_shape == (6,)


class Recording:
    """Wraps LocalHub links: every message each rank received (tag, tensors)."""

    got: dict[int, list] = {}

    def __init__(self, link, rank):
        self._link, self._rank = link, rank

    def __getattr__(self, name):
        return getattr(self._link, name)

    def recv(self, source, tag):
        msg = self._link.recv(source, tag)
        Recording.got.setdefault(self._rank, []).append((tag, {k: v.clone() for k, v in
                                                               msg.items()}))
        return msg


@pytest.fixture(scope="module")
def recorded_run():
    cfg = make_config(SMALL)
    setup = prepare(cfg)
    Recording.got = {}
    orig = transport.LocalHub.link
    first: list = []

    def link(hub, rank):   # the protocol hub is the first LocalHub made; the scorer's second
        if not first:
            first.append(hub)
        inner = orig(hub, rank)
        return Recording(inner, rank) if hub is first[0] else inner

    transport.LocalHub.link = link
    try:
        outcomes = run_local(resolve(cfg, setup))
    finally:
        transport.LocalHub.link = orig
    return cfg, setup, outcomes, Recording.got


def test_passive_party_never_sees_a_label(recorded_run):
    cfg, setup, _, got = recorded_run
    y = setup.data.train.y
    for k in (1, 2):
        shard = setup.shard(k)
        assert (shard.y == -1).all()          # its rows carry no label
        assert shard.inputs.shape[1] == len(setup.model_groups()[k - 1])
        for tag, msg in got[k]:               # and it receives only its gradient rows
            assert set(msg) == {"g"}
            assert msg["g"].dtype.is_floating_point and msg["g"].shape[1] == 16
    assert not torch.equal(setup.shard(1).inputs, setup.data.train.inputs[:, :5])


def test_active_party_never_sees_a_raw_column(recorded_run):
    cfg, setup, outcomes, got = recorded_run
    raw = setup.data.train.inputs
    for tag, msg in got[0]:
        assert set(msg) <= {"x", "n"}
        if "x" in msg:
            assert msg["x"].shape[1] == 16      # embeddings only (bottom width 16)
            assert not any(msg["x"].shape == raw[:, g].shape[1:] for g in setup.model_groups())
    server = outcomes[0]
    view = server.observer.view()
    assert all(m["x"].shape[1] == 16 for m in view.smashed)


def test_vertical_learns_and_groups_cover_every_column(recorded_run):
    cfg, setup, outcomes, _ = recorded_run
    groups = setup.model_groups()
    assert sorted(i for g in groups for i in g) == list(range(setup.data.num_features))
    assert outcomes[0].records[-1].accuracy > 0.8


def test_vertical_equals_centralised_training_of_the_same_model(recorded_run):
    """The split changes nothing: the same model trained in one place gives the same test
    accuracy (same seed, same batch order, Adam per parameter)."""
    from slsec.protocols.vertical import shared_order as order
    from slsec.protocols.base import make_optimizer
    from slsec.run.runner import evaluate_model, make_plan
    cfg, setup, outcomes, _ = recorded_run
    model = setup.fresh_model()
    plan = make_plan(cfg, setup)
    opt = make_optimizer(model.parameters(), plan)
    x, y = setup.data.train.inputs[setup.shards[0]], setup.data.train.y[setup.shards[0]]
    for rnd in range(cfg.rounds):
        for idx in order(plan, rnd, len(y)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model({"x": x[idx]})["x"], y[idx]).backward()
            opt.step()
    acc, _ = evaluate_model(model, setup.data.test)
    assert acc == pytest.approx(outcomes[0].records[-1].accuracy, abs=0.005)


def test_label_inference_by_a_passive_party_beats_the_prior():
    from slsec.run.harness import evaluate
    cfg = make_config({**SMALL, "attack": "label-inference", "method": "cosine", "rounds": "3",
                       "max_train": "800"})
    m = evaluate(cfg).metrics
    assert m["attack_role"] == "client"
    assert m["label_accuracy"] > m["label_baseline_accuracy"] + 0.2, m


def test_feature_split_by_name_and_bad_names(tmp_path):
    cfg = make_config({**SMALL, "feature_split": "make,address|" + ",".join(
        e["column"] for e in load_dataset("spam").encoding[2:])})
    assert [len(g) for g in prepare(cfg).model_groups()] == [2, 55]
    with pytest.raises(UserError, match="no feature column 'zz'"):
        prepare(make_config({**SMALL, "feature_split": "zz|make"})).model_groups()


@pytest.mark.mpi
@pytest.mark.slow
def test_mpi_equals_local(tmp_path):
    script = Path(__file__).parent / "mpi_scripts" / "run_protocol.py"
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    args = [f"{k}={v}" for k, v in SMALL.items()]
    proc = subprocess.run([mpiexec, "-n", "3", sys.executable, str(script),
                           str(tmp_path / "out.npz"), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    mpi = np.load(tmp_path / "out.npz")
    cfg = make_config(SMALL)
    server = run_local(resolve(cfg))[0]
    local = np.array([[r.accuracy, r.loss] for r in server.records])
    np.testing.assert_array_equal(local, mpi["curve"])
    for k, v in server.model.state_dict().items():   # the top the active party trained
        if k.startswith("blocks.top"):
            np.testing.assert_array_equal(v.numpy(), mpi[f"w:{k}"])


def test_three_passive_parties_with_sum_aggregation():
    small = {k: v for k, v in SMALL.items() if k != "clients"}
    cfg = make_config({**small, "parties": "3", "aggregate": "sum", "rounds": "1"})
    setup = prepare(cfg)
    assert cfg.clients == 3 and [len(g) for g in setup.model_groups()] == [19, 19, 19]
    server = run_local(resolve(cfg, setup))[0]
    assert len(server.records) == 1 and server.records[0].accuracy > 0.5
    with pytest.raises(UserError, match="--parties 3 and --clients 2 disagree"):
        make_config({**SMALL, "parties": "3", "clients": "2"})


@pytest.mark.parametrize("extra,match", [
    ({"partition": "dirichlet"}, "every party holds the same records"),
    ({"label_party": "client"}, "the active party"),
    ({"dataset": "mnist"}, "splits the columns of tabular data"),
    ({"model": "cnn"}, "needs one bottom per party"),
    ({"feature_split": "make|address"}, "every feature column exactly once"),
])
def test_vertical_refuses_what_it_cannot_honour(extra, match):
    with pytest.raises(UserError, match=match):
        prepare(make_config({**SMALL, **extra})).model_groups()


def test_user_bottoms_per_party_or_as_a_list(tmp_path):
    f = tmp_path / "bottoms.py"
    f.write_text("from torch import nn\n"
                 "def one(party, num_features):\n"
                 "    return nn.Sequential(nn.Linear(num_features, 12), nn.Tanh(), nn.Linear(12, 6))\n"
                 "def many(parties):\n"
                 "    return [nn.Linear(d, 5) for d in (28, 29)[:parties]]\n"
                 "def bad(party, num_features):\n"
                 "    return nn.Linear(num_features, 4 + party)\n")
    for name, emb in (("one", 6), ("many", 5)):
        cfg = make_config({**SMALL, "model": f"{f}:{name}", "rounds": "1"})
        setup = prepare(cfg)
        model = setup.build()
        assert model.emb == emb and len(model.blocks["bottoms"].nets) == 2
        assert run_local(resolve(cfg, setup))[0].records[0].accuracy > 0.5
    with pytest.raises(UserError, match="embeddings differ in width"):
        prepare(make_config({**SMALL, "model": f"{f}:bad"}))
