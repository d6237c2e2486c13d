"""Handcrafted clip-level features: the original librosa families and eGeMAPS (openSMILE).

Two feature sets, each a small object with the same interface (``extract(wave) -> (d,)``,
``transform(waves) -> (n, d)``, ``feature_names()``, ``feature_families()``, and ``__call__(path)``
for :func:`ser_utils.cache.cached_map`):

* ``"mfcc-set"`` - :class:`LibrosaFeatures`: MFCC with deltas, log-mel, chroma, tonnetz, spectral
  contrast, ZCR, RMS and spectral centroid / bandwidth / roll-off, each summarised over time by
  statistics (mean and standard deviation by default). One STFT per clip feeds every spectral family.
* ``"egemaps"`` - :class:`EgemapsFeatures`: the 88 eGeMAPS v02 functionals from the ``opensmile``
  package (Eyben et al. 2016), the field's standard compact set.

:func:`extract_corpus` runs an extractor over a corpus table in parallel, with a progress bar and an
on-disk cache keyed by each file's content and the extractor's parameters (``cache.cached_map``); a
file that fails is reported by name and skipped.

Where the one-STFT path differs from calling each librosa feature on the raw signal
---------------------------------------------------------------------------------------
Same ``n_fft``, ``hop_length`` and Hann window everywhere, so these are *identical* to the librosa call
on ``y``: MFCC (``mfcc(S=power_to_db(mel))``), log-mel, spectral contrast, centroid, bandwidth and
roll-off (all from the magnitude STFT, as librosa computes them), ZCR and RMS (both computed on the
time signal, as librosa does by default; they need no FFT). The differences are deliberate:

* **chroma** uses a fixed tuning (``chroma_tuning=0.0``, i.e. A440) instead of ``chroma_stft``'s
  per-clip tuning estimate (a pitch tracker run over the whole spectrogram, for a quantity that is
  meaningless for speech). ``chroma_tuning=None`` restores librosa's estimate.
* **tonnetz** is computed from this STFT chroma, whereas ``librosa.feature.tonnetz(y=...)`` computes
  its own constant-Q chroma (a CQT, ~40 ms per clip, the most expensive step of the naive recipe). The
  family is the same (six tonal-centroid coordinates); the values differ, most at low frequencies
  where a 64 ms STFT resolves semitones worse than a CQT.

Clips shorter than ``min_seconds`` (default 0.5 s) are rejected with :class:`ClipTooShortError`
rather than zero-padded: RAVDESS clips are 2.9-5.3 s, so a 0.1 s file is a broken recording, and
statistics of a clip that is mostly padding would look like valid features while describing nothing.
Silent clips are rejected by the audio loader (:class:`ser_utils.audio.SilentAudioError`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import SAMPLE_RATE, SILENCE_PEAK, SilentAudioError, load_audio
from .cache import MIN_PARALLEL, ArrayCache, cached_map

if TYPE_CHECKING:  # pandas is not needed to extract: worker processes start ~0.3 s faster without it
    import pandas as pd

#: Part of every cache key, with :func:`feature_code` (a digest of this module's and ``audio``'s code,
#: so an edited extractor is recomputed without anyone bumping this). Bump it for what the code
#: digest cannot see, e.g. a change of the data files opensmile reads.
FEATURE_VERSION = 1
STATISTICS = ("mean", "std", "min", "max", "median")


def feature_code() -> str:
    """Digest of the code feature values come from: this module and the audio loader."""
    import sys

    from . import audio
    from .fingerprint import code_digest

    return code_digest(audio, sys.modules[__name__])
#: The families of :class:`LibrosaFeatures`, in the order their columns appear.
LIBROSA_FAMILIES = ("mfcc", "mfcc_delta", "mfcc_delta2", "mel", "chroma", "tonnetz", "contrast", "zcr",
                    "rms", "centroid", "bandwidth", "rolloff")
#: The four families of the original write-up (MFCC, chroma, tonnetz, spectral contrast).
ORIGINAL_FAMILIES = ("mfcc", "chroma", "tonnetz", "contrast")
#: Named subsets of :data:`LIBROSA_FAMILIES` for the per-family comparison.
FAMILY_GROUPS: dict[str, tuple[str, ...]] = {
    "mfcc": ("mfcc",),
    "mfcc + deltas": ("mfcc", "mfcc_delta", "mfcc_delta2"),
    "log-mel": ("mel",),
    "chroma": ("chroma",),
    "tonnetz": ("tonnetz",),
    "spectral contrast": ("contrast",),
    "zcr, rms, centroid, bandwidth, roll-off": ("zcr", "rms", "centroid", "bandwidth", "rolloff"),
    "original four (mfcc, chroma, tonnetz, contrast)": ORIGINAL_FAMILIES,
    "all mfcc-set families": LIBROSA_FAMILIES,
}


class FeatureError(ValueError):
    """A clip whose features cannot be computed; the message names the clip."""


class ClipTooShortError(FeatureError):
    """A clip shorter than the extractor's ``min_seconds``."""


