"""The one way to score, and the one writer of every result file the notebooks leave.

Layout under a profile's ``results_dir`` (``reports/results`` for the full study):

* ``metrics/<group>.csv`` - one row per system, protocol and fold (:data:`METRIC_COLUMNS`).
* ``predictions/<system>.csv`` - one row per test clip and fold: ``system, protocol, fold, stem,
  actor, emotion, predicted`` (what confusion matrices, per-actor accuracy and significance tests
  are computed from).
* ``corpus.csv`` (notebook 01), ``baselines_families.csv`` and ``enrolment_curve.csv`` (03),
  ``comparison.csv`` and ``headline.csv`` (05), ``cross_corpus.csv`` (06), and beside the reports
  ``figures/headline.png`` (05): one ``write_*`` function each below; ``report.write_index`` reads
  the headline and cross-corpus ones back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from .atomic import atomic_open, atomic_to_csv
from .config import ResultsFolder
from .corpus import EMOTIONS

METRIC_COLUMNS = ["system", "protocol", "fold", "accuracy", "uar", "macro_f1", "n_test", "status",
                  "note"]
PREDICTION_COLUMNS = ["system", "protocol", "fold", "stem", "actor", "emotion", "predicted"]
#: The three reported metrics, in the order tables show them.
METRICS = ("accuracy", "uar", "macro_f1")


@dataclass(frozen=True)
class Scores:
    """Accuracy (WA), unweighted average recall (UAR), macro-F1 and the confusion matrix.

    ``confusion[i, j]`` counts clips of true class ``labels[i]`` predicted as ``labels[j]``.
    UAR and macro-F1 average over the classes present in the true labels; predictions of any
    other class count as errors.
    """

    accuracy: float
    uar: float
    macro_f1: float
    n: int
    confusion: np.ndarray
    labels: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "uar": self.uar, "macro_f1": self.macro_f1, "n_test": self.n}


def score(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] = EMOTIONS) -> Scores:
    """Score predictions against true labels (both emotion names, or both class indices)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be 1-D and match")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set of predictions")
    labels = tuple(labels)
    if np.issubdtype(y_true.dtype, np.integer):
        y_true, y_pred = np.asarray(labels)[y_true], np.asarray(labels)[y_pred]
    unknown = set(np.unique(y_true)) - set(labels)
    if unknown:
        raise ValueError(f"true labels {sorted(unknown)} are not among {labels}")
    present = [c for c in labels if c in set(y_true)]
    cm = confusion_matrix(y_true, y_pred, labels=list(labels))
    recalls = [cm[i, i] / cm[i].sum() for i, c in enumerate(labels) if c in present]
    return Scores(
        accuracy=float(np.mean(y_true == y_pred)),
        uar=float(np.mean(recalls)),
        macro_f1=float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        n=len(y_true),
        confusion=cm,
        labels=labels,
    )


def metric_row(system: str, protocol: str, fold: int, scores: Scores, note: str = "") -> dict:
    """One tidy row of :data:`METRIC_COLUMNS` for a scored fold."""
    return {"system": system, "protocol": protocol, "fold": fold, **scores.as_dict(), "status": "ok",
            "note": note}


def not_run_rows(system: str, protocols: Iterable[str], reason: str) -> list[dict]:
    """Rows that say a system was *not run* and why, in place of numbers."""
    return [{"system": system, "protocol": p, "fold": np.nan, "accuracy": np.nan, "uar": np.nan,
             "macro_f1": np.nan, "n_test": 0, "status": "not run", "note": reason} for p in protocols]


def write_metrics(rows: Iterable[dict], results_dir: str | Path, group: str) -> Path:
    """Write ``rows`` to ``results_dir/metrics/<group>.csv`` (replacing that group's earlier rows)."""
    path = ResultsFolder(Path(results_dir)).metrics(group)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(pd.DataFrame(list(rows), columns=METRIC_COLUMNS), path, index=False, float_format="%.6g")
    return path


#: Relative to the reports folder, not the results folder: the index page shows it.
HEADLINE_FIGURE = Path("figures") / "headline.png"


