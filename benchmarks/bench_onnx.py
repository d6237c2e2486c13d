"""A torch model folder against its ONNX export (``export --onnx``): start-up, memory, speed and a live pipe.

The model: ``--model DIR`` (a frozen or fine-tuned encoder folder), else Whisper-base's real weights with a
random frozen head (the speed is the encoder's; the scores do not matter here), exported to ONNX in a
temporary folder. The audio: real RAVDESS clips from ``../shared/data/ravdess-16k`` when present (else
generated speech-like audio): one 4 s clip, and 60 s of clips joined.

Per folder, each in its own ``python -m ser_utils predict`` process:

* **first line**: seconds from the process's start to its first stdout line, one 4 s clip, and the peak
  resident memory of that process (``ru_maxrss`` from ``os.wait4``);
* **real-time factor**: seconds to score the 60 s file (windows of 6 s every 3 s, the defaults) over 60,
  timed inside a process after the model is loaded (``EmotionRecognizer.predict_file``).

Then the **live pipe**, ONNX folder only: the 60 s as raw 16-bit PCM written into
``predict - --raw --windows`` at real time (0.1 s per write), and for each window the delay from the write
that held its last sample to its line; the largest and the median delay are printed.

    python benchmarks/bench_onnx.py [--model DIR] [--repeats 1]

Goals (issue 36): ONNX first line <= 1.5 s, peak RSS <= 350 MB on 2 cores, real-time factor no worse than
the torch folder's, every window's line within 0.5 s of its last sample.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RAVDESS_16K = REPO.parent / "shared" / "data" / "ravdess-16k"
RATE = 16_000


def make_model(directory: Path) -> Path:
    """Whisper-base (real weights), frozen, with a random head."""
    import torch

    from ser_utils.backbones import load_backbone
    from ser_utils.models.frozen import FrozenEncoderModel
    from ser_utils.models.heads import FrozenHead, ModelConfig

    encoder, _ = load_backbone("whisper-base")
    torch.manual_seed(0)
    layers, width = encoder.num_layers + 1, encoder.hidden_size
    head = FrozenHead(ModelConfig(layers="weighted", pooling="mean", normalize=False), layers, width,
                      torch.zeros(layers, 3, width), torch.ones(layers, 3, width))
    return FrozenEncoderModel(encoder, head, system="whisper-base-frozen").save_pretrained(directory)


def audio(folder: Path) -> tuple[Path, Path, str]:
    """A 4 s clip and 60 s of audio (real RAVDESS clips joined, else generated), 16 kHz 16-bit WAVs."""
    if RAVDESS_16K.is_dir():
        clips = [sf.read(p, dtype="float32")[0] for p in sorted(RAVDESS_16K.glob("Actor_0[1-4]/*.flac"))[:30]]
        source = "real RAVDESS clips"
    else:
        from ser_utils.data.synthetic import synthesize_clip

        clips = [synthesize_clip("angry", 1, seconds=4.0, rng=np.random.default_rng(i)) for i in range(16)]
        source = "generated speech-like audio"
    joined = np.concatenate(clips)
    while len(joined) < 60 * RATE:
        joined = np.concatenate([joined, joined])
    short = np.concatenate(clips)[:4 * RATE]
    sf.write(folder / "clip4s.wav", short, RATE, subtype="PCM_16")
    sf.write(folder / "audio60s.wav", joined[:60 * RATE], RATE, subtype="PCM_16")
    return folder / "clip4s.wav", folder / "audio60s.wav", source


def first_line(model: Path, clip: Path) -> tuple[float, float]:
    """Seconds from the start of ``predict`` to its first line, and the process's peak RSS in MB."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "ser_utils", "predict", str(clip), "--model", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    process.stdout.readline()
    seconds = time.perf_counter() - start
    process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict {clip} --model {model}: exit status {os.waitstatus_to_exitcode(status)}")
    return seconds, usage.ru_maxrss / 1024


RTF_SCRIPT = """
import sys, time
from ser_utils.serving.predict import EmotionRecognizer
recognizer = EmotionRecognizer.from_pretrained(sys.argv[1])
recognizer.predict_file(sys.argv[3])  # warm-up on the 4 s clip: a first call allocates
start = time.perf_counter()
recognizer.predict_file(sys.argv[2])
print(time.perf_counter() - start)
"""

