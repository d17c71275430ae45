"""Defenses that plug in at the cut, the loss, the labels or the returned gradients, plus the
split-point selection that runs before training."""
from slsec.defenses.base import DEFENSES, Defense, DefenseStack  # noqa: F401
from slsec.plugins import import_all

import_all(__name__, __path__)   # every module of this folder registers (a new file needs no edit)
