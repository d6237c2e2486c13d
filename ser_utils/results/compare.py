"""Do two runs of the study agree? Per-system differences against the bootstrap intervals.

The same code and data on another machine reproduces some systems bit for bit and others only up to
the last bits of the features (different CPUs), which random forests and MLPs amplify into a point or
two. :func:`compare_results` tells which is which: for every system and protocol run in both results
folders, the difference of the mean metric and whether each run's mean lies inside the other's 95 %
bootstrap interval over test clips (``python -m ser_utils compare-results A B``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.layout import ResultsFolder
from ..evaluation.metrics import METRICS
from .store import read_metrics, read_predictions
from .tables import comparison_table

IDENTICAL, WITHIN, OUTSIDE, ONE_SIDED = "identical", "within intervals", "OUTSIDE intervals", "run in one only"
#: The columns a comparison table needs besides the metric's (``<metric>_mean``, ``_ci_low``, ``_ci_high``).
KEYS = ["system", "protocol", "status"]


def read_results_csv(path: Path) -> pd.DataFrame:
    """A results CSV as a table; ``ValueError`` naming the file for one that is empty, not text, cut short
    (no final line break, or a row with fewer cells than the header) or has no rows: such a file would
    otherwise be compared as if it were whole."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: empty file (expected a results table)")
    if b"\0" in data:
        raise ValueError(f"{path}: not a CSV text file (it holds NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a CSV text file (not UTF-8 at byte {err.start})") from None
    if not text.endswith("\n"):
        raise ValueError(f"{path}: ends inside a line: the file was cut short")
    try:
        table = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, ValueError) as err:
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(err).split())[:200]})") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:  # a cell beyond the csv module's limit
        raise ValueError(f"{path}: not a readable CSV ({err})") from None
    width = len(rows[0])
    short = next((i for i, row in enumerate(rows[1:], start=2) if row and len(row) != width), None)
    if short is not None:
        raise ValueError(f"{path} line {short}: {len(rows[short - 1])} cells where the header has {width}: the file "
                         "was cut short or damaged")
    if table.empty:
        raise ValueError(f"{path}: the header only, no results")
    return table


def _checked(table: pd.DataFrame, columns: list[str], source: str) -> pd.DataFrame:
    """The rows of ``table`` that ran (status ok), indexed by system and protocol, with ``columns`` as finite
    numbers; ``ValueError`` naming ``source`` for a column that is missing or a cell that is not a number."""
    missing = [c for c in KEYS + columns if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: no column(s) {', '.join(missing)} (not a comparison table of the study)")
    ran = table[table["status"] == "ok"]
    for column in columns:
        values = pd.to_numeric(ran[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = ran.index[bad][0]
            raise ValueError(f"{source}: {column} of {ran.loc[row, 'system']} ({ran.loc[row, 'protocol']}) is "
                             f"{str(ran.loc[row, column])[:40]!r}, not a number")
        ran = ran.assign(**{column: values})
    return ran.set_index(["system", "protocol"])[columns]


def load_comparison(folder: str | Path, n_boot: int = 1000) -> pd.DataFrame:
    """The comparison table (mean, std, bootstrap interval per system and protocol) of a results folder
    (``reports/results`` or the ``reports`` folder above it): its ``comparison.csv``, else computed
    from ``metrics/`` and ``predictions/``. Raises ``ValueError`` naming the folder when it holds neither."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: not a directory")
    layout = ResultsFolder.find(folder)
    if layout.table("comparison").is_file():
        return read_results_csv(layout.table("comparison"))
    files = sorted(layout.metrics_dir.glob("*.csv"))
    if not files:
        raise ValueError(f"{layout.root}: no results (expected {layout.TABLES['comparison']} or metrics/*.csv)")
    for path in files:  # each named when damaged: the table below is computed from all of them at once
        read_results_csv(path)
    try:
        return comparison_table(read_metrics(layout.root), read_predictions(layout.root), n_boot=n_boot)
    except (KeyError, TypeError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{layout.root}: metrics/ or predictions/ cannot be compared ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]})") from None


def compare_results(a: str | Path, b: str | Path, metric: str = "uar") -> pd.DataFrame:
    """One row per system and protocol run in either folder: both means, the difference (b - a) and
    both intervals, all in percent, and ``verdict``: identical, within intervals (each mean inside the
    other run's interval), OUTSIDE intervals, or run in one only."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    columns = [f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"]
    tables = []
    for side, folder in (("a", a), ("b", b)):
        table = _checked(load_comparison(folder), columns, str(_source(folder)))
        tables.append(table.set_axis([f"{side}", f"{side}_low", f"{side}_high"], axis=1))
    both = tables[0].join(tables[1], how="outer").sort_index()
    if both.empty:
        raise ValueError(f"no system ran in {a} or in {b}: nothing to compare")
    both = 100 * both
    both["difference"] = both["b"] - both["a"]
    both["verdict"] = [_verdict(row) for row in both.itertuples()]
    return both.reset_index()


def _source(folder: str | Path) -> Path:
    """The file a folder's comparison is read from (its comparison.csv), or the folder when it is computed."""
    layout = ResultsFolder.find(folder)
    return layout.table("comparison") if layout.table("comparison").is_file() else layout.root


def _verdict(row) -> str:
    if np.isnan(row.a) or np.isnan(row.b):
        return ONE_SIDED
    if row.a == row.b:
        return IDENTICAL
    inside = row.a_low <= row.b <= row.a_high and row.b_low <= row.a <= row.b_high
    return WITHIN if inside else OUTSIDE


def agree(table: pd.DataFrame) -> bool:
    """True when every system is identical or within the intervals."""
    return bool(table["verdict"].isin([IDENTICAL, WITHIN]).all())


def format_comparison(table: pd.DataFrame, metric: str = "uar") -> str:
    """The table for a terminal, and a closing count per verdict."""
    shown = table.rename(columns={"a": f"{metric} A", "b": f"{metric} B"})
    for side in ("a", "b"):
        shown[f"interval {side.upper()}"] = [f"[{lo:.1f}, {hi:.1f}]" if np.isfinite(lo) else ""
                                             for lo, hi in zip(table[f"{side}_low"], table[f"{side}_high"],
                                                               strict=True)]
    shown = shown[["system", "protocol", f"{metric} A", f"{metric} B", "difference", "interval A", "interval B",
                   "verdict"]]
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in (IDENTICAL, WITHIN, OUTSIDE, ONE_SIDED) if v in counts)
    largest = table["difference"].abs().max()
    return (f"{shown.to_string(index=False, float_format=lambda x: f'{x:.2f}', na_rep='-')}\n\n"
            f"{len(table)} system(s) x protocol: {summary}; largest difference {largest:.2f} points")
