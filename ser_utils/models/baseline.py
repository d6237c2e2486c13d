"""The deployable baseline: a feature extractor and a fitted scikit-learn pipeline, waveforms in,
emotion probabilities out, saved with ``save_pretrained`` and loaded with ``from_pretrained``."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
from sklearn.base import BaseEstimator

from ..core.atomic import atomic_open, atomic_write_text
from ..core.config import SettingError
from ..data.corpus import EMOTIONS
from ..features import FeatureExtractor, FeatureTable, make_extractor
from .classifiers import fit_quietly, make_classifier
from .deployable import Deployable, check_labels, check_number
from .folder import read_json

FORMAT, FORMAT_VERSION = "ser-utils-baseline", 1
#: The sane range of each number a baseline folder's ``config.json`` may set (``field: (low, high, whole)``;
#: ``sample_rate`` also at the top level), checked before the feature extractor is built: a sample rate of
#: 1e9 made every file allocate 14 GiB (or crash), and an FFT size of 1e9 would do the same.
FEATURE_LIMITS = {
    "sample_rate": (1_000, 384_000, True), "n_fft": (16, 65_536, True), "hop_length": (1, 65_536, True),
    "n_mfcc": (1, 256, True), "n_mels": (1, 512, True), "delta_width": (3, 1_001, True), "n_chroma": (1, 120, True),
    "contrast_bands": (1, 12, True), "contrast_fmin": (1.0, 20_000.0, False), "rolloff_percent": (0.01, 0.99, False),
    "chroma_tuning": (-0.5, 0.5, False), "min_seconds": (0.001, 60.0, False),
}


class BaselineModel(Deployable):
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
        self.labels = check_labels(list(labels))  # on fit, save and load alike
        self.classifier = classifier
        self.params = dict(params or {})
        self.families = tuple(families) if families else None
        self.system = system or f"{extractor.name}+{classifier}"
        self.info = dict(info or {})
        # How the training features were normalized (``ser_utils.features.normalization``); None: not at all.
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

    @property
    def min_seconds(self) -> float:
        """Shortest clip the feature extractor summarises, in seconds."""
        return self.extractor.config.min_seconds

    def describe(self) -> str:
        from ..features.normalization import describe

        return (f"{self.system}: {self.extractor.name} features + {self.classifier}; "
                f"normalization: {describe(self.normalization)}")

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        """The ``ValueError`` a clip would raise in :meth:`predict_proba` (too short, silent), without
        classifying it."""
        self.extractor.transform(list(waves))

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
        pipeline = fit_quietly(make_classifier(classifier, params, seed, probability=True), table.X, table.labels)
        return cls(extractor, pipeline, classifier=classifier, params=params, families=families,
                   system=system, info={"n_train_clips": len(table.X), "seed": seed})

    def predict_proba(self, waveforms: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities of float32 mono clips at :attr:`sample_rate` (16 kHz): ``(n, 8)``,
        columns in ``labels`` order (``corpus.EMOTIONS``), rows summing to 1.

        ``groups`` (one name per clip: speaker, or one name for a whole corpus) adapts the features
        per group first (``normalization.adapt_features``); a speaker-normalized model needs them.
        Raises ``features.ClipTooShortError`` / ``audio.SilentAudioError`` for clips that cannot be
        summarised (shorter than ``min_seconds``, or silent), ``normalization.GroupError`` for
        missing or too small groups.
        """
        from ..features.normalization import adapt_features

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
            "format": FORMAT, "format_version": FORMAT_VERSION, "system": self.system,
            "feature_set": self.extractor.name, "feature_config": self.extractor.config.to_dict(),
            "classifier": self.classifier, "params": self.params,
            "families": list(self.families) if self.families else None, "labels": list(self.labels),
            "sample_rate": self.sample_rate, "info": self.info,
            "normalization": self.normalization or {"kind": "none"},
            "packages": {p: metadata.version(p) for p in ("scikit-learn", "librosa", "opensmile", "numpy")},
        }
        import skops.io

        with atomic_open(directory / self.PIPELINE, "wb") as handle:
            skops.io.dump(self.pipeline, handle)
        (directory / self.LEGACY_PIPELINE).unlink(missing_ok=True)  # never leave a stale pickle beside it
        atomic_write_text(directory / self.CONFIG, json.dumps(config, indent=2, default=str))
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
        _check_numbers(config, config_path)
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
            raise SettingError(f"{pickle_path}: a pickle, which runs any code it holds when loaded; not loaded. "
                               "Re-save the model (save_pretrained writes pipeline.skops), or allow pickles if you "
                               "made this folder yourself", "allow_pickle")
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
        config = read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    except ValueError as err:  # nested too deeply
        raise ValueError(f"{path}: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a ser-utils baseline model config")
    return config


def _check_numbers(config: dict, path: Path) -> None:
    """Every number of :data:`FEATURE_LIMITS` that ``config`` (or its ``feature_config``) sets, and its
    labels, in range: ``ValueError`` naming the file and the field, before anything is built."""
    features = config.get("feature_config")
    settings = [("sample_rate", config.get("sample_rate"))]
    settings += [(f"feature_config.{k}", v) for k, v in features.items()] if isinstance(features, dict) else []
    for field, value in settings:
        low, high, whole = FEATURE_LIMITS.get(field.rpartition(".")[2], (None, None, None))
        if low is not None and not (value is None and field.endswith("chroma_tuning")):  # None: estimated per clip
            check_number(value, f"{path}: {field}", low, high, whole=whole)
    check_labels(config.get("labels"), f"{path}: labels")


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


def is_baseline_folder(directory: str | Path) -> bool:
    """Whether ``directory`` holds a saved baseline pipeline (skops, or a legacy pickle)."""
    return any((Path(directory) / name).is_file() for name in (BaselineModel.PIPELINE, BaselineModel.LEGACY_PIPELINE))
