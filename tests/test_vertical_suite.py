"""The suite for vertical SL: review (each party's exposure per defense setting), sweep, report,
compare and benchmark, at small settings."""
from __future__ import annotations

import contextlib
import io
import math

import pandas as pd
import pytest

from slsec.cli import main
from slsec.study.review_vertical import party_split

SMALL = ["--protocol", "vertical", "--dataset", "spam", "--clients", "2", "--rounds", "1",
         "--batch-size", "64", "--max-train", "300", "--aux-size", "200", "--probe-size", "16",
         "--attack-iters", "20", "--threads", "1"]


def _run(args: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(args)
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    out = tmp_path_factory.mktemp("vreview")
    code, text = _run(["review", *SMALL, "--defense", "marvell", "--marvell-power", "4",
                       "--out", str(out), "--run-id", "rv"])
    return code, text, out / "rv"


def test_review_grades_each_party_per_defense_setting(review):
    code, text, folder = review
    assert code == 0, text
    rows = pd.read_csv(folder / "results.csv")
    agg = rows[rows.row_kind == "aggregate"]
    assert [(s, int(p)) for s, p in zip(agg.setting, agg.party)] == [
        ("none", 1), ("none", 2), ("marvell marvell_power=4", 1), ("marvell marvell_power=4", 2)]
    seeds = rows[rows.row_kind == "seed"]
    assert len(seeds) == 2 * 2 and set(seeds.seed) == {0}
    # labels to each passive party: the strongest attack's separation beside the prior (0.5)
    assert agg.label_separation.between(0.5, 1.0).all()
    assert agg.label_baseline_accuracy.between(0.5, 1.0).all()
    # columns to the active party: the gain over the prior, with the attack's and the prior's R²
    assert agg.feature_gain.notna().all() and agg.prior_numeric_r2.notna().all()
    # party 2's exposure is measured on party 2's columns (the groups rotate): their sizes
    assert sorted(set(agg["columns"])) == [28, 29]
    # utility cost against the undefended run of the same seed; grades on every row
    assert agg[agg.setting != "none"].accuracy_cost.notna().all()
    assert set(agg.risk) <= {"LOW", "MEDIUM", "HIGH"}
    # the undefended labels leak: a passive party separates them far beyond the prior
    assert agg[agg.setting == "none"].label_separation.min() > 0.8
    md = (folder / "report.md").read_text()
    assert "Frontier" in md and "label separation" in md and (folder / "frontier.png").exists()
    assert "stays <= 0.60" in text and "report:" in text


def test_aggregate_gives_intervals_and_costs_paired_by_seed():
    from slsec.study.review_vertical import aggregate
    raw = []
    for setting, acc in (("none", (0.90, 0.92, 0.94)), ("dp", (0.80, 0.83, 0.83))):
        for seed, a in enumerate(acc):
            for party in (1, 2):
                raw.append({"setting": setting, "party": party, "columns": 3, "seed": seed,
                            "accuracy": a if party == 1 else 0.0, "test_auc": math.nan,
                            "label_separation": 0.7 + 0.1 * seed, "label_method": "norm",
                            "feature_method": "inverse", "feature_gain_kind": "numeric_r2_gain",
                            "feature_gain": 0.1 * party})
    rows = aggregate(raw)
    dp1 = next(r for r in rows if r["setting"] == "dp" and r["party"] == 1)
    assert dp1["n_seeds"] == 3 and dp1["label_separation"] == pytest.approx(0.8)
    assert dp1["label_separation_ci95"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)
    # utility from the party-1 run of each seed, its cost paired with the same seed's undefended
    assert dp1["accuracy"] == pytest.approx(0.82)
    assert dp1["accuracy_cost"] == pytest.approx(0.10)
    assert dp1["accuracy_cost_ci95"] == pytest.approx(4.303 * 0.01 / 3 ** 0.5, rel=1e-3)
    dp2 = next(r for r in rows if r["setting"] == "dp" and r["party"] == 2)
    assert dp2["accuracy"] == pytest.approx(0.82) and dp2["feature_gain"] == pytest.approx(0.2)


def test_party_split_rotates_the_column_groups():
    assert party_split([["a", "b"], ["c"], ["d"]], 2) == "c|d|a,b"
    assert party_split([["a", "b"], ["c"]], 1) == "a,b|c"


@pytest.mark.parametrize("extra,match", [
    (["--protocol", "vertical,vanilla"], "reviewed on its own"),
    (["--max-client-flops", "1e6"], "--max-client-flops does not apply"),
    (["--attack", "inversion"], "is not part of it"),
    (["--method", "norm"], "--method does not apply"),
])
def test_review_refusals_are_one_line(tmp_path, capsys, extra, match):
    args = ["review", *SMALL, *extra, "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_sweep_report_and_compare_work_for_vertical(tmp_path):
    code, text = _run(["sweep", *SMALL, "--attack", "label-inference", "--defense", "marvell",
                       "--marvell-power", "0.25,4", "--out", str(tmp_path), "--run-id", "sw"])
    assert code == 0, text
    rows = pd.read_csv(tmp_path / "sw" / "results.csv")
    assert len(rows) == 2 and rows.label_auc.between(0, 1).all()
    assert rows.test_auc.between(0, 1).all()               # binary: the joint model's ROC AUC
    assert _run(["report", str(tmp_path / "sw")])[0] == 0
    code, text = _run(["evaluate", *SMALL, "--attack", "feature-reconstruction", "--out",
                       str(tmp_path), "--run-id", "ev"])
    assert code == 0, text
    code, text = _run(["compare", str(tmp_path / "sw"), str(tmp_path / "ev"), "--out",
                       str(tmp_path), "--run-id", "cmp"])
    assert code == 0, text
    assert (tmp_path / "cmp" / "report.md").exists()


def test_benchmark_takes_vertical_with_tabular_sets(tmp_path):
    from slsec.study.benchmark import plan_grid
    cells = plan_grid(None, {"protocol": "vertical,vanilla", "dataset": "spam"})
    # vertical splits columns: the default partition axis is IID only there
    assert sorted((c.protocol, c.partition) for c in cells) == [
        ("vanilla", "dirichlet"), ("vanilla", "iid"), ("vertical", "iid")]
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(80)))
    assert plan_grid(None, {"protocol": "vertical", "dataset": f"csv:{csv}"})
    code, text = _run(["benchmark", *[a for a in SMALL if a not in ("--attack-iters", "20")],
                       "--out", str(tmp_path), "--run-id", "bm"])
    assert code == 0, text
    rows = pd.read_csv(tmp_path / "benchmark-bm" / "results.csv")
    assert list(rows.architecture) == ["vertical"] and rows.test_accuracy.between(0, 1).all()
