"""The one reader and writer of every result file the notebooks leave, keyed by the results-folder layout
(:class:`ser_utils.core.layout.ResultsFolder`, which owns every path).

Layout under a profile's ``results_dir`` (``reports/results`` for the full study):

* ``metrics/<group>.csv`` - one row per system, protocol and fold (``evaluation.metrics.METRIC_COLUMNS``).
* ``predictions/<system>.csv`` - one row per test clip and fold (``evaluation.metrics.PREDICTION_COLUMNS``).
* ``<group>_selection.csv`` - the validation choices of a group of systems.
* one CSV per table of :data:`TABLE_OPTIONS` (``corpus`` from notebook 01, ``families`` and ``enrolment``
  from 03, ``layer_probe``, ``input_modes``, ``frozen_heads``, ``frozen_selection``, ``finetune_selection`` and
  ``training_curves`` from 04,
  ``comparison`` and ``headline`` from 05, ``cross_corpus`` from 06): :func:`write_table` /
  :func:`read_table`; and beside the reports ``figures/headline.png`` (05).

:func:`write_system`, :func:`write_not_run` and :func:`write_group` write a system's (or a group's) metrics and
predictions together, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ..core.atomic import atomic_open, atomic_to_csv
from ..core.config import PROTOCOLS
from ..core.layout import ResultsFolder
from ..evaluation.metrics import METRIC_COLUMNS, PREDICTION_COLUMNS, metrics_from_predictions, not_run_rows

#: Relative to the reports folder, not the results folder: the index page shows it.
HEADLINE_FIGURE = Path("figures") / "headline.png"
_NUMBERS = {"float_format": "%.6g"}
#: Each table of :attr:`ResultsFolder.TABLES`: how it is written, and how it is read back.
TABLE_OPTIONS: dict[str, tuple[dict, dict]] = {
    "corpus": ({}, {"dtype": {"stem": str}}),
    "families": (_NUMBERS, {}),
    "enrolment": (_NUMBERS, {}),
    "layer_probe": (_NUMBERS, {}),
    "input_modes": (_NUMBERS, {}),
    "frozen_heads": (_NUMBERS, {"keep_default_na": False}),  # variance "" without normalization
    "frozen_selection": (_NUMBERS, {"keep_default_na": False}),
    "finetune_selection": (_NUMBERS, {}),
    "training_curves": (_NUMBERS, {}),
    "comparison": (_NUMBERS, {}),
    "headline": ({}, {"keep_default_na": False}),  # text cells, as the reader sees them
    "cross_corpus": (_NUMBERS, {}),
}


def _layout(results_dir: str | Path) -> ResultsFolder:
    return ResultsFolder(Path(results_dir))


def _write_csv(frame: pd.DataFrame, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(frame, path, index=False, **options)
    return path


def write_table(frame: pd.DataFrame, results_dir: str | Path, key: str) -> Path:
    """Write table ``key`` (one of :data:`TABLE_OPTIONS`). A ``path`` column (files on this machine) is
    left out: committed tables name clips by their stem, never by a local path."""
    if key not in TABLE_OPTIONS:
        raise KeyError(f"no result table {key!r}; the tables are {', '.join(TABLE_OPTIONS)}")
    return _write_csv(frame.drop(columns=["path"], errors="ignore"), _layout(results_dir).table(key),
                      **TABLE_OPTIONS[key][0])


def read_table(results_dir: str | Path, key: str) -> pd.DataFrame | None:
    """What :func:`write_table` wrote (``None`` before the notebook that writes it ran)."""
    path = _layout(results_dir).table(key)
    if not path.is_file() or not path.stat().st_size:
        return None
    return pd.read_csv(path, **TABLE_OPTIONS[key][1])


def write_metrics(rows: Iterable[dict], results_dir: str | Path, group: str) -> Path:
    """Write ``rows`` to ``results_dir/metrics/<group>.csv`` (replacing that group's earlier rows)."""
    return _write_csv(pd.DataFrame(list(rows), columns=METRIC_COLUMNS), _layout(results_dir).metrics(group),
                      **_NUMBERS)


def write_system(predictions: pd.DataFrame, results_dir: str | Path, system: str) -> pd.DataFrame:
    """Write a system's predictions (every protocol in one file) and its fold metrics (its own group);
    returns the metrics table."""
    write_predictions(predictions, results_dir, system)
    rows = metrics_from_predictions(predictions)
    write_metrics(rows, results_dir, system)
    return pd.DataFrame(rows)


def write_systems(predictions: dict[str, list[pd.DataFrame]], results_dir: str | Path) -> pd.DataFrame:
    """:func:`write_system` for each system (its protocols' frames together); returns all metrics rows."""
    return pd.concat([write_system(pd.concat(frames, ignore_index=True), results_dir, system)
                      for system, frames in predictions.items()], ignore_index=True)


def write_not_run(results_dir: str | Path, systems: Sequence[str], reason: str,
                  protocols: Sequence[str] = PROTOCOLS) -> pd.DataFrame:
    """Record that ``systems`` were not run, and why, in place of numbers (their old predictions go)."""
    rows = [row for system in systems for row in not_run_rows(system, protocols, reason)]
    for system in systems:
        write_metrics([r for r in rows if r["system"] == system], results_dir, system)
        remove_predictions(results_dir, system)
    return pd.DataFrame(rows)


def write_group(results_dir: str | Path, group: str, rows: Iterable[dict], predictions: dict[str, pd.DataFrame],
                selections: pd.DataFrame) -> Path:
    """A group of systems scored together (the baselines): metrics ``metrics/<group>.csv``, each system's
    predictions, and the validation choices ``<group>_selection.csv``; returns the metrics path."""
    path = write_metrics(rows, results_dir, group)
    for system, frame in predictions.items():
        write_predictions(frame, results_dir, system)
    _write_csv(selections, _layout(results_dir).selection(group), **_NUMBERS)
    return path


def write_headline_figure(figure, reports_dir: str | Path, dpi: int = 110) -> Path:
    """Save the headline matplotlib ``figure`` as ``reports_dir/figures/headline.png``."""
    path = Path(reports_dir) / HEADLINE_FIGURE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, dpi=dpi, format=path.suffix.lstrip("."))
    return path


def write_predictions(predictions: pd.DataFrame, results_dir: str | Path, system: str) -> Path:
    """Write per-clip predictions of one system (:data:`PREDICTION_COLUMNS`)."""
    missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack columns {sorted(missing)}")
    return _write_csv(predictions[PREDICTION_COLUMNS], _layout(results_dir).predictions(system))


def remove_predictions(results_dir: str | Path, system: str) -> None:
    """Remove a system's predictions (a system recorded as not run has none: old ones would contradict it)."""
    _layout(results_dir).predictions(system).unlink(missing_ok=True)


def read_metrics(results_dir: str | Path) -> pd.DataFrame:
    """Every metrics CSV under ``results_dir`` in one table (empty table if there are none)."""
    files = sorted(_layout(results_dir).metrics_dir.glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return pd.concat([pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in files],
                     ignore_index=True)


def read_predictions(results_dir: str | Path, systems: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-clip predictions of ``systems`` (default: all) in one table."""
    layout = _layout(results_dir)
    files = (sorted(layout.predictions_dir.glob("*.csv")) if systems is None
             else [layout.predictions(s) for s in systems])
    if not files:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return pd.concat([pd.read_csv(f, dtype={"stem": str}) for f in files], ignore_index=True)
