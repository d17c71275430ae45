"""Attacks on split learning and FedAvg, each playing one declared role."""
from slsec.attacks import fora, gradient_inversion, hijack, inversion, label_inference  # noqa: F401  (registration)
from slsec.attacks.base import ATTACKS, Attack, Guess  # noqa: F401
