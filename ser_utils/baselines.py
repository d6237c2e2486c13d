"""Classical baselines: scikit-learn pipelines on clip-level features, under both protocols.

* :func:`make_classifier` - ``StandardScaler`` + one of :data:`CLASSIFIERS` (Random Forest, Logistic
  Regression, RBF SVM, MLP) as one pipeline, so scaling is learnt on training data only.
* :func:`evaluate_systems` - for every system and every split: choose hyper-parameters from a small
  grid by validation UAR (the split's ``val`` clips: validation *actors* under ``actor-kfold``),
  refit the chosen setting on train + val, and predict the test clips once. The test clips are
  handed to one call only, the final ``predict``; nothing chosen depends on them.
* :func:`write_results` - metrics (``evaluate.write_metrics(..., "baselines")``), per-clip
  predictions and the selection log under a profile's ``results_dir``.
* :func:`family_importance` - permutation importance of whole feature families on held-out data.
* :class:`BaselineModel` - a fitted extractor + pipeline that maps 16 kHz waveforms to emotion
  probabilities, saved with ``save_pretrained`` and loaded with ``from_pretrained``.

System names are ``<feature set>+<classifier>``, e.g. ``mfcc-set+svm`` or ``egemaps+mlp``.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from tqdm.auto import tqdm

from .corpus import EMOTIONS
from .evaluate import (
    PREDICTION_COLUMNS,
    metric_row,
    prediction_table,
    score,
    summarise,
    write_metrics,
    write_predictions,
)
from .features import FeatureExtractor, FeatureTable, make_extractor
from .splits import Split

CLASSIFIERS = ("rf", "logreg", "svm", "mlp")

#: The small grids searched on validation data (parameters of the classifier step). Kept small on
#: purpose: a few hundred validation clips cannot tell finer settings apart.
GRIDS: dict[str, list[dict]] = {
    "rf": [{"max_features": "sqrt"}, {"max_features": 0.1}],
    "logreg": [{"C": c} for c in (0.001, 0.01, 0.1, 1.0)],
    "svm": [{"C": c} for c in (1.0, 10.0, 100.0)],
    "mlp": [{"alpha": a} for a in (0.01, 0.1, 1.0)],
}


#: The smoke profile's grids: cheap settings (fewer trees, fewer MLP epochs) that only show that the
#: pipeline runs; two settings where fitting is cheap, so that selection still chooses something.
SMOKE_GRIDS: dict[str, list[dict]] = {
    "rf": [{"max_features": "sqrt", "n_estimators": 50}],
    "logreg": [{"C": 0.01}, {"C": 0.1}],
    "svm": [{"C": 1.0}, {"C": 10.0}],
    "mlp": [{"alpha": 0.1, "max_iter": 100}],
}


def make_classifier(name: str, params: dict | None = None, seed: int = 0, *,
                    probability: bool = False) -> Pipeline:
    """``StandardScaler`` + classifier ``name`` (one of :data:`CLASSIFIERS`) with ``params`` set.

    Class weights are balanced where the estimator supports it (RAVDESS neutral has half the clips
    of the other emotions and UAR is the primary metric). ``probability=True`` wraps the SVM in
    ``CalibratedClassifierCV(ensemble=False)`` (sigmoid calibration on internal 5-fold decision
    values, scikit-learn's replacement for ``SVC(probability=True)``) so that the pipeline has
    ``predict_proba``; the other three have it anyway. Only the saved model needs it.
    """
    if name == "rf":
        clf = RandomForestClassifier(n_estimators=300, class_weight="balanced", random_state=seed, n_jobs=1)
    elif name == "logreg":
        clf = LogisticRegression(max_iter=3000, class_weight="balanced")
    elif name == "svm":
        clf = SVC(kernel="rbf", gamma="scale", class_weight="balanced", random_state=seed)
    elif name == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, random_state=seed)
    else:
        raise ValueError(f"unknown classifier {name!r}; choose one of {CLASSIFIERS}")
    clf.set_params(**(params or {}))
    if probability and name == "svm":
        clf = CalibratedClassifierCV(clf, ensemble=False)
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def _fit(model: BaseEstimator, X: np.ndarray, y: np.ndarray) -> BaseEstimator:
    with warnings.catch_warnings():
        # The MLP may stop at max_iter before its loss settles; validation judges the result anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def select_params(classifier: str, grid: Sequence[dict], X_train: np.ndarray, y_train: np.ndarray,
                  X_val: np.ndarray, y_val: np.ndarray, seed: int = 0) -> tuple[dict, list[dict]]:
    """Fit every setting of ``grid`` on the training part and score it on the validation part.

    Returns the chosen parameters (highest validation UAR; the earlier grid point wins a tie) and one
    record per setting (``params``, ``val_uar``, ``val_accuracy``). Only the arrays passed here are
    seen, so a caller that passes no test clip cannot leak one into the choice.
    """
    if not len(grid):
        raise ValueError(f"{classifier}: empty hyper-parameter grid")
    trials = []
    for params in grid:
        model = _fit(make_classifier(classifier, params, seed), X_train, y_train)
        val = score(y_val, model.predict(X_val))
        trials.append({"params": dict(params), "val_uar": val.uar, "val_accuracy": val.accuracy})
    best = max(range(len(trials)), key=lambda i: (trials[i]["val_uar"], -i))
    return dict(grid[best]), trials


@dataclass
class _FoldOutcome:
    params: dict
    trials: list[dict]
    predicted: np.ndarray
    model: BaseEstimator | None


def _run_split(classifier: str, grid: Sequence[dict], X: np.ndarray, y: np.ndarray,
               masks: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int, keep_model: bool) -> _FoldOutcome:
    train, val, test = masks
    params, trials = select_params(classifier, grid, X[train], y[train], X[val], y[val], seed)
    model = _fit(make_classifier(classifier, params, seed), X[train | val], y[train | val])
    return _FoldOutcome(params, trials, model.predict(X[test]), model if keep_model else None)


@dataclass
class SystemResult:
    """One system under one protocol: per-fold metric rows, per-clip predictions, the selection log
    (every grid point's validation score per fold) and, when asked for, the fitted fold models."""

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
        """The setting chosen most often over folds (ties: the best mean validation UAR)."""
        chosen = self.selections[self.selections["chosen"]]
        counts = Counter(chosen["params"])
        mean_uar = self.selections.groupby("params")["val_uar"].mean()
        best = max(counts, key=lambda p: (counts[p], mean_uar[p]))
        return json.loads(best)


@dataclass(frozen=True)
class SystemSpec:
    """A feature set (optionally restricted to some families) + classifier, under a system name."""

    feature_set: str
    classifier: str
    families: tuple[str, ...] | None = None
    name: str | None = None

    @property
    def system(self) -> str:
        return self.name or f"{self.feature_set}+{self.classifier}"


def evaluate_systems(tables: dict[str, FeatureTable], specs: Iterable[SystemSpec],
                     splits: dict[str, list[Split]], *, grids: dict[str, list[dict]] | None = None,
                     seed: int = 0, n_jobs: int = -1, keep_models: bool = False,
                     progress: bool = True) -> list[SystemResult]:
    """Evaluate every system under every protocol in ``splits`` (protocol -> its splits).

    Each (system, split) pair is one joblib task: select on ``val``, refit on ``train + val``, predict
    ``test`` (see :func:`select_params`). Clips without features (failed extraction) are missing from
    the table and hence from every split; the metric row's ``note`` says how many.
    Returns one :class:`SystemResult` per system and protocol, in the order given.
    """
    grids = grids or GRIDS
    specs = list(specs)
    tasks, keys = [], []
    for spec in specs:
        table = tables[spec.feature_set]
        if spec.families:
            table = table.select(spec.families)
        y = table.labels
        for protocol, protocol_splits in splits.items():
            for split in protocol_splits:
                masks = split.masks(table.meta)
                tasks.append(delayed(_run_split)(spec.classifier, grids[spec.classifier], table.X, y, masks,
                                                 seed, keep_models))
                keys.append((spec, protocol, split, table, masks))
    outcomes = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    outcomes = list(tqdm(outcomes, total=len(tasks), desc="baseline folds", disable=not progress))
    results: dict[tuple, SystemResult] = {}
    for (spec, protocol, split, table, masks), outcome in zip(keys, outcomes, strict=True):
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
                                    "val_uar": t["val_uar"], "val_accuracy": t["val_accuracy"],
                                    "chosen": t["params"] == outcome.params} for t in outcome.trials])
        result.predictions = pd.concat([result.predictions, predictions], ignore_index=True)
        result.selections = pd.concat([result.selections, selections], ignore_index=True)
        if outcome.model is not None:
            result.models[split.fold] = outcome.model
    return list(results.values())


