"""Classical baselines: scikit-learn pipelines on clip-level features, under both protocols.

* the classifiers: ``StandardScaler`` + Random Forest, Logistic Regression, RBF SVM or MLP
  (:mod:`ser_utils.models.classifiers`), with the small grids searched here (:data:`GRIDS`).
* :func:`evaluate_systems` - for every system and every split: choose hyper-parameters from a small
  grid by inner cross-validation on the split's training clips (train + val: every clip that is not a
  test clip; :mod:`ser_utils.evaluation.inner_cv`), the inner folds grouped by actor where the protocol
  keeps actors apart (``actor-kfold``) and stratified by class where it does not (``random-80-20``);
  refit the chosen setting on all training clips, and predict the test clips once. The test clips are
  handed to one call only, the final ``predict``; nothing chosen depends on them.
* :class:`SpeakerStats` - speaker normalization computed inside each split (and each inner fold) the way
  a deployed model does it: statistics of the fitted part from its own clips, of the scored part from its
  own clips, the prior variance from the fitted part only.
* :func:`write_results` - metrics (``metrics/baselines.csv`` through ``results.store``), per-clip
  predictions and the selection log under a profile's ``results_dir``.

What builds on these: :mod:`ser_utils.study.importance` (fold models refit, permutation importance of
feature families), :mod:`ser_utils.models.baseline` (the deployable pipeline, waveforms in), and
:mod:`ser_utils.results.tables` (tables across systems, the best system).

System names are ``<feature set>+<classifier>``, e.g. ``mfcc-set+svm`` or ``egemaps+mlp``.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator

from ..core.progress import progress as progress_bar
from ..evaluation.inner_cv import cross_validate, inner_folds
from ..evaluation.metrics import metric_row, prediction_table, score, summarise
from ..evaluation.splits import Split
from ..features import FeatureExtractor, FeatureTable
from ..features.normalization import SpeakerNormalizer
from ..models.classifiers import CLASSIFIERS, fit_quietly, make_classifier
from ..results.store import write_group

if TYPE_CHECKING:  # the deployable model imports torch: not in the workers, which only fit scikit-learn models
    from ..models.baseline import BaselineModel

#: The small grids searched by inner cross-validation (parameters of the classifier step): four inner folds of
#: ~300 clips cannot tell finer settings apart, and every point costs four fits per split. Decisions of issue
#: 34 (from the previous grids' selection logs, 11 splits per system): LogReg ``C=0.001`` dropped (4-8 points
#: below the best on every feature set); the SVM keeps ``C`` in 1, 10, 100. The Random Forest and the MLP have
#: one setting each, fixed a priori (scikit-learn's ``max_features="sqrt"``; the middle of the MLP's old
#: ``alpha`` grid), so they choose nothing and fit once per split: their points had been within 1.0 point of
#: mean inner UAR on every feature set, each chosen on about a third of the splits, and they were 95 % of the
#: grid's fitting time. Tree counts and early stopping: :func:`ser_utils.models.classifiers.make_classifier`.
GRIDS: dict[str, list[dict]] = {
    "rf": [{"max_features": "sqrt"}],
    "logreg": [{"C": c} for c in (0.01, 0.1, 1.0)],
    "svm": [{"C": c} for c in (1.0, 10.0, 100.0)],
    "mlp": [{"alpha": 0.1}],
}


#: The smoke profile's grids: cheap settings (fewer trees, fewer MLP epochs) that only show that the
#: pipeline runs; two settings where fitting is cheap, so that selection still chooses something.
SMOKE_GRIDS: dict[str, list[dict]] = {
    "rf": [{"max_features": "sqrt", "n_estimators": 50}],
    "logreg": [{"C": 0.01}, {"C": 0.1}],
    "svm": [{"C": 1.0}, {"C": 10.0}],
    "mlp": [{"alpha": 0.1, "max_iter": 100}],
}

#: How the inner folds were cut, as the selection tables say it (``inner_cv`` column).
INNER_CV = {True: "grouped by actor", False: "stratified by class (actors on both sides)"}
#: The ``inner_cv`` of a system with one setting: nothing was chosen, no inner fold was fitted.
NO_CHOICE = "none (one setting)"

#: ``(fit_rows, score_rows) -> (X_fit, X_score)``: the features an inner fit and its scoring see.
Prepare = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SpeakerStats:
    """Speaker normalization inside a split, computed as a deployed model computes it.

    The fitted rows' speakers are standardised with statistics from the fitted rows only (all of each
    speaker's fitted rows, or ``clips`` random ones), the prior variance pooled over the fitted rows; the
    scored rows' speakers with statistics from the scored rows only, shrunk towards that prior. So the
    outer refit never reads a test clip to normalize a training clip, and each inner fold repeats the
    same procedure with its scored actors in the place of the test actors. ``variance``: ``mean`` or
    ``shrunk``; ``group``: the meta column that names the speaker.
    """

    variance: str
    clips: int | None = None
    seed: int = 0
    group: str = "actor"

    def apply(self, X: np.ndarray, speakers: np.ndarray, fit: np.ndarray, score: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(X[fit] normalized, X[score] normalized)``; ``fit`` / ``score``: row indices or masks."""
        fitted = SpeakerNormalizer(self.variance, self.clips, seed=self.seed).fit(X[fit], speakers[fit])
        scorer = SpeakerNormalizer(self.variance, self.clips, prior_var=fitted.prior_var_, seed=self.seed)
        return fitted.transform(X[fit], speakers[fit]), scorer.fit_transform(X[score], speakers[score])


