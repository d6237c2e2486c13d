"""The one way to score: accuracy (WA), UAR and macro-F1 of a set of predictions, and the row formats
every result file is made of.

* :func:`score` - the metrics and confusion matrix of one set of predictions; :func:`metrics_from_confusion`
  the same metrics from (stacks of) confusion matrices, for bootstrap resamples.
* :data:`METRIC_COLUMNS` - one row per system, protocol and fold (:func:`metric_row`, :func:`not_run_rows`).
* :data:`PREDICTION_COLUMNS` - one row per test clip and fold (:func:`prediction_table`): what confusion
  matrices, per-actor accuracy and significance tests are computed from.
* :func:`summarise` - mean and standard deviation over folds.

The files themselves are written and read by :mod:`ser_utils.results.store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from ..core import config
from ..data.corpus import EMOTIONS

METRIC_COLUMNS = ["system", "protocol", "fold", "accuracy", "uar", "macro_f1", "n_test", "status",
                  "note"]


PREDICTION_COLUMNS = ["system", "protocol", "fold", "stem", "actor", "emotion", "predicted"]


#: The three reported metrics, in the order tables show them (defined in core.config for the command line).
METRICS = config.METRICS


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
        raise ValueError(f"true labels {sorted(map(str, unknown))} are not among {labels}")
    wrong = set(np.unique(y_pred)) - set(labels)
    if wrong:
        raise ValueError(f"predicted labels {sorted(map(str, wrong))} are not among {labels}")
    cm = confusion_matrix(y_true, y_pred, labels=list(labels))
    metrics = metrics_from_confusion(cm)
    return Scores(accuracy=float(metrics["accuracy"]), uar=float(metrics["uar"]),
                  macro_f1=float(metrics["macro_f1"]), n=len(y_true), confusion=cm, labels=labels)


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, UAR and macro-F1 of confusion matrices ``(..., K, K)`` (rows: true class), each of shape
    ``(...)``, the one definition of the study's metrics (UAR and macro-F1 average over the classes present in the
    truth); vectorised, so the bootstrap scores all its resamples at once."""
    support = confusion.sum(-1)
    predicted = confusion.sum(-2)
    hits = np.diagonal(confusion, axis1=-2, axis2=-1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / np.maximum(support, 1), 0.0)
        f1 = np.where(present, 2 * hits / np.maximum(support + predicted, 1), 0.0)
    n_present = present.sum(-1)
    return {"accuracy": hits.sum(-1) / support.sum(-1), "uar": recall.sum(-1) / n_present,
            "macro_f1": f1.sum(-1) / n_present}


def metric_row(system: str, protocol: str, fold: int, scores: Scores, note: str = "") -> dict:
    """One tidy row of :data:`METRIC_COLUMNS` for a scored fold."""
    return {"system": system, "protocol": protocol, "fold": fold, **scores.as_dict(), "status": "ok",
            "note": note}


def not_run_rows(system: str, protocols: Iterable[str], reason: str) -> list[dict]:
    """Rows that say a system was *not run* and why, in place of numbers."""
    return [{"system": system, "protocol": p, "fold": np.nan, "accuracy": np.nan, "uar": np.nan,
             "macro_f1": np.nan, "n_test": 0, "status": "not run", "note": reason} for p in protocols]


def prediction_table(system: str, protocol: str, fold: int, test: pd.DataFrame,
                     predicted: Sequence[str]) -> pd.DataFrame:
    """Per-clip predictions of one fold (:data:`PREDICTION_COLUMNS`) from its test rows of a corpus table."""
    return pd.DataFrame({"system": system, "protocol": protocol, "fold": fold, "stem": test["stem"].to_numpy(),
                         "actor": test["actor"].to_numpy(), "emotion": test["emotion"].astype(str).to_numpy(),
                         "predicted": np.asarray(predicted)})


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
