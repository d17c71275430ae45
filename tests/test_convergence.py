"""`slsec benchmark` to convergence: the stopping rule, the validation split the learning rate
is chosen on, the flags' one-line errors, and a small end-to-end run that repeats exactly."""
from __future__ import annotations

import numpy as np
import pytest

from slsec.cli import main
from slsec.config import make_config
from slsec.errors import UserError
from slsec.report.results import read_rows
from slsec.run.convergence import Rule, converged_row, parse_rule, stop_point, validation_setup


def test_stop_point_is_early_stopping():
    # improvements (> 0.01 over the best): rounds 1, 2, 4; then 3 rounds without one
    acc = [0.50, 0.60, 0.605, 0.70, 0.705, 0.70, 0.71, 0.90]
    assert stop_point(acc, 0.01, 3) == (6, 3, True)      # stops at round 7, converged at 4
    assert stop_point(acc, 0.0, 3) == (7, 7, False)      # every gain counts: never stops
    assert stop_point([0.1, 0.1, 0.1], 0.0, 1) == (1, 0, True)
    assert stop_point([0.3], 0.0, 5) == (0, 0, False)


def test_converged_row_reports_the_stopping_round():
    acc = [0.5, 0.6, 0.61, 0.62, 0.9]
    curve = [{"round": i + 1, "accuracy": a, "wall_s": 2.0 * (i + 1), "bytes": 10**6 * (i + 1)}
             for i, a in enumerate(acc)]
    row = converged_row(curve, Rule(min_delta=0.05, patience=2, max_rounds=5))
    assert (row["rounds_run"], row["rounds_to_convergence"], row["converged"]) == (4, 2, 1)
    assert row["test_accuracy"] == 0.62 and row["best_accuracy"] == 0.62
    assert row["wall_clock_s"] == 8.0 and row["mb_on_wire"] == 4.0 and len(row["curve"]) == 4


def test_validation_split_is_held_out_of_training_and_test_is_untouched():
    from slsec.run.setup import prepare
    s = prepare(make_config({"dataset": "mnist", "clients": 3, "max_train": 300, "aux_size": 0}))
    v = validation_setup(s, 0.1)
    train = np.concatenate(v.shards)
    assert len(train) == 270 and len(v.data.test) == 30
    held = np.setdiff1d(np.concatenate(s.shards), train)
    assert len(held) == 30
    # the new test set is exactly the held-out training images; the real test set is not used
    assert np.array_equal(v.data.test.inputs.numpy(), s.data.train.inputs[np.sort(held)].numpy())
    assert len(s.data.test) == 1000 and v.data.train is s.data.train


@pytest.mark.parametrize("kw, flag", [({"patience": "0"}, "--patience"),
                                      ({"min_delta": "-0.1"}, "--min-delta"),
                                      ({"max_rounds": "many"}, "--max-rounds"),
                                      ({"lr_grid": "0.001,-1"}, "--lr-grid"),
                                      ({"lr_grid": ","}, "--lr-grid")])
def test_bad_flags_are_one_line(kw, flag):
    with pytest.raises(UserError) as e:
        parse_rule(**kw)
    assert flag in str(e.value) and "\n" not in str(e.value)


def test_cli_rejects_rounds_with_max_rounds(tmp_path, capsys):
    code = main(["benchmark", "--dataset", "mnist", "--protocol", "vanilla", "--partition", "iid",
                 "--rounds", "3", "--max-rounds", "4", "--out", str(tmp_path)])
    assert code == 2 and "--max-rounds" in capsys.readouterr().err


def test_small_benchmark_to_convergence_repeats_exactly(tmp_path):
    args = ["benchmark", "--dataset", "mnist", "--protocol", "vanilla", "--partition", "iid",
            "--max-train", "160", "--max-rounds", "3", "--patience", "1", "--min-delta", "0.0",
            "--lr-grid", "0.0003,0.003", "--seeds", "2", "--batch-size", "32",
            "--out", str(tmp_path)]
    for run_id in ("a", "b"):
        assert main(args + ["--run-id", run_id]) == 0
    rows = {r: read_rows(tmp_path / f"benchmark-{r}" / "results.csv") for r in ("a", "b")}
    seeds = [r for r in rows["a"] if r["row_kind"] == "seed"]
    assert len(seeds) == 2 and all(1 <= int(r["rounds_run"]) <= 3 for r in seeds)
    tried = read_rows(tmp_path / "benchmark-a" / "lr_choice.csv")
    assert sorted(float(t["lr"]) for t in tried) == [0.0003, 0.003]
    best = max(tried, key=lambda t: float(t["val_accuracy"]))
    assert [t["chosen"] for t in tried].count("True") == 1 and best["chosen"] == "True"
    assert all(float(r["lr"]) == float(best["lr"]) for r in seeds)
    agg = [r for r in rows["a"] if r["row_kind"] == "aggregate"]
    assert len(agg) == 1 and "test_accuracy_ci95" in agg[0] and "rounds_run_ci95" in agg[0]
    # the same cell and seed gives the same row (all but the timings)
    same = ("test_accuracy", "best_accuracy", "rounds_to_convergence", "rounds_run", "curve",
            "mb_on_wire", "lr", "key")
    for ra, rb in zip(rows["a"], rows["b"]):
        assert {k: ra[k] for k in same} == {k: rb[k] for k in same}


