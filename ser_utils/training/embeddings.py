"""Frozen-embedding mode: run the backbone once, cache every layer's pooled embedding.

The backbone (any :class:`~ser_utils.backbones.SpeechEncoder`: wav2vec2, Whisper, ...) runs once over
the corpus (inference mode, length-grouped batches); for each clip the cache holds, per hidden layer,
the first frame, the masked mean and the masked standard deviation (``(L+1, 3, D)``, float16), keyed
by the file's content, the checkpoint and the encoder's options (and, in the same pass, the frames of
the hidden states partial fine-tuning trains from). Heads then train from the cache in seconds per
fold on a CPU (:mod:`ser_utils.training.frozen_heads`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backbones import SpeechEncoder
from ..core.cache import ArrayCache, MapResult, file_digest
from ..core.device import autocast_dtype
from ..core.fingerprint import code_digest
from ..core.progress import progress as progress_bar
from ..data.audio import SAMPLE_RATE, crop, load_many
from ..models.frozen import encode_waves
from ..models.heads import STATS


def embedding_code() -> str:
    """Digest of the code the cached embeddings come from: audio loading, the backbone, the model, this module."""
    from .. import backbones
    from ..data import audio
    from ..models import frozen, heads

    return code_digest(audio, backbones, heads, frozen, sys.modules[__name__])


@dataclass
class EncoderStates(MapResult):
    """What :func:`extract_embeddings` gives: ``arrays`` (path -> ``(L+1, 3, D)`` per-layer statistics),
    ``failures``, ``hits`` / ``computed`` (clips read from the cache / run through the encoder), and
    ``frames`` (hidden state -> path -> its frames ``(T, D)``, float16) for the states asked for."""

    frames: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def extract_embeddings(encoder: SpeechEncoder, paths: Sequence[str | Path], cache_root: str | Path,
                       model_id: str, *, batch_size: int | None = None, max_seconds: float | None = None,
                       dtype: torch.dtype | str = "auto", frames_of: Sequence[int] = (),
                       progress: bool = True) -> EncoderStates:
    """Per-layer pooled embeddings ``(L+1, 3, D)`` of every file, from the cache where possible.

    ``model_id`` names the checkpoint (``backbones.backbone_fingerprint``); the encoder's options (e.g.
    Whisper's input mode) are part of the key too. ``max_seconds`` keeps the centre of longer clips.
    ``dtype`` is the backbone's autocast precision (``torch.float32`` or ``torch.bfloat16``; ``"auto"``:
    bf16 where the hardware runs it natively) and part of the cache key. ``batch_size`` defaults to the
    device's best (one clip at a time on a CPU). ``frames_of``: hidden states (indices into the ``L+1``)
    whose every frame is kept too, in the same encoder pass (partial fine-tuning's cached input, about
    0.2 MB per clip and state for Whisper-base in float16). Files that fail to load are reported and skipped.
    """
    device = next(encoder.parameters()).device
    if dtype == "auto":
        dtype = autocast_dtype(device) or torch.float32
    params = {"model": model_id, "options": encoder.options, "normalize": encoder.normalize_input,
              "max_seconds": max_seconds, "dtype": str(dtype), "stats": STATS, "code": embedding_code()}
    cache = ArrayCache(cache_root, "embeddings", params)
    frame_caches = {state: ArrayCache(cache_root, "frames", {**params, "state": state}) for state in frames_of}
    found, todo = cache.lookup(paths)
    result = EncoderStates(found.arrays, found.failures, found.hits, frames={state: {} for state in frames_of})
    for path in list(result.arrays) if frame_caches else []:  # complete when its frames are cached too
        digest = file_digest(path)
        frames = {state: frame_cache.get(digest) for state, frame_cache in frame_caches.items()}
        if any(f is None for f in frames.values()):
            del result.arrays[path]
            result.hits -= 1
            todo.append((path, digest))
        for state, f in frames.items():
            if f is not None:
                result.frames[state][path] = f
    if not todo:
        return result
    waves, failures = load_many([p for p, _ in todo])
    result.failures.update(failures)
    todo = [item for item in todo if item[0] in waves]
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    clips = [crop(waves[p], limit) if limit else waves[p] for p, _ in todo]  # no rng: the centre
    bar = progress_bar(total=len(clips), desc=f"{encoder.family} embeddings", disable=not progress)
    for rows, layers, kept in encode_waves(encoder, clips, batch_size=batch_size, dtype=dtype, keep=frames_of):
        for i, (row, array) in enumerate(zip(rows, layers.astype(np.float16), strict=True)):
            path, digest = todo[row]
            cache.put(digest, array)
            result.arrays[path] = array
            for state, frames in kept.items():
                frame_caches[state].put(digest, frames[i].astype(np.float16))
                result.frames[state][path] = frames[i].astype(np.float16)
            result.computed += 1
        bar.update(len(rows))
    bar.close()
    return result


def stack(embeddings: dict[str, np.ndarray], paths: Sequence[str]) -> np.ndarray:
    """``(N, L+1, 3, D)`` float32 array of the given files' embeddings."""
    return np.stack([embeddings[p] for p in paths]).astype(np.float32)
