"""Your own images: an ImageFolder of generated PNGs (DIR/<class>/<image>.png) through slsec.

    python examples/imagefolder.py [OUT_FOLDER]

Three classes of 16x16 RGB pictures (horizontal bars, vertical bars, a disc; random colours
and noise), 40 each. Without DIR/test, slsec holds out 20% of each class (seed 0) as the test
split; RGB images give 3 channels, all resized to the first image's size. The default model
for image folders is the small CNN (`--model FILE.py:FACTORY` to bring yours). The same run
from the shell:

    slsec evaluate --dataset images:OUT/images --attack inversion --max-train 60 \\
        --aux-size 20 --probe-size 4 --attack-iters 50
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, per_class: int = 40, size: int = 16, seed: int = 0) -> None:
    """Write per_class PNGs for each of the classes 'hbars', 'vbars' and 'disc' under root."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    shapes = {"hbars": (yy // 4) % 2 == 0, "vbars": (xx // 4) % 2 == 0,
              "disc": (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2}
    for name, mask in shapes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = rng.integers(80, 256, 3)
            img = mask[..., None] * colour + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")


if __name__ == "__main__":
    import slsec

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/example-imagefolder")
    make_images(out / "images")
    r = slsec.evaluate(dataset=f"images:{out / 'images'}", attack="inversion", max_train=60,
                       aux_size=20, batch_size=16, rounds=2, probe_size=4, attack_iters=50)
    m = r.metrics
    print(f"{len(r.inputs)} probes of shape {tuple(r.inputs.shape[1:])}: accuracy "
          f"{m['accuracy']:.3f}, attack {m['attack_method']} SSIM {m['attack_ssim_mean']:.3f}")
    print("report:", r.save(out / "run") / "report.html")
