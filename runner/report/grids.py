"""A table as plain data, drawn by rich on the terminal or written as Markdown.

Why: the report's tables (per stage, per window, per turn, run against run)
are built once as rows of strings and shown two ways: rich tables on a
terminal, GitHub-flavoured Markdown for a pull request or a wiki
(``--markdown``). Neither way computes a number of its own. rich is
imported only when drawing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table


@dataclass
class Grid:
    """A titled table: the first ``left`` columns name the row (left-aligned), the others are numbers (right)."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1

    def to_rich(self) -> Table:
        """A rich Table; cells are data, never rich markup."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(self.title), title_justify="left", header_style="bold")
        for i, name in enumerate(self.headers):
            table.add_column(escape(name), justify="left" if i < self.left else "right", no_wrap=True)
        for row in self.rows:
            table.add_row(*(escape(cell) for cell in row))
        return table

    def to_markdown(self) -> str:
        """``**title**`` and a pipe table, the naming columns left-aligned."""
        head = "| " + " | ".join(_md(h) for h in self.headers) + " |"
        align = "|" + "|".join(":---" if i < self.left else "---:" for i in range(len(self.headers))) + "|"
        body = ["| " + " | ".join(_md(c) for c in row) + " |" for row in self.rows]
        return "\n".join([f"**{_md(self.title)}**", "", head, align, *body])


def _md(text: str) -> str:
    """A cell's text with what Markdown would read as table or emphasis syntax escaped."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*_`[]<>":
        out = out.replace(ch, "\\" + ch)
    return out


def to_markdown(grids: list[Grid], notes: list[str]) -> str:
    """The tables one after another, then the notes as a list."""
    parts = [g.to_markdown() for g in grids]
    if notes:
        parts.append("\n".join(f"- {_md(n)}" for n in notes))
    return "\n\n".join(parts) + "\n"
