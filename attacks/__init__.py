"""Attacks on split learning and FedAvg, each playing one declared role."""
import importlib

from slsec.attacks.base import ATTACKS, Attack, Guess  # noqa: F401

for _m in ("inversion", "label_inference", "gradient_inversion"):  # TEMP until all land
    try:
        importlib.import_module(f"slsec.attacks.{_m}")
    except ModuleNotFoundError:
        pass
