"""--seeds N: per-seed rows plus one aggregate row per cell, resumable, reproducible."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from slsec.study import sweeps as sweep
from slsec.errors import UserError
from slsec.report.frontier import is_private, privacy_key
from slsec.report.results import config_key, read_rows
from slsec.run.result import RunResult
from slsec.report.stats import t_interval


def fake_metrics(cfg) -> dict:
    """Made-up but seed- and sigma-dependent metrics (the real ones are tested end to end)."""
    s, k = cfg.sigma or 0.0, cfg.seed
    return {"accuracy": 0.9 - s - 0.01 * k, "attack_ssim_mean": 0.6 - s + 0.02 * k,
            "baseline_ssim_mean": 0.2, "ssim_gain_mean": 0.3 - s + 0.01 * (k % 2),
            "cuts": [cfg.cut or "conv1"], "attack_method": "whitebox" if k % 2 else "decoder",
            "labels_sent_to_server": True}


@pytest.fixture
def fake_cells(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int]]:
    ran: list[tuple[float, int]] = []

    def fake(cfg):
        assert cfg.seeds == 1                       # each run is one seed
        ran.append((cfg.sigma, cfg.seed))
        result = RunResult(cfg.to_dict(), fake_metrics(cfg), [], {}, cfg.seed)
        return sweep.result_row(cfg, result, {"metrics": {"accuracy": 0.9}})
    monkeypatch.setattr(sweep, "run_cell", fake)
    return ran


FLAGS = dict(run_id="s", sigma="0,0.28", defense="dp", attack="inversion", seed="5", seeds="3")


def test_seeds_write_per_seed_rows_and_one_aggregate_row_per_cell(
        tmp_path: Path, fake_cells: list) -> None:
    folder = sweep.run_sweep(None, {**FLAGS, "out": str(tmp_path)}, resume=False)
    rows = read_rows(folder / "results.csv")
    per = [r for r in rows if r["row_kind"] == "seed"]
    agg = [r for r in rows if r["row_kind"] == "aggregate"]
    assert sorted(fake_cells) == [(0.0, 5), (0.0, 6), (0.0, 7), (0.28, 5), (0.28, 6), (0.28, 7)]
    assert len(per) == 6 and len(agg) == 2 and len({r["cell"] for r in rows}) == 8
    for a in agg:
        mine = [r for r in per if r["sigma"] == a["sigma"]]
        accs = [float(r["accuracy"]) for r in mine]
        mean, hw = t_interval(accs)
        assert float(a["accuracy"]) == pytest.approx(mean)
        assert float(a["accuracy_ci95"]) == pytest.approx(hw) and hw > 0
        assert a["seed"] == "5" and a["seeds"] == "3" and a["n_seeds"] == "3"
        assert a["attack_method"] == "whitebox|decoder"       # differs per seed: both named
        assert "ssim_gain_mean_ci95" in a                     # new metric keys: aggregated too
        assert float(a["dcs_ci95"]) >= 0
    # each per-seed row is the row a single-seed sweep of that seed writes (same cell key)
    cells = sweep.grid_cells(sweep.parse_grid(None, {**FLAGS, "seeds": "1", "seed": "6",
                                                     "out": str(tmp_path)}))
    assert {config_key(c.to_dict()) for c in cells} <= {r["cell"] for r in per}
    md = (folder / "report.md").read_text()
    assert "3 seeds (5..7)" in md and "± " in md and "Private points" in md
    assert (folder / "frontier_ssim_gain_mean.png").stat().st_size > 10_000


def test_private_needs_the_upper_ci_bound_under_the_threshold() -> None:
    rows = [{"ssim_gain_mean": 0.03, "ssim_gain_mean_ci95": 0.01, "attack_ssim_mean": 0.5},
            {"ssim_gain_mean": 0.03, "ssim_gain_mean_ci95": 0.03},      # upper 0.06 > 0.05
            {"ssim_gain_mean": 0.01}]                                   # one seed: no interval
    key = privacy_key(rows)
    assert key == "ssim_gain_mean"
    assert [is_private(r, key) for r in rows] == [True, False, False]
    ssim = [{"attack_ssim_mean": 0.22, "attack_ssim_mean_ci95": 0.02, "baseline_ssim_mean": 0.2},
            {"attack_ssim_mean": 0.22, "attack_ssim_mean_ci95": 0.04, "baseline_ssim_mean": 0.2}]
    assert privacy_key(ssim) == "attack_ssim_mean"
    assert [is_private(r, "attack_ssim_mean") for r in ssim] == [True, False]


def test_resume_after_a_crash_mid_cell_recomputes_the_aggregate_without_double_counting(
        tmp_path: Path, fake_cells: list, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = sweep.run_sweep(None, {**FLAGS, "out": str(tmp_path / "a")}, resume=False)
    want = {r["cell"]: {**r, "out": ""} for r in read_rows(fresh / "results.csv")}
    real, calls = sweep.run_cell, []

    def crash_on_fifth(cfg):
        calls.append(cfg)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(cfg)
    monkeypatch.setattr(sweep, "run_cell", crash_on_fifth)
    f = {**FLAGS, "out": str(tmp_path / "b")}
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(None, f, resume=False)
    rows = read_rows(tmp_path / "b" / "s" / "results.csv")
    assert [r["row_kind"] for r in rows] == ["seed"] * 4       # 2nd cell's aggregate not yet
    monkeypatch.setattr(sweep, "run_cell", real)
    sweep.run_sweep(None, f, resume=True)
    sweep.run_sweep(None, f, resume=True)                      # nothing left: no new rows
    got = {r["cell"]: {**r, "out": ""} for r in read_rows(tmp_path / "b" / "s" / "results.csv")}
    assert len(got) == len(read_rows(tmp_path / "b" / "s" / "results.csv")) == 8
    assert got == want                                         # same rows as a sweep never killed


def test_seeds_must_be_at_least_one_and_is_not_a_grid_axis(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--seeds must be >= 1"):
        sweep.run_sweep(None, {**FLAGS, "seeds": "0", "out": str(tmp_path)}, resume=False)
    toml = tmp_path / "g.toml"
    toml.write_text("[grid]\nseeds = [1, 3]\n")
    with pytest.raises(UserError, match="cannot be a grid axis"):
        sweep.parse_grid(str(toml), {})


TINY = dict(sigma="0.1", defense="dp", attack="inversion", max_train="64", probe_size="4",
            aux_size="50", attack_iters="10", seeds="2")
TIMING = ("seconds", "wall_s", "cpu_s")


@pytest.mark.slow
def test_a_tiny_real_sweep_rerun_with_the_same_seeds_gives_identical_rows(tmp_path: Path) -> None:
    """Two sweeps in fresh folders (no shared cache): every row equal, timings aside."""
    def rows(name: str) -> list[dict]:
        folder = sweep.run_sweep(None, {**TINY, "out": str(tmp_path / name), "run_id": "t"},
                                 resume=False)
        return [{k: v for k, v in r.items() if not any(t in k for t in TIMING) and k != "out"}
                for r in read_rows(folder / "results.csv")]
    a, b = rows("first"), rows("second")
    assert [r["row_kind"] for r in a] == ["seed", "seed", "aggregate"]
    assert a == b
    assert a[0]["attack_ssim_mean"] != a[1]["attack_ssim_mean"]   # the seeds really differ
    assert not math.isnan(float(a[2]["attack_ssim_mean_ci95"]))


def test_evaluate_with_seeds_stores_per_seed_results_and_the_aggregate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The multi-seed wiring of `slsec evaluate` (each seed's run is the ordinary evaluation,
    replaced here by made-up metrics; a real two-seed run is in the slow test above)."""
    import json

    import slsec.cli.commands  # noqa: F401  (imported before the patch: it binds write_run)
    import slsec.report.runreport
    import slsec.study.twin
    from slsec.cli import main
    from slsec.report.results import write_json

    def fake_seed(cfg, **kw):
        assert cfg.seeds == 1
        m = fake_metrics(cfg)
        return slsec.study.twin.Evaluation(
            cfg, {"config": cfg.to_dict(), "metrics": m},
            {"config": cfg.to_dict(), "metrics": {**m, "accuracy": 0.95}})

    def fake_write(folder, result, base, images=None):
        write_json(folder / "result.json", {**result, "undefended": base})
    monkeypatch.setattr(slsec.study.twin, "evaluate_with_twin", fake_seed)
    monkeypatch.setattr(slsec.report.runreport, "write_run", fake_write)
    assert main(["evaluate", "--attack", "inversion", "--defense", "dp", "--sigma", "0.1",
                 "--seed", "2", "--seeds", "3", "--out", str(tmp_path), "--run-id", "e"]) == 0
    stored = json.loads((tmp_path / "e" / "result.json").read_text())
    assert stored["seeds"] == [2, 3, 4] and len(stored["per_seed"]) == 3
    acc = stored["aggregate"]["metrics"]["accuracy"]
    mean, hw = t_interval([0.9 - 0.1 - 0.01 * k for k in (2, 3, 4)])
    assert acc["mean"] == pytest.approx(mean) and acc["half_width"] == pytest.approx(hw)
    assert stored["aggregate"]["undefended"]["accuracy"]["half_width"] == pytest.approx(0, abs=1e-12)
    assert "ssim_gain_mean" in stored["aggregate"]["metrics"]
    out = capsys.readouterr().out
    assert "±" in out and "3 seeds (2..4)" in out
    assert main(["report", str(tmp_path / "e")]) == 0


