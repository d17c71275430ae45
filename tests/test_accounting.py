"""slsec.privacy.accounting returns exactly what the Opacus accountants return for the same numbers."""
import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from slsec.privacy import accounting
from slsec.errors import UserError
from conftest import one_line_user_error

torch.set_num_threads(1)
# the reference accountants' own numerical notes (the code under test silences them)
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order:UserWarning", "ignore:divide by zero:RuntimeWarning")


@pytest.mark.parametrize("nm,q,steps", [(1.0, 0.01, 200), (0.8, 1.0, 5), (2.5, 0.1, 30)])
def test_rdp_epsilon_matches_opacus_step_loop(nm, q, steps):
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=nm, sample_rate=q)
    want = acc.get_epsilon(delta=1e-5)
    got = accounting.epsilon(noise_multiplier=nm, sample_rate=q, steps=steps, delta=1e-5)
    print(f"rdp nm={nm} q={q} steps={steps}: epsilon={got:.4f} at delta=1e-05")
    assert got == pytest.approx(want, rel=1e-12)


def test_prv_epsilon_matches_opacus():
    acc = PRVAccountant()
    acc.history = [(1.2, 0.05, 100)]
    want = acc.get_epsilon(delta=1e-5)
    got = accounting.epsilon(noise_multiplier=1.2, sample_rate=0.05, steps=100, delta=1e-5,
                             accountant="prv")
    print(f"prv nm=1.2 q=0.05 steps=100: epsilon={got:.4f} at delta=1e-05")
    assert got == pytest.approx(want, rel=1e-9)
    rdp = accounting.epsilon(noise_multiplier=1.2, sample_rate=0.05, steps=100, delta=1e-5)
    assert got <= rdp            # PRV is the tighter of the two


@pytest.mark.parametrize("acc", ["rdp", "prv"])
def test_noise_for_epsilon_reaches_target(acc):
    nm = accounting.noise_for_epsilon(target_epsilon=2.0, delta=1e-5, sample_rate=0.02, steps=150,
                                      accountant=acc)
    assert nm == get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.02,
                                      steps=150, accountant=acc)
    eps = accounting.epsilon(noise_multiplier=nm, sample_rate=0.02, steps=150, delta=1e-5,
                             accountant=acc)
    assert 2.0 - 0.02 <= eps <= 2.0


def test_edge_cases():
    assert accounting.epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=1e-5) == 0.0
    assert accounting.epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=3, delta=1e-5) == math.inf


@pytest.mark.parametrize("kw,flag", [
    (dict(accountant="gdp"), "--accountant"),
    (dict(delta=0.0), "--delta"),
    (dict(sample_rate=1.5), "sample rate"),
])
def test_bad_arguments_are_one_line_user_errors(kw, flag):
    args = dict(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5) | kw
    one_line_user_error(lambda: accounting.epsilon(**args), flag)


def test_unreachable_target_is_a_user_error():
    with pytest.raises(UserError, match="--target-epsilon") as e:
        accounting.noise_for_epsilon(target_epsilon=1e-9, delta=1e-12, sample_rate=1.0, steps=10**6)
    assert "\n" not in str(e.value)


def test_prv_is_the_default_and_falls_back_to_rdp_where_it_cannot_run():
    """PRV (tighter) at ordinary points; far beyond any useful guarantee (RDP eps > 50) PRV
    would take minutes and gigabytes or fail inside Opacus, so RDP's value is returned and
    `used` names it."""
    from slsec.config import RunConfig
    assert RunConfig().accountant == "prv"
    kw = dict(sample_rate=1.0, steps=1, delta=1e-5)
    tight = accounting.epsilon(noise_multiplier=0.25, accountant="prv", **kw)
    loose = accounting.epsilon(noise_multiplier=0.25, accountant="rdp", **kw)
    assert tight < loose and accounting.used(eps_rdp=loose, accountant="prv") == "prv"
    for nm in (0.1, 0.01, 1e-3):
        rdp = accounting.epsilon(noise_multiplier=nm, accountant="rdp", **kw)
        assert accounting.epsilon(noise_multiplier=nm, accountant="prv", **kw) == rdp > 50
        assert accounting.used(eps_rdp=rdp, accountant="prv") == "rdp"


def test_prv_epsilons_share_one_composed_prv_and_stay_upper_bounds():
    deltas = [1e-9, 1e-7, 1e-5, 1e-3]
    kw = dict(noise_multiplier=1.0, sample_rate=0.1, steps=50)
    many = accounting.epsilons(deltas=deltas, accountant="prv", **kw)
    rdp = accounting.epsilons(deltas=deltas, accountant="rdp", **kw)
    for d, e, r in zip(deltas, many, rdp):
        one = accounting.epsilon(delta=d, accountant="prv", **kw)
        assert e <= r and e == pytest.approx(one, abs=0.02)   # Opacus' eps_error is 0.01
