"""Split-learning protocols and the FedAvg baseline, written once as role programs."""
from slsec.protocols.base import PROTOCOLS, Protocol  # noqa: F401
from slsec.plugins import import_all

import_all(__name__, __path__)   # every module of this folder registers (a new file needs no edit)
