"""`slsec review`: the risk rule, budget parsing at the edge, and a real review of the CNN."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from slsec.cli import main
from slsec.study.review import input_grade, label_grade, overall_grade

@pytest.mark.parametrize("gain, reid, prior_reid, grade", [
    (0.3, 0.0, 0.0, "HIGH"), (0.2, math.nan, 0.0, "HIGH"), (0.0, 0.5, 0.0, "HIGH"),
    (0.19, 0.0, 0.0, "MEDIUM"), (0.05, 0.0, 0.0, "MEDIUM"), (0.0, 0.07, 0.0, "MEDIUM"),
    (0.04, 0.07, 0.03, "LOW"), (0.0, 0.0, 0.0, "LOW"), (-0.1, 0.0, 0.0, "LOW"),
    (math.nan, math.nan, math.nan, "–")])
def test_input_grade_is_leakage_beyond_the_prior(gain: float, reid: float, prior_reid: float,
                                                 grade: str) -> None:
    """A high raw SSIM that the prior reaches too is not leakage: grade gain and re-id only."""
    assert input_grade(gain, reid, prior_reid) == grade


@pytest.mark.parametrize("sent, auc, grade", [(True, math.nan, "HIGH"), (False, 0.95, "HIGH"),
                                              (False, 0.05, "HIGH"), (False, 0.75, "MEDIUM"),
                                              (False, 0.6, "LOW"), (False, math.nan, "–")])
def test_label_grade(sent: bool, auc: float, grade: str) -> None:
    assert label_grade(sent, auc) == grade


def test_overall_grade_is_the_worse_channel() -> None:
    assert overall_grade("LOW", "HIGH") == "HIGH"
    assert overall_grade("MEDIUM", "–") == "MEDIUM"
    assert overall_grade("–", "–") == "–"


@pytest.mark.parametrize("extra, message", [
    (["--min-accuracy", "lots"], "--min-accuracy must be"),
    (["--min-accuracy", "1.5"], "--min-accuracy must be in [0, 1]"),
    (["--max-client-flops", "-2"], "--max-client-flops must be > 0"),
    (["--protocol", "fedavg"], "no cut to review"),
    (["--protocol", "vanilla,nope"], "unknown protocol 'nope'"),
    (["--attack", "gradient-inversion"], "runs inversion and label-inference itself"),
    (["--hijack-steps", "-1"], "--hijack-steps must be >= 0"),
])
def test_bad_input_is_one_line_and_exit_2_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        extra: list[str], message: str) -> None:
    import slsec.run.harness

    def boom(*a, **k):
        raise AssertionError("training started before validation failed")
    monkeypatch.setattr(slsec.run.harness, "evaluate", boom)
    assert main(["review", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_review_of_the_cnn_recommends_a_cut_and_writes_the_report(cnn_review) -> None:
    """The review itself is the session fixture cnn_review (tests/conftest.py: --max-train 300
    --probe-size 8 --attack-iters 30 --hijack-steps 5, run once; test_browser.py renders it)."""
    cuts = ["conv1", "pool1", "conv2", "pool2", "fc1"]
    assert cnn_review.code == 0
    out = cnn_review.out
    assert "security review: cnn on mnist" in out                 # the table
    assert "malicious server" in out and "(FSHA) for 5 client steps per cut" in out
    assert all(c in out for c in cuts) and "sent (100%)" in out and "HIGH" in out
    line = next(l for l in out.splitlines() if l.startswith("Recommended: "))
    assert any(f"cut {c} " in line for c in cuts)
    folder = cnn_review.folder
    html = (folder / "report.html").read_text()
    assert "<table>" in html and "RECOMMENDED" in html and "bytes/sample" in html
    assert all(f"<td>{c}</td>" in html for c in cuts)
    assert "data:image/png;base64," in html and "Risk grade" in html
    with (folder / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["cut"] for r in rows] == cuts
    assert sum(r["recommended"] == "True" for r in rows) == 1
    assert {"attack_ssim_mean", "attack_psnr_mean", "label_leak", "client_flops",
            "client_params", "smashed_bytes_per_sample", "risk", "prior_ssim_mean",
            "ssim_gain_mean", "reid_top1", "reid_chance_top1"} <= set(rows[0])
    assert all(float(r["attack_ssim_mean"]) >= float(r["prior_ssim_mean"]) for r in rows)


def test_malicious_server_cell_says_what_each_detector_did() -> None:
    from slsec.study.review_malicious import cell, detectors, note
    assert detectors() == ["gradient-check", "splitguard"]
    r = {"hijack_ssim": 0.634, "hijack_steps": 110,
         "detected_by": {"gradient-check": 35, "splitguard": None}}
    assert cell(r) == "SSIM 0.634; gradient-check @35, splitguard missed"
    assert cell({}) == "–"
    assert "110 client steps per cut" in note([r]) and note([{}]) is None


@pytest.mark.slow
def test_review_rows_are_the_same_with_workers(tmp_path) -> None:
    """--jobs 2 (malicious-server and inversion cells in one stream of workers, then label
    inference) writes the results.csv of --jobs 1, timings aside."""
    from slsec.cli import main
    args = ["review", "--protocol", "vanilla", "--model", "cnn", "--dataset", "mnist",
            "--max-train", "200", "--probe-size", "4", "--attack-iters", "5",
            "--hijack-steps", "3", "--out", str(tmp_path)]
    rows = {}
    for jobs in ("1", "2"):
        assert main([*args, "--run-id", f"j{jobs}", "--jobs", jobs]) == 0
        with (tmp_path / f"j{jobs}" / "results.csv").open(newline="") as f:
            rows[jobs] = [{k: v for k, v in r.items() if "seconds" not in k and "wall" not in k}
                          for r in csv.DictReader(f)]
    assert len(rows["1"]) == 5 and rows["2"] == rows["1"]
    assert all(r["hijack_ssim"] for r in rows["1"])          # the malicious column was measured
