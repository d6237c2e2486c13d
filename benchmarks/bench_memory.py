"""Peak memory of loading audio: a short clip and a long 48 kHz stereo WAV, each read by ``load_audio``
(blocks, down-mixed and resampled chunk by chunk) and by the previous whole-file decode (``sf.read`` of
the whole file, then down-mix, then ``soxr.resample``), measured in the same run.

Each load runs in its own process and its peak resident memory (``ru_maxrss``) is read with
``os.wait4``, so every figure is that one load's, including the interpreter and the imports (shown on
their own as "imports only"). The files are generated on the fly (speech-like tones and noise, PCM 16)
in a temporary folder, written in blocks.

    python benchmarks/bench_memory.py [--minutes 60] [--short-seconds 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE, CHANNELS = 48_000, 2
METHODS = ("imports", "whole", "blocks")


def write_wav(path: Path, seconds: float, block_seconds: float = 10.0) -> Path:
    """A 48 kHz stereo PCM-16 WAV of ``seconds``, written block by block (memory stays small)."""
    rng = np.random.default_rng(0)
    total, block = int(seconds * RATE), int(block_seconds * RATE)
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=CHANNELS, subtype="PCM_16") as out:
        for start in range(0, total, block):
            t = (start + np.arange(min(block, total - start))) / RATE
            voice = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t)))
            out.write(np.stack([voice + 0.01 * rng.normal(size=len(t)), 0.8 * voice], axis=1))
    return path


def child(method: str, path: str) -> None:
    """In the measured process: load ``path`` one way and print a digest of the result."""
    import soxr

    from ser_utils.data.audio import load_audio

    if method == "imports":
        print("-")
        return
    if method == "whole":  # the loader before blocks: every frame of every channel decoded at once
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        wave = soxr.resample(wave, rate, 16_000, quality="HQ").astype(np.float32, copy=False)
    else:
        wave = load_audio(path, max_seconds=None)
    print(f"{len(wave)} {float(wave.sum(dtype=np.float64)):.6f}")


def measure(method: str, path: Path) -> tuple[float, float, str]:
    """Peak RSS (MB) and seconds of one load in its own process, and what it printed."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", method, str(path)], stdout=subprocess.PIPE,
                               text=True)
    output = process.stdout.read().strip()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{method} on {path} failed (status {status})")
    return usage.ru_maxrss / 1024, time.perf_counter() - start, output  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long file (default 60)")
    parser.add_argument("--short-seconds", type=float, default=4.0, help="length of the short clip (default 4)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = {"short": write_wav(Path(tmp) / "short.wav", args.short_seconds),
                 "long": write_wav(Path(tmp) / "long.wav", args.minutes * 60)}
        imports, _, _ = measure("imports", files["short"])
        print(f"48 kHz stereo PCM-16 WAV -> 16 kHz mono float32; peak RSS of each load in its own process "
              f"(imports only: {imports:.0f} MB)")
        print(f"{'file':>22s} {'whole-file decode':>18s} {'blocks':>10s} {'ratio':>7s} {'same result':>12s}")
        for name, path in files.items():
            (whole, whole_s, whole_out), (blocks, blocks_s, blocks_out) = (measure(m, path) for m in METHODS[1:])
            label = f"{name} ({sf.info(str(path)).duration / 60:.1f} min)" if name == "long" else \
                f"{name} ({sf.info(str(path)).duration:.1f} s)"
            print(f"{label:>22s} {whole:14.0f} MB {blocks:7.0f} MB {whole / blocks:6.1f}x "
                  f"{'yes' if whole_out == blocks_out else 'NO: ' + whole_out + ' / ' + blocks_out:>12s}"
                  f"   ({whole_s:.0f} s / {blocks_s:.0f} s)")


if __name__ == "__main__":
    main()
