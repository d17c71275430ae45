"""MID: the variational information bottleneck at the cut (sampling, KL, public mechanism)."""
from __future__ import annotations

import math

import pytest
import torch

from slsec.attacks.inverse import CutChannel
from slsec.defenses.base import DEFENSES
from slsec.defenses.mid import MID, kl, sample
from slsec.errors import UserError
from slsec.threat import Bottleneck, CutNoise


def test_kl_is_the_gaussian_kl_to_the_unit_prior():
    h = torch.randn(5, 3, 4)
    assert float(kl(h)) == pytest.approx(float(0.5 * h.flatten(1).square().sum(1).mean()))
    d = torch.distributions
    s = 0.5
    ref = d.kl_divergence(d.Normal(h.flatten(1), s), d.Normal(0.0, 1.0)).sum(1).mean()
    assert float(kl(h, sigma=s)) == pytest.approx(float(ref), rel=1e-5)


def test_sent_data_are_a_unit_noise_sample_and_the_loss_gains_lambda_kl():
    h = torch.zeros(2000, 50, requires_grad=True)
    m = MID(weight=0.3)
    z = m.smashed(h, train=False, gen=torch.Generator().manual_seed(0))   # inference too
    z = z.detach()
    assert abs(float(z.std()) - 1.0) < 0.02 and abs(float(z.mean())) < 0.01
    h2 = torch.randn(8, 10, requires_grad=True)
    m.regularizer(torch.zeros(8, 1), h2).backward()
    assert torch.allclose(h2.grad, 0.3 * h2.detach() / 8)
    assert MID(weight=0).regularizer(torch.zeros(1), h2) is None
    with pytest.raises(UserError, match="mid-weight"):
        MID(weight=-1)


def test_public_mechanism_is_the_noise_an_adaptive_attack_models():
    assert DEFENSES.get("mid") is MID
    mech = MID(weight=0.1).public_mechanism()
    assert isinstance(mech, Bottleneck) and isinstance(mech, CutNoise) and mech.weight == 0.1
    ch = CutChannel.from_public({"defenses": [mech]})
    assert ch.clip is None and ch.noise_std == 1.0
    assert math.isinf(mech.clip)
    g = torch.Generator().manual_seed(1)
    assert sample(torch.zeros(3), g).shape == (3,)
