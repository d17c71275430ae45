"""`python -m slsec ...` is the `slsec` command (the form `python -m mpi4py.futures -m slsec`
needs to spread a grid's cells over MPI ranks)."""
import sys

from slsec.cli import main

sys.exit(main())
