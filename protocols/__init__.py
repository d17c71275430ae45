"""Split-learning protocols and the FedAvg baseline, written once as role programs."""
from slsec.protocols import fedavg, splitfed, splitfed_async, ushaped, vanilla  # noqa: F401  (registration)
from slsec.protocols.base import PROTOCOLS, Protocol  # noqa: F401
