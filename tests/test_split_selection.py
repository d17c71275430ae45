"""Adversarial split-point selection: the rule, the budgets, and a real ranking of the CNN's cuts."""
from __future__ import annotations

import pytest
from rich.console import Console

from slsec.config import make_config
from slsec.run import split_search as ss
from slsec.errors import UserError

SMALL = dict(max_train="300", probe_size="8", attack_iters="30")


def rows(*spec: tuple[str, float, float, float]) -> list[dict]:
    """(cut, accuracy, attack SSIM, client FLOPs) -> measured rows."""
    return [{"cut": c, "accuracy": a, "attack_ssim_mean": s, "client_flops": f,
             "smashed_bytes_per_sample": 4.0, "client_params": 10} for c, a, s, f in spec]


MEASURED = (("conv1", 0.90, 0.95, 1e5), ("pool1", 0.90, 0.70, 1e5),
            ("conv2", 0.88, 0.40, 5e6), ("fc1", 0.80, 0.15, 8e6))


def test_least_leakage_wins_without_budgets() -> None:
    r = ss.choose(rows(*MEASURED))
    assert r.chosen == "fc1" and "least attack SSIM" in r.reason
    assert [x["chosen"] for x in r.rows] == [False, False, False, True]


def test_absolute_accuracy_budget_moves_the_choice() -> None:
    r = ss.choose(rows(*MEASURED), min_accuracy=0.85)
    assert r.chosen == "conv2"
    fc1 = r.rows[-1]
    assert not fc1["eligible"] and "accuracy 0.800 < 0.850" in fc1["why"]


def test_relative_accuracy_budget_is_a_share_of_the_best_cut() -> None:
    assert ss.choose(rows(*MEASURED), min_accuracy=0.99, relative=True).chosen == "pool1"
    assert ss.choose(rows(*MEASURED), min_accuracy=0.88, relative=True).chosen == "fc1"


def test_client_flops_budget() -> None:
    assert ss.choose(rows(*MEASURED), max_client_flops=1e6).chosen == "pool1"


def test_ties_go_to_fewer_client_flops() -> None:
    r = ss.choose(rows(("a", 0.9, 0.300, 9e6), ("b", 0.9, 0.305, 2e6), ("c", 0.9, 0.5, 1e6)))
    assert r.chosen == "b" and "fewest client FLOPs wins" in r.reason


def test_label_attacks_rank_by_distance_of_auc_from_chance() -> None:
    measured = [{"cut": c, "accuracy": 0.9, "label_auc": auc, "client_flops": 1.0,
                 "smashed_bytes_per_sample": 1.0, "client_params": 1}
                for c, auc in (("a", 0.95), ("b", 0.2), ("c", 0.55))]
    r = ss.choose(measured)
    assert r.leak_metric == "label_auc" and r.chosen == "c"


def test_no_cut_within_budgets_is_reported_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    r = ss.choose(rows(*MEASURED), min_accuracy=0.95)
    assert r.chosen is None and "no cut meets accuracy >= 0.95" in r.reason
    monkeypatch.setattr(ss, "measure", lambda cfg, progress=None: rows(*MEASURED))
    with pytest.raises(UserError, match="split-select: no cut meets") as e:
        ss.select_split(make_config({}), min_accuracy=0.95)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, value", [("0.9", (0.9, False)), ("95%", (0.95, True)),
                                         (None, (None, False))])
def test_min_accuracy_text(text: str | None, value: tuple) -> None:
    assert ss.parse_min_accuracy(text) == value


@pytest.mark.parametrize("text, value", [("2e6", 2e6), ("2M", 2e6), ("1.5G", 1.5e9),
                                         ("300k", 3e5), (None, None)])
def test_flops_text(text: str | None, value: float | None) -> None:
    assert ss.parse_flops(text) == value


@pytest.mark.parametrize("fn, text", [(ss.parse_min_accuracy, "abc"), (ss.parse_min_accuracy, "1.5"),
                                      (ss.parse_min_accuracy, "120%"), (ss.parse_flops, "lots"),
                                      (ss.parse_flops, "-3"), (ss.parse_flops, "0")])
def test_bad_budget_text_is_a_one_line_user_error(fn, text: str) -> None:
    with pytest.raises(UserError) as e:
        fn(text)
    assert "\n" not in str(e.value) and text in str(e.value)


def test_registered_as_a_pre_training_defense() -> None:
    from slsec.defenses.base import DEFENSES
    from slsec.run.setup import build_defense, make_defense
    cls = DEFENSES.get("split-select")
    assert cls.point == "pre" and cls.protocols == {"vanilla", "ushaped", "splitfed"}
    make_defense("split-select", make_config({}))          # no parameters
    with pytest.raises(UserError, match="does not apply"):
        make_defense("split-select", make_config({"protocol": "fedavg"}))
    assert not build_defense(make_config({"defense": "split-select"}))   # no hooks at run time


def test_candidates_of_ushaped_vary_the_first_cut_before_the_second() -> None:
    assert ss.candidate_cuts(make_config({})) == ["conv1", "pool1", "conv2", "pool2", "fc1"]
    assert ss.candidate_cuts(make_config({"protocol": "ushaped"})) == \
        ["conv1", "pool1", "conv2", "pool2"]
    assert ss.candidate_cuts(make_config({"protocol": "ushaped", "cut2": "conv2"})) == \
        ["conv1", "pool1"]


@pytest.mark.slow
def test_ranks_every_cnn_cut_and_the_utility_budget_changes_the_pick() -> None:
    cfg = make_config(SMALL)                      # default attack: inversion, strongest method
    free = ss.select_split(cfg)
    assert [r["cut"] for r in free.rows] == ["conv1", "pool1", "conv2", "pool2", "fc1"]
    # no --method: whitebox, the decoder and the prior all run on every cut, the strongest
    # is reported (the prior where no inversion beats the server's own guess)
    assert all(r["attack_method"] in ("whitebox", "decoder", "prior") for r in free.rows)
    for r in free.rows:
        assert {"accuracy", "attack_ssim_mean", "attack_psnr_mean", "smashed_bytes_per_sample",
                "client_params", "client_flops", "eligible", "why"} <= set(r)
    leak = {r["cut"]: r["attack_ssim_mean"] for r in free.rows}
    assert leak[free.chosen] == min(leak.values()) or free.reason.count("fewest client FLOPs")
    console = Console(width=160, record=True)
    console.print(ss.ranking_table(free))
    text = console.export_text()
    assert all(c in text for c in leak) and "◀" in text

    chosen_acc = next(r["accuracy"] for r in free.rows if r["chosen"])
    better = [r for r in free.rows if r["accuracy"] > chosen_acc]
    assert better, "the least-leaking cut should not also be the most accurate in this setting"
    budget = min(r["accuracy"] for r in better)
    tight = ss.select_split(cfg, min_accuracy=budget)          # measured once, reused
    assert tight.chosen != free.chosen
    assert next(r for r in tight.rows if r["chosen"])["accuracy"] >= budget
    with pytest.raises(UserError, match="no cut meets"):
        ss.select_split(cfg, min_accuracy=min(1.0, max(r["accuracy"] for r in free.rows) + 0.01))
