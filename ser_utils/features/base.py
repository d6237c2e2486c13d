"""What both feature sets share: the extractor interface, the checks on a clip, and summary statistics."""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..core import interrupts
from ..data.audio import SILENCE_PEAK, SilentAudioError, is_silent, load_audio

#: Part of every cache key, with :func:`feature_code` (a digest of the extractor's code and ``audio``'s,
#: so an edited extractor is recomputed without anyone bumping this). Bump it for what the code
#: digest cannot see, e.g. a change of the data files opensmile reads.
FEATURE_VERSION = 1
STATISTICS = ("mean", "std", "min", "max", "median")
#: Bytes of recent in-process feature rows kept by :meth:`FeatureExtractor.transform`, so the same audio
#: scored again in one process (notebook 06: each adaptation, two models on one feature set) is not
#: extracted again.
RECENT_BYTES = 64 * 2**20
_recent: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_recent_bytes = 0


def feature_code(module: ModuleType) -> str:
    """Digest of the code a feature set's values come from: its ``module``, this one and the audio loader."""
    from ..core.fingerprint import code_digest
    from ..data import audio

    return code_digest(audio, sys.modules[__name__], module)


class FeatureError(ValueError):
    """A clip whose features cannot be computed; the message names the clip."""


class ClipTooShortError(FeatureError):
    """A clip shorter than the extractor's ``min_seconds``."""


def check_wave(wave: np.ndarray, sample_rate: int, min_seconds: float, source: str) -> np.ndarray:
    """``wave`` as float32 ``(n_samples,)`` if it can be summarised; else an error naming ``source``."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise FeatureError(f"{source}: expected a mono waveform of shape (n_samples,), got {wave.shape}")
    if len(wave) < min_seconds * sample_rate:
        raise ClipTooShortError(f"{source}: {len(wave) / sample_rate:.2f} s long, shorter than "
                                f"min_seconds={min_seconds:g} (too short to summarise)")
    if not np.isfinite(wave).all():
        raise FeatureError(f"{source}: contains NaN or infinite samples")
    if is_silent(wave):  # a constant (DC) signal too: there is nothing to describe
        raise SilentAudioError(f"{source}: silent (peak amplitude below {SILENCE_PEAK:g} once its mean, the DC "
                               "offset, is removed)")
    return wave


def summarise_frames(frames: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """Statistics over time of ``(k, T)`` frame features -> ``(k * len(stats),)``, grouped by row."""
    frames = frames.astype(np.float64, copy=False)
    funcs = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}
    return np.stack([funcs[s](frames, axis=1) for s in stats], axis=1).ravel()


def column_names(family: str, n: int, stats: Sequence[str]) -> list[str]:
    """Names of a family's ``n`` rows x ``stats`` columns, e.g. ``mfcc_3_mean`` (``zcr_std`` when ``n == 1``)."""
    if n == 1:
        return [f"{family}_{s}" for s in stats]
    return [f"{family}_{i}_{s}" for i in range(n) for s in stats]


def config_to_dict(config) -> dict:
    """A config dataclass as JSON-ready values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


class FeatureExtractor:
    """What both feature sets share: batch transform, and the file entry point for ``cached_map``.

    Subclasses set ``name`` and ``config`` and define ``extract(wave) -> (d,)``, ``feature_names()``,
    ``feature_families()`` and ``cache_params()``. Instances are small and picklable (joblib ships
    them to worker processes).
    """

    name = ""
    config: Any  # FeatureConfig or EgemapsConfig: sample_rate, min_seconds, to_dict()

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
        settings = repr(self)  # the class and every config value: within one process, all a row depends on
        rows = []
        for wave in waves:
            interrupts.check()  # a long batch stops between clips on Ctrl-C / SIGTERM (interrupts.deferred)
            rows.append(_remembered(settings, wave, self.extract))
        return np.stack(rows)

    def __call__(self, path: str | Path) -> np.ndarray:
        """Load ``path`` with :func:`ser_utils.data.audio.load_audio` and extract; errors name the file."""
        wave = load_audio(path, self.config.sample_rate)
        try:
            return self.extract(wave)
        except FeatureError as err:
            raise type(err)(str(err).replace("waveform", str(path), 1)) from None


def _remembered(settings: str, wave: np.ndarray, extract) -> np.ndarray:
    """``extract(wave)``, or the row computed for the same samples and settings moments ago (a copy).

    Extraction is deterministic, so a row is keyed by the samples' digest; the oldest rows go first
    once :data:`RECENT_BYTES` is reached. Errors are not remembered (they are raised again).
    """
    global _recent_bytes
    samples = np.ascontiguousarray(wave)
    key = (settings, f"{samples.dtype}{samples.shape}" + hashlib.blake2b(samples.tobytes(), digest_size=16).hexdigest())
    if key in _recent:
        _recent.move_to_end(key)
        return _recent[key].copy()
    row = extract(wave)
    _recent[key] = row.copy()
    _recent_bytes += row.nbytes
    while _recent_bytes > RECENT_BYTES and _recent:
        _recent_bytes -= _recent.popitem(last=False)[1].nbytes
    return row