def _write_csv(frame: pd.DataFrame, results_dir: str | Path, table: str, **kwargs) -> Path:
    path = ResultsFolder(Path(results_dir)).table(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(frame, path, index=False, **kwargs)
    return path


def write_corpus_table(meta: pd.DataFrame, results_dir: str | Path) -> Path:
    """The corpus table (one row per clip, :func:`ser_utils.corpus.discover`) without local paths."""
    return _write_csv(meta.drop(columns=["path"], errors="ignore"), results_dir, "corpus")


def read_corpus_table(results_dir: str | Path) -> pd.DataFrame:
    """What :func:`write_corpus_table` wrote."""
    return pd.read_csv(ResultsFolder(Path(results_dir)).table("corpus"), dtype={"stem": str})


def write_family_summary(summary: pd.DataFrame, results_dir: str | Path) -> Path:
    """The per-feature-family comparison of notebook 03 (a :func:`summarise` table, one row per family)."""
    return _write_csv(summary, results_dir, "families", float_format="%.6g")


def write_enrolment_curve(curve: pd.DataFrame, results_dir: str | Path) -> Path:
    """UAR per fold against enrolment clips per speaker (notebook 03, ``normalized_systems.enrolment_curve``)."""
    return _write_csv(curve, results_dir, "enrolment", float_format="%.6g")


def write_cross_corpus(table: pd.DataFrame, results_dir: str | Path) -> Path:
    """Exported models on other corpora (notebook 06, ``crosscorpus.cross_corpus_table``)."""
    return _write_csv(table, results_dir, "cross_corpus", float_format="%.6g")


def read_cross_corpus(results_dir: str | Path) -> pd.DataFrame:
    """What :func:`write_cross_corpus` wrote (an empty table before notebook 06 ran)."""
    path = ResultsFolder(Path(results_dir)).table("cross_corpus")
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()


def write_input_modes(table: pd.DataFrame, results_dir: str | Path) -> Path:
    """Whisper's ``clip`` against ``pad30`` input on the same clips (notebook 04, ``systems.compare_input_modes``)."""
    return _write_csv(table, results_dir, "input_modes", float_format="%.6g")


def write_layer_probe(probe: pd.DataFrame, results_dir: str | Path) -> Path:
    """Per-layer linear-probe scores of each backbone (notebook 04, ``embeddings.layer_probe``)."""
    return _write_csv(probe, results_dir, "layer_probe", float_format="%.6g")


def write_comparison(table: pd.DataFrame, results_dir: str | Path) -> Path:
    """Every system x protocol with bootstrap intervals (``results.comparison_table``)."""
    return _write_csv(table, results_dir, "comparison", float_format="%.6g")


def write_headline(headline: pd.DataFrame, results_dir: str | Path) -> Path:
    """The reader's table (``results.headline_table``), shown again on the index page."""
    return _write_csv(headline, results_dir, "headline")


def read_headline(results_dir: str | Path) -> pd.DataFrame | None:
    """What :func:`write_headline` wrote, as text cells (``None`` before notebook 05 ran)."""
    path = ResultsFolder(Path(results_dir)).table("headline")
    return pd.read_csv(path, keep_default_na=False) if path.is_file() else None


def write_headline_figure(figure, reports_dir: str | Path, dpi: int = 110) -> Path:
    """Save the headline matplotlib ``figure`` as ``reports_dir/figures/headline.png``."""
    path = Path(reports_dir) / HEADLINE_FIGURE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, dpi=dpi, format=path.suffix.lstrip("."))
    return path


def prediction_table(system: str, protocol: str, fold: int, test: pd.DataFrame,
                     predicted: Sequence[str]) -> pd.DataFrame:
    """Per-clip predictions of one fold (:data:`PREDICTION_COLUMNS`) from its test rows of a corpus table."""
    return pd.DataFrame({"system": system, "protocol": protocol, "fold": fold, "stem": test["stem"].to_numpy(),
                         "actor": test["actor"].to_numpy(), "emotion": test["emotion"].astype(str).to_numpy(),
                         "predicted": np.asarray(predicted)})


def write_predictions(predictions: pd.DataFrame, results_dir: str | Path, system: str) -> Path:
    """Write per-clip predictions of one system (:data:`PREDICTION_COLUMNS`)."""
    missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack columns {sorted(missing)}")
    path = ResultsFolder(Path(results_dir)).predictions(system)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(predictions[PREDICTION_COLUMNS], path, index=False)
    return path


def remove_predictions(results_dir: str | Path, system: str) -> None:
    """Remove a system's predictions (a system recorded as not run has none: old ones would contradict it)."""
    ResultsFolder(Path(results_dir)).predictions(system).unlink(missing_ok=True)


def read_metrics(results_dir: str | Path) -> pd.DataFrame:
    """Every metrics CSV under ``results_dir`` in one table (empty table if there are none)."""
    files = sorted(ResultsFolder(Path(results_dir)).metrics_dir.glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return pd.concat([pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in files],
                     ignore_index=True)


def read_predictions(results_dir: str | Path, systems: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-clip predictions of ``systems`` (default: all) in one table."""
    layout = ResultsFolder(Path(results_dir))
    files = (sorted(layout.predictions_dir.glob("*.csv")) if systems is None
             else [layout.predictions(s) for s in systems])
    if not files:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return pd.concat([pd.read_csv(f, dtype={"stem": str}) for f in files], ignore_index=True)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds per system and protocol.

    Returns one row per (system, protocol) with ``<metric>_mean``, ``<metric>_std``, ``folds`` and
    ``status`` (``"not run"`` rows keep their reason in ``note`` and carry no numbers).
    """
    rows = []
    for (system, protocol), group in metrics.groupby(["system", "protocol"], sort=False):
        done = group[group["status"] == "ok"]
        row = {"system": system, "protocol": protocol, "folds": len(done),
               "status": "ok" if len(done) else "not run",
               "note": "" if len(done) else "; ".join(sorted(set(group["note"].dropna())))}
        for metric in METRICS:
            values = done[metric].astype(float)
            row[f"{metric}_mean"] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summed_confusion(predictions: pd.DataFrame, labels: Sequence[str] = EMOTIONS) -> np.ndarray:
    """Confusion matrix summed over folds (rows: true class, columns: predicted)."""
    return confusion_matrix(predictions["emotion"], predictions["predicted"], labels=list(labels))


def metrics_from_predictions(predictions: pd.DataFrame, labels: Sequence[str] = EMOTIONS) -> list[dict]:
    """One :func:`metric_row` per (system, protocol, fold) of a predictions table."""
    return [metric_row(system, protocol, int(fold), score(group["emotion"], group["predicted"], labels))
            for (system, protocol, fold), group in predictions.groupby(["system", "protocol", "fold"])]
