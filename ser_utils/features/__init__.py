"""Handcrafted clip-level features: the original librosa families and eGeMAPS (openSMILE).

Two feature sets, each a small object with the same interface (``extract(wave) -> (d,)``,
``transform(waves) -> (n, d)``, ``feature_names()``, ``feature_families()``, and ``__call__(path)``
for :func:`ser_utils.core.cache.cached_map`):

* ``"mfcc-set"`` - :class:`LibrosaFeatures`: MFCC with deltas, log-mel, chroma, tonnetz, spectral
  contrast, ZCR, RMS and spectral centroid / bandwidth / roll-off, each summarised over time by
  statistics (mean and standard deviation by default). One STFT per clip feeds every spectral family.
* ``"egemaps"`` - :class:`EgemapsFeatures`: the 88 eGeMAPS v02 functionals from the ``opensmile``
  package (Eyben et al. 2016), the field's standard compact set.

:func:`extract_corpus` runs an extractor over a corpus table in parallel, with a progress bar and an
on-disk cache keyed by each file's content and the extractor's parameters (``core.cache.cached_map``); a
file that fails is reported by name and skipped.

Modules: :mod:`~ser_utils.features.base` (the shared interface, clip checks, statistics),
:mod:`~ser_utils.features.mfcc_set` (the librosa families; where the one-STFT path differs from
librosa's own calls), :mod:`~ser_utils.features.egemaps` (openSMILE) and
:mod:`~ser_utils.features.extraction` (registry, :class:`FeatureTable`, :func:`extract_corpus`).

Clips shorter than ``min_seconds`` (default 0.5 s) are rejected with :class:`ClipTooShortError`
rather than zero-padded: RAVDESS clips are 2.9-5.3 s, so a 0.1 s file is a broken recording, and
statistics of a clip that is mostly padding would look like valid features while describing nothing.
Silent clips are rejected by the audio loader (:class:`ser_utils.data.audio.SilentAudioError`).

:mod:`~ser_utils.features.normalization`: speaker normalization of features (per-speaker statistics, no
labels) and prediction-time adaptation per group.

May import ``core`` and ``data``.
"""

from .base import FEATURE_VERSION, STATISTICS, ClipTooShortError, FeatureError, FeatureExtractor, feature_code
from .egemaps import EgemapsConfig, EgemapsFeatures, egemaps_group
from .extraction import FEATURE_SETS, FeatureTable, extract_corpus, make_extractor
from .mfcc_set import FAMILY_GROUPS, LIBROSA_FAMILIES, ORIGINAL_FAMILIES, FeatureConfig, LibrosaFeatures

__all__ = ["FAMILY_GROUPS", "FEATURE_SETS", "FEATURE_VERSION", "LIBROSA_FAMILIES", "ORIGINAL_FAMILIES", "STATISTICS",
           "ClipTooShortError", "EgemapsConfig", "EgemapsFeatures", "FeatureConfig", "FeatureError",
           "FeatureExtractor", "FeatureTable", "LibrosaFeatures", "egemaps_group", "extract_corpus",
           "feature_code", "make_extractor"]
