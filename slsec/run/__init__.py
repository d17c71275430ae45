"""The run engine: one Experiment resolved from the config, the public setup every rank
derives, the ranks run over a transport, the attack from the attacked role, the scoring,
the checks made before training, and the split-point search built on them."""
