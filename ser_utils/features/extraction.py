"""Features of a whole corpus: the feature-set registry, the feature table, and cached parallel extraction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.cache import MIN_PARALLEL, ArrayCache, cached_map
from .egemaps import EgemapsConfig, EgemapsFeatures
from .mfcc_set import FeatureConfig, LibrosaFeatures

if TYPE_CHECKING:  # pandas is not needed to extract: worker processes start ~0.3 s faster without it
    import pandas as pd


FEATURE_SETS = {"mfcc-set": (LibrosaFeatures, FeatureConfig), "egemaps": (EgemapsFeatures, EgemapsConfig)}


def make_extractor(name: str, config: dict | FeatureConfig | EgemapsConfig | None = None):
    """The extractor of feature set ``name`` (:data:`FEATURE_SETS`), from a config object or dict."""
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; choose one of {tuple(FEATURE_SETS)}")
    cls, config_cls = FEATURE_SETS[name]
    if isinstance(config, dict):
        config = config_cls.from_dict(config)
    return cls(config)


@dataclass
class FeatureTable:
    """Clip-level features of a corpus: ``X[i]`` belongs to ``meta.iloc[i]``.

    Attributes
    ----------
    X : ``(n_clips, n_features)`` float64.
    meta : the corpus rows that have features (same order as ``X``, index reset).
    names, families : one per column of ``X``.
    failures : path -> reason, for the clips that were skipped.
    hits, computed : how many clips came from the cache and how many were computed.
    """

    X: np.ndarray
    meta: pd.DataFrame
    names: list[str]
    families: list[str]
    feature_set: str = ""
    failures: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    computed: int = 0

    def select(self, families: Sequence[str]) -> FeatureTable:
        """The columns of the given families only (same rows)."""
        unknown = set(families) - set(self.families)
        if unknown:
            raise ValueError(f"no columns of families {sorted(unknown)} in {sorted(set(self.families))}")
        keep = np.isin(self.families, list(families))
        return replace(self, X=self.X[:, keep], names=[n for n, k in zip(self.names, keep, strict=True) if k],
                       families=[f for f, k in zip(self.families, keep, strict=True) if k])

    @property
    def labels(self) -> np.ndarray:
        """Emotion names, ``(n_clips,)``."""
        return self.meta["emotion"].astype(str).to_numpy()


def extract_corpus(meta: pd.DataFrame, extractor, cache_root: str | Path, *, n_jobs: int = -1,
                   min_parallel: int = MIN_PARALLEL, progress: bool = True) -> FeatureTable:
    """Features of every clip in a :func:`ser_utils.data.corpus.discover` table, cached under ``cache_root``.

    Clips run in parallel (``n_jobs`` joblib processes, from ``min_parallel`` clips to compute on) with a
    progress bar; results are cached per
    file content and ``extractor.cache_params()``, so a second run reads the cache and a changed file
    or parameter recomputes only what changed. A clip that fails (unreadable, silent, too short) is
    reported by name in a warning, listed in ``failures`` and left out of ``X`` and ``meta``.
    """
    cache = ArrayCache(cache_root, f"features-{extractor.name}", extractor.cache_params())
    paths = [str(p) for p in meta["path"]]
    result = cached_map(extractor, paths, cache, n_jobs=n_jobs, min_parallel=min_parallel,
                        desc=f"{extractor.name} features", progress=progress)
    keep = np.array([p in result.arrays for p in paths], dtype=bool)
    X = (np.stack([result.arrays[p] for p in np.asarray(paths)[keep]]).astype(np.float64)
         if keep.any() else np.empty((0, extractor.n_features)))
    return FeatureTable(X=X, meta=meta[keep].reset_index(drop=True), names=extractor.feature_names(),
                        families=extractor.feature_families(), feature_set=extractor.name,
                        failures=result.failures, hits=result.hits, computed=result.computed)
