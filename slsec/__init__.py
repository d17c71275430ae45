"""slsec: privacy attacks and defenses for split learning.

Python API (imported on first use, so `import slsec` stays light):
`slsec.evaluate(...)`, `slsec.train(...)`, `slsec.sweep(...)`, `slsec.Result`; see slsec.api.
"""

import time as _time

__version__ = "0.1.0"
# When this interpreter reached slsec: the first thing every entry point imports (the
# process's own start time would include a shell's earlier work when a shell execs slsec).
STARTED = _time.perf_counter()

__all__ = ["Result", "evaluate", "sweep", "train"]


def __getattr__(name: str):
    """Load the Python API lazily (the sweep command's module is slsec.study.sweeps)."""
    import importlib
    if name in ("Result", "evaluate", "sweep", "train"):
        return getattr(importlib.import_module("slsec.api"), name)
    raise AttributeError(f"module 'slsec' has no attribute {name!r}")
