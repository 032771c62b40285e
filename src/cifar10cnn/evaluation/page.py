"""What every generated HTML page and plot shares: one plot style, PNG bytes, <img> and <table> tags, CSS.

Used by the run report and the experiment pages (ablation claims, tuning), so they look alike.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# one style for every plot
STYLE = {
    "figure.dpi": 100, "savefig.dpi": 110, "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold",
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "legend.frameon": False, "image.interpolation": "nearest",
}
TRAIN, VAL, ACCENT, GOOD, BAD = "#2f6db5", "#d1495b", "#edae49", "#2e933c", "#c0392b"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #2f6db5;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right} th{background:#f2f5fa} td:first-child,th:first-child{text-align:left}
img{max-width:100%} .tiles{display:flex;flex-wrap:wrap;gap:6px} .tile{text-align:center;font-size:.72em;width:100px}
.tile img{image-rendering:pixelated;width:96px;height:96px} .bad{color:#c0392b} .good{color:#2e933c}
.kpi{display:flex;gap:2em;flex-wrap:wrap} .kpi div{background:#f2f5fa;padding:.6em 1em;border-radius:6px}
.kpi b{display:block;font-size:1.5em} details{margin:.3em 0} summary{cursor:pointer;font-weight:600}
nav a{margin-right:1em}
"""


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def img_tag(png: bytes, alt: str, css: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" style="{css}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(c) -> str:
        return str(c).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
