"""The ``egemaps`` set: the 88 eGeMAPS v02 functionals of openSMILE (Eyben et al. 2016), grouped into
the parameter groups of the paper (pitch, voice quality, formants, ...)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

import numpy as np

from ..core import interrupts
from ..data.audio import SAMPLE_RATE
from .base import FEATURE_VERSION, FeatureError, FeatureExtractor, check_wave, config_to_dict, feature_code


@dataclass(frozen=True)
class EgemapsConfig:
    """Parameters of :class:`EgemapsFeatures`: openSMILE feature set and level, and the shortest clip.

    Checked when built: ``feature_set`` must be one of openSMILE's ``FeatureSet`` names, and the level
    ``"Functionals"`` (one row of statistics per clip; the other levels give one row per frame).
    """

    feature_set: str = "eGeMAPSv02"
    feature_level: str = "Functionals"
    sample_rate: int = SAMPLE_RATE
    min_seconds: float = 0.5

    def __post_init__(self):
        import opensmile  # what it offers decides; a config is built only to be used with it

        offered = tuple(member.name for member in opensmile.FeatureSet)
        if self.feature_set not in offered:
            raise ValueError(f"feature_set={self.feature_set!r} is not an openSMILE feature set; choose from {offered}")
        if self.feature_level != "Functionals":
            raise ValueError(f"feature_level={self.feature_level!r}: clip-level features need 'Functionals'")
        if self.sample_rate <= 0 or self.min_seconds <= 0:
            raise ValueError(f"sample_rate={self.sample_rate} and min_seconds={self.min_seconds} must be positive")

    def to_dict(self) -> dict:
        return config_to_dict(self)

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
        return {"extractor": self.name, "version": FEATURE_VERSION, "code": feature_code(sys.modules[__name__]),
                "opensmile": metadata.version("opensmile"), **self.config.to_dict()}

    def extract(self, wave: np.ndarray) -> np.ndarray:
        """The functionals of one float32 mono clip: shape ``(n_features,)`` (88 for eGeMAPSv02)."""
        wave = check_wave(wave, self.config.sample_rate, self.config.min_seconds, "waveform")
        # openSMILE calls back into Python through ctypes, which swallows a KeyboardInterrupt raised there
        # (and the clip comes back as NaN): signals are held during the call and acted on right after.
        with interrupts.deferred():
            vector = self._smile().process_signal(wave, self.config.sample_rate).to_numpy()[0]
            interrupts.check()
        if not np.isfinite(vector).all():
            raise FeatureError("waveform: openSMILE returned non-finite features")
        return vector.astype(np.float32)

