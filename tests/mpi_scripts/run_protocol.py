"""Run one protocol under mpiexec; rank 0 writes the curve and the final weights (numpy .npz).

usage: mpiexec -n K+1 python run_protocol.py OUT.npz key=value ...
"""
import json
import sys

import numpy as np
import torch

from slsec.config import make_config
from slsec.run.runner import run_mpi
from slsec.run.setup import prepare

torch.set_num_threads(1)
out = sys.argv[1]
values = dict(a.split("=", 1) for a in sys.argv[2:])
cfg = make_config({**values, "backend": "mpi"})
setup = prepare(cfg)
outcome = run_mpi(cfg, setup)
if outcome.rank == 0:
    arrays = {f"w:{k}": v.detach().numpy() for k, v in outcome.model.state_dict().items()}
    arrays["curve"] = np.array([[r.accuracy, r.loss] for r in outcome.records])
    arrays["bytes"] = np.array([outcome.bytes_total, outcome.payload_total])
    arrays["wall"] = np.array([r.wall_s for r in outcome.records])
    arrays["train_seconds"] = np.array(outcome.wall_s)
    np.savez(out, **arrays)
    print(json.dumps({"rounds": len(outcome.records)}))
