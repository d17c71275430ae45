"""`python -m slsec.cli`: the command line (what a launcher runs under mpiexec)."""
import sys

from slsec.cli import main

sys.exit(main())