def test_a_cell_stops_training_when_the_rule_fires():
    """The rule stops the run itself: no round past the stopping round trains, and the rounds
    that did train are those of a run capped there (same seed)."""
    from slsec.run.convergence import train
    cfg = make_config({"dataset": "mnist", "clients": 2, "max_train": 160, "batch_size": 32,
                       "rounds": 6, "aux_size": 0})
    seen = []
    result, curve = train(cfg, Rule(min_delta=0.99, patience=1, max_rounds=6), on_round=seen.append)
    assert result is None and len(seen) == 2 and [r["round"] for r in curve] == [1, 2]
    full, whole = train(cfg.replace(rounds=3), Rule(min_delta=0.0, patience=5, max_rounds=3))
    assert full is not None and len(whole) == 3
    assert [r["accuracy"] for r in whole[:2]] == [r["accuracy"] for r in curve]
    assert [r["bytes"] for r in whole[:2]] == [r["bytes"] for r in curve]


def test_rule_settings_as_toml_keys_and_flags_override_them(tmp_path):
    conf = tmp_path / "b.toml"
    conf.write_text('[benchmark]\ndataset = "mnist"\nprotocol = "vanilla"\npartition = "iid"\n'
                    'max_train = 160\nbatch_size = 32\nmax_rounds = 4\npatience = 1\n'
                    'min_delta = 0.99\n')
    assert main(["benchmark", "--config", str(conf), "--out", str(tmp_path), "--run-id", "t"]) == 0
    row, = read_rows(tmp_path / "benchmark-t" / "results.csv")
    assert (int(row["rounds_run"]), float(row["min_delta"]), int(row["patience"])) == (2, 0.99, 1)
    assert main(["benchmark", "--config", str(conf), "--patience", "2", "--out", str(tmp_path),
                 "--run-id", "u"]) == 0
    row, = read_rows(tmp_path / "benchmark-u" / "results.csv")
    assert (int(row["rounds_run"]), int(row["patience"])) == (3, 2)


def test_bad_rule_value_in_toml_is_one_line(tmp_path, capsys):
    conf = tmp_path / "b.toml"
    conf.write_text('[benchmark]\ndataset = "mnist"\npatience = 0\n')
    assert main(["benchmark", "--config", str(conf), "--out", str(tmp_path)]) == 2
    e = capsys.readouterr().err.strip()
    assert "patience" in e and "at least 1" in e and len(e.splitlines()) == 1


def test_the_fashion_configs_load():
    from pathlib import Path
    from slsec.study import sweeps as sweep
    from slsec.study.benchmark import plan_grid, rule_values
    configs = Path(__file__).resolve().parents[1] / "configs"
    cells = plan_grid(str(configs / "slperf_fashion.toml"), {})
    assert len(cells) == 6 and {(c.clients, c.max_train, c.dataset) for c in cells} == \
        {(4, 2000, "fashion-mnist")}
    rule = parse_rule(*(rule_values(str(configs / "slperf_fashion.toml"))[k] for k in
                        ("min_delta", "patience", "max_rounds", "lr_grid")))
    assert (rule.max_rounds, rule.patience, rule.min_delta, rule.lrs) == \
        (30, 5, 0.005, (0.001, 0.003, 0.01))
    frontier = sweep.grid_cells(sweep.parse_grid(str(configs / "dp_frontier_fashion.toml"), {}))
    assert {c.sigma for c in frontier} == {0, 0.1, 0.2, 0.5} and {c.cut for c in frontier} == {"fc1"}
    nopeek = sweep.grid_cells(sweep.parse_grid(str(configs / "nopeek_frontier_fashion.toml"), {}))
    assert {c.nopeek_weight for c in nopeek} == {0.5, 2, 8} and {c.cut for c in nopeek} == {"fc1"}
    assert {c.defense for c in nopeek} == {("nopeek",)}
