"""Tables for people: one helper for every ``pes`` command."""

from __future__ import annotations


def print_table(title: str, columns: list[str], rows: list[list], width: int | None = None) -> None:
    """Print ``rows`` under ``columns`` as a rich table (None shows as an empty cell)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    Console(width=width).print(table)
