"""Feature-space hijacking (FSHA): a malicious server, acting through a declared hook.

- the hijacking server uses only what its role holds: the public architecture and cut, its aux
  split, the cut messages it receives; the clients' private data, the head and head queries
  are Vaults that fail the test when touched;
- the hook is installed by the harness, acts on every client step in vanilla SL and both
  SplitFed variants, and the run reports the reconstruction like every inversion plus the
  (untrained) task accuracy.
"""
from __future__ import annotations

import pytest
import torch

from slsec.attacks.base import ATTACKS
from slsec.attacks.hijack import Hijack
from slsec.config import make_config
from slsec.data import load_dataset
from slsec.errors import UserError
from slsec.run.harness import evaluate
from slsec.data.models import build_model
from slsec.threat import View
from test_inversion import Vault

KNOW = frozenset({"architecture", "aux_data"})


def server_view(aux, cut: str, **extra) -> View:
    """What the malicious server holds before training; unheld things are Vaults."""
    return View(role="server", protocol="vanilla", knowledge=KNOW,
                parts={"head": Vault("the head")}, query_head=Vault("head queries"),
                build_model=lambda: build_model("cnn"), cuts=(cut,), aux=aux,
                public={"input_shape": (1, 28, 28), "num_classes": 10, "train_steps": 0},
                **extra)


def test_registered_as_a_malicious_server_attack():
    cls = ATTACKS.get("hijack")
    assert cls.malicious and cls.kind == "inversion"
    assert cls.roles == {"vanilla": "server", "splitfed": "server"}
    assert cls.methods["fsha"] == KNOW and cls.methods["prior"] == {"aux_data"}
    with pytest.raises(UserError):
        cls.role_for("ushaped")


@pytest.mark.parametrize("cut", ["pool1", "fc1"])   # critic on a map; moments on a dense cut
def test_uses_only_aux_data_and_received_messages(cut):
    """Train the hook on messages a client head computes from its private data (the server
    receives those), then decode probe smashed data; the private inputs stay in a Vault."""
    torch.manual_seed(0)
    data = load_dataset("mnist")
    aux = data.train.subset(torch.arange(200))
    private_x, private_y = data.train.inputs[200:264], data.train.y[200:264]
    head = build_model("cnn").split([cut])[0]
    attack = Hijack(seed=0)
    hook = attack.hijack(server_view(aux, cut))
    assert hook.moments == (cut == "fc1")
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in head.parameters()]
    for lo in range(0, 64, 16):
        h = head({"x": private_x[lo:lo + 16]})["x"]
        msg = {"x": h.detach(), "y": private_y[lo:lo + 16]}      # what crosses the cut
        g = hook.cut_grad(1, msg, torch.zeros_like(h))
        assert g.shape == h.shape and torch.isfinite(g).all() and g.abs().sum() > 0
        opt.zero_grad()
        (h * g).sum().backward()
        opt.step()
    assert hook.steps == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters()))
    with torch.no_grad():
        obs = head({"x": data.test.inputs[:8]})["x"]
    view = server_view(aux, cut, smashed=[{"x": obs[:4]}, {"x": obs[4:]}])
    guess = attack.run(view)
    assert guess.images.shape == (8, 1, 28, 28)
    assert float(guess.images.min()) >= 0 and float(guess.images.max()) <= 1
    assert guess.info["hijack_steps"] == 4


def test_dense_cut_pilot_is_built_from_aux_data_alone():
    """At a dense cut the pilot is the aux images' principal components (positive and
    negative parts): the same aux data give the same pilot, other aux data another."""
    data = load_dataset("mnist")
    pilots = [Hijack(seed=0).hijack(server_view(data.train.subset(idx), "fc1")).pilot
              for idx in (torch.arange(200), torch.arange(200), torch.arange(200, 400))]
    x = data.test.inputs[:8]
    codes = [p({"x": x})["x"] for p in pilots]
    assert codes[0].shape == (8, 128) and (codes[0] >= 0).all()
    assert torch.equal(codes[0], codes[1]) and not torch.allclose(codes[0], codes[2])


def test_server_stops_on_its_own_signal():
    """Early stop: after min_steps, no 2% improvement of the smoothed loss for `patience`
    steps (or the `steps` budget) and the server sends zeros from then on."""
    data = load_dataset("mnist")
    attack = Hijack(seed=0, min_steps=2, patience=2, steps=4)
    hook = attack.hijack(server_view(data.train.subset(torch.arange(100)), "conv1"))
    head = build_model("cnn").split(["conv1"])[0]
    x, y = data.train.inputs[100:116], data.train.y[100:116]
    grads = []
    for _ in range(6):
        h = head({"x": x})["x"].detach()
        grads.append(hook.cut_grad(1, {"x": h, "y": y}, torch.zeros_like(h)))
    assert hook.converged is not None and hook.converged <= 4 and hook.steps == 6
    assert grads[0].abs().sum() > 0 and all(g.abs().sum() == 0 for g in grads[hook.converged:])
    guess = attack.run(server_view(None, "conv1", smashed=[{"x": h}]))
    assert guess.info["hijack_converged_at"] == hook.converged and guess.info["hijack_steps"] == 6


