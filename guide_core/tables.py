"""Result tables: one shape for what the CLI prints and the studio shows.

A result (metrics, an audit, the weights' status) builds a ``Table`` of strings; ``text()`` lays it out in aligned
columns for a terminal, ``markdown()`` writes it for the studio and the docs. Both show the same cells.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def number(value: float | None, digits: int = 4) -> str:
    """A metric as tables show it: fixed digits, ``n/a`` where it was not computable."""
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass
class Table:
    """A header and rows of cells (strings), optionally titled; ``**bold**`` marks a headline cell."""

    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    title: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.header):
                raise ValueError(f"table row {row!r} has {len(row)} cells for {len(self.header)} columns")

    def markdown(self) -> str:
        """A Markdown table (pipes inside cells escaped), the title above it in bold."""
        def line(cells: tuple[str, ...]) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
        lines = ([f"**{self.title}**", ""] if self.title else []) + [line(self.header),
                                                                      "|" + "---|" * len(self.header)]
        return "\n".join(lines + [line(row) for row in self.rows])

    def text(self, indent: str = "  ") -> str:
        """Aligned columns for a terminal (bold marks dropped), the title on its own line."""
        cells = [tuple(str(c).replace("**", "") for c in row) for row in [self.header, *self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.header))]
        lines = [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, indent + "  ".join("-" * w for w in widths))
        return "\n".join(([self.title] if self.title else []) + lines)
