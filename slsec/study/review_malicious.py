"""The review's "malicious server" column: per cut, a bounded hijack (FSHA) run, then the same
run with each client-side detector.

For a protocol where a malicious server can hijack training (the hijack attack's roles), each
cut gets one run of `hijack_steps` client steps (one client, the review's data and batch size)
without a detector, whose probe reconstruction SSIM says what the hijack reaches within that
budget, and one run per registered detector (defenses whose point is "monitor"), which says
whether the client caught the server and at which of its steps. Cost: (1 + detectors) runs of
`hijack_steps` server-side hijack steps per cut; the bound is printed under the table.
"""
from __future__ import annotations

import math
from typing import Any

from slsec.config import RunConfig

DEFAULT_STEPS = 110     # two rounds of one client on the embedded MNIST shard (55 batches)


def detectors() -> list[str]:
    from slsec.defenses.base import DEFENSES
    return sorted(n for n in DEFENSES.names() if DEFENSES.get(n).point == "monitor")


def hijack_attack() -> str | None:
    """The attack that plays the malicious server in the review (declared `reviewed`)."""
    from slsec.attacks.base import ATTACKS
    return next((n for n, a in ATTACKS if a.reviewed == "malicious"), None)


def applies(protocol: str) -> bool:
    from slsec.attacks.base import ATTACKS
    name = hijack_attack()
    return name is not None and protocol in ATTACKS.get(name).roles


def hijack_config(cfg: RunConfig, cut: str, steps: int) -> RunConfig:
    """One client, enough rounds for `steps` client steps on its shard, no other defense."""
    from slsec.run.setup import prepare
    one = cfg.replace(attack=hijack_attack(), method=None, knowledge=None, cut=cut, clients=1, seeds=1,
                      defense=(), fraction=1.0)
    per_round = math.ceil(len(prepare(one.replace(rounds=1)).shard(1)) / cfg.batch_size)
    return one.replace(rounds=max(1, math.ceil(steps / per_round)))


def measure(cfg: RunConfig, cut: str, steps: int) -> dict[str, Any]:
    """{hijack_ssim, hijack_steps, detected_by: {detector: step or None}} for one cut."""
    from slsec.run.split_search import evaluate_cached
    run = hijack_config(cfg, cut, steps)
    m = evaluate_cached(run)
    out: dict[str, Any] = {"hijack_ssim": m.get("attack_ssim_mean", math.nan),
                           "hijack_steps": m.get("hijack_steps"), "detected_by": {}}
    for name in detectors():
        md = evaluate_cached(run.replace(defense=(name,)))
        key = name.replace("-", "_")
        step = md.get(f"{key}_step", math.nan)
        out["detected_by"][name] = None if md.get(f"{key}_flagged") != 1.0 else int(step)
        out[f"{key}_step"] = step
    return out


from slsec.report.review_report import cell, note  # noqa: E402,F401  (rendering, re-exported)
