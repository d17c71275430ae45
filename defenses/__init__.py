"""Defenses that plug in at the cut, the loss, the labels or the returned gradients, plus the
split-point selection that runs before training."""
from slsec.defenses import dp_cut, dpsgd, label_dp, nopeek, split_selection  # noqa: F401  (registration)
from slsec.defenses.base import DEFENSES, Defense, DefenseStack  # noqa: F401
