"""Fine-tuning throughput of Whisper-base (real weights, the installed weight package) on this machine.

In one run, on the same RAVDESS clips (batches of ``--batch`` clips of similar length, forward +
backward + AdamW step, the project recipe's head: weighted layers, masked mean), in audio-seconds per
second and as ratios against the whole encoder:

  * the whole encoder trained (front end fixed), from the audio;
  * the top ``k`` layers trained, through the whole encoder (the lower layers run every step);
  * the top ``k`` layers trained from cached lower-layer states (:mod:`ser_utils.training.partial`),
    plus what building that cache costs per audio-second (once per clip).

Precision: the study's (bf16 where the CPU has bf16 units, ``SER_PRECISION=fp32`` for float32).

    python benchmarks/bench_partial_finetune.py [--data ../shared/data/ravdess-16k] [--n 48] [--k 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from clips import REAL_DATA, sample_clips

from ser_utils.core.device import autocast, autocast_dtype, default_device
from ser_utils.data.audio import SAMPLE_RATE
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import ModelConfig
from ser_utils.training.batches import ClipDataset, clip_loader
from ser_utils.training.loop import TrainConfig, parameter_groups
from ser_utils.training.partial import FromCachedStates, cache_layer_states


def throughput(model: torch.nn.Module, loader, dtype, repeats: int) -> float:
    """Audio-seconds per second of training steps over ``loader`` (after one warm-up batch)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, TrainConfig(lr_backbone=1e-5)))
    device = default_device()
    model.train()
    seconds, elapsed = 0.0, 0.0
    for repeat in range(repeats):
        for step, (inputs, labels, batch_seconds) in enumerate(loader):
            start = time.perf_counter()
            with autocast(device, dtype):
                loss = torch.nn.functional.cross_entropy(model(*inputs).float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if repeat or step:  # the first batch warms up
                elapsed += time.perf_counter() - start
                seconds += batch_seconds
    return seconds / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--n", type=int, default=48, help="clips")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2], help="top layers to train")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the clips per measurement")
    args = parser.parse_args()
    paths, waves = sample_clips(args.data, args.n)
    dtype = autocast_dtype(default_device())
    labels = np.arange(len(waves)) % 8
    clips = ClipDataset(waves, labels, normalize=False)
    clip_batches = clip_loader(clips, args.batch, shuffle=True, seed=0, workers=0)
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    print(f"{len(waves)} clips ({audio:.0f} audio-s), batches of {args.batch}, precision {dtype or torch.float32}, "
          f"{torch.get_num_threads()} threads")
    whole = throughput(EmotionClassifier.from_backbone("whisper-base", ModelConfig()), clip_batches, dtype,
                       args.repeats)
    print(f"whole encoder (front end fixed):        {whole:7.1f} audio-s/s  1.00x")
    for k in args.k:
        config = ModelConfig(train_layers=k)
        through = throughput(EmotionClassifier.from_backbone("whisper-base", config), clip_batches, dtype,
                             args.repeats)
        model = EmotionClassifier.from_backbone("whisper-base", config)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:
            states = cache_layer_states(model.backbone, paths, cache, "bench", k, progress=False)
        caching = audio / (time.perf_counter() - start)
        cached = throughput(FromCachedStates(model), clip_loader(states.dataset(paths, labels), args.batch,
                                                                 shuffle=True, seed=0, workers=0), dtype, args.repeats)
        print(f"top {k} through the whole encoder:       {through:7.1f} audio-s/s  {through / whole:.2f}x")
        print(f"top {k} from cached states:              {cached:7.1f} audio-s/s  {cached / whole:.2f}x "
              f"(building the cache: {caching:.1f} audio-s/s, once per clip)")


if __name__ == "__main__":
    main()
