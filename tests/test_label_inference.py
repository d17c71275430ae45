"""Label inference from returned cut gradients (Li et al. 2022; Fu et al. 2022 completion)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slsec.attacks.base import ATTACKS
from slsec.attacks.label_inference import LabelInference
from slsec.errors import UserError
from slsec.metrics import label_accuracy, label_auc
from slsec.data.models import Block, SplitModel
from slsec.threat import Scorer, View

ARCH = frozenset({"architecture"})
AUX = frozenset({"architecture", "aux_data"})


class _Aux:
    """A public aux split: inputs and labels."""

    def __init__(self, inputs: torch.Tensor, y: torch.Tensor) -> None:
        self.inputs, self.y = inputs, y


class _Vault:
    """Private labels: any access raises, so an attack that reaches for them fails loudly."""

    def __init__(self, y: torch.Tensor) -> None:
        object.__setattr__(self, "_y", y)

    def __getattribute__(self, name: str):
        raise AssertionError(f"attack touched private labels ({name})")


def _toy_model(d: int, k: int, tail: nn.Module | None = None) -> SplitModel:
    return SplitModel("toy", [("head", Block(nn.Identity())), ("body", Block(nn.Identity())),
                              ("fc", Block(tail if tail is not None else nn.Linear(d, k)))])


def _toy(k: int = 4, d: int = 16, n: int = 256, batch: int = 64, seed: int = 0,
         logits_cut: bool = False, defense=None):
    """U-shaped toy: class-clustered body outputs, a linear tail, exact per-sample gradients."""
    gen = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, d, generator=gen)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.copy_(0.3 * means + 0.1 * torch.randn(k, d, generator=gen))
        lin.bias.zero_()
    tail = nn.Identity() if logits_cut else lin
    dim = k if logits_cut else d

    def sample(m: int):
        y = torch.randint(0, k, (m,), generator=gen)
        x = means[y] + torch.randn(m, d, generator=gen)
        return (lin(x).detach() if logits_cut else x), y

    outputs, grads, labels = [], [], []
    for _ in range(n // batch):
        x, y = sample(batch)
        x = x.clone().requires_grad_(True)
        y_used = defense.labels(y, num_classes=k, gen=gen) if defense else y
        F.cross_entropy(tail(x), y_used).backward()
        g = defense.cut_grad(x.grad, gen=gen) if defense else x.grad
        outputs.append(x.detach()), grads.append(g), labels.append(y)
    aux_x, aux_y = sample(400)
    model = _toy_model(dim, k, nn.Identity() if logits_cut else None)
    head, body, held = model.split(["head", "body"])
    held.blocks[0].module = tail
    public = {"num_classes": k, "defenses": [defense.public_mechanism()] if defense else []}
    base = dict(role="server", protocol="ushaped", grads=grads, outputs=outputs,
                build_model=lambda: _toy_model(dim, k, nn.Identity() if logits_cut else None),
                cuts=("head", "body"), public=public)
    return base, {"head": head, "body": body, "tail": held}, _Aux(aux_x, aux_y), torch.cat(labels)


def test_registered_with_roles_and_methods():
    assert ATTACKS.get("label-inference") is LabelInference
    assert LabelInference.role_for("ushaped") == "server"
    assert LabelInference.role_for("vanilla") == "client"
    assert LabelInference.role_for("splitfed") == "client"
    with pytest.raises(UserError):
        LabelInference.role_for("fedavg")
    assert LabelInference.pick_method(AUX) == "completion"
    assert LabelInference.pick_method(ARCH) == "cluster"
    with pytest.raises(UserError, match="aux_data"):
        LabelInference.pick_method(ARCH, "completion")


def test_completion_names_gradient_clusters_with_few_aux_labels():
    base, parts, aux, y = _toy()
    view = View(**base, parts={"head": parts["head"], "body": parts["body"]}, aux=aux,
                knowledge=AUX)
    guess = LabelInference(aux_labels=40).run(view)
    assert guess.label_scores.shape == (len(y), 4)
    assert guess.info["aux_used"] == 40
    assert label_accuracy(y, guess.label_scores) >= 0.95


def test_held_tail_names_every_gradient():
    base, parts, _, y = _toy(seed=1)
    view = View(**base, parts=parts, knowledge=ARCH)
    guess = LabelInference(method="cluster").run(view)
    assert label_accuracy(y, guess.label_scores) == 1.0


def test_clusters_without_a_reference_are_flagged_unnamed():
    base, parts, _, y = _toy(seed=2)
    view = View(**base, parts={"body": parts["body"]}, knowledge=ARCH)
    guess = LabelInference().run(view)
    assert guess.info["method"] == "cluster" and guess.info["named"] is False
    # the partition itself is right: each cluster holds one label
    pred = guess.label_scores.argmax(1)
    assert all(len(y[pred == c].unique()) <= 1 for c in pred.unique())


@pytest.mark.parametrize("with_max_norm", [False, True])
def test_logits_gradient_sign_structure_needs_no_reference(with_max_norm):
    from slsec.defenses.label_dp import MaxNorm
    base, parts, _, y = _toy(seed=3, logits_cut=True, defense=MaxNorm() if with_max_norm else None)
    view = View(**base, parts={"body": parts["body"]}, knowledge=ARCH)
    guess = LabelInference(method="cluster").run(view)
    assert "sign structure" in guess.info["named"]
    assert label_accuracy(y, guess.label_scores) >= 0.99


def test_binary_direction_and_norm_scores():
    base, parts, aux, y = _toy(k=2, seed=4)
    view = View(**base, parts={"head": parts["head"], "body": parts["body"]}, aux=aux,
                knowledge=AUX)
    cos = LabelInference(method="cosine").run(view).label_scores
    assert cos.shape == (len(y),) and float(cos.min()) >= 0 and float(cos.max()) <= 1
    assert label_auc(y, cos) >= 0.99          # oriented by the aux surrogate
    norm = LabelInference(method="norm").run(view).label_scores
    assert norm.shape == (len(y),) and torch.isfinite(norm).all()


def test_norm_scoring_is_binary_only():
    base, parts, _, _ = _toy()
    with pytest.raises(UserError, match="binary"):
        LabelInference(method="norm").run(View(**base, parts=parts, knowledge=ARCH))


def test_scores_follow_the_order_of_the_observed_rows():
    base, parts, _, y = _toy(seed=5)
    view = View(**base, parts=parts, knowledge=ARCH)
    a = LabelInference(method="cluster").run(view).label_scores.argmax(1)
    flipped = dict(base, grads=base["grads"][::-1], outputs=base["outputs"][::-1])
    b = LabelInference(method="cluster").run(View(**flipped, parts=parts, knowledge=ARCH))
    assert torch.equal(torch.cat(list(a.split(64)[::-1])), b.label_scores.argmax(1))


def test_attack_reads_only_its_view(monkeypatch):
    base, parts, aux, y = _toy(seed=6)
    vault = _Vault(y)  # the ground truth lives here and with the scorer, never in the view
    scorer = Scorer()
    scorer.truth(None, y)

    def forbidden(self):
        raise AssertionError("attack read the scorer")
    monkeypatch.setattr(Scorer, "labels", property(forbidden))
    monkeypatch.setattr(Scorer, "inputs", property(forbidden))
    view = View(**base, parts={"head": parts["head"], "body": parts["body"]}, aux=aux,
                knowledge=AUX)
    guess = LabelInference().run(view)
    assert guess.label_scores.shape == (len(y), 4) and vault is not None
    monkeypatch.undo()
    assert label_accuracy(scorer.labels, guess.label_scores) >= 0.95


def test_completion_without_any_way_to_embed_aux_is_a_user_error():
    base, parts, aux, _ = _toy(seed=7)
    view = View(**base, parts={"body": parts["body"]}, aux=aux, knowledge=AUX)
    with pytest.raises(UserError, match="completion"):
        LabelInference(method="completion").run(view)


class _NoGradients(list):
    """The returned gradients as the gradient-free method must leave them: any read raises."""

    def __iter__(self):
        raise AssertionError("the embedding method read a returned gradient")

    __getitem__ = __iter__


def test_embedding_labels_from_forward_messages_alone():
    """10 labelled public samples per class, embedded through the held head and body, label the
    observed body outputs; the returned gradients are never read (a gradient defense cannot
    touch it); the prior is the public majority."""
    base, parts, aux, y = _toy(seed=8)
    base = dict(base, grads=_NoGradients(base["grads"]))
    view = View(**base, parts={"head": parts["head"], "body": parts["body"]}, aux=aux,
                knowledge=AUX)
    guess = LabelInference(method="embedding", labels_per_class=10).run(view)
    assert guess.info["public_embedded"] == 40 and guess.label_scores.shape == (len(y), 4)
    acc = label_accuracy(y, guess.label_scores)
    prior = LabelInference(method="prior").run(View(**base, aux=aux, knowledge=AUX))
    majority = int(torch.bincount(aux.y).argmax())
    assert (prior.label_scores.argmax(1) == majority).all() and len(prior.label_scores) == len(y)
    assert acc >= 0.95 > label_accuracy(y, prior.label_scores)
    # without a way to embed the public samples it says so
    with pytest.raises(UserError, match="embedding"):
        LabelInference(method="embedding").run(View(**base, parts={"body": parts["body"]},
                                                    aux=aux, knowledge=AUX))


def test_embedding_labels_by_the_held_tail_forward_when_the_role_holds_it():
    """The U-shaped server relays the client's tail: the embedding method labels the observed
    body outputs by its forward pass (still no gradient read), as the tail's own argmax."""
    base, parts, aux, y = _toy(seed=9)
    base = dict(base, grads=_NoGradients(base["grads"]))
    view = View(**base, parts=parts, aux=aux, knowledge=AUX)
    guess = LabelInference(method="embedding").run(view)
    assert guess.info["labeler"] == "held tail (forward pass)"
    with torch.no_grad():
        want = torch.cat([parts["tail"]({"x": o})["x"] for o in base["outputs"]]).argmax(1)
    assert torch.equal(guess.label_scores.argmax(1), want)
    assert label_accuracy(y, guess.label_scores) >= 0.95


