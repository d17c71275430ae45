"""Declared parameters: what a plug-in (or the core) takes, in a form read without importing torch.

A protocol, attack or defense lists its parameters as a class attribute
`params = (Param(...), ...)` next to its registration. slsec.catalog reads those declarations
from the plug-in's source with `ast` (no torch import), and slsec.config builds the RunConfig
fields, CLI flags, TOML keys, `--help` lines and the checks from them. A Param's arguments must
therefore be literals (strings, numbers, tuples, None).

Checks (`check`, applied in order; each names the flag and the value in its message):
  "positive"      a finite number > 0           "non_negative"  a finite number >= 0
  "at_least_one"  >= 1 (None allowed)           "zero_or_more"  >= 0
  "below_one"     < 1 (with "positive": in (0, 1))
  "at_most_one"   <= 1 (with "positive": in (0, 1])    "unit_interval"  in (0, 1]
  "positive_or_inf"  > 0, inf allowed (clipping off)      "at_most_1024"  <= 1024
  "at_most_32"    <= 32
Every float is refused below the smallest normal float (1e-320 divides to inf), whatever its
checks.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

from slsec.errors import UserError

TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}

# rule -> (holds for a value, what the value must be)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "non_negative": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "at_least_one": (lambda v: v >= 1, ">= 1"),
    "zero_or_more": (lambda v: v >= 0, ">= 0"),
    "positive_or_inf": (lambda v: v > 0, "> 0 (or inf to turn clipping off)"),
    "below_one": (lambda v: v < 1, "in (0, 1)"),
    "at_most_one": (lambda v: v <= 1, "in (0, 1]"),
    "unit_interval": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "at_most_1024": (lambda v: v <= 1024, "at most 1024"),
    "at_most_32": (lambda v: v <= 32, "at most 32"),
}


@dataclass(frozen=True)
class Param:
    """One parameter: RunConfig field `name` (flag --name-with-dashes, TOML key name).

    type: "str" | "int" | "float" | "bool" | "list" (a comma list of words);
    default: its value when not given (None: optional, the plug-in chooses);
    help: one line for --help; choices: the allowed words; check: rules of RULES, in order;
    kw: the constructor keyword it is passed as (default: name);
    unused: why it is refused when its plug-in is not in the run ("is the noise of --defense
    dp"); None: never refused; excludes: a parameter it cannot be given with, and why;
    deferred: the constructor checks more than declared (the torch-free precheck leaves a run
    that gives it to the full path); outside: refused when the config is built if given with a
    protocol that does not declare it ("{owners}" and "{protocol}" are filled in).
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    check: tuple[str, ...] = ()
    kw: str | None = None
    unused: str | None = None
    excludes: tuple[str, str] | None = None
    deferred: bool = False
    outside: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def keyword(self) -> str:
        return self.kw or self.name

    @property
    def annotation(self) -> Any:
        """The RunConfig field type (`float | None` where None is allowed)."""
        base: Any = tuple[str, ...] if self.type == "list" else TYPES[self.type]
        return base | None if self.default is None else base

    @property
    def metavar(self) -> str:
        """How --help shows the value: the choices, or the type."""
        if self.choices:
            return "|".join(self.choices)
        return {"list": "A,B,..."}.get(self.type, self.type.upper())

    def help_line(self) -> str:
        """The --help text: the help, then the default."""
        default = self.default
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        shown = "not set" if default is None else default
        return f"{self.help} [default: {shown}]"

    def validate(self, value: Any) -> None:
        """Raise a UserError naming the flag if `value` breaks a declared rule."""
        if value is None:
            return
        if self.type in ("int", "float") and (isinstance(value, bool) or not isinstance(
                value, (int, float))):   # a plug-in built in Python, not from a config
            raise UserError(f"{self.flag} must be a number, got {value!r}")
        if self.type == "int" and isinstance(value, float) and not value.is_integer():
            raise UserError(f"{self.flag} must be a whole number, got {value}")
        if self.choices and value not in self.choices:
            raise UserError(f"{self.flag} must be one of {', '.join(self.choices)}, "
                            f"got {value!r}")
        if isinstance(value, float) and value != 0 and abs(value) < sys.float_info.min:
            raise UserError(f"{self.flag} {value} is too small to compute with (below "
                            f"{sys.float_info.min:.1e}, the smallest normal float)")
        for rule in self.check:
            holds, what = RULES[rule]
            if not holds(value):
                raise UserError(f"{self.flag} must be {what}, got {value}")


def merge(declared: list[tuple[str, Param]]) -> dict[str, tuple[Param, tuple[str, ...]]]:
    """name -> (Param, owners) over (owner, Param) pairs; one name declared twice must agree."""
    out: dict[str, tuple[Param, tuple[str, ...]]] = {}
    for owner, p in declared:
        if p.name in out:
            first, owners = out[p.name]
            if _public(first) != _public(p):
                raise ValueError(f"parameter '{p.name}' of {owner} differs from its declaration "
                                 f"by {', '.join(owners)}")
            out[p.name] = (first, (*owners, owner))
        else:
            out[p.name] = (p, (owner,))
    return out


def exclusion(p: Param, other: Param) -> str:
    """The message for two given parameters that exclude each other (`p.excludes`)."""
    return f"{p.flag} and {other.flag} exclude each other; give one ({p.excludes[1]})"  # type: ignore[index]


def check_given(params: tuple[Param, ...], **given: Any) -> None:
    """A plug-in's constructor arguments (by keyword), checked by the Params that declare them:
    each value's rules, then the pairs that exclude each other. The one check of a parameter,
    with its flag in every message, whether the value came from a config or from Python."""
    by_kw = {p.keyword: p for p in params}
    for kw, value in given.items():
        by_kw[kw].validate(value)
    for kw, value in given.items():
        p = by_kw[kw]
        if p.excludes and value is not None:
            other = next(q for q in params if q.name == p.excludes[0])
            if given.get(other.keyword) is not None:
                raise UserError(exclusion(p, other))


def _public(p: Param) -> tuple[Any, ...]:
    """What two declarations of one shared field must agree on (not the constructor keyword)."""
    return (p.name, p.type, p.default, p.help, p.choices, p.check, p.unused, p.excludes,
            p.deferred, p.outside)