def summary_table(results: Iterable[SystemResult]) -> pd.DataFrame:
    """Mean and standard deviation over folds of accuracy, UAR and macro-F1 per system and protocol."""
    return summarise(pd.DataFrame([row for r in results for row in r.rows]))


METRICS = ("accuracy", "uar", "macro_f1")


def results_table(results: Iterable[SystemResult],
                  protocols: Sequence[str] = ("random-80-20", "actor-kfold")) -> pd.DataFrame:
    """One row per system; columns ``(protocol, metric)`` holding ``"mean ± std"`` in percent."""
    summary = summary_table(results)
    table = {}
    for row in summary.itertuples(index=False):
        for metric in METRICS:
            mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
            cell = f"{100 * mean:.1f} ± {100 * std:.1f}" if np.isfinite(std) else f"{100 * mean:.1f}"
            table.setdefault(row.system, {})[(row.protocol, metric)] = cell
    frame = pd.DataFrame.from_dict(table, orient="index")
    columns = [(p, m) for p in protocols for m in METRICS if (p, m) in frame.columns]
    return frame[pd.MultiIndex.from_tuples(columns, names=["protocol", "metric"])]


def protocol_gap(results: Iterable[SystemResult]) -> pd.DataFrame:
    """Per system: mean accuracy and UAR (%) under ``random-80-20`` and ``actor-kfold``, and the gap
    in percentage points (how much the random split over-states accuracy on unseen actors)."""
    from .results import leakage_gap

    summary = summary_table(results)
    columns = {}
    for metric in ("accuracy", "uar"):
        gap = leakage_gap(summary, metric)
        columns.update({f"{metric} random-80-20": gap["random-80-20"], f"{metric} actor-kfold": gap["actor-kfold"],
                        f"{metric} gap (pp)": gap["gap"]})
    frame = pd.DataFrame(columns)
    order = [s for s in dict.fromkeys(summary["system"]) if s in frame.index]
    return (100 * frame.reindex(order)).rename_axis("system").round(1)


