"""The two consoles every command prints through: results on stdout, notes on stderr."""
from __future__ import annotations

from rich.console import Console

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)


def warn(text: str) -> None:
    """One warning line on stderr, printed as is (no markup, no wrapping)."""
    err.print(text, markup=False, soft_wrap=True)
