"""Seeds and confidence intervals: mean and 95% Student-t interval of per-seed numbers.

A run repeated with seeds s, s+1, ..., s+N-1 gives N values x_1..x_N of each numeric metric.
We report their mean and the half-width of the two-sided 95% Student-t confidence interval of
the mean:

    half-width = t_{0.975, N-1} * s / sqrt(N),   s = sample standard deviation (ddof = 1)

so the interval is mean ± half-width. With N = 1 there is no interval (half-width NaN: "single
seed"). Aggregation is generic: every key whose per-seed values are numbers is aggregated, so
new metrics need no code here. Pure functions, no I/O.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

LEVEL = 0.95
CI_SUFFIX = "_ci95"          # column/key holding the half-width beside the mean


def seed_list(seed: int, seeds: int) -> list[int]:
    """The seeds a run with --seed `seed` --seeds `seeds` uses: seed, seed+1, ..., seed+N-1."""
    return list(range(seed, seed + max(int(seeds), 1)))


def as_number(v: Any) -> float | None:
    """A finite float from a metric value (CSV text included), or None (text, bool, NaN, empty)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        if v.strip().lower() in ("", "true", "false", "nan", "none"):
            return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student-t interval; half-width NaN when N < 2."""
    from scipy.stats import t

    xs = [float(x) for x in values]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(xs) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def summarize(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """mean, half_width, low, high, n and the values themselves."""
    mean, hw = t_interval(values, level)
    return {"mean": mean, "half_width": hw, "low": mean - hw, "high": mean + hw,
            "n": len(values), "values": [float(v) for v in values]}


def _empty(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return isinstance(v, str) and v.strip().lower() in ("", "nan")


def numeric_keys(records: Iterable[Mapping[str, Any]], skip: Iterable[str] = ()) -> list[str]:
    """Keys (first-seen order) whose non-empty values are numbers in every record holding them
    and a number in at least one (a key with text or a bool anywhere is not a metric)."""
    skip = set(skip)
    kind: dict[str, str] = {}                     # key -> "empty" | "number" | "text"
    for r in records:
        for k, v in r.items():
            if k in skip or _empty(v):
                kind.setdefault(k, "empty")
            elif as_number(v) is None:
                kind[k] = "text"
            elif kind.get(k) != "text":
                kind[k] = "number"
    return [k for k, c in kind.items() if c == "number"]


def aggregate(records: Sequence[Mapping[str, Any]], skip: Iterable[str] = (),
              level: float = LEVEL) -> dict[str, dict[str, Any]]:
    """{key: summarize(values over the records that hold a number)} for every numeric key."""
    out = {}
    for k in numeric_keys(records, skip):
        vals = [x for x in (as_number(r.get(k)) for r in records) if x is not None]
        out[k] = summarize(vals, level)
    return out


def mean_row(records: Sequence[Mapping[str, Any]], skip: Iterable[str] = ()) -> dict[str, Any]:
    """One flat row: each numeric key -> mean, `<key>_ci95` -> half-width; other keys keep
    their value when every record agrees, else the distinct values joined by '|'."""
    skip = set(skip)
    stats = aggregate(records, skip)
    row: dict[str, Any] = {}
    for r in records:
        for k in r:
            if k in row or k in skip:
                continue
            if k in stats:
                row[k] = stats[k]["mean"]
                row[k + CI_SUFFIX] = stats[k]["half_width"]
            else:
                distinct = list(dict.fromkeys(str(x.get(k)) for x in records
                                              if x.get(k) not in (None, "")))
                row[k] = (next(x.get(k) for x in records if x.get(k) not in (None, ""))
                          if len(distinct) == 1 else "|".join(distinct) if distinct else r.get(k))
    return row


def fmt_ci(mean: float, half_width: float, digits: int = 3) -> str:
    """'0.912 ± 0.014'; just the mean when there is no interval (one seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if half_width is None or math.isnan(half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def seeds_text(n: int, first: int) -> str:
    """How many seeds a number rests on, in words."""
    if n <= 1:
        return f"single seed (seed {first}): no confidence interval"
    return (f"{n} seeds ({first}..{first + n - 1}): mean ± half-width of the 95% Student-t "
            f"interval (t_{{0.975, {n - 1}}} · s / √{n})")
