"""Defenses that plug in at the cut, the loss, the labels or the returned gradients, plus the
split-point selection that runs before training."""
from slsec.defenses import (dp_cut, dpsgd, gradient_check, label_dp, nopeek,  # noqa: F401
                            split_selection, splitguard)  # (registration)
from slsec.defenses.base import DEFENSES, Defense, DefenseStack  # noqa: F401
