"""One resolved Experiment per evaluation: the attack is checked and the defenses are
calibrated once, and every rank, view and score reads that one object."""
from __future__ import annotations

from slsec.attacks.base import Attack
from slsec.config import make_config
from slsec.defenses.dp_cut import DPCut
from slsec.run.experiment import plan_attack, resolve
from slsec.run.harness import evaluate
from slsec.run.setup import prepare

SMALL = {"attack": "inversion", "method": "prior", "defense": "dp", "target_epsilon": "8",
         "max_train": "128", "aux_size": "64", "probe_size": "4", "clients": "2"}


def test_an_evaluation_checks_the_attack_and_calibrates_once(monkeypatch, tmp_path):
    calls = {"calibrate": 0, "role_for": 0}
    calibrate, role_for = DPCut.calibrate, Attack.role_for.__func__

    def counted_calibrate(self, **kw):
        calls["calibrate"] += 1
        return calibrate(self, **kw)

    def counted_role_for(cls, *a, **kw):   # the attack check (role, knowledge, method)
        calls["role_for"] += 1
        return role_for(cls, *a, **kw)

    monkeypatch.setattr(DPCut, "calibrate", counted_calibrate)
    monkeypatch.setattr(Attack, "role_for", classmethod(counted_role_for))
    plan_attack.cache_clear()
    cfg = make_config({**SMALL, "out": str(tmp_path)})
    result = evaluate(cfg)
    assert calls == {"calibrate": 1, "role_for": 1}
    assert result.metrics["sigma_used"] > 0 and result.metrics["attack_method"] == "prior"


def test_resolve_is_once_per_config_and_setup():
    cfg = make_config(SMALL)
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    assert resolve(cfg, setup) is exp
    assert exp.attack.role == "server" and exp.attack.methods == ("prior",)
    assert exp.attack.rank == 0 and exp.cuts == setup.cuts
    assert exp.defense.defenses[0].sigma is not None          # calibrated
    copy = exp.fresh_defense()                                # a rank's own copy
    assert copy.defenses[0] is not exp.defense.defenses[0]
    assert copy.defenses[0].sigma == exp.defense.defenses[0].sigma
