"""Markdown for the reports: headings, tables with escaped cells, links, images, code, bullet lists.

Every report is built as a list of lines; the functions here return one line (a
string) or several (a list), and :func:`document` joins them into the file's text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["bullets", "cell", "code", "document", "heading", "image", "link", "table"]


def cell(text: object) -> str:
    """``text`` as the content of a table cell: ``|`` escaped, line breaks turned into spaces."""
    return " ".join(str(text).replace("|", "\\|").splitlines())


def heading(text: str, level: int = 2) -> str:
    """A heading of ``level`` 1 to 6: ``## text``."""
    if not 1 <= level <= 6:
        raise ValueError(f"level must be in [1, 6], got {level!r}")
    return f"{'#' * level} {text}"


def code(text: object) -> str:
    """``text`` as inline code: ```text```."""
    return f"`{text}`"


def link(text: object, target: object) -> str:
    """A link ``[text](target)``."""
    return f"[{text}]({target})"


def image(alt: object, target: object) -> str:
    """An image ``![alt](target)``."""
    return f"!{link(alt, target)}"


def bullets(items: Iterable[object]) -> list[str]:
    """One ``- item`` line per item."""
    return [f"- {item}" for item in items]


def table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """A pipe table: the header row, the ``|---|`` rule, then one row per entry of ``rows``.

    Every cell is escaped (:func:`cell`), so a ``|`` inside a value does not split the row.
    """
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row must have {len(header)} cells like the header, got {len(row)}")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return lines


def document(lines: Iterable[str]) -> str:
    """The lines joined into a file's text, ending in one newline."""
    return "\n".join(lines) + "\n"
