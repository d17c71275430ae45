"""`slsec review --privacy-target gain=G`: the search over cut × defense × seeds recommends the
cheapest configuration whose SSIM gain over the prior meets G at the upper 95% bound, within the
budgets, or says plainly that none does and which came closest."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from slsec.study.privacy_target import Candidate, parse_target, recommend

TINY = ["review", "--protocol", "ushaped", "--cut2", "conv2", "--model", "cnn", "--dataset",
        "mnist", "--max-train", "200", "--probe-size", "8", "--attack-iters", "10",
        "--hijack-steps", "0"]


def cand(cut: str, defense: str, high: float, cost: float, flops: float = 1e5,
         within: bool = True) -> Candidate:
    return Candidate("ushaped", cut, defense, high - 0.01, high, 0.9 - cost, cost, flops,
                     meets=high <= 0.05, within=within)


def test_the_cheapest_meeting_configuration_is_recommended() -> None:
    found = [cand("conv1", "none", 0.30, 0.0), cand("conv1", "dp σ=2", 0.01, 0.08),
             cand("conv1", "dp σ=1", 0.04, 0.02, flops=3e5), cand("pool1", "dp σ=1", 0.03, 0.02),
             cand("pool1", "dp σ=0.5", 0.02, 0.001, within=False)]
    best, text = recommend(found, 0.05)
    assert best is not None and (best.cut, best.defense) == ("pool1", "dp σ=1")  # cost, FLOPs
    assert "upper 95% bound 0.030 <= 0.05" in text


def test_none_meeting_says_so_and_names_the_closest() -> None:
    found = [cand("conv1", "none", 0.30, 0.0), cand("conv1", "nopeek w=2", 0.12, 0.01),
             cand("pool1", "dp σ=2", math.nan, 0.1)]
    best, text = recommend(found, 0.05)
    assert best is None
    assert text.startswith("no configuration searched meets gain <= 0.05")
    assert "closest: ushaped, cut conv1, nopeek w=2" in text and "upper bound 0.120" in text


@pytest.mark.parametrize("bad", ["gain=2", "auc=0.5", "gain=x", "-0.1"])
def test_a_bad_target_is_one_line(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slsec.cli import main
    assert main([*TINY, "--privacy-target", bad, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --privacy-target must be gain=G")
    assert not any(tmp_path.iterdir())
    assert parse_target(None) is None and parse_target("gain=0.05") == 0.05


@pytest.mark.slow
def test_review_with_a_privacy_target_on_the_cnn(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """2 first cuts × 6 defense strengths × 2 seeds on the embedded MNIST CNN (small runs)."""
    from slsec.cli import main
    assert main([*TINY, "--seeds", "2", "--privacy-target", "gain=0.05", "--jobs", "2",
                 "--out", str(tmp_path), "--run-id", "r"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Privacy target"))
    page = (tmp_path / "r" / "report.md").read_text()
    assert "## Privacy target: SSIM gain over the prior <= 0.05" in page
    rows = [r.split(" | ") for r in page.splitlines() if r.startswith("| ushaped |")]
    searched = [r for r in rows if len(r) == 7]
    assert len(searched) == 12                  # 2 cuts × 6 strengths
    meets = [r for r in searched if r[6].startswith("yes")]
    for r in meets:                              # each "yes" is at most G at its upper bound
        assert float(r[3].split("≤ ")[1].rstrip(")")) <= 0.05
    if meets:
        assert "upper 95% bound" in line and "cost" in line
    else:
        assert "no configuration searched meets" in line and "closest" in line
