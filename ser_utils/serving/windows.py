"""The scoring windows of a clip: :func:`check_window` (the settings), :func:`window_bounds` (the windows of
a whole waveform) and :func:`stream_windows` (the same windows cut from a file while it is decoded, so that
the first ones can be scored after one block of the file rather than after all of it; :func:`cut_windows`
for any chunks, standard input's among them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import SettingError
from ..data.audio import SAMPLE_RATE, is_silent, stream_audio


def check_window(window: float | None, hop: float | None) -> str | None:
    """Validate the scoring window and hop (seconds) before any work is done.

    Raises :class:`~ser_utils.core.config.SettingError` (``setting``: ``window`` or ``hop``) unless both are
    finite and positive (``None`` means "whole file" for ``window`` and "= window" for ``hop``). Returns
    a warning text when ``hop`` is longer than ``window`` - parts of long files are then never scored -
    else ``None``.
    """
    for name, value in (("window", window), ("hop", hop)):
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise SettingError(f"the scoring {name} must be a positive number of seconds, got {value}", name)
    if window is not None and hop is not None and hop > window:
        return (f"the hop ({hop:g} s) is longer than the window ({window:g} s): {hop - window:g} s of every "
                f"{hop:g} s of audio longer than the window are not scored")
    return None


def window_bounds(n_samples: int, window: float | None, hop: float | None,
                  sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """``(start, end)`` sample bounds of the scoring windows of a clip of ``n_samples``.

    One window covering everything when the clip fits in ``window`` (or ``window`` is ``None``);
    otherwise windows every ``hop`` seconds plus a last one that ends with the clip.
    """
    check_window(window, hop)
    if window is None or n_samples <= window * sample_rate:
        return [(0, n_samples)]
    size, step = int(window * sample_rate), int((hop or window) * sample_rate)
    if size <= 0 or step <= 0:
        raise ValueError(f"window {window} s and hop {hop} s must each span at least one sample")
    starts = list(range(0, n_samples - size + 1, step))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return [(s, s + size) for s in starts]


@dataclass
class StreamTally:
    """What :func:`stream_windows` has read of its file so far: samples (at the output rate) and the
    lowest and highest sample (for the level warning)."""

    samples: int = 0
    low: float = math.inf
    high: float = -math.inf

    @property
    def peak(self) -> float:
        return max(self.high, -self.low)


#: A batch of :func:`stream_windows`: ``(start, end, samples)`` per window, ``samples`` ``None`` when silent.
Batch = list[tuple[int, int, np.ndarray | None]]


def stream_windows(path: str | Path, window: float, hop: float | None, sample_rate: int = SAMPLE_RATE, *,
                   largest: int, tally: StreamTally | None = None) -> Iterator[Batch]:
    """The windows of :func:`window_bounds` for ``path`` loaded whole, cut while the file is decoded
    (:func:`~ser_utils.data.audio.stream_audio`): batches of ``(start, end, samples)`` (sample bounds;
    ``samples`` ``None`` for a silent window), in order, the first batch one window and each next twice
    the last, up to ``largest`` windows. Memory holds one block, the window being filled and one batch.

    A window starting at a multiple of ``hop`` is cut as soon as its last sample is decoded; the last
    window (ending with the file) and a file shorter than one window wait for the end of the file. The
    samples are those of ``load_audio(path, sample_rate, max_seconds=None)[start:end]``. ``tally`` is
    updated as blocks arrive; its ``samples`` is the file's length once the generator is exhausted.
    Raises :class:`~ser_utils.data.audio.AudioError` as the loader does (:class:`SilentAudioError` at the
    end, after the last batch), ``ValueError`` for a window or hop shorter than one sample.
    """
    with closing(stream_audio(path, sample_rate)) as chunks:
        yield from cut_windows(chunks, window, hop, sample_rate, largest=largest, tally=tally)


def cut_windows(chunks: Iterable[np.ndarray], window: float, hop: float | None, sample_rate: int = SAMPLE_RATE, *,
                largest: int, tally: StreamTally | None = None) -> Iterator[Batch]:
    """:func:`stream_windows` of any float32 mono chunks at ``sample_rate`` (a file's blocks, standard input's
    reads): the windows :func:`window_bounds` gives the chunks joined, each cut as soon as its last sample
    is in a chunk, the last window (ending with the audio) and audio shorter than one window at the end."""
    tally = tally if tally is not None else StreamTally()
    size, step = int(window * sample_rate), int((hop or window) * sample_rate)
    if size <= 0 or step <= 0:
        raise ValueError(f"window {window} s and hop {hop} s must each span at least one sample")
    held, base, start, batch = np.zeros(0, np.float32), 0, 0, 1  # held: samples base .. tally.samples - 1
    pending: Batch = []

    def cut(a: int, b: int) -> None:
        piece = held[a - base:b - base].copy()
        pending.append((a, b, None if is_silent(piece) else piece))

    for chunk in chunks:
        if len(chunk):
            tally.low, tally.high = min(tally.low, float(chunk.min())), max(tally.high, float(chunk.max()))
        held, tally.samples = np.concatenate([held, chunk]), tally.samples + len(chunk)
        while start + size <= tally.samples:  # the windows that start at a multiple of the hop
            cut(start, start + size)
            start += step
        keep = min(start, max(tally.samples - size, 0))  # the next window's start, or the last window's
        held, base = held[keep - base:], keep
        if len(pending) >= batch:
            yield pending
            pending, batch = [], min(2 * batch, largest)
    total = tally.samples
    if start == 0:  # no full window: the file is one window
        cut(0, total)
    elif start - step + size < total:  # the last window ends with the file
        cut(total - size, total)
    if pending:
        yield pending
