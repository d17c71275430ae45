"""DP-SGD for FedAvg: Opacus per-sample gradients on the SplitModel, clipping, noise, epsilon."""
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from slsec.defenses.base import DEFENSES
from slsec.defenses.dpsgd import DPSGD, per_sample_grads
from slsec.errors import UserError
from slsec.data.models import build_model
from conftest import one_line_user_error

torch.set_num_threads(1)


def loss_fn(out, y):
    return F.cross_entropy(out["x"], y)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 1, 28, 28, generator=g)}, torch.randint(0, 10, (n,), generator=g)


def model(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn")


def naive_per_sample(m, x, y):
    """Batch-of-one loop: the reference Opacus checks its per-sample gradients against."""
    rows = []
    for i in range(y.shape[0]):
        m.zero_grad()
        loss_fn(m({"x": x["x"][i:i + 1]}), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    m.zero_grad()
    return torch.stack(rows)


def test_opacus_per_sample_grads_on_the_split_cnn_match_a_loop():
    m, (x, y) = model(), batch()
    _, grads = per_sample_grads(m, loss_fn, x, y)
    flat = torch.cat([g.reshape(6, -1) for _, g in grads], 1)
    assert torch.allclose(flat, naive_per_sample(m, x, y), rtol=1e-4, atol=1e-6)
    assert all(not hasattr(p, "grad_sample") and p.grad is None for p in m.parameters())


def test_private_grad_clips_each_sample_then_averages():
    m, (x, y) = model(), batch()
    d = DPSGD(noise_multiplier=0.0, max_grad_norm=0.5)
    ref = naive_per_sample(m, x, y)
    stats = d.private_grad(m, x, y)
    assert torch.allclose(stats["norms"], ref.norm(dim=1), rtol=1e-4)
    assert (stats["norms"] > 0.5).any() and (stats["clipped_norms"] <= 0.5 + 1e-5).all()
    clipped = ref * (0.5 / (ref.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
    got = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
    assert torch.allclose(got, clipped.mean(0), rtol=1e-4, atol=1e-7)


def test_noise_changes_the_update_with_the_expected_std():
    (x, y), lr, nm, c = batch(8), 0.1, 1.3, 0.7
    clean, noisy = model(), model()
    DPSGD(noise_multiplier=0.0, max_grad_norm=c).private_step(
        clean, torch.optim.SGD(clean.parameters(), lr=lr), x, y)
    stats = DPSGD(noise_multiplier=nm, max_grad_norm=c).private_step(
        noisy, torch.optim.SGD(noisy.parameters(), lr=lr), x, y,
        gen=torch.Generator().manual_seed(0), loss_fn=loss_fn)
    diff = torch.cat([(a - b).reshape(-1) for a, b in zip(noisy.parameters(), clean.parameters())])
    want = lr * nm * c / 8                  # lr * (sigma * C) / batch, per coordinate
    print(f"update noise std {diff.std():.3e}, expected {want:.3e} over {diff.numel()} coords")
    assert stats["noise_std"] == pytest.approx(nm * c / 8)
    assert diff.std().item() == pytest.approx(want, rel=0.01)
    assert abs(diff.mean().item()) < 0.01 * want


def test_private_step_is_reproducible_from_the_generator():
    (x, y), d = batch(), DPSGD(noise_multiplier=1.0, max_grad_norm=1.0)
    a, b = model(), model()
    for m in (a, b):
        assert d.private_step(m, torch.optim.SGD(m.parameters(), lr=0.1), x, y,
                              gen=torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_privacy_engine_clips_opacus_grad_samples_and_accounts():
    m, (x, y) = model(), batch(8)
    loader = DataLoader(TensorDataset(x["x"], y), batch_size=4)
    d = DPSGD(noise_multiplier=0.0, max_grad_norm=0.3, poisson_sampling=False)
    pm, opt, dl = d.make_private(m, torch.optim.SGD(m.parameters(), lr=0.1), loader,
                                 gen=torch.Generator().manual_seed(0))
    xb, yb = next(iter(dl))
    opt.zero_grad()
    loss_fn(pm({"x": xb}), yb).backward()
    gs = torch.cat([p.grad_sample.reshape(4, -1) for p in m.parameters()], 1)
    norms = gs.norm(dim=1)
    assert (norms > 0.3).any()
    want = (gs * (0.3 / (norms[:, None] + 1e-6)).clamp(max=1.0)).sum(0) / 4
    opt.step()                              # DPOptimizer leaves the private gradient in p.grad
    step = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
    assert torch.allclose(step, want, rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_privacy_engine_accountant_agrees_with_epsilon():
    m, (x, y) = model(), batch(8)
    loader = DataLoader(TensorDataset(x["x"], y), batch_size=2,
                        generator=torch.Generator().manual_seed(0))
    d = DPSGD(noise_multiplier=0.9, max_grad_norm=1.0)     # Poisson batches at rate 1/4
    pm, opt, dl = d.make_private(m, torch.optim.SGD(m.parameters(), lr=0.1), loader,
                                 gen=torch.Generator().manual_seed(0))
    steps = 0
    for xb, yb in dl:
        opt.zero_grad()
        if len(yb):
            loss_fn(pm({"x": xb}), yb).backward()
        opt.step()
        steps += 1
    eps = d.epsilon(steps=steps, sample_rate=0.25, delta=1e-5)
    print(f"dpsgd engine: {steps} steps at q=0.25, epsilon={eps:.3f} at delta=1e-05")
    assert d.engine.accountant.get_epsilon(delta=1e-5) == pytest.approx(eps)


def test_epsilon_is_the_rdp_accountant_and_calibration_hits_target():
    d = DPSGD(noise_multiplier=1.1, max_grad_norm=1.0, accountant="rdp")
    ref = RDPAccountant()
    ref.history = [(1.1, 0.02, 500)]
    eps = d.epsilon(steps=500, sample_rate=0.02, delta=1e-5)
    print(f"dpsgd nm=1.1 q=0.02 steps=500: epsilon={eps:.3f} at delta=1e-05")
    assert eps == pytest.approx(ref.get_epsilon(delta=1e-5))
    # the default is the tight PRV accountant, with RDP beside it on request
    tight = DPSGD(noise_multiplier=1.1, max_grad_norm=1.0)
    assert tight.epsilon(steps=500, sample_rate=0.02, delta=1e-5, accountant="rdp") == eps
    assert tight.epsilon(steps=500, sample_rate=0.02, delta=1e-5) < eps
    t = DPSGD(target_epsilon=3.0)
    nm = t.calibrate(epochs=10, sample_rate=0.02)
    assert 3.0 - 0.02 <= t.epsilon(steps=500, sample_rate=0.02, delta=1e-5) <= 3.0
    assert t.public() == {"name": "dpsgd", "max_grad_norm": 1.0, "noise_multiplier": nm}


@pytest.mark.parametrize("kw,flag", [
    (dict(noise_multiplier=-1.0), "--noise-multiplier"),
    (dict(max_grad_norm=0.0), "--max-grad-norm"),
    (dict(max_grad_norm=float("inf")), "--max-grad-norm"),
    (dict(noise_multiplier=1.0, target_epsilon=1.0), "--target-epsilon"),
    (dict(accountant="x"), "--accountant"),
    (dict(delta=2.0), "--delta"),
])
def test_bad_parameters_are_one_line_user_errors(kw, flag):
    one_line_user_error(lambda: DPSGD(**kw), flag)


def test_registered_for_fedavg_only():
    assert DEFENSES.get("dpsgd") is DPSGD
    DPSGD().check_protocol("fedavg")
    with pytest.raises(UserError):
        DPSGD().check_protocol("vanilla")
