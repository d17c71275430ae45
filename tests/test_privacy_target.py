"""`slsec review --privacy-target gain=G,reid=R,label-auc=A`: the search over cut × defense ×
seeds recommends the cheapest configuration that meets every target given at the upper 95%
bound, within the budgets, or says plainly that none does and which came closest."""
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
    assert "upper 95% bound 0.030 <= 0.05: met" in text


def test_none_meeting_says_so_and_names_the_closest() -> None:
    found = [cand("conv1", "none", 0.30, 0.0), cand("conv1", "nopeek w=2", 0.12, 0.01),
             cand("pool1", "dp σ=2", math.nan, 0.1)]
    best, text = recommend(found, 0.05)
    assert best is None
    assert text.startswith("no configuration searched meets SSIM gain over the prior <= 0.05")
    assert "closest: ushaped, cut conv1, nopeek w=2" in text and "upper 95% bound 0.120" in text


def test_targets_combine() -> None:
    assert parse_target("0.05") == {"gain": 0.05}
    assert parse_target("gain=0.05, reid=0.01,label-auc=0.6") == {
        "gain": 0.05, "reid": 0.01, "label-auc": 0.6}


def test_every_target_must_hold_and_each_is_stated() -> None:
    """gain=0.05,reid=0.1: the candidate that meets the gain but not the re-identification is
    passed over; the text gives each target's value, its upper bound and whether it is met."""
    target = {"gain": 0.05, "reid": 0.1}
    a = cand("conv1", "dp σ=0.5", 0.03, 0.001)
    a.values = {"gain": (0.02, 0.03), "reid": (0.2, 0.4)}
    b = cand("conv1", "dp σ=2", 0.04, 0.05)
    b.values = {"gain": (0.03, 0.04), "reid": (0.03, 0.08)}
    for r in (a, b):
        r.meets = r.value("gain")[1] <= 0.05 and r.value("reid")[1] <= 0.1
    best, text = recommend([a, b], target)
    assert best is b
    assert ("SSIM gain over the prior 0.030 (upper 95% bound 0.040 <= 0.05: met); top-1 "
            "re-identification 0.030 (upper 95% bound 0.080 <= 0.1: met)") in text
    assert "cost +0.050" in text
    b.meets = False
    b.values["reid"] = (0.1, 0.3)
    best, text = recommend([a, b], {"gain": 0.05, "reid": 0.1})
    assert best is None and text.startswith(
        "no configuration searched meets SSIM gain over the prior <= 0.05, top-1 "
        "re-identification <= 0.1 at the upper 95% bound")
    # closest: the least worst excess (b: 0.3 - 0.1 = 0.2 against a: 0.4 - 0.1 = 0.3)
    assert "closest: ushaped, cut conv1, dp σ=2" in text
    assert "top-1 re-identification 0.100 (upper 95% bound 0.300 > 0.1: not met)" in text


@pytest.mark.parametrize("bad", ["gain=2", "auc=0.5", "gain=x", "-0.1", "label-auc=0.3",
                                 "gain=0.1,gain=0.2", "reid=0.1,", "reid=1.5"])
