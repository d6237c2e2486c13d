"""Do two runs of the study agree? Per-system differences against the bootstrap intervals.

The same code and data on another machine reproduces some systems bit for bit and others only up to
the last bits of the features (different CPUs), which random forests and MLPs amplify into a point or
two. :func:`compare_results` tells which is which: for every system and protocol run in both results
folders, the difference of the mean metric and whether each run's mean lies inside the other's 95 %
bootstrap interval over test clips (``python -m ser_utils compare-results A B``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.layout import ResultsFolder
from ..evaluation.metrics import METRICS
from .store import read_metrics, read_predictions
from .tables import comparison_table

IDENTICAL, WITHIN, OUTSIDE, ONE_SIDED = "identical", "within intervals", "OUTSIDE intervals", "run in one only"


def load_comparison(folder: str | Path, n_boot: int = 1000) -> pd.DataFrame:
    """The comparison table (mean, std, bootstrap interval per system and protocol) of a results folder
    (``reports/results`` or the ``reports`` folder above it): its ``comparison.csv``, else computed
    from ``metrics/`` and ``predictions/``. Raises ``ValueError`` naming the folder when it holds neither."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: not a directory")
    layout = ResultsFolder.find(folder)
    if layout.table("comparison").is_file():
        return pd.read_csv(layout.table("comparison"), keep_default_na=False, na_values=[""])
    metrics = read_metrics(layout.root)
    if metrics.empty:
        raise ValueError(f"{layout.root}: no results (expected {layout.TABLES['comparison']} or metrics/*.csv)")
    return comparison_table(metrics, read_predictions(layout.root), n_boot=n_boot)


def compare_results(a: str | Path, b: str | Path, metric: str = "uar") -> pd.DataFrame:
    """One row per system and protocol run in either folder: both means, the difference (b - a) and
    both intervals, all in percent, and ``verdict``: identical, within intervals (each mean inside the
    other run's interval), OUTSIDE intervals, or run in one only."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    columns = [f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"]
    tables = []
    for side, folder in (("a", a), ("b", b)):
        table = load_comparison(folder)
        table = table[table["status"] == "ok"].set_index(["system", "protocol"])[columns]
        tables.append(table.set_axis([f"{side}", f"{side}_low", f"{side}_high"], axis=1))
    both = tables[0].join(tables[1], how="outer").sort_index()
    both = 100 * both
    both["difference"] = both["b"] - both["a"]
    both["verdict"] = [_verdict(row) for row in both.itertuples()]
    return both.reset_index()


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
