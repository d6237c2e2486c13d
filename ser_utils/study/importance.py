"""Why a baseline decides as it does: its fold models refit, and permutation importance of feature families.

* :func:`refit_folds` - the fold models behind a :class:`~ser_utils.study.baselines.SystemResult` again
  (each fold's chosen setting on its train + val clips), checked against the recorded predictions.
* :func:`family_importance` - the drop in UAR when all columns of a feature family are shuffled.
* :func:`fold_family_importance` - that, per fold model on its own test clips, averaged over folds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator

from ..evaluation.metrics import score
from ..evaluation.splits import Split
from ..features import FeatureTable
from .baselines import SystemResult, fit_quietly, make_classifier


def refit_folds(result: SystemResult, table: FeatureTable, splits: Sequence[Split], seed: int = 0,
                n_jobs: int = -1) -> dict[int, BaseEstimator]:
    """The fold models behind ``result`` again: each fold's chosen setting refit on its train + val
    clips (cheaper than keeping every model of every system). Checks that the refit models predict
    exactly what was recorded, so the analysis describes the evaluated models.

    ``table`` must hold the columns the system used (``table.select(...)`` for a family subset).
    """
    chosen = result.selections[result.selections["chosen"]].set_index("fold")["params"]
    by_fold = {s.fold: s for s in splits if s.protocol == result.protocol}

    def refit(fold: int) -> BaseEstimator:
        train, val, _ = by_fold[fold].masks(table.meta)
        model = make_classifier(result.classifier, json.loads(chosen[fold]), seed)
        return fit_quietly(model, table.X[train | val], table.labels[train | val])

    folds = sorted(chosen.index)
    models = dict(zip(folds, Parallel(n_jobs=n_jobs)(delayed(refit)(f) for f in folds), strict=True))
    for fold, model in models.items():
        test = by_fold[fold].masks(table.meta)[2]
        recorded = result.predictions.loc[result.predictions["fold"] == fold, "predicted"].to_numpy()
        if not np.array_equal(model.predict(table.X[test]), recorded):
            raise RuntimeError(f"{result.system} fold {fold}: the refit model does not reproduce the "
                               "recorded predictions (different features, splits or seed?)")
    return models


def fold_family_importance(result: SystemResult, table: FeatureTable, splits: Sequence[Split], *,
                           n_repeats: int = 5, seed: int = 0, n_jobs: int = -1) -> pd.DataFrame:
    """:func:`family_importance` of each fold model on its own test clips (unseen actors under
    ``actor-kfold``), averaged over folds: one row per family, sorted by mean UAR drop."""
    models = refit_folds(result, table, splits, seed, n_jobs)
    by_fold = {s.fold: s for s in splits if s.protocol == result.protocol}
    frames = []
    for fold, model in models.items():
        test = by_fold[fold].masks(table.meta)[2]
        frames.append(family_importance(model, table.X[test], table.labels[test], table.families,
                                        n_repeats=n_repeats, seed=seed).assign(fold=fold))
    folds = pd.concat(frames, ignore_index=True)
    summary = folds.groupby("family", sort=False).agg(
        n_features=("n_features", "first"), uar_drop_mean=("uar_drop_mean", "mean"),
        uar_drop_std_over_folds=("uar_drop_mean", "std"))
    return summary.sort_values("uar_drop_mean", ascending=False).reset_index()


def family_importance(model: BaseEstimator, X: np.ndarray, y: Sequence[str], families: Sequence[str], *,
                      n_repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """Permutation importance of feature *families*: the drop in UAR when all columns of a family are
    shuffled together across clips (so correlated columns inside a family cannot stand in for each
    other). Use held-out clips. Returns one row per family: ``family``, ``n_features``,
    ``uar_drop_mean``, ``uar_drop_std``, sorted by importance."""
    rng = np.random.default_rng(seed)
    families = np.asarray(families)
    baseline = score(y, model.predict(X)).uar
    rows = []
    for family in dict.fromkeys(families):
        columns = families == family
        drops = []
        for _ in range(n_repeats):
            shuffled = X.copy()
            shuffled[:, columns] = X[rng.permutation(len(X))][:, columns]
            drops.append(baseline - score(y, model.predict(shuffled)).uar)
        rows.append({"family": family, "n_features": int(columns.sum()), "uar_drop_mean": np.mean(drops),
                     "uar_drop_std": np.std(drops)})
    return pd.DataFrame(rows).sort_values("uar_drop_mean", ascending=False, ignore_index=True)
