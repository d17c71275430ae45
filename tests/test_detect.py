"""Client-side detection of a hijacking server: `splitguard` and `gradient-check`.

- a detector sees only what the client holds: the protocol's client step runs with every
  server-side or scorer-side object a Vault (any use fails the test), and every tensor the
  detector is given is the client's own (its labels, the smashed data it sent, the gradient it
  received, its head);
- each flags a server whose gradient ignores the task and stays quiet for an honest server
  (task gradients from a real tail), on real MNIST batches;
- once it flags, the client stops sending: zeros for smashed data, decoy labels, no update;
  the end-to-end run reports the step, and the hijack's probe reconstruction is no better
  than a constant image.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slsec.config import make_config
from slsec.defenses.base import DEFENSES, DefenseStack
from slsec.defenses.splitguard import _Mean, sg_score
from slsec.errors import UserError
from slsec.run.harness import evaluate
from slsec.data.models import build_model
from slsec.protocols.base import GRAD, Context, Plan
from slsec.protocols.vanilla import client_step
from slsec.run.setup import prepare
from test_inversion import Vault

CUT = "pool1"


class ScriptedServer:
    """The client's link: records what the client sends, answers with `answer(msg)`."""

    def __init__(self, answer) -> None:
        self.answer, self.sent, self.replies = answer, [], []

    def give(self, dest, msg, tag) -> None:
        self.sent.append(msg)

    def recv(self, src, tag):
        assert tag == GRAD
        g = self.answer(self.sent[-1])
        self.replies.append(g)
        return {"g": g}


