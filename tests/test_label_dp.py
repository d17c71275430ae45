"""Label protection defenses: max-norm gradient noise and randomized-response labels."""
from __future__ import annotations

import math

import pytest
import torch

from slsec.defenses.base import DEFENSES
from slsec.defenses.label_dp import LabelRR, MaxNorm
from slsec.errors import UserError


def test_registered_with_their_public_mechanism():
    assert DEFENSES.get("max-norm") is MaxNorm and DEFENSES.get("label-rr") is LabelRR
    assert MaxNorm().public() == {"name": "max-norm"}
    assert LabelRR(epsilon=2.0).public() == {"name": "label-rr", "epsilon": 2.0}
    for d in (MaxNorm(), LabelRR(epsilon=1.0)):
        for p in ("vanilla", "splitfed", "ushaped"):
            d.check_protocol(p)
        with pytest.raises(UserError):
            d.check_protocol("fedavg")


def test_max_norm_keeps_shape_and_the_largest_row():
    g = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(7)) \
        * torch.arange(1, 7).view(6, 1, 1, 1)
    out = MaxNorm().cut_grad(g, gen=torch.Generator().manual_seed(0))
    assert out.shape == g.shape and out.dtype == g.dtype
    top = int(g.reshape(6, -1).norm(dim=1).argmax())
    assert torch.equal(out[top], g[top])                  # the batch max gets no noise
    flat, oflat = g.reshape(6, -1), out.reshape(6, -1)
    cos = torch.nn.functional.cosine_similarity(flat, oflat, dim=1).abs()
    assert torch.allclose(cos, torch.ones(6), atol=1e-5)  # noise is along each row


def test_max_norm_expected_norm_is_the_batch_max():
    g = torch.randn(5, 8) * torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0])[:, None]
    gen = torch.Generator().manual_seed(1)
    sq = torch.stack([MaxNorm().cut_grad(g, gen=gen).pow(2).sum(1) for _ in range(4000)]).mean(0)
    target = g.pow(2).sum(1).max()
    assert torch.allclose(sq, target.expand(5), rtol=0.1)


def test_max_norm_is_seeded_and_leaves_zero_rows():
    g = torch.randn(4, 5)
    g[1] = 0
    a = MaxNorm().cut_grad(g, gen=torch.Generator().manual_seed(3))
    b = MaxNorm().cut_grad(g, gen=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.isfinite(a).all() and torch.equal(a[1], g[1])


@pytest.mark.parametrize("eps,k", [(0.5, 10), (2.0, 10), (1.0, 2)])
def test_label_rr_keep_rate_and_uniform_flips(eps, k):
    n = 60000
    y = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(0))
    out = LabelRR(epsilon=eps).labels(y, num_classes=k, gen=torch.Generator().manual_seed(1))
    keep = math.exp(eps) / (math.exp(eps) + k - 1)
    rate = (out == y).float().mean().item()
    assert abs(rate - keep) < 4 * math.sqrt(keep * (1 - keep) / n)
    assert out.dtype == y.dtype and int(out.min()) >= 0 and int(out.max()) < k
    if k > 2:  # a changed label is uniform over the other K-1 labels
        changed = out[(out != y) & (y == 0)]
        freq = torch.bincount(changed, minlength=k)[1:].float() / len(changed)
        assert torch.allclose(freq, torch.full((k - 1,), 1 / (k - 1)), atol=0.02)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "abc", None])
def test_label_rr_validates_epsilon(bad):
    with pytest.raises(UserError, match="label-epsilon"):
        LabelRR(epsilon=bad)


def test_label_rr_accepts_the_flag_name_and_reports_epsilon():
    d = LabelRR(label_epsilon=1.5)
    assert d.epsilon(steps=63, sample_rate=64 / 4000, delta=1e-5) == 1.5   # one epoch
    assert d.epsilon(steps=630, sample_rate=64 / 4000, delta=1e-5) == 15.0  # ten uses
    with pytest.raises(UserError):
        LabelRR(epsilon=1.0, label_epsilon=2.0)