def _check_wave(wave: np.ndarray, sample_rate: int, min_seconds: float, source: str) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise FeatureError(f"{source}: expected a mono waveform of shape (n_samples,), got {wave.shape}")
    if len(wave) < min_seconds * sample_rate:
        raise ClipTooShortError(f"{source}: {len(wave) / sample_rate:.2f} s long, shorter than "
                                f"min_seconds={min_seconds:g} (too short to summarise)")
    if not np.isfinite(wave).all():
        raise FeatureError(f"{source}: contains NaN or infinite samples")
    if np.abs(wave).max() < SILENCE_PEAK:
        raise SilentAudioError(f"{source}: silent (peak amplitude below {SILENCE_PEAK:g})")
    return wave


def _summarise(frames: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """Statistics over time of ``(k, T)`` frame features -> ``(k * len(stats),)``, grouped by row."""
    frames = frames.astype(np.float64, copy=False)
    funcs = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}
    return np.stack([funcs[s](frames, axis=1) for s in stats], axis=1).ravel()


def _names(family: str, n: int, stats: Sequence[str]) -> list[str]:
    if n == 1:
        return [f"{family}_{s}" for s in stats]
    return [f"{family}_{i}_{s}" for i in range(n) for s in stats]


def _to_jsonable(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of :class:`LibrosaFeatures` (all part of the cache key).

    Attributes
    ----------
    sample_rate : Hz; clips are loaded at this rate.
    n_fft : STFT window and FFT length in samples (1024 = 64 ms at 16 kHz; Hann window).
    hop_length : STFT hop in samples (256 = 16 ms at 16 kHz); also the ZCR/RMS hop.
    n_mfcc, n_mels : MFCC coefficients and mel bands (the log-mel family has ``n_mels`` rows).
    mfcc_deltas : delta orders appended to the MFCCs: 0, 1 (delta) or 2 (delta and delta-delta).
    delta_width : frames in the delta regression window (odd, >= 3).
    n_chroma : chroma bins per octave.
    chroma_tuning : tuning offset in fractions of a bin; ``None`` estimates it per clip as librosa does.
    contrast_bands, contrast_fmin : spectral-contrast octave bands and the lowest band edge (Hz).
    rolloff_percent : roll-off energy fraction.
    stats : statistics over time of every frame feature, from :data:`STATISTICS`.
    min_seconds : shorter clips are rejected with :class:`ClipTooShortError`.
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    hop_length: int = 256
    n_mfcc: int = 40
    n_mels: int = 64
    mfcc_deltas: int = 2
    delta_width: int = 9
    n_chroma: int = 12
    chroma_tuning: float | None = 0.0
    contrast_bands: int = 6
    contrast_fmin: float = 200.0
    rolloff_percent: float = 0.85
    stats: tuple[str, ...] = ("mean", "std")
    min_seconds: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "stats", tuple(self.stats))
        unknown = set(self.stats) - set(STATISTICS)
        if unknown or not self.stats:
            raise ValueError(f"stats {self.stats} must be a non-empty subset of {STATISTICS}")
        if self.mfcc_deltas not in (0, 1, 2):
            raise ValueError(f"mfcc_deltas must be 0, 1 or 2, not {self.mfcc_deltas}")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            raise ValueError(f"delta_width must be odd and >= 3, not {self.delta_width}")
        if self.hop_length <= 0 or self.n_fft < self.hop_length:
            raise ValueError(f"need 0 < hop_length <= n_fft, got {self.hop_length}, {self.n_fft}")
        # The deltas need delta_width frames; a clip of min_seconds must give at least that many.
        frames = 1 + int(self.min_seconds * self.sample_rate) // self.hop_length
        if self.mfcc_deltas and frames < self.delta_width:
            raise ValueError(f"min_seconds={self.min_seconds} gives {frames} frames, fewer than "
                             f"delta_width={self.delta_width}")

    def to_dict(self) -> dict:
        return _to_jsonable(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureConfig:
        return cls(**values)


@lru_cache(maxsize=1)
def _blas():
    """A controller of the BLAS thread pools loaded once librosa (numpy, scipy) is imported."""
    import librosa.feature  # noqa: F401  (loads scipy's BLAS too)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


class FeatureExtractor:
    """What both feature sets share: batch transform, and the file entry point for ``cached_map``.

    Subclasses set ``name`` and ``config`` and define ``extract(wave) -> (d,)``, ``feature_names()``,
    ``feature_families()`` and ``cache_params()``. Instances are small and picklable (joblib ships
    them to worker processes).
    """

    name = ""
    config: FeatureConfig | EgemapsConfig

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def extract(self, wave: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def feature_names(self) -> list[str]:
        raise NotImplementedError

    def feature_families(self) -> list[str]:
        raise NotImplementedError

    @property
    def n_features(self) -> int:
        return len(self.feature_names())

    def transform(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Features of several clips, ``(n_clips, n_features)`` float32 (in-process, no cache)."""
        if not len(waves):
            return np.empty((0, self.n_features), np.float32)
        return np.stack([self.extract(w) for w in waves])

    def __call__(self, path: str | Path) -> np.ndarray:
        """Load ``path`` with :func:`ser_utils.audio.load_audio` and extract; errors name the file."""
        wave = load_audio(path, self.config.sample_rate)
        try:
            return self.extract(wave)
        except FeatureError as err:
            raise type(err)(str(err).replace("waveform", str(path), 1)) from None


class LibrosaFeatures(FeatureExtractor):
    """The original feature families from one STFT per clip, summarised over time.

    ``extract(wave)`` returns a float32 vector of :meth:`n_features` values; its columns are named by
    :meth:`feature_names` (``"mfcc_3_mean"``, ``"zcr_std"``, ...) and grouped by
    :meth:`feature_families` (one of :data:`LIBROSA_FAMILIES` per column). With the default
    :class:`FeatureConfig`: 40 MFCC x 3 (with deltas) + 64 mel + 12 chroma + 6 tonnetz + 7 contrast
    + 5 one-dimensional families = 214 frame features x 2 statistics = 428 values.
    """

    name = "mfcc-set"

    def __init__(self, config: FeatureConfig | None = None):
        self.config = config or FeatureConfig()

    def _family_sizes(self) -> dict[str, int]:
        c = self.config
        sizes = {"mfcc": c.n_mfcc, "mfcc_delta": c.n_mfcc if c.mfcc_deltas >= 1 else 0,
                 "mfcc_delta2": c.n_mfcc if c.mfcc_deltas >= 2 else 0, "mel": c.n_mels,
                 "chroma": c.n_chroma, "tonnetz": 6, "contrast": c.contrast_bands + 1}
        return {f: sizes.get(f, 1) for f in LIBROSA_FAMILIES if sizes.get(f, 1)}

    def feature_names(self) -> list[str]:
        return [n for f, k in self._family_sizes().items() for n in _names(f, k, self.config.stats)]

    def feature_families(self) -> list[str]:
        stats = len(self.config.stats)
        return [f for f, k in self._family_sizes().items() for _ in range(k * stats)]

    @property
    def n_features(self) -> int:
        return sum(self._family_sizes().values()) * len(self.config.stats)

    def cache_params(self) -> dict:
        """What the cached values depend on: the config, this module's version and librosa's."""
        return {"extractor": self.name, "version": FEATURE_VERSION, "code": feature_code(),
                "librosa": metadata.version("librosa"),
                **self.config.to_dict()}

    def frames(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        """Frame-level features of one clip: family -> ``(k, n_frames)`` array (float32)."""
        wave = _check_wave(wave, self.config.sample_rate, self.config.min_seconds, "waveform")
        # One BLAS thread: the products here are small (threads only add overhead), and a fixed thread
        # count makes the values bit-identical in joblib workers (1 thread) and in the main process.
        with _blas().limit(limits=1, user_api="blas"):
            return self._frames(wave)

    def _frames(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        import librosa

        c, sr = self.config, self.config.sample_rate
        # The one STFT (centred, Hann, zero padding as librosa's feature functions use by default).
        magnitude = np.abs(librosa.stft(wave, n_fft=c.n_fft, hop_length=c.hop_length, pad_mode="constant"))
        power = magnitude**2
        log_mel = librosa.power_to_db(_mel_basis(sr, c.n_fft, c.n_mels) @ power)
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=c.n_mfcc)
        chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=c.n_fft, tuning=c.chroma_tuning,
                                             n_chroma=c.n_chroma)
        out = {"mfcc": mfcc}
        for order in range(1, c.mfcc_deltas + 1):
            out["mfcc_delta" if order == 1 else "mfcc_delta2"] = librosa.feature.delta(
                mfcc, width=c.delta_width, order=order)
        out.update(
            mel=log_mel,
            chroma=chroma,
            tonnetz=librosa.feature.tonnetz(chroma=chroma, sr=sr),
            contrast=librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_fft=c.n_fft,
                                                       n_bands=c.contrast_bands, fmin=c.contrast_fmin),
            # ZCR and RMS on the time signal, as librosa's defaults do: cheaper than any FFT.
            zcr=librosa.feature.zero_crossing_rate(wave, frame_length=c.n_fft, hop_length=c.hop_length),
            rms=librosa.feature.rms(y=wave, frame_length=c.n_fft, hop_length=c.hop_length),
        )
        centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=c.n_fft)
        out.update(
            centroid=centroid,
            bandwidth=librosa.feature.spectral_bandwidth(S=magnitude, sr=sr, n_fft=c.n_fft,
                                                         centroid=centroid),
            rolloff=librosa.feature.spectral_rolloff(S=magnitude, sr=sr, n_fft=c.n_fft,
                                                     roll_percent=c.rolloff_percent),
        )
        return out

    def extract(self, wave: np.ndarray) -> np.ndarray:
        """Feature vector of one float32 mono clip at ``config.sample_rate``: shape ``(n_features,)``."""
        frames = self.frames(wave)
        vector = np.concatenate([_summarise(frames[f], self.config.stats) for f in self._family_sizes()])
        if not np.isfinite(vector).all():
            raise FeatureError("waveform: features are not finite")
        return vector.astype(np.float32)


@dataclass(frozen=True)
class EgemapsConfig:
    """Parameters of :class:`EgemapsFeatures`: openSMILE feature set and level, and the shortest clip."""

    feature_set: str = "eGeMAPSv02"
    feature_level: str = "Functionals"
    sample_rate: int = SAMPLE_RATE
    min_seconds: float = 0.5

    def to_dict(self) -> dict:
        return _to_jsonable(self)

    @classmethod
    def from_dict(cls, values: dict) -> EgemapsConfig:
        return cls(**values)


@lru_cache(maxsize=2)
def _smile(feature_set: str, feature_level: str):
    # One openSMILE instance per process (building it parses the config files, ~0.25 s).
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel[feature_level])


#: eGeMAPS parameter groups (Eyben et al. 2016), matched on the start of the feature name.
_EGEMAPS_GROUPS = (
    (r"F0semitone", "pitch"), (r"jitter", "voice quality"), (r"shimmer", "voice quality"),
    (r"HNR", "voice quality"), (r"F[123](frequency|bandwidth)", "formants"),
    (r"F[123]amplitude", "spectral balance"), (r"logRelF0", "spectral balance"),
    (r"(alphaRatio|hammarberg|slope)", "spectral balance"), (r"mfcc", "mfcc"),
    (r"spectralFlux", "spectral flux"), (r"(loudness_|equivalentSoundLevel)", "loudness"),
    (r"(loudnessPeaks|VoicedSegments|MeanVoiced|StddevVoiced|MeanUnvoiced|StddevUnvoiced)", "temporal"),
)


def egemaps_group(name: str) -> str:
    """The eGeMAPS parameter group of a feature name, e.g. ``"jitterLocal_sma3nz_amean"`` -> ``"voice
    quality"``; ``"other"`` for a name outside the known groups."""
    for pattern, group in _EGEMAPS_GROUPS:
        if re.match(pattern, name):
            return group
    return "other"


class EgemapsFeatures(FeatureExtractor):
    """The eGeMAPS v02 functionals (88 values per clip) through the ``opensmile`` package."""

    name = "egemaps"

    def __init__(self, config: EgemapsConfig | None = None):
        self.config = config or EgemapsConfig()

    def _smile(self):
        return _smile(self.config.feature_set, self.config.feature_level)

    def feature_names(self) -> list[str]:
        return list(self._smile().feature_names)

    def feature_families(self) -> list[str]:
        return [egemaps_group(n) for n in self.feature_names()]

    def cache_params(self) -> dict:
        return {"extractor": self.name, "version": FEATURE_VERSION, "code": feature_code(),
                "opensmile": metadata.version("opensmile"), **self.config.to_dict()}

    def extract(self, wave: np.ndarray) -> np.ndarray:
        """The functionals of one float32 mono clip: shape ``(n_features,)`` (88 for eGeMAPSv02)."""
        wave = _check_wave(wave, self.config.sample_rate, self.config.min_seconds, "waveform")
        vector = self._smile().process_signal(wave, self.config.sample_rate).to_numpy()[0]
        if not np.isfinite(vector).all():
            raise FeatureError("waveform: openSMILE returned non-finite features")
        return vector.astype(np.float32)


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
    """Features of every clip in a :func:`ser_utils.corpus.discover` table, cached under ``cache_root``.

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
