"""Your own model and data: a 3-block MLP on an .npz file, from Python and from the CLI.

    python examples/custom_model.py [OUT_FOLDER]

The model is a factory returning an nn.Sequential of named blocks; every boundary between
blocks ("enc" | "hidden" | "out") is a cut. The data is an .npz with arrays x [N, H, W] uint8
and y [N] (here 1,000 of the embedded MNIST digits; x_test/y_test are optional).
The same run from the shell:

    slsec evaluate --model examples/custom_model.py:mlp --dataset npz:OUT/digits.npz \\
        --attack inversion --cut hidden --max-train 300 --probe-size 4 --attack-iters 50
"""
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
from torch import nn


def mlp(num_classes: int = 10, input_shape: tuple = (1, 28, 28)) -> nn.Sequential:
    """Three named blocks; slsec passes num_classes and input_shape (C, H, W) from the data."""
    c, h, w = input_shape
    return nn.Sequential(OrderedDict(
        enc=nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 128), nn.ReLU()),
        hidden=nn.Sequential(nn.Linear(128, 64), nn.ReLU()),
        out=nn.Linear(64, num_classes)))


if __name__ == "__main__":
    import slsec
    from slsec.data import load_dataset

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/example-custom-model")
    out.mkdir(parents=True, exist_ok=True)
    digits = load_dataset("mnist").train
    x = (digits.inputs[:1000, 0] * 255).round().byte().numpy()     # [N, 28, 28] uint8
    np.savez(out / "digits.npz", x=x, y=digits.y[:1000].numpy())

    r = slsec.evaluate(model=mlp, dataset=f"npz:{out / 'digits.npz'}", attack="inversion",
                       cut="hidden", max_train=300, rounds=1, probe_size=4, attack_iters=50,
                       aux_size=200)
    m = r.metrics
    print(f"cut {m['cuts'][0]}: accuracy {m['accuracy']:.3f}, attack {m['attack_method']} "
          f"SSIM {m['attack_ssim_mean']:.3f} (mean-image baseline {m['baseline_ssim_mean']:.3f})")
    print("report:", r.save(out / "run") / "report.html")