def select_params(classifier: str, grid: Sequence[dict], X: np.ndarray, y: np.ndarray,
                  groups: np.ndarray | None = None, seed: int = 0, *,
                  prepare: Prepare | None = None) -> tuple[dict, list[dict]]:
    """Choose a setting of ``grid`` by inner cross-validation on the training rows ``X``, ``y``.

    The inner folds (:func:`~ser_utils.evaluation.inner_cv.inner_folds`, seeded by ``seed``) are grouped by
    ``groups`` (actor of each row; no actor on both sides of a fold), or stratified by class when ``groups``
    is ``None``. Every setting is fit and scored on every inner fold; the choice is the best mean inner UAR
    (the earlier grid point wins a tie). ``prepare`` turns a fold's row indices into the features its fit
    and scoring see (speaker normalization; default: the rows as they are). Returns the chosen parameters
    and one record per setting (``params``, ``inner_uar``, ``inner_uar_std``, ``inner_folds``,
    ``inner_cv``). Only the rows passed here are seen, so a caller that passes no test clip cannot leak one
    into the choice.
    """
    if not len(grid):
        raise ValueError(f"{classifier}: empty hyper-parameter grid")
    if len(grid) == 1:  # nothing to choose: no inner fit is spent on it
        return dict(grid[0]), [{"params": dict(grid[0]), "inner_uar": np.nan, "inner_uar_std": np.nan,
                                "inner_folds": 0, "inner_cv": NO_CHOICE}]
    y = np.asarray(y)
    prepare = prepare or (lambda fit, score: (X[fit], X[score]))
    folds = inner_folds(y, groups, seed=seed)

    def candidate(params: dict):
        def fit_score(fit: np.ndarray, score: np.ndarray):
            X_fit, X_score = prepare(fit, score)
            return fit_quietly(make_classifier(classifier, params, seed), X_fit, y[fit]).predict(X_score), None
        return fit_score

    choice = cross_validate({str(i): candidate(p) for i, p in enumerate(grid)}, y, folds, grouped=groups is not None)
    trials = [{"params": dict(params), "inner_uar": choice.mean(str(i)), "inner_uar_std": choice.std(str(i)),
               "inner_folds": len(folds), "inner_cv": INNER_CV[groups is not None]} for i, params in enumerate(grid)]
    return dict(grid[int(choice.chosen)]), trials


@dataclass
class _FoldOutcome:
    params: dict
    trials: list[dict]
    predicted: np.ndarray
    model: BaseEstimator | None


