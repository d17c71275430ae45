"""Attacks on split learning and FedAvg, each playing one declared role."""
from slsec.attacks.base import ATTACKS, Attack, Guess  # noqa: F401
from slsec.plugins import import_all

import_all(__name__, __path__)   # every module of this folder registers (a new file needs no edit)
