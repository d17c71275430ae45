"""Attacks on split learning and FedAvg, each playing one declared role."""
