"""Reports as a tiny document model rendered twice: Markdown and self-contained HTML.

A document is a list of blocks: ("h", text), ("p", text), ("table", header, rows),
("img", path, caption). HTML embeds images as base64 so the file opens anywhere.

The package holds what every report is made of: result rows and JSON written atomically
(results), write-once run folders (folders), figures (plots, frontier) and statistics over
seeds (stats). It imports nothing from the engine or the command line.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Sequence

from slsec.report.results import atomic_write

Block = tuple


def fmt(v: Any, digits: int = 3) -> str:
    """Human formatting of a metric value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == float("inf"):
            return "∞"
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        if b[0] == "h":
            out += [f"## {b[1]}", ""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "table":
            header, rows = b[1], b[2]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
            out.append("")
        elif b[0] == "img":
            out += [f"![{b[2]}]({Path(b[1]).name})", ""]
    return "\n".join(out)


# a page fits a 1,280-px window: the review's 15-column table wraps its cells at spaces (the
# browser test measures the page's scroll width there)
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
p.note{background:#fff4e5;border-left:4px solid #f90;padding:.5em 1em}code{background:#f3f3f3}"""


def to_html(title: str, blocks: Sequence[Block]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h2>{html.escape(b[1])}</h2>")
        elif b[0] == "p":
            cls = " class='note'" if b[1].startswith("**") else ""
            text = html.escape(b[1].strip("*")) if cls else html.escape(b[1])
            out.append(f"<p{cls}>{text}</p>")
        elif b[0] == "table":
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b[1]) + "</tr>")
            for r in b[2]:
                out.append("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>")
            out.append("</table>")
        elif b[0] == "img":
            p = Path(b[1])
            if p.exists():
                png, why = checked_png(p)
                if png is None:
                    out.append(f"<p class='note'>{html.escape(p.name)} not embedded: {why}</p>")
                    continue
                data = base64.b64encode(png).decode()
                out.append(f"<figure><img alt='{html.escape(b[2])}' src='data:image/png;base64,"
                           f"{data}'><figcaption>{html.escape(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


MAX_PNG_BYTES = 32 << 20


def checked_png(path: Path) -> tuple[bytes | None, str]:
    """The bytes of a PNG that decodes as one (size-capped), else (None, why): a report only
    embeds images it can vouch for, not whatever bytes a file of that name holds."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PNG_BYTES + 1)
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if len(data) > MAX_PNG_BYTES:
        return None, f"larger than {MAX_PNG_BYTES >> 20} MiB"
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None, "not a PNG file"
    try:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 - any decoder complaint means "not a valid PNG"
        return None, f"not a valid PNG ({type(e).__name__})"
    return data, ""


def write_document(folder: str | Path, title: str, blocks: Sequence[Block]) -> list[Path]:
    """Write report.md and report.html into `folder` atomically."""
    folder = Path(folder)
    return [atomic_write(folder / "report.md", to_markdown(title, blocks)),
            atomic_write(folder / "report.html", to_html(title, blocks))]
