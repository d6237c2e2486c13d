"""The one way audio enters the study: :func:`load_audio` -> float32 mono 16 kHz, or the same samples
block by block as they are decoded (:func:`stream_audio`, for long files scored while they are read).

Plus small pure functions on waveforms (pad/crop, per-clip normalization, batching). Files are read
with soundfile (torchaudio no longer decodes files) and resampled with soxr.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
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
#: Audio :func:`load_audio` decodes at once, in seconds: longer files are read, down-mixed and resampled
#: block by block (10 s of 48 kHz stereo float32: 3.8 MB).
BLOCK_SECONDS = 10.0
#: Peak amplitude (x full scale) above which a clip gets a warning: float audio may peak a little over
#: 1.0, but 4x (+12 dB) means samples that were never scaled as audio (a float WAV at x1000).
OVER_FULL_SCALE = 4.0


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
    block_seconds: float | None = BLOCK_SECONDS,
) -> np.ndarray:
    """Read any file soundfile understands as float32 mono at ``sample_rate``.

    Stereo and multichannel audio is averaged to mono; other rates are resampled with soxr (HQ). The
    file is read ``block_seconds`` at a time, each block down-mixed and fed to soxr's streaming
    resampler, so memory holds the result and one block, never the whole file at its own rate and
    channel count (an hour at 48 kHz stereo would be 1.4 GB as float32); the result equals reading
    the whole file at once (``block_seconds=None``).

    Parameters
    ----------
    path : audio file (WAV, FLAC, OGG, AIFF, ...).
    sample_rate : output rate in Hz.
    max_seconds : longer files raise :class:`AudioError` (``None``: no limit). Guards long runs
        against a stray hour-long recording.
    allow_silent : return silent clips instead of raising :class:`SilentAudioError`.
    block_seconds : how much of the file is decoded at once (``None``: all of it).

    Returns
    -------
    waveform : ``np.ndarray`` of shape ``(n_samples,)``, float32, nominally in [-1, 1].

    Raises
    ------
    AudioError
        Missing, unreadable (permissions) or non-audio file, a folder, zero length, too long, or
        NaN/inf samples.
    SilentAudioError
        No sample departs from the clip's mean by :data:`SILENCE_PEAK` (unless ``allow_silent``); a
        constant (DC) signal is silent.
    """
    path = Path(path)
    with _open(path) as handle, _sound_file(path, handle) as sound:
        return _load(path, sound, sample_rate, max_seconds, allow_silent, block_seconds)


def stream_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, *, allow_silent: bool = False,
                 block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """:func:`load_audio` one block at a time: yields float32 mono chunks at ``sample_rate`` as they are
    decoded (one ``block_seconds`` block of the file each, down-mixed and resampled), so the first
    samples are there after one block, whatever the file's length. The chunks joined are exactly
    ``load_audio(path, sample_rate, max_seconds=None, allow_silent=allow_silent, block_seconds=block_seconds)``.

    Raises the :class:`AudioError` that :func:`load_audio` would, when it is found: a file that cannot be
    opened or is empty before the first chunk, NaN samples or a decoding error at their block, and
    :class:`SilentAudioError` (unless ``allow_silent``) after the last chunk, when the whole file is known.
    Close the generator (``contextlib.closing``) to release the file early.
    """
    path = Path(path)
    if not block_seconds:
        raise ValueError("stream_audio needs a block length (block_seconds > 0)")
    with _open(path) as handle, _sound_file(path, handle) as sound:
        if sound.frames == 0:
            raise AudioError(f"{path}: empty audio (0 samples)")
        level = _Level()
        chunks = _chunks(sound, sample_rate, max(1, int(block_seconds * sound.samplerate)), level)
        while True:
            try:
                chunk = next(chunks, None)
            except _NonFinite:
                raise AudioError(f"{path}: contains NaN or infinite samples") from None
            except Exception as err:
                raise AudioError(f"{path}: could not decode audio ({err})") from err
            if chunk is None:
                break
            yield chunk
        if not allow_silent and level.silent:
            raise SilentAudioError(_silent_message(path))


def audio_seconds(path: str | Path) -> float | None:
    """The length of an audio file in seconds as its header states it (no samples decoded), or ``None``
    when it cannot be read (:func:`load_audio` then says why)."""
    try:
        with _open(Path(path)) as handle, sf.SoundFile(handle) as sound:
            return sound.frames / sound.samplerate
    except Exception:
        return None


def _sound_file(path: Path, handle) -> sf.SoundFile:
    # Opened by _open and handed to soundfile as a file object: Python names the cause of a failure (libsndfile
    # says "System error."), and paths longer than libsndfile's 1,024 characters (deep trees) open too.
    try:
        return sf.SoundFile(handle)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        # libsndfile's own words ("Format not recognised."), not soundfile's repr of the file object
        raise AudioError(f"{path}: not a readable audio file ({getattr(err, 'error_string', err)})") from err


def _silent_message(path) -> str:
    return f"{path}: silent (peak amplitude below {SILENCE_PEAK:g} once its mean, the DC offset, is removed)"


def _load(path: Path, sound: sf.SoundFile, sample_rate: int, max_seconds: float | None, allow_silent: bool,
          block_seconds: float | None) -> np.ndarray:
    if sound.frames == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if max_seconds is not None and sound.frames / sound.samplerate > max_seconds:
        raise AudioError(f"{path}: {sound.frames / sound.samplerate:.0f} s long, more than max_seconds={max_seconds:g}")
    block = max(1, int(block_seconds * sound.samplerate)) if block_seconds else -1
    try:
        wave, level = _decode(sound, sample_rate, block)
    except _NonFinite:
        raise AudioError(f"{path}: contains NaN or infinite samples") from None
    except Exception as err:
        raise AudioError(f"{path}: could not decode audio ({err})") from err
    if not allow_silent and level.silent:
        raise SilentAudioError(_silent_message(path))
    return wave


def _open(path: Path):
    """``path`` opened for reading, or an :class:`AudioError` that says what is wrong with it."""
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():  # opening a pipe would wait for a writer
        raise AudioError(f"{path}: not a regular file (a device, pipe or socket)")
    try:
        return open(path, "rb")
    except PermissionError:
        raise AudioError(f"{path}: permission denied (this file cannot be read by you)") from None
    except OSError as err:
        raise AudioError(f"{path}: cannot be opened ({err.strerror})") from None


class _NonFinite(ValueError):
    pass


class _Level:
    """Running minimum, maximum and mean of a signal read in blocks: is it silent once DC is removed?"""

    def __init__(self):
        self.low, self.high, self.total, self.count = np.inf, -np.inf, 0.0, 0

    def add(self, block: np.ndarray) -> None:
        self.low, self.high = min(self.low, float(block.min())), max(self.high, float(block.max()))
        self.total += float(block.sum(dtype=np.float64))
        self.count += len(block)

    @property
    def silent(self) -> bool:
        mean = self.total / max(self.count, 1)
        return max(self.high - mean, mean - self.low) < SILENCE_PEAK


def _decode(sound: sf.SoundFile, sample_rate: int, block: int) -> tuple[np.ndarray, _Level]:
    """Decode, down-mix and resample ``sound`` ``block`` frames at a time (``-1``: all at once)."""
    out = np.empty(int(np.ceil(sound.frames * sample_rate / sound.samplerate)) + 1, np.float32)
    filled, level = 0, _Level()
    for chunk in _chunks(sound, sample_rate, block, level):
        out, filled = _append(out, filled, chunk)
    return out[:filled], level


def _chunks(sound: sf.SoundFile, sample_rate: int, block: int, level: _Level) -> Iterator[np.ndarray]:
    """The output of :func:`_decode` chunk by chunk (one per block read, then soxr's tail); ``level``
    follows every decoded sample. The one decoding loop of :func:`load_audio` and :func:`stream_audio`."""
    stream = (None if sound.samplerate == sample_rate
              else soxr.ResampleStream(sound.samplerate, sample_rate, 1, dtype="float32", quality="HQ"))
    while True:
        data = sound.read(block, dtype="float32", always_2d=True)
        if len(data) == 0:
            break
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        if not np.isfinite(mono).all():
            raise _NonFinite
        level.add(mono)
        yield stream.resample_chunk(mono) if stream else mono
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    if filled + len(chunk) > len(out):  # the header's frame count was short (some compressed formats)
        out = np.concatenate([out[:filled], np.empty(max(len(chunk), len(out) // 2), np.float32)])
    out[filled:filled + len(chunk)] = chunk
    return out, filled + len(chunk)


def is_silent(wave: np.ndarray) -> bool:
    """Whether no sample of ``wave`` departs from its mean (the DC offset) by :data:`SILENCE_PEAK`: a
    constant signal is silent, however far from zero."""
    if len(wave) == 0:
        return True
    mean = float(np.mean(wave, dtype=np.float64))
    return max(float(wave.max()) - mean, mean - float(wave.min())) < SILENCE_PEAK


def peak_amplitude(wave: np.ndarray) -> float:
    """The largest ``|sample|`` of ``wave`` (0.0 for no samples)."""
    return max(float(wave.max()), -float(wave.min())) if len(wave) else 0.0


def level_warning(wave: np.ndarray, name: str) -> str | None:
    """A one-line warning naming ``name`` when the peak of ``wave`` is far above full scale
    (:data:`OVER_FULL_SCALE`), e.g. a float file saved unnormalized; else ``None``."""
    return peak_warning(peak_amplitude(wave), name)


def peak_warning(peak: float, name: str) -> str | None:
    """:func:`level_warning` of a signal whose peak amplitude (largest ``|sample|``) is ``peak``."""
    if peak <= OVER_FULL_SCALE:
        return None
    return (f"{name}: peak amplitude {peak:.3g}, {20 * np.log10(peak):.0f} dB above full scale (1.0): the "
            "file is not scaled like audio; each window over full scale was scaled down to peak 1.0 before "
            "scoring, so its level (loudness, energy) is lost and its scores mean little")


def within_full_scale(wave: np.ndarray) -> np.ndarray:
    """``wave`` divided by its peak when a sample lies beyond full scale (``|sample| > 1``), else ``wave``
    itself; shape ``(n,)``, float32.

    Why every scored window goes through this: models disagree on audio beyond full scale. openSMILE
    (eGeMAPS) converts to 16-bit integers with wrap-around (1.2 becomes -0.8), so an unscaled float
    file (peak x1000) gave features of noise; wav2vec2 normalizes each clip and never noticed; librosa
    and Whisper saw a louder clip. Scaling down (a gain, where clipping would distort) treats them all
    alike, keeps the waveform's shape, works window by window (a streamed file's peak is unknown until
    its end), and leaves audio within full scale, every RAVDESS clip among it, untouched.
    """
    peak = peak_amplitude(wave)
    if peak <= 1.0:
        return wave
    return (wave / np.float32(peak)).astype(np.float32, copy=False)


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


def longest_first(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths`` in batches of at most ``batch_size``, longest clip first (ties in input
    order): the one batching of inference and evaluation (the least padding per batch)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start:start + batch_size].tolist() for start in range(0, len(order), batch_size)]


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
