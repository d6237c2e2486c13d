"""Audio from standard input (``predict -``): a WAV stream or raw PCM, decoded as it arrives.

The one audio loader (:mod:`ser_utils.data.audio`) reads files, which it may seek; a pipe cannot be sought,
so a WAV header is read here, field by field, and the samples after it (or raw PCM, described by
``--raw --rate --channels --sample-format``) are turned into float32 mono at the model's rate block by block
as they arrive: channels averaged and other rates resampled with soxr's streaming resampler (HQ), as the
loader does. A stream that cannot be used (a cut header, not a WAV stream, a rate soxr cannot take, bytes
left over that are not a whole sample frame, NaN) raises :class:`StreamError`, one line naming standard
input.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import soxr

NAME = "<stdin>"
#: Rates a stream may have (Hz): what soxr resamples to the model's rate; telephone audio to studio audio.
RATES = (4_000, 384_000)
MAX_CHANNELS = 64
#: Bytes asked of the pipe at once: a read returns as soon as any are there, so a window's last sample is
#: decoded as soon as it arrives (16 kHz 16-bit mono: 2 s at most when the writer is fast, less when live).
READ_BYTES = 1 << 16
#: ``--sample-format`` -> (numpy type, full scale).
RAW_FORMATS = {"s16": ("<i2", 32768.0), "s32": ("<i4", 2.0 ** 31), "f32": ("<f4", 1.0)}


class StreamError(Exception):
    """Standard input that cannot be used as audio; the message is one line naming it."""


@dataclass(frozen=True)
class StreamFormat:
    """How the bytes of a stream are samples: rate, interleaved channels, type and full scale (``offset`` for
    unsigned 8-bit), and how many bytes of audio follow (``None``: until the end of the stream)."""

    rate: int
    channels: int
    dtype: str
    scale: float
    offset: float = 0.0
    data_bytes: int | None = None

    @property
    def frame_bytes(self) -> int:
        return self.channels * np.dtype(self.dtype).itemsize


def raw_format(rate: int, channels: int, sample_format: str) -> StreamFormat:
    """The format of raw PCM (``--raw``); :class:`StreamError` for a rate or channel count out of range."""
    dtype, scale = RAW_FORMATS[sample_format]
    return check_format(StreamFormat(rate, channels, dtype, scale))


def check_format(fmt: StreamFormat) -> StreamFormat:
    if not RATES[0] <= fmt.rate <= RATES[1]:
        raise StreamError(f"{NAME}: a rate of {fmt.rate} Hz; streams of {RATES[0]} to {RATES[1]} Hz are resampled "
                          "to the model's rate")
    if not 1 <= fmt.channels <= MAX_CHANNELS:
        raise StreamError(f"{NAME}: {fmt.channels} channels; a stream has 1 to {MAX_CHANNELS}")
    return fmt


class _Reader:
    """Bytes of a file descriptor as they arrive (``os.read``: whatever the pipe holds, never waiting for more)."""

    def __init__(self, read: Callable[[int], bytes]):
        self.read_some, self.held = read, b""

    def exactly(self, n: int, what: str) -> bytes:
        while len(self.held) < n:
            more = self.read_some(READ_BYTES)
            if not more:
                raise StreamError(f"{NAME}: the stream ends inside the WAV header ({what}): a cut or empty stream")
            self.held += more
        out, self.held = self.held[:n], self.held[n:]
        return out

    def some(self) -> bytes:
        if self.held:
            out, self.held = self.held, b""
            return out
        return self.read_some(READ_BYTES)


#: WAV format tags: PCM, IEEE float, and the extensible header's sub-format (its first two bytes).
PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


def wav_format(reader: _Reader) -> StreamFormat:
    """Read a RIFF/WAVE header up to its ``data`` chunk. The data size may be 0 or 0xFFFFFFFF (a live
    writer that cannot know it): the audio then lasts until the stream ends."""
    riff = reader.exactly(12, "RIFF header")
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise StreamError(f"{NAME}: not a WAV stream (it starts with {riff[:4]!r}); raw PCM needs --raw "
                          "(with --rate, --channels, --sample-format)")
    fmt = None
    while True:
        kind, size = struct.unpack("<4sI", reader.exactly(8, "chunk header"))
        if kind == b"data":
            if fmt is None:
                raise StreamError(f"{NAME}: the WAV stream's data chunk comes before its fmt chunk")
            unknown = size in (0, 0xFFFFFFFF)
            return check_format(StreamFormat(**{**fmt, "data_bytes": None if unknown else size}))
        body = reader.exactly(size + (size & 1), f"{kind.decode('latin-1')!r} chunk")
        if kind == b"fmt ":
            fmt = _fmt_chunk(body)


def _fmt_chunk(body: bytes) -> dict:
    if len(body) < 16:
        raise StreamError(f"{NAME}: the WAV stream's fmt chunk is {len(body)} bytes, fewer than 16")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]
    kinds = {(PCM, 8): ("u1", 128.0, 128.0), (PCM, 16): ("<i2", 32768.0, 0.0), (PCM, 32): ("<i4", 2.0 ** 31, 0.0),
             (FLOAT, 32): ("<f4", 1.0, 0.0), (FLOAT, 64): ("<f8", 1.0, 0.0)}
    if (tag, bits) not in kinds:
        raise StreamError(f"{NAME}: WAV samples of format {tag} with {bits} bits; a stream may hold 8-, 16- or "
                          "32-bit PCM or 32- or 64-bit floats (24-bit PCM: convert it, or read it from a file)")
    dtype, scale, offset = kinds[(tag, bits)]
    return {"rate": rate, "channels": channels, "dtype": dtype, "scale": scale, "offset": offset}


def stream_chunks(read: Callable[[int], bytes], sample_rate: int, raw: StreamFormat | None = None
                  ) -> Iterator[np.ndarray]:
    """Float32 mono chunks at ``sample_rate`` of the audio ``read`` returns (``raw``: headerless PCM of that
    format; else a WAV stream), each as soon as its bytes arrived; :class:`StreamError` for a bad stream,
    found where it is found (a cut header first, bytes that are not a whole frame at the end)."""
    reader = _Reader(read)
    fmt = raw or wav_format(reader)
    resampler = (None if fmt.rate == sample_rate
                 else soxr.ResampleStream(fmt.rate, sample_rate, 1, dtype="float32", quality="HQ"))
    left, pending, received = fmt.data_bytes, b"", 0
    while left is None or left > 0:
        data = reader.some()
        if not data:
            break
        if left is not None:
            data, left = data[:left], left - len(data[:left])
        pending += data
        whole = len(pending) - len(pending) % fmt.frame_bytes
        block, pending = pending[:whole], pending[whole:]
        received += whole
        if block:
            mono = _mono(block, fmt)
            yield resampler.resample_chunk(mono) if resampler else mono
    if pending:
        raise StreamError(f"{NAME}: {len(pending)} byte(s) at the end are not a whole sample frame ({fmt.channels} "
                          f"channel(s) x {np.dtype(fmt.dtype).itemsize} bytes); the stream was cut or is not "
                          "what --channels / --sample-format say")
    if received == 0:
        raise StreamError(f"{NAME}: empty audio (0 samples)")
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _mono(block: bytes, fmt: StreamFormat) -> np.ndarray:
    samples = np.frombuffer(block, dtype=fmt.dtype).astype(np.float32)
    samples = (samples - fmt.offset) / np.float32(fmt.scale)
    mono = samples.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32) if fmt.channels > 1 else samples
    if not np.isfinite(mono).all():
        raise StreamError(f"{NAME}: contains NaN or infinite samples")
    return mono


def stdin_reader() -> Callable[[int], bytes]:
    """``read(n)`` of standard input's file descriptor: returns what the pipe holds (up to ``n`` bytes) as
    soon as anything is there, ``b""`` at its end."""
    fd = 0
    return lambda n: os.read(fd, n)
