"""The application: evaluate with its undefended twin, seeds, sweeps, reviews and benchmarks
as library functions. The command line parses options and calls these; the Python
API (slsec.api) sits on them too; documents are rendered by slsec.report.

Imports point one way: cli -> study -> run -> plug-in bases; report is read by study and cli.
"""
