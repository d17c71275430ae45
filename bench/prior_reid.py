"""What the prior and the leakage-beyond-prior metrics add to the card's attack time.

Trains the card's run once (vanilla, MNIST CNN, conv1, DP at the cut sigma 0.5), then in one
process: the whole attack phase (whitebox, decoder, prior) and the scoring with and without the
new metrics (gain over the prior, re-identification among 1,064 candidates for the reported
method and every compared one). Reports CPU seconds of each part and the share of the attack
phase that the prior and the new metrics take. Run: python bench/prior_reid.py
"""
from __future__ import annotations

from _common import Clock, one_thread

from slsec.config import make_config
from slsec.run.harness import beyond_prior, reid_candidates, resolve, run_attack, score
from slsec.run.runner import run_local
from slsec.run.setup import prepare


def main() -> None:
    one_thread()
    cfg = make_config({"protocol": "vanilla", "attack": "inversion", "defense": "dp",
                       "sigma": 0.5})
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    outcomes = run_local(exp)
    with Clock() as attack:
        guess = run_attack(exp, outcomes[exp.attack.rank])
    truth = outcomes[0].truth_inputs
    with Clock() as scoring:
        m, shown = score(exp, guess, truth, outcomes[0].truth_labels)
    import torch

    from slsec.attacks import prior as priors
    from slsec.attacks.inversion import CutChannel
    from slsec.run.harness import attacker_knowledge, make_view
    view = make_view(exp, outcomes[0], "server", attacker_knowledge(cfg, "server"))
    obs = torch.cat([msg["x"] for msg in view.smashed]).float()
    with Clock() as build:
        priors._build_prior(view, obs, CutChannel.from_public(view.public),
                            torch.Generator().manual_seed(7))
    with Clock() as extra:
        beyond_prior(setup, shown, guess, reid_candidates(setup, shown.inputs))
    prior_s = build.cpu   # built once per view, shared by every method
    print(f"attack phase {attack.cpu:.1f} s CPU (building the prior {prior_s:.2f} s); scoring "
          f"{scoring.cpu:.2f} s CPU, of which gain + re-id ~{extra.cpu:.2f} s (one pass; "
          f"score makes two: reported method, then every method)")
    print(f"prior + new metrics / attack phase: "
          f"{(prior_s + 2 * extra.cpu) / attack.cpu:.3f}")


if __name__ == "__main__":
    main()