def _run_split(classifier: str, grid: Sequence[dict], X: np.ndarray, y: np.ndarray,
               masks: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int, keep_model: bool,
               actors: np.ndarray | None = None, normalization: SpeakerStats | None = None,
               speakers: np.ndarray | None = None) -> _FoldOutcome:
    """One split: choose on the training clips (``actors``: inner folds grouped by them; ``None``:
    stratified), refit the choice on all training clips, predict the test clips."""
    train, val, test = masks
    training, test = np.flatnonzero(train | val), np.flatnonzero(test)
    X_train, y_train = X[training], y[training]
    prepare = None
    if normalization is not None:
        prepare = functools.partial(normalization.apply, X_train, speakers[training])
    groups = None if actors is None else actors[training]
    params, trials = select_params(classifier, grid, X_train, y_train, groups, seed, prepare=prepare)
    X_fit, X_test = normalization.apply(X, speakers, training, test) if normalization else (X_train, X[test])
    model = fit_quietly(make_classifier(classifier, params, seed), X_fit, y_train)
    return _FoldOutcome(params, trials, model.predict(X_test), model if keep_model else None)


@dataclass
class SystemResult:
    """One system under one protocol: per-fold metric rows, per-clip predictions, the selection log
    (every grid point's inner-CV score per fold) and, when asked for, the fitted fold models."""

    system: str
    feature_set: str
    classifier: str
    protocol: str
    rows: list[dict]
    predictions: pd.DataFrame
    selections: pd.DataFrame
    models: dict[int, BaseEstimator] = field(default_factory=dict)
    families: tuple[str, ...] | None = None

    def table(self, tables: dict[str, FeatureTable]) -> FeatureTable:
        """The feature table this system was evaluated on (its families only, if restricted)."""
        table = tables[self.feature_set]
        return table.select(self.families) if self.families else table

    @property
    def confusion(self) -> np.ndarray:
        """Confusion matrix summed over folds, ``(8, 8)``, rows = true class in ``EMOTIONS`` order."""
        return score(self.predictions["emotion"], self.predictions["predicted"]).confusion

    def chosen_params(self) -> dict:
        """The setting chosen most often over folds (ties: the best mean inner-CV UAR)."""
        chosen = self.selections[self.selections["chosen"]]
        counts = Counter(chosen["params"])
        mean_uar = self.selections.groupby("params")["inner_uar"].mean()
        best = max(counts, key=lambda p: (counts[p], mean_uar[p]))
        return json.loads(best)


def choice_counts(selections: pd.DataFrame, column: str = "params") -> pd.DataFrame:
    """What inner cross-validation chose, counted over folds: one cell per system (rows) and protocol
    (columns), e.g. ``C=1.0 ×4, C=10.0 ×2`` (chosen on 4 splits, on 2). ``selections``: the ``selections`` of results
    (with a ``protocol`` column), ``column``: ``params`` or ``variance``."""
    chosen = selections[selections["chosen"]]
    return (chosen.groupby(["system", "protocol"])[column]
            .agg(lambda values: ", ".join(f"{_setting(v)} ×{n}" for v, n in values.value_counts().items()))
            .unstack("protocol"))


def _setting(value) -> str:
    """A chosen setting as a reader reads it: ``{"C": 0.1, "kernel": "rbf"}`` -> ``C=0.1; kernel=rbf``."""
    try:
        params = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    if not isinstance(params, dict):
        return str(value)
    return "; ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def fold_choices(selections: pd.DataFrame, column: str = "params") -> pd.DataFrame:
    """Each split's choice with its inner-CV score: one row per system and protocol, one column per fold,
    cells like ``C=10.0 (55.8)`` (the chosen setting, its mean inner UAR in %). ``column``: ``params``, or
    ``variance`` for speaker-normalized systems (then ``variance, setting``)."""
    chosen = selections[selections["chosen"]].copy()
    what = chosen["params"].map(_setting)
    if column != "params":
        what = chosen[column].astype(str) + ", " + what
    chosen["choice"] = what + chosen["inner_uar"].map(lambda u: " (one setting)" if np.isnan(u)
                                                     else f" ({100 * u:.1f})")
    table = chosen.pivot_table(index=["system", "protocol"], columns="fold", values="choice", aggfunc="first")
    return table.rename_axis(columns="fold: choice (mean inner-CV UAR %)")


