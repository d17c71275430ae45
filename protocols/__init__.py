"""Split-learning protocols and the FedAvg baseline, written once as role programs."""
