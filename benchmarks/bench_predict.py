"""Speed and memory of ``predict`` on CPU for the wav2vec2-base architecture (random weights: speed does
not depend on them), against a naive loop measured on the same files in the same run.

  * naive: Hugging Face's Wav2Vec2ForSequenceClassification + feature extractor called per file,
    no batching, no inference mode (how popular notebooks do it);
  * project, batch 1: EmotionRecognizer.predict_file, one file at a time;
  * project, predict_files: EmotionRecognizer.predict_files (batches grouped by length; on a CPU the
    batch size is 1, see ser_utils.core.device).

Each mode runs in its own process so that its peak memory (max RSS) is its own. Real-time factor
(RTF) = processing seconds / audio seconds (lower is better).

    python benchmarks/bench_predict.py [--data ../shared/data/ravdess-16k] [--n 24]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ser_utils.core.config import REPO_ROOT

MODES = ("naive", "batch1", "batched")


def pick_files(data: Path, n: int) -> list[str]:
    from ser_utils.data.corpus import discover

    meta = discover(data)
    step = max(1, len(meta) // n)
    return list(meta["path"].iloc[::step][:n])


def make_model(directory: Path) -> None:
    from transformers import Wav2Vec2Config

    from ser_utils.models.classifier import EmotionClassifier

    torch.manual_seed(0)
    EmotionClassifier.from_config(Wav2Vec2Config()).save_pretrained(directory)


def run_mode(mode: str, model_dir: str, files: list[str]) -> dict:
    from ser_utils.data.audio import load_audio
    from ser_utils.serving.predict import EmotionRecognizer

    audio = sum(len(load_audio(f)) for f in files) / 16_000
    if mode == "naive":
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

        model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=8)).eval()
        extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
        start = time.perf_counter()
        for path in files:
            inputs = extractor(load_audio(path), sampling_rate=16_000, return_tensors="pt")
            model(**inputs).logits.softmax(-1)
    else:
        recognizer = EmotionRecognizer.from_pretrained(model_dir, device="cpu")
        start = time.perf_counter()
        if mode == "batch1":
            for path in files:
                recognizer.predict_file(path)
        else:
            recognizer.predict_files(files)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds": seconds, "audio": audio, "files": len(files), "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "ravdess-16k")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child process: one mode, result as JSON
        print(json.dumps(run_mode(args.mode, args.model_dir, json.loads(Path(args.files).read_text()))))
        return
    if not args.data.is_dir():
        from ser_utils.data.synthetic import make_synthetic_corpus

        args.data = make_synthetic_corpus(Path(tempfile.mkdtemp()) / "corpus", actors=[1], seconds=3.7)
        print(f"(real data not found: synthetic 3.7 s clips in {args.data})")
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp) / "model")
        files = Path(tmp) / "files.json"
        files.write_text(json.dumps(pick_files(args.data, args.n)))
        results = {}
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--model-dir", str(Path(tmp) / "model"),
                                  "--files", str(files)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    naive = results["naive"]["seconds"]
    print(f"wav2vec2-base architecture on CPU ({torch.get_num_threads()} threads), {results['naive']['files']} "
          f"files, {results['naive']['audio']:.1f} s of audio")
    print(f"{'mode':28s} {'seconds':>8s} {'RTF':>7s} {'clips/s':>8s} {'vs naive':>9s} {'peak RSS':>9s}")
    labels = {"naive": "naive (HF per file, autograd)", "batch1": "project, predict_file",
              "batched": "project, predict_files"}
    for mode, r in results.items():
        rtf, rate = r["seconds"] / r["audio"], r["files"] / r["seconds"]
        print(f"{labels[mode]:28s} {r['seconds']:8.1f} {rtf:7.3f} {rate:8.2f} {naive / r['seconds']:8.2f}x "
              f"{r['peak_mb']:7.0f} MB")


if __name__ == "__main__":
    main()
