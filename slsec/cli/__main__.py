"""`python -m slsec.cli`: the command line (what a launcher runs under mpiexec)."""
import sys

from slsec.cli import main

if __name__ == "__main__":    # not when a spawned worker or an MPI rank imports it
    sys.exit(main())