def test_train_refuses_several_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    from slsec.cli import main
    assert main(["train", "--seeds", "2"]) == 2
    assert "--seeds applies to evaluate" in capsys.readouterr().err


def test_benchmark_with_seeds_writes_per_seed_and_aggregate_rows_and_a_pm_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slsec.cli import main
    argv = ["benchmark", "--rounds", "1", "--max-train", "60", "--clients", "2",
            "--dataset", "mnist", "--protocol", "vanilla", "--partition", "iid",
            "--seeds", "3", "--out", str(tmp_path), "--run-id", "b"]
    assert main(argv) == 0
    rows = read_rows(tmp_path / "benchmark-b" / "results.csv")
    assert [r["row_kind"] for r in rows] == ["seed", "seed", "seed", "aggregate"]
    assert [r["seed"] for r in rows] == ["0", "1", "2", "0"]
    mean, hw = t_interval([float(r["test_accuracy"]) for r in rows[:3]])
    assert float(rows[3]["test_accuracy"]) == pytest.approx(mean)
    assert float(rows[3]["test_accuracy_ci95"]) == pytest.approx(hw)
    md = (tmp_path / "benchmark-b" / "report.md").read_text()
    assert f"{mean:.4f} ± {hw:.4f}" in md and "3 seeds (0..2)" in md
    assert main([*argv, "--resume"]) == 0                      # resumed: nothing added
    assert len(read_rows(tmp_path / "benchmark-b" / "results.csv")) == 4