def test_annealing_shrinks_only_what_is_sent_back():
    """From `anneal_from` the gradient sent back halves every `anneal_half` client steps; the
    server's own training (critic, pilot, decoder) is the same as without annealing."""
    data = load_dataset("mnist")
    aux = data.train.subset(torch.arange(100))
    head = build_model("cnn").split(["conv1"])[0]
    x, y = data.train.inputs[100:116], data.train.y[100:116]
    h = head({"x": x})["x"].detach()
    plain = Hijack(seed=0, min_steps=100, anneal_from=0).hijack(server_view(aux, "conv1"))
    annealed = Hijack(seed=0, min_steps=100, anneal_from=2, anneal_half=2).hijack(
        server_view(aux, "conv1"))
    ratios = []
    for _ in range(6):
        a = plain.cut_grad(1, {"x": h, "y": y}, torch.zeros_like(h))
        b = annealed.cut_grad(1, {"x": h, "y": y}, torch.zeros_like(h))
        assert a.abs().sum() > 0
        ratios.append(float(b.norm() / a.norm()))
    want = [1, 1, 0.5 ** 0.5, 0.5, 0.5 ** 1.5, 0.25]
    assert ratios == pytest.approx(want, rel=1e-4)
    for part in ("decoder", "critic", "pilot"):
        for pa, pb in zip(getattr(plain, part).parameters(), getattr(annealed, part).parameters()):
            assert torch.equal(pa, pb), part
    # moment matching at a dense cut is not a GAN: not annealed
    dense = build_model("cnn").split(["fc1"])[0]
    hd = dense({"x": x})["x"].detach()
    hooks = [Hijack(seed=0, min_steps=100, anneal_from=a, anneal_half=1).hijack(
        server_view(aux, "fc1")) for a in (0, 1)]
    for _ in range(3):
        a, b = (k.cut_grad(1, {"x": hd, "y": y}, torch.zeros_like(hd)) for k in hooks)
        assert a.abs().sum() > 0 and torch.equal(a, b)


def test_pilot_stops_training_at_freeze_at():
    """From client step `freeze_at` the pilot is a fixed target; its decoder keeps learning."""
    data = load_dataset("mnist")
    hook = Hijack(seed=0, min_steps=100, freeze_at=3).hijack(
        server_view(data.train.subset(torch.arange(100)), "conv1"))
    head = build_model("cnn").split(["conv1"])[0]
    x, y = data.train.inputs[100:116], data.train.y[100:116]
    h = head({"x": x})["x"].detach()
    snap = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    pilots, decoders = [], []
    for _ in range(5):
        hook.cut_grad(1, {"x": h, "y": y}, torch.zeros_like(h))
        pilots.append(snap(hook.pilot))
        decoders.append(snap(hook.decoder))
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a, b))  # noqa: E731
    assert not same(pilots[0], pilots[1])                       # steps 1, 2 train the pilot
    assert same(pilots[2], pilots[3]) and same(pilots[3], pilots[4])   # steps 3-5 do not
    assert not same(decoders[3], decoders[4])                   # the decoder still learns


def test_rounds_default_to_what_the_hijack_needs():
    assert make_config({"attack": "hijack"}).rounds == Hijack.run_defaults["rounds"] == 20
    assert make_config({"attack": "hijack", "rounds": 3}).rounds == 3
    assert make_config({"attack": "inversion"}).rounds == 1


def test_needs_aux_data():
    with pytest.raises(UserError, match="aux"):
        Hijack(seed=0).hijack(server_view(None, "conv1"))
    cfg = make_config({"attack": "hijack", "knowledge": ("architecture",)})
    with pytest.raises(UserError, match="no method fits"):
        evaluate(cfg)
    with pytest.raises(UserError, match="does not apply"):
        evaluate(make_config({"attack": "hijack", "protocol": "ushaped"}))


SMALL = dict(max_train=256, probe_size=8, aux_size=128, batch_size=32, rounds=1, threads=1,
             clients=2, attack="hijack")


@pytest.mark.parametrize("protocol,variant", [("vanilla", "v1"), ("splitfed", "v1"),
                                              ("splitfed", "v2")])
