"""Tables for people: one helper for every ``pes`` command."""

from __future__ import annotations

#: width of tables written to a pipe or a file: wide enough that ids are never cut
PIPE_WIDTH = 1000


def print_table(title: str, columns: list[str], rows: list[list], width: int | None = None) -> None:
    """Print ``rows`` under ``columns`` as a rich table (None shows as an empty cell).

    On a terminal the table fits its width; into a pipe or a file nothing is cut or folded (rich
    would assume 80 columns there), so ids can be copied and grepped.
    """
    import sys

    from rich.console import Console
    from rich.table import Table

    if width is None and not sys.stdout.isatty():
        width = PIPE_WIDTH
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    Console(width=width).print(table)