def test_a_bad_target_is_one_line(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slsec.cli import main
    assert main([*TINY, "--privacy-target", bad, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --privacy-target must be gain=G")
    assert not any(tmp_path.iterdir())
    assert parse_target(None) is None and parse_target("gain=0.05") == {"gain": 0.05}


@pytest.mark.slow
def test_review_with_a_privacy_target_on_the_cnn(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """2 first cuts × 8 defense strengths × 2 seeds on the embedded MNIST CNN (small runs)."""
    from slsec.cli import main
    assert main([*TINY, "--seeds", "2", "--privacy-target", "gain=0.05", "--jobs", "2",
                 "--out", str(tmp_path), "--run-id", "r"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Privacy target"))
    page = (tmp_path / "r" / "report.md").read_text()
    assert "## Privacy target: SSIM gain over the prior <= 0.05" in page
    rows = [r.split(" | ") for r in page.splitlines() if r.startswith("| ushaped |")]
    searched = [r for r in rows if len(r) == 7]
    assert len(searched) == 16                  # 2 cuts × 8 strengths (none, dp, nopeek, mid)
    meets = [r for r in searched if r[6].startswith("yes")]
    for r in meets:                              # each "yes" is at most G at its upper bound
        assert float(r[3].split("≤ ")[1].rstrip(")")) <= 0.05
    if meets:
        assert "upper 95% bound" in line and "cost" in line
    else:
        assert "no configuration searched meets" in line and "closest" in line


@pytest.mark.slow
def test_reid_and_label_auc_targets_on_the_cnn(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """U-shaped SL (labels stay on the client), second cut pool1 (so one first cut, conv1) × 10
    strengths (label DP joins for the label-auc target), one seed, the image attack and the
    label-inference attack in every cell; each row's columns are the targets'."""
    from slsec.cli import main
    tiny = [("pool1" if a == "conv2" else a) for a in TINY]
    assert main([*tiny, "--rounds", "1", "--privacy-target", "reid=0.2,label-auc=0.9",
                 "--out", str(tmp_path), "--run-id", "r"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Privacy target"))
    assert "top-1 re-identification <= 0.2, label-inference AUC <= 0.9" in line
    page = (tmp_path / "r" / "report.md").read_text()
    rows = [r.split(" | ") for r in page.splitlines() if r.startswith("| ushaped |")]
    searched = [r for r in rows if len(r) == 8]
    assert len(searched) == 10 and {r[1] for r in searched} == {"conv1"}
    assert {r[2] for r in searched} >= {"label-rr ε=1", "label-rr ε=4", "mid λ=0.001"}
    for r in searched:        # every cell measured both targets: numbers, not nan
        reid, auc = (float(c.split(" (≤ ")[1].rstrip(")")) for c in r[3:5])
        assert 0 <= reid <= 1 and 0.5 <= auc <= 1.5
        assert r[7].startswith("yes") == (reid <= 0.2 and auc <= 0.9)
    if any(r[7].startswith("yes") for r in searched):
        assert "every target met" in line and "cost" in line
    else:
        assert "no configuration searched meets" in line and "closest" in line


def test_label_cells_pair_with_the_image_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """A label-auc target runs the label attack on exactly the searched cells whose labels stay
    on the client (known from the image attack's run of the same cell)."""
    from slsec.config import make_config
    from slsec.run import split_search
    from slsec.study import privacy_target as pt
    inv = make_config({"protocol": "ushaped", "cut2": "conv2", "attack": "inversion", "seeds": 2})
    lab = inv.replace(attack="label-inference")
    monkeypatch.setattr(split_search, "evaluate_cached",   # as if conv1 sent its labels
                        lambda c: {"labels_sent_to_server": c.cut == "conv1"})
    got = pt.label_cells(inv, lab, {"label-auc": 0.7}, {"ushaped"})
    want = [c for c in pt.cells(inv, {"label-auc": 0.7}, {"ushaped"}) if c.cut != "conv1"]
    assert len(got) == len(want) == 10 * 2     # pool1 × 10 strengths × 2 seeds
    assert [c.replace(attack="inversion") for c in got] == want
    assert pt.label_cells(inv, lab, {"gain": 0.1}, {"ushaped"}) == []
    assert pt.label_cells(inv, lab, {"label-auc": 0.7}, {"vanilla"}) == []


def test_the_searched_strengths_follow_the_protocol_and_the_target() -> None:
    """Every searched defense applies to the protocol; label DP joins only for a label-auc
    target where the labels stay on the client."""
    from slsec.config import make_config
    from slsec.defenses.base import DEFENSES
    from slsec.study import privacy_target as pt
    for protocol in ("vanilla", "ushaped", "splitfed"):
        for labels in (False, True):
            got = pt.strengths(protocol, labels)
            assert got[0] == ((), {}, "none")
            assert all(protocol in DEFENSES.get(d[0]).protocols for d, _, _ in got[1:])
            names = {d[0] for d, _, _ in got[1:]}
            assert names >= {"dp", "nopeek", "mid"} and ("label-rr" in names) == labels
    inv = make_config({"protocol": "ushaped", "attack": "inversion"})
    image = {c.defense for c in pt.cells(inv, {"gain": 0.1}, {"ushaped"})}
    both = {c.defense for c in pt.cells(inv, {"gain": 0.1, "label-auc": 0.7}, {"ushaped"})}
    assert ("label-rr",) not in image and both == image | {("label-rr",)}
    assert {c.defense for c in pt.cells(inv, {"label-auc": 0.7}, {"vanilla"})} == image
