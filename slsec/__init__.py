"""slsec: privacy attacks and defenses for split learning."""

__version__ = "0.1.0"
