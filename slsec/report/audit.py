"""The audit's report: eps_lower (both methods) beside the claimed eps and the bound it implies.

One table row per audited defense, the same in the terminal, report.md/html and result.json
(which stores the rows as `slsec.run.audit` made them, plus the config).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from slsec.report import fmt, write_document
from slsec.report.results import read_json, write_json

HEADER = ["defense", "broken", "canaries", "eps (accountant)", "eps (RDP)", "eps_lower one-run",
          "eps_lower f-DP", "verdict", "reconstruction bound (prior)"]


def verdict(r: dict[str, Any]) -> str:
    if r["violated"]:
        return "claim violated: eps_lower > eps"
    if not r.get("conclusive", True):
        return (f"inconclusive: {r['canaries']} canaries prove at most "
                f"{r['eps_lower_max']:.2f} < eps (use more)")
    return "consistent: eps_lower <= eps"


def table_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in results:
        bound = r.get("reconstruction_bound")
        rows.append([r["defense"], r.get("broken") or "–", r["canaries"],
                     f"{fmt(r['epsilon'])} ({r['accountant']})", r.get("epsilon_rdp"),
                     r["eps_lower_one_run"], r["eps_lower_fdp"], verdict(r),
                     "–" if bound is None else f"{bound:.4f} ({r['reconstruction_prior']:.3g})"])
    return rows


def explanation(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        g = r["guesses"]
        out.append(
            f"{r['defense']}: the auditor plays {r['auditor']}. {r['canaries']} canaries, each "
            f"in with probability 1/2, one run; one-run bound (Steinke et al. 2023) from "
            f"{g['one-run']['correct']} right of {g['one-run']['guesses']} guesses, f-DP bound "
            f"(Mahloujifar et al. 2025, {r['fdp_curve']} curve) from {g['f-dp']['correct']} right "
            f"of {g['f-dp']['guesses']}; both together at {r['confidence']:.0%} confidence (a "
            f"Bonferroni split over the methods, guess counts, policies and scores tried), at delta = "
            f"{r['delta']:g}. A lower bound above the claim proves the claim false; one below "
            f"it proves nothing about the claim, only that this auditor found no more.")
    return out


def blocks(results: list[dict[str, Any]]) -> list[tuple]:
    return [("p", "Empirical lower bounds on epsilon from one run with canaries, beside the "
             "accountant's epsilon (the run's accountant, and RDP) and the reconstruction bound "
             "that epsilon implies (success probability of a guess whose prior is shown)."),
            ("table", HEADER, table_rows(results)),
            *(("p", t) for t in explanation(results))]


def terminal_lines(results: list[dict[str, Any]]) -> list[str]:
    rows = [HEADER] + [[fmt(c) for c in row] for row in table_rows(results)]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def write_audit(folder: str | Path, results: list[dict[str, Any]], config: dict[str, Any]) -> Path:
    """result.json first (the numbers), then report.md and report.html from it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "result.json", {"kind": "audit", "config": config, "audits": results})
    write_document(folder, "Privacy audit", blocks(results))
    return folder


def render_audit(folder: str | Path) -> None:
    """Re-render report.md/html of an audit folder from its result.json."""
    stored = read_json(Path(folder) / "result.json")
    write_document(folder, "Privacy audit", blocks(stored["audits"]))
