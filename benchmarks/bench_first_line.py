"""Time to the first output line of ``python -m ser_utils predict`` on a long file against a short one, and
the peak memory of each run, measured in the same run.

Two generated 48 kHz stereo PCM-16 WAVs (speech-like tones and noise, written block by block, as in
``bench_memory.py``): ``--minutes`` long (default 60) and ``--short-seconds`` (default 6, one window).
Each is scored by ``python -m ser_utils predict FILE --model DIR`` in its own process, the same
imports and model loading for both, in two call settings:

(a) ``predict FILE``: one line per file, which needs every window of the file scored first (a long file
    is decoded whole, then scored: the behaviour before ``--windows``, unchanged);
(b) ``predict FILE --windows``: each window's line as soon as it is scored (a long file is scored while
    it is decoded, 10 s block by block), then the file's line.

Per run: seconds from the start of the process to its first stdout line, to its exit, and its peak
resident memory (``ru_maxrss`` from ``os.wait4``). The runs are interleaved (short, long, per setting,
``--repeats`` times, medians). The file lines of (a) and (b) must be the same text, or the script fails.
The model: ``--model DIR`` (any model folder), else a tiny random wav2vec2 saved in a temporary folder.

    python benchmarks/bench_first_line.py [--minutes 60] [--short-seconds 6] [--model DIR] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import write_wav


def make_model(directory: Path) -> Path:
    import torch

    from ser_utils.backbones.checkpoints import tiny_backbone_config
    from ser_utils.models.classifier import EmotionClassifier
    from ser_utils.models.heads import ModelConfig

    torch.manual_seed(0)
    return EmotionClassifier.from_config(tiny_backbone_config(), ModelConfig()).save_pretrained(directory)


def run(path: Path, model: Path, windows: bool) -> dict:
    """One ``predict`` process: seconds to its first stdout line and to its exit, peak RSS, its file lines."""
    command = [sys.executable, "-m", "ser_utils", "predict", str(path), "--model", str(model)]
    start = time.perf_counter()
    process = subprocess.Popen(command + (["--windows"] if windows else []), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    first = process.stdout.readline()
    first_line = time.perf_counter() - start
    lines = [first, *process.stdout]
    _, status, usage = os.wait4(process.pid, 0)
    exit_seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)}: exit status {os.waitstatus_to_exitcode(status)}")
    return {"first": first_line, "exit": exit_seconds, "rss_mb": usage.ru_maxrss / 1024, "lines": len(lines),
            "file_lines": [line for line in lines if line.count("\t") == 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long file (default: 60)")
    parser.add_argument("--short-seconds", type=float, default=6.0, help="length of the short file (default: 6)")
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny random wav2vec2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, interleaved (default: 1)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-first-line-") as tmp:
        folder = Path(tmp)
        model = args.model or make_model(folder / "model")
        files = {"short": write_wav(folder / "short.wav", args.short_seconds),
                 "long": write_wav(folder / "long.wav", 60 * args.minutes)}
        print(f"files: {args.short_seconds:g} s and {args.minutes:g} min, 48 kHz stereo PCM-16 "
              f"({files['long'].stat().st_size / 1e6:.0f} MB); model: {args.model or 'tiny random wav2vec2'}; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        results = {(setting, name): [] for setting in ("a", "b") for name in files}
        for repeat in range(args.repeats):
            for setting in ("a", "b"):
                for name, path in files.items():
                    result = run(path, model, windows=setting == "b")
                    results[(setting, name)].append(result)
                    print(f"run {repeat + 1} ({setting}) {name:5s}: first line {result['first']:7.2f} s, exit "
                          f"{result['exit']:7.2f} s, {result['lines']:5d} lines, peak RSS {result['rss_mb']:5.0f} MB "
                          f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    for name in files:
        old, new = results[("a", name)][0]["file_lines"], results[("b", name)][0]["file_lines"]
        if old != new:
            raise SystemExit(f"{name}: the file lines differ between (a) and (b):\n{old}\n{new}")

    def median(setting, name, key):
        return statistics.median(r[key] for r in results[(setting, name)])

    print(f"\n{'first line (medians)':28s} {'short':>8s} {'long':>8s} {'long - short':>13s} "
          f"{'exit, long':>11s} {'peak RSS short / long':>22s}")
    labels = {"a": "(a) predict FILE", "b": "(b) predict FILE --windows"}
    for setting, label in labels.items():
        short, long = median(setting, "short", "first"), median(setting, "long", "first")
        print(f"{label:28s} {short:7.2f}s {long:7.2f}s {long - short:12.2f}s {median(setting, 'long', 'exit'):10.1f}s "
              f"{median(setting, 'short', 'rss_mb'):12.0f} / {median(setting, 'long', 'rss_mb'):4.0f} MB")
    gap = median("b", "long", "first") - median("b", "short", "first")
    print(f"goal: (b) long first line at most 1 s after short: {'met' if gap <= 1 else 'MISSED'} ({gap:+.2f} s); "
          f"the file lines of (a) and (b) are the same text")


if __name__ == "__main__":
    main()