def honest_answer(seed: int = 0):
    torch.manual_seed(seed + 1)
    tail = build_model("cnn").split([CUT])[1]
    opt = torch.optim.Adam(tail.parameters(), lr=1e-3)

    def answer(msg):
        z = msg["x"].clone().requires_grad_(True)
        loss = F.cross_entropy(tail({"x": z})["x"], msg["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return z.grad.detach()
    return answer


def label_blind_answer(msg):
    """A hijacking server's answer: pull the smashed data towards a target, labels ignored."""
    return 0.01 * (msg["x"] - 0.5)


def client(defense, link, steps: int, batch: int = 32):
    """Run `steps` real client steps of vanilla SL; all but the client's holdings are Vaults."""
    setup = prepare(make_config({"cut": CUT, "clients": 1, "max_train": 640, "aux_size": 64}))
    model = setup.fresh_model()
    plan = Plan(protocol="vanilla", clients=1, rounds=1, batch_size=batch, lr=1e-3,
                optimizer="adam", seed=0, num_classes=10, cuts=(CUT,))
    ctx = Context(rank=1, plan=plan, link=link, model=model, defense=DefenseStack([defense]),
                  observer=Vault("the server's observer"), shard=setup.shard(1),
                  probe=Vault("the probe"), labels=Vault("the server's labels"),
                  truth=Vault("the scorer's ground truth"), hook=Vault("the server's hook"))
    head = model.split([CUT])[0]
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    defense.attach(model, plan.cuts)
    gen = torch.Generator().manual_seed(0)
    done = 0
    while done < steps:
        for idx in torch.randperm(len(ctx.shard), generator=gen).split(batch):
            client_step(ctx, head, opt, idx, gen, False, lambda m: link.give(0, m, 0))
            done += 1
            if done == steps:
                break
    return ctx, head


class Spy:
    """Wraps a detector's score to record every argument it is given."""

    def __init__(self, det) -> None:
        self.calls, inner = [], det.score

        def score(**kw):
            self.calls.append(kw)
            return inner(**kw)
        det.score = score


@pytest.mark.parametrize("name", ["splitguard", "gradient-check"])
def test_detector_sees_only_what_the_client_holds(name):
    det = DEFENSES.get(name)()
    spy = Spy(det)
    link = ScriptedServer(honest_answer())
    ctx, head = client(det, link, 40)
    assert len(spy.calls) == 40
    for call, sent, got in zip(spy.calls, link.sent, link.replies):
        assert call["g"] is got                            # the gradient it received
        assert torch.equal(call["x"], sent["x"])            # the smashed data it sent
        assert call["head"] is head                         # its own head
        y = call["y"]                                       # its own labels of the batch
        assert y.shape == sent["y"].shape
        assert torch.equal(sent["y"], y) != call["decoy"]   # decoys carry other labels
        if call["decoy"]:
            assert (sent["y"] != y).all()


@pytest.mark.parametrize("name,options", [("splitguard", {"p_fake": 0.3, "start": 10}),
                                          ("gradient-check", {"start": 20})])
def test_flags_a_label_blind_server_not_an_honest_one(name, options):
    honest = DEFENSES.get(name)(**options)
    client(honest, ScriptedServer(honest_answer()), 80)
    hijacked = DEFENSES.get(name)(**options)
    client(hijacked, ScriptedServer(label_blind_answer), 80)
    print(name, "honest scores", [round(s, 3) for s in honest.scores][-5:],
          "hijacked flagged at", hijacked.flagged_at, "scores", [round(s, 3) for s in hijacked.scores])
    assert honest.flagged_at is None and honest.scores
    assert hijacked.flagged_at is not None and hijacked.flagged_at <= 80


def test_once_flagged_the_client_stops_sending_and_learning():
    det = DEFENSES.get("gradient-check")(start=20)
    link = ScriptedServer(label_blind_answer)
    ctx, head = client(det, link, 30)
    assert det.flagged_at is not None
    before = [p.detach().clone() for p in head.parameters()]
    n = len(link.sent)
    client_step(ctx, head, torch.optim.Adam(head.parameters()), torch.arange(32),
                torch.Generator(), False, lambda m: link.give(0, m, 0))
    msg = link.sent[n]
    _, y = ctx.shard.batch(torch.arange(32))
    assert not msg["x"].any() and (msg["y"] != y).all()    # zeros, decoy labels
    assert all(torch.equal(a, b) for a, b in zip(before, head.parameters()))
    assert det.report()["gradient_check_step"] == det.flagged_at


def test_splitguard_score_separates_label_driven_from_label_blind_gradients():
    torch.manual_seed(0)
    base = torch.randn(50)
    f, r1, r2 = _Mean(), _Mean(), _Mean()
    for i in range(20):   # honest: fake batches point elsewhere and are larger
        r1.add(base + 0.1 * torch.randn(50))
        r2.add(base + 0.1 * torch.randn(50))
        f.add(3 * torch.randn(50))
    assert sg_score(f, r1, r2) > 0.9
    f2 = _Mean()
    for i in range(20):   # label-blind: fake batches look like the regular ones
        f2.add(base + 0.1 * torch.randn(50))
    assert sg_score(f2, r1, r2) < 0.5


E2E = dict(max_train=1280, probe_size=8, aux_size=128, batch_size=32, rounds=1, threads=1,
           clients=1, cut=CUT)


def test_end_to_end_detection_reports_the_step_and_withholds_the_probe():
    m_res = evaluate(make_config({**E2E, "attack": "hijack", "defense": ("gradient-check",)}))
    m = m_res.metrics
    print("gradient-check flagged at", m["gradient_check_step"], "SSIM", m["attack_ssim_mean"])
    assert m["gradient_check_flagged"] == 1.0 and 30 < m["gradient_check_step"] <= 40
    images = m_res.reconstructions.images       # the decoder's output for all-zero probes
    assert torch.allclose(images, images[:1].expand_as(images))


def test_two_party_sl_has_no_labels_on_the_client():
    cfg = make_config({**E2E, "label_party": "server", "defense": ("gradient-check",),
                       "max_train": 64})
    with pytest.raises(UserError, match="label-party client"):
        evaluate(cfg)
