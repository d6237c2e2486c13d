"""The one way audio enters the study: :func:`load_audio` -> float32 mono 16 kHz.

Plus small pure functions on waveforms (pad/crop, per-clip normalisation, batching). Files are read
with soundfile (torchaudio no longer decodes files) and resampled with soxr.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from joblib import Parallel, delayed

SAMPLE_RATE = 16_000
#: Peak amplitude under which a clip counts as silent (about -100 dBFS).
SILENCE_PEAK = 1e-5
#: Longest file :func:`load_audio` accepts by default, in seconds (RAVDESS clips are 3-5 s).
MAX_SECONDS = 600.0


class AudioError(ValueError):
    """Audio that cannot be used. The message always names the file."""


class SilentAudioError(AudioError):
    """A file whose samples are all (near) zero."""


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    max_seconds: float | None = MAX_SECONDS,
    allow_silent: bool = False,
) -> np.ndarray:
    """Read any file soundfile understands as float32 mono at ``sample_rate``.

    Stereo and multichannel audio is averaged to mono; other rates are resampled with soxr (HQ).

    Parameters
    ----------
    path : audio file (WAV, FLAC, OGG, ...).
    sample_rate : output rate in Hz.
    max_seconds : longer files raise :class:`AudioError` (``None``: no limit). Guards long runs
        against a stray hour-long recording.
    allow_silent : return all-zero clips instead of raising :class:`SilentAudioError`.

    Returns
    -------
    waveform : ``np.ndarray`` of shape ``(n_samples,)``, float32, nominally in [-1, 1].

    Raises
    ------
    AudioError
        Missing, unreadable or non-audio file, zero length, too long, or NaN/inf samples.
    SilentAudioError
        All samples below :data:`SILENCE_PEAK` (unless ``allow_silent``).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: not a readable audio file ({err})") from err
    if info.frames == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if max_seconds is not None and info.frames / info.samplerate > max_seconds:
        raise AudioError(
            f"{path}: {info.frames / info.samplerate:.0f} s long, more than max_seconds={max_seconds:g}"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(f"{path}: could not decode audio ({err})") from err
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if not allow_silent and np.abs(wave).max() < SILENCE_PEAK:
        raise SilentAudioError(f"{path}: silent (peak amplitude below {SILENCE_PEAK:g})")
    return resample(wave, rate, sample_rate)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a mono float waveform with soxr (high quality); shape ``(n,)`` -> ``(m,)``, float32."""
    if orig_rate == new_rate:
        return np.ascontiguousarray(wave, dtype=np.float32)
    return soxr.resample(wave, orig_rate, new_rate, quality="HQ").astype(np.float32, copy=False)


def normalize(wave: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Zero mean, unit variance of one clip ``(n,)``, as wav2vec2's feature extractor does.

    Apply it per clip *before* padding: statistics over a padded batch would include the zeros.
    """
    wave = np.asarray(wave, dtype=np.float32)
    return (wave - wave.mean()) / np.sqrt(wave.var() + eps)


def crop(wave: np.ndarray, max_samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """At most ``max_samples`` of ``wave``: a random window when ``rng`` is given, else the centre."""
    excess = len(wave) - max_samples
    if excess <= 0:
        return wave
    start = int(rng.integers(0, excess + 1)) if rng is not None else excess // 2
    return wave[start:start + max_samples]


def collate(waves: Sequence[np.ndarray]):
    """Zero-pad clips at the end into one batch.

    Returns ``(batch, lengths)``: float32 tensor ``(B, T_max)`` and int64 tensor ``(B,)`` of true
    lengths in samples.
    """
    import torch  # here, not at the top: feature-extraction workers load this module without torch

    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = torch.as_tensor(wave, dtype=torch.float32)
    return batch, lengths


def frame_rms_db(wave: np.ndarray, frame: int = 400, hop: int = 160) -> np.ndarray:
    """RMS level per frame in dBFS (25 ms frames, 10 ms hop at 16 kHz); shape ``(n_frames,)``."""
    if len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, frame)[::hop]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def load_many(paths: Sequence[str | Path], n_jobs: int = -1,
              **kwargs) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """:func:`load_audio` over many files in parallel (joblib threads: decoding releases the GIL).

    Returns ``(waves, failures)``: arrays keyed by the path strings given, and the reason for each
    file that could not be loaded (reported, never fatal for the run).
    """
    def attempt(path: str):
        try:
            return load_audio(path, **kwargs), None
        except AudioError as err:
            return None, str(err)

    paths = [str(p) for p in paths]
    results = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(attempt)(p) for p in paths)
    waves = {p: w for p, (w, _) in zip(paths, results, strict=True) if w is not None}
    failures = {p: e for p, (_, e) in zip(paths, results, strict=True) if e is not None}
    if failures:
        listed = "\n".join(f"  {e}" for e in list(failures.values())[:20])
        warnings.warn(f"{len(failures)} file(s) could not be loaded and were skipped:\n{listed}",
                      stacklevel=2)
    return waves, failures
