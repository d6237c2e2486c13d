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

from .baselines import fit_quietly, make_classifier
from .corpus import EMOTIONS
from .features import FeatureExtractor, FeatureTable, make_extractor

FORMAT, FORMAT_VERSION = "ser-utils-baseline", 1


class BaselineModel:
    """A feature extractor and a fitted scikit-learn pipeline: waveforms in, probabilities out.

    >>> model = BaselineModel.fit(table, "svm", {"C": 10.0})          # doctest: +SKIP
    >>> model.save_pretrained("models/baseline")                        # doctest: +SKIP
    >>> BaselineModel.from_pretrained("models/baseline").predict_proba([wave])   # (1, 8)  # doctest: +SKIP

    A model directory holds ``config.json`` (system, feature set and its config, classifier and
    parameters, labels, sample rate, package versions) and ``pipeline.joblib``. joblib files are
    pickles: load only model directories you trust.
    """

    CONFIG = "config.json"
    PIPELINE = "pipeline.joblib"

    def __init__(self, extractor: FeatureExtractor, pipeline: BaseEstimator, *,
                 labels: Sequence[str] = EMOTIONS, classifier: str = "", params: dict | None = None,
                 families: Sequence[str] | None = None, system: str | None = None,
                 info: dict | None = None):
        self.extractor = extractor
        self.pipeline = pipeline
        self.labels = tuple(labels)
        self.classifier = classifier
        self.params = dict(params or {})
        self.families = tuple(families) if families else None
        self.system = system or f"{extractor.name}+{classifier}"
        self.info = dict(info or {})
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
        pipeline = fit_quietly(make_classifier(classifier, params, seed, probability=True), table.X, table.labels)
        return cls(extractor, pipeline, classifier=classifier, params=params, families=families,
                   system=system, info={"n_train_clips": len(table.X), "seed": seed})

    def predict_proba(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of float32 mono clips at :attr:`sample_rate` (16 kHz): ``(n, 8)``,
        columns in ``labels`` order (``corpus.EMOTIONS``), rows summing to 1.

        Raises ``features.ClipTooShortError`` / ``audio.SilentAudioError`` for clips that cannot be
        summarised (shorter than ``min_seconds``, or silent).
        """
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise ValueError("pass a list of waveforms, not a single 1-D array")
        X = self.extractor.transform(list(waveforms)).astype(np.float64)[:, self._columns]
        proba = np.zeros((len(X), len(self.labels)))
        if len(X):
            columns = [self.labels.index(str(c)) for c in self.pipeline.classes_]
            proba[:, columns] = self.pipeline.predict_proba(X)
        return proba

    def predict(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """The most probable emotion of each clip."""
        return [self.labels[i] for i in self.predict_proba(waveforms).argmax(axis=1)]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``pipeline.joblib`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "system": self.system,
            "feature_set": self.extractor.name, "feature_config": self.extractor.config.to_dict(),
            "classifier": self.classifier, "params": self.params,
            "families": list(self.families) if self.families else None, "labels": list(self.labels),
            "sample_rate": self.sample_rate, "info": self.info,
            "packages": {p: metadata.version(p) for p in ("scikit-learn", "librosa", "opensmile", "numpy")},
        }
        joblib.dump(self.pipeline, directory / self.PIPELINE)
        (directory / self.CONFIG).write_text(json.dumps(config, indent=2, default=str))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BaselineModel:
        """Load a directory written by :meth:`save_pretrained`."""
        directory = Path(directory)
        config_path = directory / cls.CONFIG
        if not config_path.is_file() or not (directory / cls.PIPELINE).is_file():
            raise FileNotFoundError(f"{directory}: not a baseline model directory (needs {cls.CONFIG} "
                                    f"and {cls.PIPELINE})")
        config = json.loads(config_path.read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{config_path}: not a ser-utils baseline model config")
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{config_path}: format version {config['format_version']} is newer than this "
                             f"code reads ({FORMAT_VERSION}); update ser_utils")
        saved = config.get("packages", {}).get("scikit-learn")
        if saved and saved != metadata.version("scikit-learn"):
            warnings.warn(f"{directory}: saved with scikit-learn {saved}, loading with "
                          f"{metadata.version('scikit-learn')}", stacklevel=2)
        extractor = make_extractor(config["feature_set"], config["feature_config"])
        if config["sample_rate"] != extractor.config.sample_rate:
            raise ValueError(f"{config_path}: sample_rate {config['sample_rate']} disagrees with the "
                             f"feature config's {extractor.config.sample_rate}")
        pipeline = joblib.load(directory / cls.PIPELINE)
        return cls(extractor, pipeline, labels=config["labels"], classifier=config["classifier"],
                   params=config["params"], families=config.get("families"), system=config["system"],
                   info=config.get("info"))