def test_harness_installs_the_hook_for_every_client_step(protocol, variant):
    steps = []
    cfg = make_config({**SMALL, "protocol": protocol, "variant": variant, "cut": "conv2"})
    result = evaluate(cfg, on_step=lambda i, n: steps.append((i, n)))
    m = result.metrics
    total = 2 * -(-128 // 32)         # two clients, 128 private samples each, batch 32
    assert steps[-1] == (total, total) and len(steps) == total
    assert m["malicious_server"] is True and m["hijack_steps"] == total
    assert m["attack_role"] == "server" and m["attack_method"] == "fsha"
    assert 0 <= m["attack_ssim_mean"] <= 1 and "baseline_ssim_mean" in m
    # the gain is over the server's prior: the class image of the label it received
    assert m["prior_label_source"] == "held" and "ssim_gain_mean" in m
    assert result.reconstructions.images.shape == result.reconstructions.inputs.shape


def test_honest_runs_have_no_hook():
    cfg = make_config({**SMALL, "attack": "inversion", "method": "whitebox", "attack_iters": 5})
    m = evaluate(cfg).metrics
    assert "malicious_server" not in m


@pytest.mark.slow
def test_pool1_hijack_reaches_ssim_070():
    """End to end at pool1: a vanilla run with one client, 8 rounds = 440 client steps (the
    bench curve passed 0.70 by step 200 there); the decoder reconstructs the 64 private
    probe images from the smashed data the server observed."""
    cfg = make_config({"attack": "hijack", "cut": "pool1", "clients": 1, "rounds": 8})
    m = evaluate(cfg).metrics
    print("pool1 FSHA SSIM", m["attack_ssim_mean"], "steps", m["hijack_steps"],
          "task accuracy", m["accuracy"])
    assert m["attack_ssim_mean"] >= 0.70


def test_verdict_says_the_hijacked_run_does_not_learn_the_task():
    from slsec.report.summary import verdict_lines
    cfg = make_config({"attack": "hijack"})
    m = {"malicious_server": True, "hijack_steps": 1120, "hijack_converged_at": 983,
         "accuracy": 0.969}
    text = " ".join(verdict_lines(cfg, {"metrics": m}, None))
    assert "a hijacked run does not learn the task" in text
    assert "converged at step 983" in text and "1120 client steps" in text
    m["hijack_converged_at"] = 1120   # never stopped early: no such clause
    assert "converged" not in " ".join(verdict_lines(cfg, {"metrics": m}, None))


def test_alignment_maps_a_channel_mix_back_into_the_pilot_space():
    """After training the server fits a 1x1 map from the observed training batches (`View.seen`)
    into its pilot's space. A client head whose features are the pilot's with channels
    exchanged (what the critic leaves uncorrected) is decoded better through the map; the fit
    reads only the messages in the view (the head and its queries are Vaults), and with
    `align_steps` 0, at dense cuts, or with nothing observed the decoder reads the smashed
    data as they are."""
    torch.manual_seed(0)
    data = load_dataset("mnist")
    aux = data.train.subset(torch.arange(300))
    attack = Hijack(seed=0, warmup=40, freeze_pilot=True, align_steps=30, min_steps=1000)
    hook = attack.hijack(server_view(aux, "conv1"))
    hook.warm_up()
    perm = torch.arange(32)
    perm[:8] = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])       # four channel pairs exchanged
    client = lambda x: hook.pilot({"x": x})["x"].detach()[:, perm]   # noqa: E731
    xs, ys = data.train.inputs[300:556], data.train.y[300:556]
    seen = [{"x": client(xs[i:i + 64]), "y": ys[i:i + 64]} for i in range(0, 256, 64)]
    for m in seen:   # the hijack's client steps (the pilot is fixed: the head stays mixed)
        hook.cut_grad(1, m, torch.zeros_like(m["x"]))
    hook.steps = 30   # as after a hijack of 30 client steps
    probe = data.test.inputs[:32]
    obs = client(probe)
    view = server_view(aux, "conv1", smashed=[{"x": obs}], seen=seen)
    guess = attack.run(view)
    from slsec import metrics
    plain = float(metrics.ssim(probe, hook.invert(obs).clamp(0, 1)).mean())
    mapped = float(metrics.ssim(probe, guess.images).mean())
    print("channel mix: SSIM without the map", plain, "with it", mapped)
    assert mapped > plain + 0.1
    target = hook.pilot({"x": probe})["x"]
    fitted = hook.align(seen)(obs).clamp(min=0)
    assert (fitted - target).norm() < 0.7 * (obs - target).norm()
    # off: the decoder reads the smashed data as they are
    assert Hijack(seed=0, align_steps=0).hijack(server_view(aux, "conv1")).align(seen) is None
    assert hook.align([]) is None
    dense = Hijack(seed=0).hijack(server_view(aux, "fc1"))
    dense.steps = 10
    assert dense.align([{"x": torch.rand(4, 128), "y": ys[:4]}]) is None