def write_results(results: Sequence[SystemResult], results_dir: str | Path, group: str = "baselines") -> Path:
    """Write metrics (``metrics/<group>.csv``), predictions (``predictions/<system>.csv``, both
    protocols) and the selection log (``<group>_selection.csv``); returns the metrics path."""
    results_dir = Path(results_dir)
    path = write_metrics([row for r in results for row in r.rows], results_dir, group)
    by_system: dict[str, list[pd.DataFrame]] = {}
    for r in results:
        by_system.setdefault(r.system, []).append(r.predictions)
    for system, frames in by_system.items():
        write_predictions(pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS], results_dir, system)
    pd.concat([r.selections for r in results], ignore_index=True).to_csv(
        results_dir / f"{group}_selection.csv", index=False, float_format="%.6g")
    return path


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
        return _fit(model, table.X[train | val], table.labels[train | val])

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


class BaselineModel:
    """A feature extractor and a fitted scikit-learn pipeline: waveforms in, probabilities out.

    >>> model = BaselineModel.fit(table, "svm", {"C": 10.0})          # doctest: +SKIP
    >>> model.save_pretrained("models/baseline")                        # doctest: +SKIP
    >>> BaselineModel.from_pretrained("models/baseline").predict_proba([wave])   # (1, 8)  # doctest: +SKIP

    A model directory holds ``config.json`` (system, feature set and its config, classifier and
    parameters, labels, sample rate, package versions) and ``pipeline.skops``, written with
    ``skops.io``: loading it runs no code from the file and accepts only the types in
    :data:`TRUSTED_TYPES` (plus skops' own defaults: scikit-learn estimators, numpy arrays).
    Older folders hold ``pipeline.joblib`` instead, a pickle that runs whatever code it contains; it
    loads only with ``allow_pickle=True`` (``--allow-pickle`` on the command line).
    """

    CONFIG = "config.json"
    PIPELINE = "pipeline.skops"
    LEGACY_PIPELINE = "pipeline.joblib"
    #: Types outside skops' default allow-list that the four classifiers' pipelines contain.
    TRUSTED_TYPES = ("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
                     "sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "sklearn.tree._tree.Tree")

    def __init__(self, extractor: FeatureExtractor, pipeline: BaseEstimator, *,
                 labels: Sequence[str] = EMOTIONS, classifier: str = "", params: dict | None = None,
                 families: Sequence[str] | None = None, system: str | None = None,
                 info: dict | None = None, normalization: dict | None = None):
        self.extractor = extractor
        self.pipeline = pipeline
        self.labels = tuple(labels)
        self.classifier = classifier
        self.params = dict(params or {})
        self.families = tuple(families) if families else None
        self.system = system or f"{extractor.name}+{classifier}"
        self.info = dict(info or {})
        # How the training features were normalised (``ser_utils.normalization``); None: not at all.
        self.normalization = normalization if normalization and normalization.get("kind") != "none" else None
        # The pipeline sees the columns of ``families`` only (all columns when None).
        self._columns = (np.isin(extractor.feature_families(), self.families) if self.families
                         else np.ones(extractor.n_features, dtype=bool))
        unknown = set(map(str, pipeline.classes_)) - set(self.labels)
        if unknown:
            raise ValueError(f"the pipeline predicts classes {sorted(unknown)} outside {self.labels}")

    @property
    def sample_rate(self) -> int:
        return self.extractor.config.sample_rate

    @classmethod
    def fit(cls, table: FeatureTable, classifier: str, params: dict | None = None, seed: int = 0,
            extractor: FeatureExtractor | None = None, system: str | None = None) -> BaselineModel:
        """Fit ``classifier`` with ``params`` on every clip of ``table`` (the deployable model).

        ``table`` may hold a subset of families (``FeatureTable.select``); ``extractor`` must be the
        one that made it (default: the feature set's default config).
        """
        extractor = extractor or make_extractor(table.feature_set)
        families = tuple(dict.fromkeys(table.families))
        families = None if set(families) == set(extractor.feature_families()) else families
        names = extractor.feature_names()
        if families:
            names = [n for n, f in zip(names, extractor.feature_families(), strict=True) if f in families]
        if names != table.names:
            raise ValueError("the extractor does not produce the table's feature columns")
        pipeline = _fit(make_classifier(classifier, params, seed, probability=True), table.X, table.labels)
        return cls(extractor, pipeline, classifier=classifier, params=params, families=families,
                   system=system, info={"n_train_clips": len(table.X), "seed": seed})

    def predict_proba(self, waveforms: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities of float32 mono clips at :attr:`sample_rate` (16 kHz): ``(n, 8)``,
        columns in ``labels`` order (``corpus.EMOTIONS``), rows summing to 1.

        ``groups`` (one name per clip: speaker, or one name for a whole corpus) adapts the features
        per group first (``normalization.adapt_features``); a speaker-normalised model needs them.
        Raises ``features.ClipTooShortError`` / ``audio.SilentAudioError`` for clips that cannot be
        summarised (shorter than ``min_seconds``, or silent), ``normalization.GroupError`` for
        missing or too small groups.
        """
        from .normalization import adapt_features

        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise ValueError("pass a list of waveforms, not a single 1-D array")
        X = self.extractor.transform(list(waveforms)).astype(np.float64)[:, self._columns]
        scaler = self.pipeline.named_steps["scale"]
        X = adapt_features(X, groups, self.normalization, train_mean=scaler.mean_, train_scale=scaler.scale_,
                           model=self.system)
        proba = np.zeros((len(X), len(self.labels)))
        if len(X):
            columns = [self.labels.index(str(c)) for c in self.pipeline.classes_]
            proba[:, columns] = self.pipeline.predict_proba(X)
        return proba

    def predict(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """The most probable emotion of each clip."""
        return [self.labels[i] for i in self.predict_proba(waveforms).argmax(axis=1)]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``pipeline.skops`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": "ser-utils-baseline", "format_version": 1, "system": self.system,
            "feature_set": self.extractor.name, "feature_config": self.extractor.config.to_dict(),
            "classifier": self.classifier, "params": self.params,
            "families": list(self.families) if self.families else None, "labels": list(self.labels),
            "sample_rate": self.sample_rate, "info": self.info,
            "normalization": self.normalization or {"kind": "none"},
            "packages": {p: metadata.version(p) for p in ("scikit-learn", "librosa", "opensmile", "numpy")},
        }
        import skops.io

        skops.io.dump(self.pipeline, directory / self.PIPELINE)
        (directory / self.LEGACY_PIPELINE).unlink(missing_ok=True)  # never leave a stale pickle beside it
        (directory / self.CONFIG).write_text(json.dumps(config, indent=2, default=str))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, allow_pickle: bool = False) -> BaselineModel:
        """Load a directory written by :meth:`save_pretrained`.

        ``allow_pickle=True`` also loads an old ``pipeline.joblib``: a pickle runs any code its author
        put in it, so use it only for folders you made yourself. Raises ``FileNotFoundError`` /
        ``ValueError`` naming the file for folders that are not usable models.
        """
        directory = Path(directory)
        config_path = directory / cls.CONFIG
        skops_path, pickle_path = directory / cls.PIPELINE, directory / cls.LEGACY_PIPELINE
        if not config_path.is_file() or not (skops_path.is_file() or pickle_path.is_file()):
            raise FileNotFoundError(f"{directory}: not a baseline model directory (needs {cls.CONFIG} "
                                    f"and {cls.PIPELINE})")
        config = _read_config(config_path)
        saved = config.get("packages", {}).get("scikit-learn") if isinstance(config.get("packages"), dict) else None
        if saved and saved != metadata.version("scikit-learn"):
            warnings.warn(f"{directory}: saved with scikit-learn {saved}, loading with "
                          f"{metadata.version('scikit-learn')}", stacklevel=2)
        try:
            extractor = make_extractor(config["feature_set"], config["feature_config"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{config_path}: bad feature settings ({err})") from err
        if config.get("sample_rate") != extractor.config.sample_rate:
            raise ValueError(f"{config_path}: sample_rate {config.get('sample_rate')} disagrees with the "
                             f"feature config's {extractor.config.sample_rate}")
        if skops_path.is_file():
            pipeline = _load_skops(skops_path, cls.TRUSTED_TYPES)
        elif allow_pickle:
            pipeline = joblib.load(pickle_path)
        else:
            raise ValueError(f"{pickle_path}: a pickle, which runs any code it holds when loaded; not loaded. "
                             "Re-save the model (save_pretrained writes pipeline.skops), or pass "
                             "--allow-pickle / allow_pickle=True if you made this folder yourself")
        if not (hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_")):
            raise ValueError(f"{directory}: the saved pipeline is a {type(pipeline).__name__}, not a fitted "
                             "classifier with predict_proba")
        try:
            return cls(extractor, pipeline, labels=config["labels"], classifier=config["classifier"],
                       params=config["params"], families=config.get("families"), system=config["system"],
                       info=config.get("info"), normalization=config.get("normalization"))
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{config_path}: incomplete or inconsistent config ({type(err).__name__}: {err})") \
                from err


def _read_config(path: Path) -> dict:
    """``config.json`` of a baseline folder as a dict; anything else is a ``ValueError`` naming it."""
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != "ser-utils-baseline":
        raise ValueError(f"{path}: not a ser-utils baseline model config")
    return config


def _load_skops(path: Path, trusted: Sequence[str]):
    """Load a skops file, accepting only skops' default types and ``trusted``: nothing is executed."""
    import skops.io

    try:
        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted))
        pipeline = None if untrusted else skops.io.load(path, trusted=list(trusted))
    except Exception as err:  # skops raises zipfile, json, type and attribute errors on a broken file
        raise ValueError(f"{path}: not a readable skops file ({type(err).__name__}: {err})") from err
    if untrusted:
        raise ValueError(f"{path}: holds types outside the allow-list ({', '.join(untrusted)}); not loaded")
    return pipeline


def best_system(results: Iterable[SystemResult], protocol: str = "actor-kfold",
                metric: str = "uar", where: Callable[[SystemResult], bool] | None = None) -> SystemResult:
    """The result with the highest mean ``metric`` under ``protocol`` (optionally among ``where``)."""
    candidates = [r for r in results if r.protocol == protocol and (where is None or where(r))]
    if not candidates:
        raise ValueError(f"no results under {protocol!r}")
    return max(candidates, key=lambda r: np.mean([row[metric] for row in r.rows]))


__all__ = ["CLASSIFIERS", "GRIDS", "METRICS", "SMOKE_GRIDS", "BaselineModel", "SystemResult", "SystemSpec",
           "best_system", "evaluate_systems", "family_importance", "fold_family_importance",
           "make_classifier", "protocol_gap", "refit_folds", "results_table", "select_params",
           "summary_table", "write_results"]