@dataclass(frozen=True)
class SystemSpec:
    """A feature set (optionally restricted to some families) + classifier, under a system name;
    ``normalization``: speaker normalization computed inside each split (:class:`SpeakerStats`)."""

    feature_set: str
    classifier: str
    families: tuple[str, ...] | None = None
    name: str | None = None
    normalization: SpeakerStats | None = None

    @property
    def system(self) -> str:
        return self.name or f"{self.feature_set}+{self.classifier}"


#: Relative cost of one fit of each classifier on a RAVDESS feature table, measured (notebook 03's previous
#: grids, one thread): MLP about 9 s, Random Forest 4.5 s, SVM and LogReg 0.1-0.6 s. Only the order in which
#: the (system, split) tasks are handed to the workers depends on it, never a result.
FIT_COST = {"mlp": 40.0, "rf": 20.0, "svm": 1.5, "logreg": 1.0}


def evaluate_systems(tables: dict[str, FeatureTable], specs: Iterable[SystemSpec],
                     splits: dict[str, list[Split]], *, grids: dict[str, list[dict]] | None = None,
                     seed: int = 0, n_jobs: int = -1, keep_models: bool = False,
                     progress: bool = True) -> list[SystemResult]:
    """Evaluate every system under every protocol in ``splits`` (protocol -> its splits).

    Each (system, split) pair is one joblib task: select by inner cross-validation on ``train + val``
    (see :func:`select_params`; grouped by actor when the split keeps its test actors out of training,
    stratified by class otherwise), refit on ``train + val``, predict ``test``. The tasks are handed out
    longest first (:data:`FIT_COST` x grid points), so the workers finish together instead of one
    waiting for a last long fit; every task is seeded and independent, so the order changes no result.
    Clips without features (failed extraction) are missing from the table and hence from every split;
    the metric row's ``note`` says how many.
    Returns one :class:`SystemResult` per system and protocol, in the order given.
    """
    tasks = split_tasks(tables, specs, splits, grids=grids or GRIDS, seed=seed, keep_models=keep_models)
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)  # stable: equal costs keep their order
    outcomes = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_run_split)(*tasks[i].args) for i in order)
    outcomes = list(progress_bar(outcomes, total=len(tasks), desc="baseline folds", disable=not progress))
    in_order = [None] * len(tasks)
    for i, outcome in zip(order, outcomes, strict=True):
        in_order[i] = outcome
    return assemble_results(tasks, in_order)


@dataclass
class SplitTask:
    """One (system, split) of :func:`evaluate_systems`: the arguments of its fits (``args``, for
    :func:`_run_split`), what its results are filed under, and its estimated cost."""

    spec: SystemSpec
    protocol: str
    split: Split
    table: FeatureTable
    masks: tuple[np.ndarray, np.ndarray, np.ndarray]
    args: tuple
    cost: float


def split_tasks(tables: dict[str, FeatureTable], specs: Iterable[SystemSpec], splits: dict[str, list[Split]], *,
                grids: dict[str, list[dict]], seed: int = 0, keep_models: bool = False) -> list[SplitTask]:
    """The tasks of :func:`evaluate_systems`, system by system, protocol by protocol, split by split."""
    tasks = []
    for spec in specs:
        table = tables[spec.feature_set]
        if spec.families:
            table = table.select(spec.families)
        grid = grids[spec.classifier]
        cost = FIT_COST.get(spec.classifier, 1.0) * (len(grid) + 1)
        actors = table.meta["actor"].to_numpy()
        norm = spec.normalization
        speakers = None if norm is None else table.meta[norm.group].astype(str).to_numpy()
        for protocol, protocol_splits in splits.items():
            for split in protocol_splits:
                masks = split.masks(table.meta)
                grouped = _keeps_actors_apart(actors, masks)
                tasks.append(SplitTask(spec, protocol, split, table, masks,
                                       (spec.classifier, grid, table.X, table.labels, masks, seed, keep_models,
                                        actors if grouped else None, norm, speakers), cost))
    return tasks


