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


def cell(r: dict[str, Any]) -> str:
    """'SSIM 0.63; splitguard @41, gradient-check @35' (or '–' where it does not apply)."""
    if "hijack_ssim" not in r:
        return "–"
    caught = ", ".join(f"{n} @{s}" if s is not None else f"{n} missed"
                       for n, s in r["detected_by"].items())
    return f"SSIM {r['hijack_ssim']:.3f}" + (f"; {caught}" if caught else "")


def note(rows: list[dict[str, Any]]) -> str | None:
    """The bound and the legend of the column (None when no row has it)."""
    ran = [int(r["hijack_steps"]) for r in rows if r.get("hijack_steps") is not None]
    if not ran:
        return None
    steps = max(ran)
    return (f"Malicious server: feature-space hijacking (FSHA) for {steps} client steps per cut "
            f"(one client), reconstruction SSIM of the probe without a detector; '<detector> @s': "
            f"the client flagged the server at its step s and stopped sending; 'missed': not "
            f"within the {steps} steps.")