EXPORT_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from bench_onnx import make_model
from ser_utils.models.onnx_export import export_onnx
model = make_model(sys.argv[2]) if sys.argv[3] == "-" else sys.argv[3]
export_onnx(model, sys.argv[4])
print(model)
"""


def prepare(folder: Path, model: Path | None) -> tuple[Path, Path]:
    """The torch folder and its export, made in a child process: this one stays small, because a child's peak
    RSS (``ru_maxrss``) starts from its parent's size at the fork (Linux keeps it across exec)."""
    done = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(Path(__file__).parent), str(folder / "torch"),
                           str(model or "-"), str(folder / "onnx")], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return Path(done.stdout.split()[-1]), folder / "onnx"


def real_time_factor(model: Path, long: Path, clip: Path) -> float:
    done = subprocess.run([sys.executable, "-c", RTF_SCRIPT, str(model), str(long), str(clip)], capture_output=True,
                          text=True, cwd=REPO, check=True)
    return float(done.stdout.split()[-1]) / 60.0


def live_delays(model: Path, long: Path, chunk_seconds: float = 0.1) -> list[float]:
    """Each window's delay (seconds) from the write holding its last sample to its line."""
    samples = (sf.read(long, dtype="int16")[0]).tobytes()
    step = int(chunk_seconds * RATE) * 2
    written: list[tuple[int, float]] = []  # (bytes written so far, when that write returned)
    process = subprocess.Popen([sys.executable, "-m", "ser_utils", "predict", "-", "--raw", "--windows",
                                "--model", str(model)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, cwd=REPO)

    def writer() -> None:
        start = time.perf_counter()
        for offset in range(0, len(samples), step):
            time.sleep(max(0.0, start + offset / (2 * RATE) - time.perf_counter()))  # real time
            process.stdin.write(samples[offset:offset + step])
            process.stdin.flush()
            written.append((offset + len(samples[offset:offset + step]), time.perf_counter()))
        process.stdin.close()

    thread = threading.Thread(target=writer)
    thread.start()
    delays = []
    for line in process.stdout:
        now = time.perf_counter()
        fields = line.decode().rstrip("\n").split("\t")
        if len(fields) != 4:
            continue  # the stream's line
        end_byte = round(float(fields[1].split("-")[1]) * RATE) * 2
        arrived = next(t for total, t in list(written) if total >= end_byte)
        delays.append(now - arrived)
    thread.join()
    process.wait()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a torch model folder (default: Whisper-base frozen, random head)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement, interleaved (default: 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        model, exported = prepare(folder, args.model)
        print(f"model: {args.model or 'Whisper-base frozen, random head'}; made and exported in "
              f"{time.perf_counter() - start:.1f} s")
        clip, long, source = audio(folder)
        print(f"audio: {source}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (a shared machine)")
        folders = {"torch": model, "onnx": exported}
        results = {name: {"first": [], "rss": [], "rtf": []} for name in folders}
        for _ in range(args.repeats):
            for name, path in folders.items():
                seconds, rss = first_line(path, clip)
                results[name]["first"].append(seconds)
                results[name]["rss"].append(rss)
                results[name]["rtf"].append(real_time_factor(path, long, clip))
        for name, values in results.items():
            print(f"{name:5s}  first line {statistics.median(values['first']):.2f} s "
                  f"(runs: {', '.join(f'{v:.2f}' for v in values['first'])})  peak RSS "
                  f"{statistics.median(values['rss']):.0f} MB  real-time factor "
                  f"{statistics.median(values['rtf']):.3f} (runs: {', '.join(f'{v:.3f}' for v in values['rtf'])})")
        torch_, onnx_ = (statistics.median(results[n]["first"]) for n in ("torch", "onnx"))
        print(f"first line: ONNX / torch = {onnx_ / torch_:.2f}")
        delays = live_delays(exported, long)
        print(f"live pipe (ONNX, 60 s at real time, {len(delays)} windows): largest delay {max(delays):.2f} s, "
              f"median {statistics.median(delays):.2f} s, first window {delays[0]:.2f} s, load average "
              f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
