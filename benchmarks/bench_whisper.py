"""Speed of the Whisper backbone with the real Whisper-base weights (the installed weight package).

CPU (always), on the same RAVDESS clips in the same run:
  * the frozen-embedding pass in audio-seconds per second: the project's encoder with input ``clip``
    (each clip at its own length) and ``pad30`` (padded to 30 s), at the precision the study uses
    (bf16 where the CPU has bf16 units, else float32), against the naive path: transformers'
    ``WhisperFeatureExtractor`` + ``WhisperModel`` encoder at 3,000 frames, one clip at a time, float32,
    autograd on (how popular notebooks do it);
  * ``predict``'s real-time factor (processing seconds / audio seconds) with an exported frozen
    Whisper model folder, one file at a time.
GPU (when CUDA is present): fine-tuning throughput of Whisper-base in audio-seconds per second (bf16,
the project recipe's 3 s crops and the original recipe's whole clips) and the projected wall time
of one actor-kfold fold (15 epochs of 1,080 clips).

    python benchmarks/bench_whisper.py [--data ../shared/data/ravdess-16k] [--n 24]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from clips import REAL_DATA, sample_clips

from ser_utils.backbones import load_backbone, resolve
from ser_utils.backbones.ctranslate2 import dequantized, read_model, to_transformers, whisper_config
from ser_utils.core.device import autocast_dtype
from ser_utils.data.audio import SAMPLE_RATE
from ser_utils.models.frozen import embed_waves


def naive_seconds(waves: list[np.ndarray]) -> float:
    """transformers' feature extractor + WhisperModel's encoder (3,000 frames), one clip at a time."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    model = read_model(resolve("whisper-base").folder, keep=lambda name: name.startswith("encoder/"))
    whisper = WhisperModel(whisper_config(model))
    state = {k[len("model."):]: v for k, v in to_transformers(dequantized(model)).items()}
    whisper.load_state_dict(state, strict=False)
    extractor, encoder = WhisperFeatureExtractor(), whisper.encoder
    start = time.perf_counter()
    for wave in waves:
        features = extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        states = encoder(features, output_hidden_states=True).hidden_states
        torch.stack([s.mean(1) for s in states])
    return time.perf_counter() - start


def project_seconds(waves: list[np.ndarray], mode: str) -> float:
    encoder, _ = load_backbone("whisper-base", options={"input": mode})
    dtype = autocast_dtype("cpu")
    list(embed_waves(encoder, waves[:2], dtype=dtype))  # warm-up
    start = time.perf_counter()
    for _ in embed_waves(encoder, waves, dtype=dtype):
        pass
    return time.perf_counter() - start


def predict_rtf(files: list[str], audio_seconds: float) -> float:
    """predict_file over the files with a frozen Whisper-base model folder (a random head: speed only)."""
    from ser_utils.models.frozen import FrozenEncoderModel
    from ser_utils.models.heads import FrozenHead, ModelConfig
    from ser_utils.serving.predict import EmotionRecognizer

    encoder, _ = load_backbone("whisper-base")
    shape = (encoder.num_layers + 1, 3, encoder.hidden_size)
    head = FrozenHead(ModelConfig(), shape[0], shape[2], torch.zeros(shape), torch.ones(shape))
    with tempfile.TemporaryDirectory() as folder:
        FrozenEncoderModel(encoder, head, system="bench").save_pretrained(folder)
        recognizer = EmotionRecognizer.from_pretrained(folder, device="cpu")
        recognizer.predict_file(files[0])  # warm-up
        start = time.perf_counter()
        for path in files:
            recognizer.predict_file(path)
        return (time.perf_counter() - start) / audio_seconds


def gpu_finetune(waves: list[np.ndarray], epochs: int) -> None:
    from ser_utils.models.classifier import EmotionClassifier
    from ser_utils.study.systems import ORIGINAL, PROJECT
    from ser_utils.training.loop import parameter_groups

    for recipe in (PROJECT, ORIGINAL):
        model = EmotionClassifier.from_backbone("whisper-base", recipe.model).cuda().train()
        optimizer = torch.optim.AdamW(parameter_groups(model, recipe.training))
        seconds = recipe.training.max_seconds or float(np.mean([len(w) for w in waves]) / SAMPLE_RATE)
        batch = torch.randn(recipe.training.batch_size, int(seconds * SAMPLE_RATE), device="cuda") * 0.1
        lengths = torch.full((batch.shape[0],), batch.shape[1], device="cuda")
        labels = torch.randint(0, 8, (batch.shape[0],), device="cuda")
        for step in range(25):
            if step == 5:
                torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(batch, lengths), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / 20
        throughput = batch.shape[0] * seconds / per_step
        fold = epochs * 1080 * float(np.mean([len(w) for w in waves]) / SAMPLE_RATE) / throughput
        print(f"GPU fine-tuning, {recipe.name} recipe ({seconds:.1f} s clips, batch {batch.shape[0]}, bf16): "
              f"{throughput:,.0f} audio-s/s; one fold of {epochs} epochs x 1,080 clips ~ {fold / 60:.1f} min "
              "(training steps only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--n", type=int, default=24, help="clips")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    files, waves = sample_clips(args.data, args.n)
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    print(f"{len(waves)} clips, {audio:.1f} s of audio, {torch.get_num_threads()} torch threads, "
          f"autocast: {autocast_dtype('cpu') or 'float32'}")
    naive = naive_seconds(waves)
    print(f"naive (feature extractor + WhisperModel at 3,000 frames, per clip, fp32): {audio / naive:6.1f} audio-s/s")
    for mode in ("clip", "pad30"):
        seconds = project_seconds(waves, mode)
        print(f"project, input {mode:5s}: {audio / seconds:6.1f} audio-s/s = {naive / seconds:4.1f}x naive")
    if args.data.is_dir():
        rtf = predict_rtf(files, audio)
        print(f"predict with a frozen Whisper-base model folder (one file at a time): real-time factor {rtf:.3f}")
    if torch.cuda.is_available():
        gpu_finetune(waves, args.epochs)
    else:
        print("no CUDA here: the GPU fine-tuning throughput is not measured")


if __name__ == "__main__":
    main()
