"""Adversarial split-point selection as a defense: before training, choose the cut that leaks
least within the utility and client-compute budgets. The search itself is core
(slsec/run/split_search.py); this file declares the defense and its public rule."""
from __future__ import annotations

from slsec.defenses.base import DEFENSES, Defense
from slsec.threat import PreTraining


@DEFENSES.register("split-select")
class SplitSelect(Defense):
    """Before training: choose the cut that leaks least (see `slsec.study.runs.choose_cut`)."""

    name = "split-select"
    protocols = frozenset({"vanilla", "ushaped", "splitfed"})
    point = "pre"
    report_heading = "Split-point selection"
    report_body = (
        "Before training every candidate cut was trained briefly and attacked; the cut that "
        "leaked least within the accuracy and client-compute budgets was kept (ties within "
        "0.01 go to the fewest client FLOPs). A choice of architecture: no DP claim; it bounds "
        "nothing beyond the attacks it was measured against.")

    def public_mechanism(self) -> PreTraining:
        return PreTraining(self.name, rule="least attack leakage within the budgets")