def _keeps_actors_apart(actors: np.ndarray, masks: tuple[np.ndarray, ...]) -> bool:
    """Whether no test actor is among the training actors: then the inner folds keep actors apart too."""
    train, val, test = masks
    return not set(actors[test]) & set(actors[train | val])


def assemble_results(tasks: Sequence[SplitTask], outcomes: Sequence[_FoldOutcome]) -> list[SystemResult]:
    """One :class:`SystemResult` per system and protocol from each task's outcome (both in task order)."""
    results: dict[tuple, SystemResult] = {}
    for task, outcome in zip(tasks, outcomes, strict=True):
        spec, protocol, split, table, masks = task.spec, task.protocol, task.split, task.table, task.masks
        key = (spec.system, protocol)
        if key not in results:
            results[key] = SystemResult(spec.system, spec.feature_set, spec.classifier, protocol, [],
                                        pd.DataFrame(), pd.DataFrame(), families=spec.families)
        result = results[key]
        test = table.meta[masks[2]]
        missing = len(split.test) - len(test)
        note = f"{missing} test clip(s) without features" if missing else ""
        result.rows.append(metric_row(spec.system, protocol, split.fold,
                                      score(test["emotion"].astype(str), outcome.predicted), note=note))
        predictions = prediction_table(spec.system, protocol, split.fold, test, outcome.predicted)
        selections = pd.DataFrame([{"system": spec.system, "protocol": protocol, "fold": split.fold,
                                    "params": json.dumps(t["params"], sort_keys=True),
                                    "inner_uar": t["inner_uar"], "inner_uar_std": t["inner_uar_std"],
                                    "inner_folds": t["inner_folds"], "inner_cv": t["inner_cv"],
                                    "chosen": t["params"] == outcome.params} for t in outcome.trials])
        result.predictions = pd.concat([result.predictions, predictions], ignore_index=True)
        result.selections = pd.concat([result.selections, selections], ignore_index=True)
        if outcome.model is not None:
            result.models[split.fold] = outcome.model
    return list(results.values())


def summary_table(results: Iterable[SystemResult]) -> pd.DataFrame:
    """Mean and standard deviation over folds of accuracy, UAR and macro-F1 per system and protocol."""
    return summarise(pd.DataFrame([row for r in results for row in r.rows]))


def write_results(results: Sequence[SystemResult], results_dir: str | Path, group: str = "baselines") -> Path:
    """Write metrics (``metrics/<group>.csv``), predictions (``predictions/<system>.csv``, both
    protocols) and the selection log (``<group>_selection.csv``) through the result store; returns the
    metrics path."""
    by_system: dict[str, list[pd.DataFrame]] = {}
    for r in results:
        by_system.setdefault(r.system, []).append(r.predictions)
    return write_group(results_dir, group, [row for r in results for row in r.rows],
                       {system: pd.concat(frames, ignore_index=True) for system, frames in by_system.items()},
                       pd.concat([r.selections for r in results], ignore_index=True))


def result_of(results: Iterable[SystemResult], system: str, protocol: str = "actor-kfold") -> SystemResult:
    """The result of ``system`` under ``protocol`` among ``results``."""
    for result in results:
        if (result.system, result.protocol) == (system, protocol):
            return result
    raise ValueError(f"no result of {system!r} under {protocol!r}")



def refit_model(result: SystemResult, tables: dict[str, FeatureTable], extractor: FeatureExtractor | None = None,
                seed: int = 0) -> BaselineModel:
    """The deployable model of an evaluated system: its classifier refit on every clip of its feature
    table (``result.table``: the system's families only) with the setting chosen most often over the
    folds (``SystemResult.chosen_params``)."""
    from ..models.baseline import BaselineModel

    return BaselineModel.fit(result.table(tables), result.classifier, result.chosen_params(), seed=seed,
                             extractor=extractor, system=result.system)


__all__ = ["CLASSIFIERS", "GRIDS", "SMOKE_GRIDS", "SpeakerStats", "SystemResult", "SystemSpec", "evaluate_systems",
           "fold_choices", "refit_model", "result_of", "select_params", "summary_table", "write_results"]
