"""Run one protocol under mpiexec, or several one after another in the same MPI job; rank 0
writes each run's curve and final weights (numpy .npz).

usage: mpiexec -n K+1 python run_protocol.py OUT.npz key=value ... [-- OUT2.npz key=value ...]
"""
import json
import sys

import numpy as np
import torch

from slsec.config import make_config
from slsec.run.experiment import resolve
from slsec.run.runner import run_mpi

torch.set_num_threads(1)
runs = [[]]
for word in sys.argv[1:]:
    if word == "--":
        runs.append([])
    else:
        runs[-1].append(word)
for out, *pairs in runs:
    values = dict(a.split("=", 1) for a in pairs)
    cfg = make_config({**values, "backend": "mpi"})
    outcome = run_mpi(resolve(cfg))
    if outcome.rank == 0:
        arrays = {f"w:{k}": v.detach().numpy() for k, v in outcome.model.state_dict().items()}
        arrays["curve"] = np.array([[r.accuracy, r.loss] for r in outcome.records])
        arrays["bytes"] = np.array([outcome.bytes_total, outcome.payload_total])
        arrays["wall"] = np.array([r.wall_s for r in outcome.records])
        arrays["train_seconds"] = np.array(outcome.wall_s)
        np.savez(out, **arrays)
        print(json.dumps({"rounds": len(outcome.records)}))
