"""Speed of the wav2vec2-base architecture in this project (random weights: speed does not depend on them).

CPU (always):
  * frozen-embedding extraction in audio-seconds per second: the project's path (inference mode,
    length-grouped batches, per-layer pooled statistics; fp32 and, where the CPU has bf16 units, bf16)
    against a naive loop (one file at a time, padded to the longest clip, autograd on), same files;
  * one fine-tuning step (forward, backward, AdamW) at batch 8 x 4 s.
GPU (when CUDA is present): fine-tuning throughput in audio-seconds per second for the project's
recipe (3 s crops) and the original (whole clips), bf16, and the projected time of all 6 folds.

    python benchmarks/bench_wav2vec2.py [--data ../shared/data/ravdess-16k] [--n 24] [--epochs 15]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

from ser_utils.core.config import REPO_ROOT
from ser_utils.core.device import autocast_dtype, cpu_has_native_bf16, inference_batch_size
from ser_utils.data.audio import SAMPLE_RATE, collate, load_many, normalize
from ser_utils.data.corpus import discover
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import ORIGINAL_RECIPE, ModelConfig
from ser_utils.training.embeddings import extract_embeddings
from ser_utils.training.loop import ORIGINAL_TRAINING, TrainConfig, parameter_groups


def corpus_files(data: Path | None, n: int) -> list[str]:
    if data is None or not data.is_dir():
        data = make_synthetic_corpus(Path(tempfile.mkdtemp()) / "corpus", actors=range(1, 3), seconds=3.7)
        print(f"(real data not found: using a synthetic corpus of 3.7 s clips in {data})")
    meta = discover(data)
    step = max(1, len(meta) // n)
    return list(meta["path"].iloc[::step][:n])


def naive_extraction(model: EmotionClassifier, waves: list[np.ndarray]) -> float:
    """One file at a time, each padded to the longest clip of the set, autograd on."""
    longest = max(len(w) for w in waves)
    start = time.perf_counter()
    for wave in waves:
        padded = torch.zeros(1, longest)
        padded[0, : len(wave)] = torch.from_numpy(normalize(wave))
        states = model.backbone.model(padded, output_hidden_states=True).hidden_states
        torch.stack([s.mean(1) for s in states])
    return time.perf_counter() - start


def project_extraction(model: EmotionClassifier, paths: list[str], dtype: torch.dtype, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        result = extract_embeddings(model.backbone, paths, cache, "bench", batch_size=batch_size, dtype=dtype,
                                    progress=False)
        seconds = time.perf_counter() - start
    assert result.computed == len(paths)
    return seconds


def train_step_seconds(model: EmotionClassifier, training: TrainConfig, batch: int, seconds: float,
                       device: str, steps: int, bf16: bool) -> float:
    model.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, training))
    waves = [np.random.default_rng(i).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
             for i in range(batch)]
    x, lengths = collate(waves)
    x, lengths, labels = x.to(device), lengths.to(device), torch.arange(batch, device=device) % 8
    times = []
    for step in range(steps + 2):  # two warm-up steps
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x, lengths), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "ravdess-16k")
    parser.add_argument("--n", type=int, default=24, help="files for the extraction benchmark")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per fold for the GPU projection")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = Wav2Vec2Config()  # facebook/wav2vec2-base's architecture
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")

    if not args.skip_cpu:
        paths = corpus_files(args.data, args.n)
        waves = list(load_many(paths)[0].values())
        audio = sum(len(w) for w in waves) / SAMPLE_RATE
        model = EmotionClassifier.from_config(config, ModelConfig(freeze="backbone")).eval()
        print(f"\nextraction on CPU, {len(waves)} files, {audio:.1f} s of audio")
        naive = naive_extraction(model, waves)
        print(f"  {'naive loop (batch 1, padded to longest, autograd)':50s} {naive:7.1f} s  "
              f"{audio / naive:6.2f} audio-s/s")
        runs = [("fp32, length-grouped batches of 8", torch.float32, 8),
                ("fp32, one clip at a time", torch.float32, 1)]
        if cpu_has_native_bf16():
            runs.append(("bf16 autocast, one clip at a time", torch.bfloat16, 1))
        for label, dtype, batch in runs:
            seconds = project_extraction(model, paths, dtype, batch)
            print(f"  project, {label:41s} {seconds:7.1f} s  {audio / seconds:6.2f} audio-s/s  "
                  f"{naive / seconds:5.2f}x naive")
        print(f"  (the project's default here: {autocast_dtype('cpu') or 'fp32'}, batch "
              f"{inference_batch_size('cpu')}; all paths use inference mode)")
        step = train_step_seconds(EmotionClassifier.from_config(config, ModelConfig()), TrainConfig(), 8, 4.0,
                                  "cpu", steps=2, bf16=False)
        print(f"\none fine-tuning step on CPU, batch 8 x 4 s (project recipe, fp32): {step:.1f} s "
              f"({32 / step:.2f} audio-s/s)")

    if torch.cuda.is_available():
        print("\nfine-tuning on GPU, bf16 autocast")
        fold_clips, mean_clip = 1440 * 18 / 24, 3.7  # training clips per EmoBox fold; RAVDESS mean length
        for label, recipe, training, seconds in (("project (3 s crops)", ModelConfig(), TrainConfig(), 3.0),
                                                 ("original (whole clips, mean 3.7 s)", ORIGINAL_RECIPE,
                                                  ORIGINAL_TRAINING, 3.7)):
            model = EmotionClassifier.from_config(config, recipe)
            step = train_step_seconds(model, training, 8, seconds, "cuda", steps=20, bf16=True)
            rate = 8 * seconds / step
            epoch_audio = fold_clips * (min(seconds, mean_clip) if training.max_seconds else mean_clip)
            projected = 6 * args.epochs * epoch_audio / rate
            print(f"  {label:38s} {step * 1000:6.1f} ms/step  {rate:7.0f} audio-s/s  "
                  f"6 folds x {args.epochs} epochs: {projected / 60:5.1f} min (training steps only)")
            del model
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
