"""DP at the cut: clipping bound, noise scale, identity, gradients, accounting, validation."""
import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from slsec.defenses.base import DEFENSES, DefenseStack
from slsec.defenses.dp_cut import DPCut, clip_rows
from slsec.errors import UserError
from conftest import one_line_user_error

torch.set_num_threads(1)
# the reference accountants' own numerical notes (the code under test silences them)
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order:UserWarning", "ignore:divide by zero:RuntimeWarning")


def heavy_tailed(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(shape[0], 1, 1, 1, generator=g) ** -3   # row norms span decades
    z = torch.randn(shape, generator=g) / torch.rand(shape, generator=g).clamp_min(1e-3)  # ~Cauchy
    return z * scale


@pytest.mark.parametrize("clip", [0.1, 1.0, 37.0])
def test_every_row_norm_is_at_most_clip(clip):
    h = heavy_tailed((64, 3, 8, 8))
    h[0] = 0.0                              # a zero row stays zero, no nan
    h[1] = h[1] / h[1].norm() * clip * 0.5  # a row inside the ball is untouched
    out = DPCut(sigma=0.0, clip=clip).smashed(h, train=True, gen=None)
    norms = out.reshape(64, -1).norm(dim=1)
    assert torch.isfinite(out).all()
    assert (norms <= clip * (1 + 1e-6)).all()
    assert torch.equal(out[0], h[0]) and torch.allclose(out[1], h[1])
    big = h.reshape(64, -1).norm(dim=1) > clip
    assert torch.allclose(norms[big], torch.full_like(norms[big], clip), rtol=1e-5)


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_noise_has_the_configured_std(mechanism):
    sigma, clip = 0.5, 2.0                  # std sigma * C = 1.0
    d = DPCut(sigma=sigma, clip=clip, mechanism=mechanism)
    h = torch.zeros(4000, 5, 5, 2)          # 200k coordinates, clipping is a no-op on zeros
    z = d.smashed(h, train=False, gen=torch.Generator().manual_seed(1))  # inference too
    std, mad = z.std().item(), z.abs().mean().item()
    print(f"{mechanism}: empirical std {std:.4f} (want {sigma * clip}), mean |z| {mad:.4f}")
    assert abs(z.mean().item()) < 0.01
    assert std == pytest.approx(sigma * clip, rel=0.01)
    # the shape, not just the scale: E|z| = std*sqrt(2/pi) (Gaussian), b = std/sqrt(2) (Laplace)
    want_mad = sigma * clip * (math.sqrt(2 / math.pi) if mechanism == "gaussian" else 1 / math.sqrt(2))
    assert mad == pytest.approx(want_mad, rel=0.01)


def test_noise_is_reproducible_from_the_generator():
    d, h = DPCut(sigma=1.0, clip=1.0), torch.randn(8, 16)
    a = d.smashed(h, train=True, gen=torch.Generator().manual_seed(3))
    b = d.smashed(h, train=True, gen=torch.Generator().manual_seed(3))
    c = d.smashed(h, train=True, gen=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_noise_no_clip_is_the_identity():
    h = heavy_tailed((16, 4, 3, 3))
    out = DPCut(sigma=0.0, clip=float("inf")).smashed(h, train=True, gen=torch.Generator())
    assert torch.equal(out, h)


def test_gradients_flow_through_clipping():
    clip = 1.5
    h = (heavy_tailed((12, 2, 3, 3)).double() * 0.3).requires_grad_()
    w = torch.randn(12, 2, 3, 3, dtype=torch.float64)
    out = DPCut(sigma=0.7, clip=clip).smashed(h, train=True, gen=torch.Generator().manual_seed(0))
    (out * w).sum().backward()
    ref_h = h.detach().clone().requires_grad_()
    rows = [r * torch.clamp(clip / r.norm(), max=1.0) for r in ref_h]   # explicit formula
    (torch.stack(rows) * w).sum().backward()
    assert torch.allclose(h.grad, ref_h.grad, rtol=1e-10, atol=1e-12)
    assert (h.grad != w).any()              # clipped rows really change the gradient


@pytest.mark.parametrize("sigma,epochs,acc", [(1.0, 1, "rdp"), (2.0, 10, "rdp"), (4.0, 30, "prv")])
def test_epsilon_is_the_opacus_accountant_at_sigma_over_two(sigma, epochs, acc):
    d = DPCut(sigma=sigma, clip=1.0, accountant=acc)
    ref = RDPAccountant() if acc == "rdp" else PRVAccountant()
    ref.history = [(sigma / 2, 1.0, epochs)]
    want = ref.get_epsilon(delta=1e-5)
    got = d.epsilon(steps=epochs, sample_rate=1.0, delta=1e-5)
    print(f"dp sigma={sigma} epochs={epochs} {acc}: epsilon={got:.3f} at delta=1e-05")
    assert got == pytest.approx(want, rel=1e-9)
    # the same run counted in optimizer steps at batch rate 1/100: epochs releases per sample
    assert d.epsilon(steps=100 * epochs, sample_rate=0.01, delta=1e-5) == pytest.approx(got)


def test_target_epsilon_solves_sigma():
    d = DPCut(target_epsilon=4.0, clip=1.0, delta=1e-5)
    assert d.public()["sigma"] is None
    sigma = d.calibrate(epochs=5)
    assert sigma / 2 == get_noise_multiplier(target_epsilon=4.0, target_delta=1e-5,
                                             sample_rate=1.0, steps=5, accountant="prv")
    eps = d.epsilon(steps=5, sample_rate=1.0, delta=1e-5)
    print(f"target 4.0 -> sigma={sigma:.3f}, epsilon={eps:.3f} at delta=1e-05")
    assert 4.0 - 0.02 <= eps <= 4.0
    assert d.calibrate(steps=500, sample_rate=0.01) == sigma


def test_uncalibrated_target_refuses_to_run():
    with pytest.raises(RuntimeError, match="calibrate"):
        DPCut(target_epsilon=1.0).smashed(torch.ones(2, 3), train=True, gen=None)


def test_laplace_epsilon_is_pure_dp_with_the_l1_bound():
    d = DPCut(sigma=2.0, clip=1.0, mechanism="laplace")
    d.smashed(torch.randn(4, 2, 5, 5), train=True, gen=torch.Generator())
    per_release = 2 * 1.0 * math.sqrt(50) / (2.0 * 1.0 / math.sqrt(2))   # L1 sens / b
    assert d.epsilon(steps=3, sample_rate=1.0, delta=1e-5) == pytest.approx(3 * per_release)


def test_no_guarantee_without_noise_or_clipping():
    assert DPCut(sigma=0.0, clip=1.0).epsilon(steps=1, sample_rate=1.0, delta=1e-5) == math.inf
    assert DPCut(sigma=1.0, clip=float("inf")).epsilon(steps=1, sample_rate=1.0, delta=1e-5) == math.inf


@pytest.mark.parametrize("kw,flag", [
    (dict(sigma=-1.0), "--sigma"),
    (dict(sigma=float("nan")), "--sigma"),
    (dict(clip=0.0), "--clip"),
    (dict(clip=-2.0), "--clip"),
    (dict(clip=float("nan")), "--clip"),
    (dict(mechanism="uniform"), "--mechanism"),
    (dict(sigma=1.0, target_epsilon=2.0), "--target-epsilon"),
    (dict(target_epsilon=-1.0), "--target-epsilon"),
    (dict(target_epsilon=1.0, mechanism="laplace"), "--target-epsilon"),
    (dict(delta=1.5), "--delta"),
    (dict(accountant="gdp"), "--accountant"),
])
def test_bad_parameters_are_one_line_user_errors(kw, flag):
    one_line_user_error(lambda: DPCut(**kw), flag)


def test_registered_public_and_protocols():
    assert DEFENSES.get("dp") is DPCut
    d = DPCut(sigma=0.5, clip=3.0)
    assert d.public() == {"name": "dp", "clip": 3.0, "sigma": 0.5, "mechanism": "gaussian",
                          "delta": 1e-5}
    for p in ("vanilla", "ushaped", "splitfed", "splitfed-async"):
        d.check_protocol(p)
    with pytest.raises(UserError):
        d.check_protocol("fedavg")
    stack = DefenseStack([d])
    assert stack.epsilon(steps=2, sample_rate=1.0, delta=1e-5) == d.epsilon(
        steps=2, sample_rate=1.0, delta=1e-5)


def test_clip_rows_keeps_dtype_and_shape():
    h = torch.randn(5, 7, dtype=torch.float64) * 10
    out = clip_rows(h, 1.0)
    assert out.dtype == torch.float64 and out.shape == h.shape