def test_benchmark_verdict_uses_the_seed_intervals() -> None:
    from slsec.study.benchmark import verdicts

    def row(p, acc, hw):
        return {"dataset": "mnist", "protocol": p, "partition": "dirichlet", "alpha": "0.5",
                "test_accuracy": str(acc), "test_accuracy_ci95": str(hw), "n_seeds": "3",
                "last5_std_accuracy": "0", "n_test": "1000", "rounds": "8",
                "row_kind": "aggregate"}
    [line] = verdicts([row("splitfed", 0.93, 0.02), row("vanilla", 0.90, 0.02)])
    assert "no winner" in line and "intervals overlap" in line
    [line] = verdicts([row("splitfed", 0.95, 0.005), row("vanilla", 0.90, 0.005)])
    assert "SplitFed is better here" in line and "mean of 3 seeds" in line


def test_review_with_seeds_grades_on_per_cut_means_and_keeps_per_seed_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Made-up per-seed measurements (a real two-seed review runs in about a minute): the SSIM
    of conv1 is 0.56 / 0.46 over seeds 0 / 1 and its gain over the prior 0.26 / 0.16, so seed 1
    alone would say MEDIUM, the mean (gain 0.21) HIGH."""
    import csv

    import slsec.run.split_search as sel
    from slsec.cli import main

    def fake_measure(cfg, progress=None):
        assert cfg.seeds == 1
        out = []
        for cut, ssim in (("conv1", 0.56 - 0.1 * cfg.seed), ("pool2", 0.2 + 0.02 * cfg.seed)):
            out.append({"cut": cut, "cuts": cut, "accuracy": 0.9 - 0.02 * cfg.seed,
                        "attack_ssim_mean": ssim, "attack_psnr_mean": 15.0,
                        "baseline_ssim_mean": 0.18, "smashed_bytes_per_sample": 1000,
                        "client_params": 320, "client_flops": 4.5e5, "attack_method": "whitebox",
                        "metrics": {"labels_sent_to_server": True, "cuts": [cut],
                                    "prior_ssim_mean": 0.3, "ssim_gain_mean": ssim - 0.3,
                                    "reid_top1": 0.0, "prior_reid_top1": 0.0}})
        return out
    monkeypatch.setattr(sel, "measure", fake_measure)
    assert main(["review", "--protocol", "vanilla", "--seeds", "2", "--hijack-steps", "0",
                 "--out", str(tmp_path),
                 "--run-id", "r"]) == 0
    out = capsys.readouterr().out
    assert "0.510 ±" in out and "0.635" in out and "2 seeds (0..1)" in out and "on the means" in out
    with (tmp_path / "r" / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["row_kind"], r["cut"], r["seed"]) for r in rows] == [
        ("aggregate", "conv1", "0"), ("aggregate", "pool2", "0"), ("seed", "conv1", "0"),
        ("seed", "conv1", "1"), ("seed", "pool2", "0"), ("seed", "pool2", "1")]
    conv1 = rows[0]
    assert float(conv1["attack_ssim_mean"]) == pytest.approx(0.51)
    assert float(conv1["attack_ssim_mean_ci95"]) == pytest.approx(t_interval([0.56, 0.46])[1])
    assert conv1["input_risk"] == "HIGH"                     # mean gain 0.21 >= 0.2
    assert rows[1]["input_risk"] == "LOW" and rows[1]["recommended"] == "True"


def test_the_dp_frontier_config_runs_three_seeds_of_every_cut_and_sigma() -> None:
    cfgs = sweep.grid_cells(sweep.parse_grid(str(Path(__file__).resolve().parents[1] / "configs" / "dp_frontier.toml"), {}))
    assert len(cfgs) == 40 and {c.seeds for c in cfgs} == {3}
    assert len(sweep.seed_cells(cfgs)) == 120
    assert {(c.seed, c.seeds) for c in sweep.seed_cells(cfgs)} == {(0, 1), (1, 1), (2, 1)}


def test_the_run_seed_seeds_the_attack_itself() -> None:
    """On one trained run, the attack's own randomness (its decoder's initialisation, its
    batches) follows the run's seed: a study over seeds varies it, and a seed repeats it."""
    import dataclasses

    import torch

    from slsec.config import make_config
    from slsec.run import harness
    from slsec.run.experiment import resolve
    from slsec.run.runner import run_local
    cfg = make_config({"protocol": "vanilla", "attack": "inversion", "method": "decoder",
                       "max_train": 128, "probe_size": 4, "aux_size": 64, "batch_size": 32,
                       "rounds": 1, "attack_iters": 20})
    exp = resolve(cfg)
    outcome = run_local(exp)[exp.attack.rank]

    def images(seed: int) -> torch.Tensor:   # the same observations; only the seed differs
        other = dataclasses.replace(exp, cfg=dataclasses.replace(exp.cfg, seed=seed))
        return harness.run_attack(other, outcome).methods["decoder"].images
    first, again, other = images(0), images(0), images(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
