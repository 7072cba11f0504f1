"""Render the report `Document` (`pipeline.report.document`) with Jinja2 templates
(`templates/report.md.j2`, `templates/report.html.j2`): the same content as Markdown and as
one self-contained HTML page with the plots inlined, to be mailed or opened offline.
"""

from __future__ import annotations

import base64
import functools
import html
from pathlib import Path
from typing import Any

from pipeline.report import document as d

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _md_text(spans: d.Text) -> str:
    """Spans as Markdown; neighbouring strong spans share one `**...**`."""
    out, strong_run = [], []
    for span in (*spans, d.Span("")):  # the empty plain span ends the last strong run
        value = span.text
        if "code" in span.style:
            fence = "``" if "`" in value else "`"
            value = f"{fence}{value}{fence}"
        if "strong" in span.style:
            strong_run.append(value)
            continue
        if strong_run:  # Markdown bold cannot end in a space: the space goes after it
            joined = "".join(strong_run)
            body = joined.rstrip()
            out.append(f"**{body}**{joined[len(body):]}")
            strong_run = []
        out.append(value)
    return "".join(out)


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _html_span(span: d.Span) -> str:
    value = html.escape(span.text, quote=False)
    if "code" in span.style:
        value = f"<code>{value}</code>"
    if "strong" in span.style:
        value = f"<strong>{value}</strong>"
    return value


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(md_text=_md_text, md_cell=_md_cell, html_span=_html_span,
                       escape_html=lambda s: html.escape(str(s), quote=True))
    for kind in (d.Paragraph, d.Bullets, d.Table, d.Figure, d.Code):
        env.tests[kind.__name__.lower()] = lambda b, kind=kind: isinstance(b, kind)
    return env


def markdown(doc: d.Document) -> str:
    """The report as Markdown; figures link to their PNGs (paths relative to the report)."""
    return _environment().get_template("report.md.j2").render(doc=doc)


def page(doc: d.Document, base_dir: str | Path) -> str:
    """The report as one HTML page, the figures under `base_dir` embedded as data URIs.

    Raises:
        FileNotFoundError: if a figure's PNG does not exist.
    """
    base = Path(base_dir)
    images = {f.path: "data:image/png;base64," + base64.b64encode(
        (base / f.path).read_bytes()).decode("ascii") for f in doc.figures()}
    return _environment().get_template("report.html.j2").render(doc=doc, images=images)
