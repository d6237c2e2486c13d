"""The scikit-learn pipelines of the handcrafted baselines: ``StandardScaler`` + one of :data:`CLASSIFIERS`
(Random Forest, Logistic Regression, RBF SVM, MLP), so scaling is learnt on training data only.

Used by the baseline study (``study.baselines``: grids chosen by inner cross-validation) and by the deployable
:class:`~ser_utils.models.baseline.BaselineModel`.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

CLASSIFIERS = ("rf", "logreg", "svm", "mlp")


def make_classifier(name: str, params: dict | None = None, seed: int = 0, *,
                    probability: bool = False) -> Pipeline:
    """``StandardScaler`` + classifier ``name`` (one of :data:`CLASSIFIERS`) with ``params`` set.

    Class weights are balanced where the estimator supports it (RAVDESS neutral has half the clips
    of the other emotions and UAR is the primary metric). ``probability=True`` wraps the SVM in
    ``CalibratedClassifierCV(ensemble=False)`` (sigmoid calibration on internal 5-fold decision
    values, scikit-learn's replacement for ``SVC(probability=True)``) so that the pipeline has
    ``predict_proba``; the other three have it anyway. Only the saved model needs it.

    Two speed decisions (issue 34: inner cross-validation fits every grid point four times per split), both
    measured on inner folds of the real features (the commit message has the numbers): the Random Forest
    grows 100 trees (was 300; about a third of its time), and the MLP stops early on 10 % of its own fit
    data held out inside the fit (was: all 300 iterations, where ``alpha=0.1`` ran to the limit on every
    split). ``params`` may set either back (``n_estimators``, ``early_stopping``).
    """
    if name == "rf":
        clf = RandomForestClassifier(n_estimators=100, class_weight="balanced", random_state=seed, n_jobs=1)
    elif name == "logreg":
        clf = LogisticRegression(max_iter=3000, class_weight="balanced")
    elif name == "svm":
        clf = SVC(kernel="rbf", gamma="scale", class_weight="balanced", random_state=seed)
    elif name == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, early_stopping=True,
                            random_state=seed)
    else:
        raise ValueError(f"unknown classifier {name!r}; choose one of {CLASSIFIERS}")
    clf.set_params(**(params or {}))
    if probability and name == "svm":
        clf = CalibratedClassifierCV(clf, ensemble=False)
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def fit_quietly(model: BaseEstimator, X: np.ndarray, y: np.ndarray) -> BaseEstimator:
    """``model.fit(X, y)`` without the MLP's convergence warnings; returns the fitted model."""
    with warnings.catch_warnings():
        # The MLP may stop at max_iter before its loss settles; validation judges the result anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)
