"""NoPeek: Székely's distance correlation as a differentiable client-side regulariser."""
import pytest
import torch

from slsec.defenses.base import DEFENSES
from slsec.defenses.nopeek import NoPeek, distance_correlation
from slsec.errors import UserError
from conftest import one_line_user_error

torch.set_num_threads(1)


def naive_dcor(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Textbook dCor with explicit pairwise differences (no stabilising epsilon)."""
    def centred(z):
        z = z.reshape(z.shape[0], -1)
        d = (z[:, None, :] - z[None, :, :]).norm(dim=-1)
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()
    a, b = centred(x), centred(y)
    return ((a * b).mean() / ((a * a).mean() * (b * b).mean()).sqrt()).sqrt()


def test_matches_the_textbook_formula_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 4, 4, generator=g, dtype=torch.float64)
    h = (x.reshape(20, -1) @ torch.randn(16, 6, generator=g, dtype=torch.float64)).tanh()
    h = (h + 0.3 * torch.randn(20, 6, generator=g, dtype=torch.float64)).requires_grad_()
    h_ref = h.detach().clone().requires_grad_()
    got, want = distance_correlation(x, h), naive_dcor(x, h_ref)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    got.backward()
    want.backward()
    assert torch.allclose(h.grad, h_ref.grad, rtol=1e-4, atol=1e-6)


def test_independent_inputs_give_near_zero():
    g = torch.Generator().manual_seed(1)
    x, h = torch.randn(1024, 1, generator=g), torch.randn(1024, 2, generator=g)
    assert distance_correlation(x, h).item() < 0.15


def test_similarity_transform_gives_one_and_linear_map_near_one():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(128, 1, 4, 4, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    h = (3.0 * x.reshape(128, -1) @ q + 2.0).reshape(128, 4, 2, 2)   # rotate, scale, shift
    assert distance_correlation(x, h).item() == pytest.approx(1.0, abs=1e-4)
    w = torch.randn(16, 32, generator=g)
    assert distance_correlation(x, x.reshape(128, -1) @ w).item() > 0.75


def test_regulariser_is_weighted_and_has_a_gradient_that_lowers_it():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 1, 6, 6, generator=g)
    h = (x.reshape(64, -1)[:, :8] + 0.1 * torch.randn(64, 8, generator=g)).requires_grad_()
    d = NoPeek(weight=0.5)
    reg = d.regularizer(x, h)
    assert reg.item() == pytest.approx(0.5 * distance_correlation(x, h).item())
    reg.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    before = reg.item()
    opt = torch.optim.SGD([h], lr=5.0)
    for _ in range(20):
        opt.zero_grad()
        d.regularizer(x, h).backward()
        opt.step()
    assert d.regularizer(x, h).item() < before


def test_constant_batch_and_single_sample_are_finite():
    x = torch.ones(4, 3)
    h = torch.ones(4, 2, requires_grad=True)
    out = distance_correlation(x, h)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(h.grad).all()
    assert torch.isfinite(distance_correlation(torch.randn(1, 3), torch.randn(1, 2)))


@pytest.mark.parametrize("w", [-0.1, float("nan"), "heavy"])
def test_bad_weight_is_a_one_line_user_error(w):
    one_line_user_error(lambda: NoPeek(weight=w), "--nopeek-weight")


def test_rows_must_match():
    with pytest.raises(UserError, match="one row per sample"):
        NoPeek(weight=1.0).regularizer(torch.randn(10, 3), torch.randn(4, 3))


def test_registry_public_alias_and_zero_weight():
    assert DEFENSES.get("nopeek") is NoPeek
    assert NoPeek(nopeek_weight=0.3).public() == {"name": "nopeek", "weight": 0.3}
    assert NoPeek(weight=0.0).regularizer(torch.randn(4, 2), torch.randn(4, 2)) is None
    NoPeek().check_protocol("splitfed-async")
    with pytest.raises(UserError):
        NoPeek().check_protocol("fedavg")
