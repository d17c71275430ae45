"""slsec: privacy attacks and defenses for split learning."""

import time as _time

__version__ = "0.1.0"
# When this interpreter reached slsec: the first thing every entry point imports (the
# process's own start time would include a shell's earlier work when a shell execs slsec).
STARTED = _time.perf_counter()
