"""`python -m slsec ...` is the `slsec` command (the form `python -m mpi4py.futures -m slsec`
needs to spread a grid's cells over MPI ranks)."""
import sys

from slsec.cli import main

if __name__ == "__main__":    # not when a spawned worker or an MPI rank imports it
    sys.exit(main())
