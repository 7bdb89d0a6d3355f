"""Regime gates over a declared grid of cells (issues 15, 16): the guide's "regime first" — before a
long sweep, a small run on seeds of its own shows whether the paper's effect can exist in a setting.

A chapter declares its cells in order (cheapest first) and three functions of a cell: its gate
runs' configs, the table of its stored runs (None until all are stored), and the verdict of that
table (a dict with ``passes``). :func:`walk_cells` tries the cells in order and stops at the first
that passes, so a cell is computed only when every cell before it is stored and failed."""
from __future__ import annotations

from collections.abc import Callable, Sequence


def walk_cells(cells: Sequence[str], configs: Callable[[str], list[dict]], table: Callable[[str], object],
               verdict: Callable[[object], dict]) -> tuple[list[dict], dict]:
    """(configs still to compute, summary): walk ``cells`` in their declared order; the first cell
    not yet stored (``table(cell)`` is None) is planned; a stored cell whose ``verdict`` passes ends
    the walk. The summary has ``status`` (``"pending"``, ``"pass"`` or ``"fail"``: no cell of the
    grid passed), ``cell`` (the chosen one when passed), ``tables`` and ``verdicts`` (per stored cell)."""
    tables, verdicts = {}, {}
    for cell in cells:
        stored = table(cell)
        if stored is None:
            return configs(cell), {"status": "pending", "cell": None, "tables": tables, "verdicts": verdicts}
        tables[cell], verdicts[cell] = stored, verdict(stored)
        if verdicts[cell]["passes"]:
            return [], {"status": "pass", "cell": cell, "tables": tables, "verdicts": verdicts}
    return [], {"status": "fail", "cell": None, "tables": tables, "verdicts": verdicts}


def summary_with_table(summary: dict) -> dict:
    """``summary`` (from :func:`walk_cells`) with every stored cell's table stacked into one
    ``table`` (a DataFrame; empty before any cell is stored), for a chapter's gate section."""
    import pandas as pd  # imported on use: the walk itself needs no pandas

    tables = list(summary["tables"].values())
    return {**summary, "table": pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()}