def test_every_allowed_method_contends_with_the_prior():
    assert LabelInference.contenders == ("completion", "embedding", "sdar", "cluster", "cosine",
                                         "prior")
    assert LabelInference.pick_method(frozenset({"aux_data"})) == "prior"


# ------------------------------------------------------------------ MNIST acceptance (slow)

_CACHE: dict = {}


def _mnist_ushaped(binary: bool, defense=None, seed: int = 0, observe: int = 256):
    """Train the CNN one epoch U-shaped (cuts conv1 | fc1), then observe the next batches as
    the server does: body outputs and the tail's per-sample gradients (defense applied)."""
    key = (binary, None if defense is None else repr(defense.public()), seed)
    if key in _CACHE:
        return _CACHE[key]
    data = pytest.importorskip("slsec.data")
    from slsec.data.models import build_model
    ds = data.load_dataset("mnist")
    tr, te = ds.train, ds.test
    ytr, yte = ((tr.y < 5).long(), (te.y < 5).long()) if binary else (tr.y, te.y)
    k = 2 if binary else 10
    torch.manual_seed(seed)
    model = build_model("cnn", num_classes=k)
    head, body, tail = model.split(["conv1", "fc1"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    outs, grads, ys = [], [], []
    for epoch in range(2):
        seen = 0
        for idx in torch.randperm(len(ytr), generator=gen).split(64):
            if epoch == 1 and seen >= observe:
                break
            y = ytr[idx]
            s = head({"x": tr.inputs[idx]})["x"]
            s_in = s.detach().requires_grad_(True)
            h = body({"x": s_in})["x"]
            h_in = h.detach().requires_grad_(True)
            y_used = defense.labels(y, num_classes=k, gen=gen) if defense else y
            opt.zero_grad()
            F.cross_entropy(tail({"x": h_in})["x"], y_used).backward()
            g = defense.cut_grad(h_in.grad, gen=gen) if defense else h_in.grad
            if epoch == 1:
                outs.append(h.detach().clone()), grads.append(g.clone()), ys.append(y)
            h.backward(g)
            s.backward(s_in.grad)
            opt.step()
            seen += len(idx)
    public = {"num_classes": k, "defenses": [defense.public_mechanism()] if defense else []}
    view = View(role="server", protocol="ushaped", grads=grads, outputs=outs,
                parts={"head": head, "body": body}, knowledge=AUX,
                build_model=lambda: build_model("cnn", num_classes=k), cuts=("conv1", "fc1"),
                aux=_Aux(te.inputs, yte), public=public)
    _CACHE[key] = (view, torch.cat(ys))
    return _CACHE[key]


@pytest.mark.slow
def test_mnist_ushaped_ten_class_label_inference():
    view, y = _mnist_ushaped(binary=False)
    acc = {}
    for method in ("completion", "cluster", "cosine"):
        acc[method] = label_accuracy(y, LabelInference(method=method).run(view).label_scores)
    print("10-class U-shaped label inference accuracy:", acc)
    assert max(acc.values()) >= 0.95
    assert acc[LabelInference.pick_method(view.knowledge)] >= 0.95


@pytest.mark.slow
def test_mnist_ushaped_binary_direction_scoring():
    view, y = _mnist_ushaped(binary=True)
    auc = {m: label_auc(y, LabelInference(method=m).run(view).label_scores)
           for m in ("cosine", "norm")}
    print("binary (digit < 5) AUC:", auc)
    assert max(auc.values()) >= 0.95


@pytest.mark.slow
def test_mnist_label_defenses_lower_the_auc():
    from slsec.defenses.label_dp import LabelRR, MaxNorm
    view, y = _mnist_ushaped(binary=True)
    before = label_auc(y, LabelInference(method="cosine", adaptive=False).run(view).label_scores)
    for defense in (MaxNorm(), LabelRR(epsilon=1.0)):
        dview, dy = _mnist_ushaped(binary=True, defense=defense)
        after = label_auc(dy, LabelInference(method="cosine", adaptive=False).run(dview).label_scores)
        adaptive = {m: round(label_auc(dy, LabelInference(method=m).run(dview).label_scores), 3)
                    for m in ("cosine", "completion")}
        print(f"{defense.name}: cosine AUC before {before:.3f} after {after:.3f}; "
              f"adaptive attacks after: {adaptive}")
        assert after < before - 0.05


@pytest.mark.parametrize("gap", [0.0, 1.0, 2.0, 4.0])
def test_bayes_threshold_never_falls_below_the_majority_prior(gap):
    """Hard labels from a binary score, threshold set from the public positive rate alone:
    at least the majority prior (a useless score labels almost nothing positive) and at least
    the min-max-normalised 0.5 rule, on scores from separable to useless; 3 seeds."""
    from slsec.attacks.label_gradients import bayes_threshold
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        y = (torch.rand(2000, generator=gen) < 0.1).long()
        s = torch.randn(2000, generator=gen).double() + gap * y
        t = bayes_threshold(s, 0.1)
        acc = float(((s > t).long() == y).float().mean())
        prior = float((y == 0).float().mean())
        mm = (s - s.min()) / (s.max() - s.min())
        minmax = float(((mm > 0.5).long() == y).float().mean())
        assert acc >= prior - 0.01 and acc >= minmax - 0.01, (seed, acc, prior, minmax)
        if gap >= 4.0:
            assert acc >= 0.97
