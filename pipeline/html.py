"""A self-contained HTML page from the report's Markdown: tables, lists, code blocks, and the
plots embedded as data URIs, so the one file can be mailed, attached or opened offline."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child, td:last-child { text-align: left; }
td:last-child { min-width: 14rem; }
code { background: #f3f3f3; padding: 0 0.2rem; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
"""
# Marks each image once the browser has decoded it, so a headless test can check rendering.
_SCRIPT = """
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.dataset.rendered = String(img.complete && img.naturalWidth > 0);
  }
  document.body.dataset.ready = "true";
});
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_to_html(markdown: str, base_dir: str | Path, title: str) -> str:
    """Render the subset of Markdown the report writes; images under `base_dir` are inlined.

    Raises:
        FileNotFoundError: if an image the Markdown names does not exist.
    """
    base = Path(base_dir)
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            body.append("<pre>" + html.escape("\n".join(block)) + "</pre>")
        elif m := re.match(r"^(#{1,3}) (.*)$", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.startswith("|"):
            header = _cells(line)
            i += 2  # skip the |---| line
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            i -= 1
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header)
                        + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r)
                                  + "</tr>" for r in rows) + "</tbody></table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            i -= 1
            body.append("<ul>" + "".join(items) + "</ul>")
        elif m := _IMAGE.match(line.strip()):
            src = base / m.group("src")
            body.append(f'<img alt="{html.escape(m.group("alt"))}" src="{_data_uri(src)}">')
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f"<script>{_SCRIPT}</script></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")
