"""The report as data: a document of sections, each a list of blocks (paragraphs, lists,
tables, figures, code). `pipeline.report.render` turns the one document into Markdown and into
the self-contained HTML page with templates, so neither format is parsed back.

Text is a list of spans (plain, `code` or strong), built with `text`, `code` and `strong`.
"""

from __future__ import annotations

import dataclasses
from typing import Union


@dataclasses.dataclass(frozen=True)
class Span:
    """A run of text in one style: `""` (plain), `code` or `strong`."""

    text: str
    style: str = ""


Text = tuple[Span, ...]


def text(*parts: str | Span | Text) -> Text:
    """Spans from plain strings, spans and other texts, in order."""
    out: list[Span] = []
    for part in parts:
        if isinstance(part, str):
            out.append(Span(part))
        elif isinstance(part, Span):
            out.append(part)
        else:
            out.extend(part)
    return tuple(out)


def code(value: object) -> Span:
    return Span(str(value), "code")


def strong(*parts: str | Span) -> Text:
    """Strong text; a code span inside stays code (rendered strong too)."""
    return tuple(Span(p, "strong") if isinstance(p, str) else Span(p.text, f"strong {p.style}")
                 for p in parts)


@dataclasses.dataclass(frozen=True)
class Paragraph:
    content: Text


@dataclasses.dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows of cells under a header; the first column is left-aligned (names)."""

    header: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]


@dataclasses.dataclass(frozen=True)
class Figure:
    """A PNG, by its path relative to the report folder."""

    caption: str
    path: str


@dataclasses.dataclass(frozen=True)
class Code:
    content: str


Block = Union[Paragraph, Bullets, Table, Figure, Code]


@dataclasses.dataclass(frozen=True)
class Section:
    title: Text
    blocks: tuple[Block, ...]
    level: int = 2  # 2: a section; 3: a subsection


@dataclasses.dataclass(frozen=True)
class Document:
    title: str
    sections: tuple[Section, ...]

    def figures(self) -> list[Figure]:
        """Every figure, in order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    def plain(self) -> str:
        """All text without markup (for tests and search)."""
        def flat(t: Text) -> str:
            return "".join(s.text for s in t)

        parts: list[str] = [self.title]
        for section in self.sections:
            parts.append(flat(section.title))
            for b in section.blocks:
                if isinstance(b, Paragraph):
                    parts.append(flat(b.content))
                elif isinstance(b, Bullets):
                    parts += [flat(i) for i in b.items]
                elif isinstance(b, Table):
                    parts.append(" ".join(b.header))
                    parts += [" ".join(flat(c) for c in r) for r in b.rows]
                elif isinstance(b, Figure):
                    parts.append(b.caption)
                else:
                    parts.append(b.content)
        return "\n".join(parts)


# --- text of cells ---------------------------------------------------------------------

def short_layer(tensor_name: str) -> str:
    """The readable head of a fused tensor name (`a/conv/Relu;a/conv/BiasAdd;...` -> first)."""
    return tensor_name.split(";")[0]


def ci(low: float, high: float, digits: int = 3) -> str:
    """An interval as the report shows it: `[0.953, 0.987]`."""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"
