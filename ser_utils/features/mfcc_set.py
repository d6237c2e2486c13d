"""The ``mfcc-set``: the original librosa families from one STFT per clip, summarised over time.

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
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

import numpy as np

from ..data.audio import SAMPLE_RATE
from .base import (
    FEATURE_VERSION,
    STATISTICS,
    FeatureError,
    FeatureExtractor,
    check_wave,
    column_names,
    config_to_dict,
    feature_code,
    summarise_frames,
)

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
        return config_to_dict(self)

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
        return [n for f, k in self._family_sizes().items() for n in column_names(f, k, self.config.stats)]

    def feature_families(self) -> list[str]:
        stats = len(self.config.stats)
        return [f for f, k in self._family_sizes().items() for _ in range(k * stats)]

    @property
    def n_features(self) -> int:
        return sum(self._family_sizes().values()) * len(self.config.stats)

    def cache_params(self) -> dict:
        """What the cached values depend on: the config, this module's version and librosa's."""
        return {"extractor": self.name, "version": FEATURE_VERSION, "code": feature_code(sys.modules[__name__]),
                "librosa": metadata.version("librosa"), **self.config.to_dict()}

    def frames(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        """Frame-level features of one clip: family -> ``(k, n_frames)`` array (float32)."""
        wave = check_wave(wave, self.config.sample_rate, self.config.min_seconds, "waveform")
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
        vector = np.concatenate([summarise_frames(frames[f], self.config.stats) for f in self._family_sizes()])
        if not np.isfinite(vector).all():
            raise FeatureError("waveform: features are not finite")
        return vector.astype(np.float32)

