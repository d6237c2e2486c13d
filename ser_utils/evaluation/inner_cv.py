"""Choices made by cross-validation inside the training data: the one way the study (and ``train``) chooses.

Two validation actors (about 120 clips) rank candidates mostly by chance: their UAR moves by 6-10 points
from fold to fold. Instead, inside each outer split, the training clips (train + validation: every clip
that is not a test clip) are cut into inner folds; every candidate is scored on every inner fold; the
choice is the best mean inner UAR; the chosen candidate is then refitted on all training clips. The
outer split's test clips never take part.

* grouped (``groups`` given: actors or speakers): no group in two parts of an inner fold
  (scikit-learn's ``StratifiedGroupKFold``: groups kept whole, classes balanced as far as groups allow);
* not grouped (``random-80-20``, or a manifest without speakers): ``StratifiedKFold`` by class. The same
  speaker is then in training and validation, so the inner score is optimistic; tables say so.

:func:`inner_folds` makes the folds, :func:`cross_validate` scores candidates on them, and
:class:`InnerChoice` records what was chosen and why (every candidate's mean and per-fold inner UAR).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

#: Inner folds per outer split: 4 cuts 20 training actors into groups of 5 (about 300 clips each).
INNER_FOLDS = 4


def inner_folds(labels: Sequence, groups: Sequence | None = None, n_folds: int = INNER_FOLDS,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner ``(fit, score)`` row-index pairs over the training rows.

    ``labels``: ``(N,)`` class of each training row; ``groups``: ``(N,)`` actor / speaker of each row, or
    ``None`` (stratified by class only). With groups, ``n_folds`` is capped at the number of groups, and no
    group is in both parts of any fold. Deterministic given ``seed``. ``ValueError`` when fewer than two
    folds can be made (one group, or a class with a single row).
    """
    labels = np.asarray(labels)
    if groups is not None:
        groups = np.asarray(groups)
        n = min(n_folds, len(np.unique(groups)))
        if n < 2:
            raise ValueError(f"inner cross-validation needs at least 2 speakers; got {len(np.unique(groups))}")
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
    else:
        smallest = min(np.unique(labels, return_counts=True)[1])
        n = min(n_folds, int(smallest))
        if n < 2:
            raise ValueError("inner cross-validation needs at least 2 examples of every class")
        splitter = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(labels)), labels))
    return [(np.sort(fit), np.sort(score)) for fit, score in folds]


@dataclass
class InnerChoice:
    """What inner cross-validation chose among candidates, and the evidence.

    ``scores``: candidate -> inner UAR per inner fold (fraction); ``extras``: candidate -> whatever a fit
    reported per fold besides its score (e.g. the best epoch of an SGD head), for the refit;
    ``predictions``: candidate -> its predicted labels of each inner fold's score rows (in the folds' order),
    the out-of-fold predictions a cross-validated confusion matrix is made of.
    """

    chosen: str
    scores: dict[str, list[float]]
    grouped: bool
    extras: dict[str, list] = field(default_factory=dict)
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def mean(self, candidate: str | None = None) -> float:
        return float(np.mean(self.scores[candidate or self.chosen]))

    def std(self, candidate: str | None = None) -> float:
        values = self.scores[candidate or self.chosen]
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

    def table(self) -> list[dict]:
        """One row per candidate: mean and std of its inner UAR, whether it was chosen."""
        return [{"candidate": name, "inner_uar": self.mean(name), "inner_uar_std": self.std(name),
                 "inner_folds": len(values), "chosen": name == self.chosen, "grouped": self.grouped}
                for name, values in self.scores.items()]


#: A candidate's fit-and-score on one inner fold: ``(fit_rows, score_rows) -> (predicted labels of the
#: score rows, extra)``; ``extra`` is anything the refit needs (``None`` if nothing).
FitScore = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, object]]


def cross_validate(candidates: Mapping[str, FitScore], labels: Sequence,
                   folds: Sequence[tuple[np.ndarray, np.ndarray]], *, grouped: bool) -> InnerChoice:
    """Score every candidate on every inner fold; choose the best mean inner UAR (the first listed on a tie).

    ``candidates``: name -> :data:`FitScore`; ``labels``: ``(N,)`` training labels the folds index.
    """
    labels = np.asarray(labels)
    scores: dict[str, list[float]] = {}
    extras: dict[str, list] = {}
    predictions: dict[str, list[np.ndarray]] = {}
    for name, fit_score in candidates.items():
        for fit_rows, score_rows in folds:
            predicted, extra = fit_score(fit_rows, score_rows)
            uar = balanced_accuracy_score(labels[score_rows], np.asarray(predicted))
            scores.setdefault(name, []).append(float(uar))
            extras.setdefault(name, []).append(extra)
            predictions.setdefault(name, []).append(np.asarray(predicted))
    if not scores:
        raise ValueError("no candidate to choose from")
    chosen = max(scores, key=lambda name: (np.mean(scores[name]), -list(scores).index(name)))
    return InnerChoice(chosen, scores, grouped, extras, predictions)
