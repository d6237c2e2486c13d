"""Frozen-embedding mode: run the backbone once, cache every layer's pooled embedding, train heads.

The backbone runs once over the corpus (inference mode, length-grouped batches); for each clip the
cache holds, per hidden layer, the first frame, the masked mean and the masked standard deviation
(``(L+1, 3, D)``, float16), keyed by the file's content and the model. Heads - weighted layers +
MLP, or any pooling/layer choice of :class:`~ser_utils.model.ModelConfig` - then train from the cache
in seconds per fold on a CPU, and a per-layer probe shows which layer carries emotion.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from .audio import SAMPLE_RATE, collate, crop, load_many, normalize
from .cache import ArrayCache, MapResult
from .device import autocast_dtype, inference_batch_size
from .evaluate import prediction_table, score
from .fingerprint import code_digest
from .model import EmotionClassifier, ModelConfig
from .progress import progress as progress_bar
from .splits import Split

STATS = ("first", "mean", "std")


def embedding_code() -> str:
    """Digest of the code the cached embeddings come from: audio loading, the backbone, the model, this module."""
    from . import audio, backbones, model

    return code_digest(audio, backbones, model, sys.modules[__name__])


def extract_embeddings(model: EmotionClassifier, paths: Sequence[str | Path], cache_root: str | Path,
                       model_id: str, *, batch_size: int | None = None, max_seconds: float | None = None,
                       dtype: torch.dtype | str = "auto", progress: bool = True) -> MapResult:
    """Per-layer pooled embeddings ``(L+1, 3, D)`` of every file, from the cache where possible.

    ``max_seconds`` keeps the centre of longer clips. ``dtype`` is the backbone's autocast precision
    (``torch.float32`` or ``torch.bfloat16``; ``"auto"``: bf16 where the hardware runs it natively) and,
    like the model, part of the cache key. ``batch_size`` defaults to the device's best (one clip at a
    time on a CPU). Files that fail to load are reported and skipped.
    """
    device = next(model.parameters()).device
    if dtype == "auto":
        dtype = autocast_dtype(device) or torch.float32
    batch_size = batch_size or inference_batch_size(device)
    params = {"model": model_id, "normalize": model.config.normalize, "max_seconds": max_seconds,
              "dtype": str(dtype), "stats": STATS, "code": embedding_code()}
    cache = ArrayCache(cache_root, "wav2vec2-embeddings", params)
    result, todo = cache.lookup(paths)
    if not todo:
        return result
    waves, failures = load_many([p for p, _ in todo])
    result.failures.update(failures)
    todo = sorted((item for item in todo if item[0] in waves), key=lambda item: -len(waves[item[0]]))
    model.eval()
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    for start in progress_bar(range(0, len(todo), batch_size), desc="wav2vec2 embeddings", disable=not progress):
        chunk = todo[start:start + batch_size]
        clips = [crop(waves[p], limit) if limit else waves[p] for p, _ in chunk]  # no rng: the centre
        batch, lengths = collate([normalize(c) if model.config.normalize else c for c in clips])
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            layers = model.layer_embeddings(batch.to(device), lengths.to(device))
        for (path, digest), array in zip(chunk, layers.float().cpu().numpy().astype(np.float16), strict=True):
            cache.put(digest, array)
            result.arrays[path] = array
            result.computed += 1
    return result


class FrozenHead(nn.Module):
    """The classifier head of :class:`EmotionClassifier` on cached per-layer embeddings.

    Input ``(B, L+1, 3, D)``; features are standardised with training-set statistics (per layer,
    statistic and dimension), then combined over layers (last, or learned softmax weights), pooled as
    configured (first / mean / mean+std) and classified by Linear -> ReLU -> Dropout -> Linear.
    """

    def __init__(self, config: ModelConfig, n_layers: int, dim: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.config = config
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.layer_weights = nn.Parameter(torch.zeros(n_layers)) if config.layers == "weighted" else None
        width = dim * (2 if config.pooling == "mean+std" else 1)
        self.head = nn.Sequential(nn.Linear(width, config.head_hidden), nn.ReLU(),
                                  nn.Dropout(config.dropout), nn.Linear(config.head_hidden, len(config.labels)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = x[:, -1] if self.layer_weights is None else torch.einsum(
            "l,blsd->bsd", torch.softmax(self.layer_weights, 0), x)
        if self.config.pooling == "first":
            return x[:, 0]
        if self.config.pooling == "mean":
            return x[:, 1]
        return torch.cat([x[:, 1], x[:, 2]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_frozen_head(config: ModelConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, *, epochs: int = 200, patience: int = 20, lr: float = 1e-3,
                      weight_decay: float = 1e-2, batch_size: int = 64, seed: int = 0) -> FrozenHead:
    """Train a :class:`FrozenHead` with AdamW; keep the epoch with the best validation UAR.

    ``x_*``: ``(N, L+1, 3, D)`` embeddings; ``y_*``: class indices ``(N,)``.
    """
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x_train, dtype=torch.float32), torch.tensor(np.asarray(y_train))
    xv = torch.as_tensor(x_val, dtype=torch.float32)
    mean, std = xt.mean(0), xt.std(0).clamp(min=1e-4)
    head = FrozenHead(config, xt.shape[1], xt.shape[-1], mean, std)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, bad = -1.0, None, 0
    for _ in range(epochs):
        head.train()
        for rows in torch.randperm(len(xt), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(head(xt[rows]), yt[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            uar = score(np.asarray(y_val), head(xv).argmax(-1).numpy(), config.labels).uar
        if uar > best:
            best, bad = uar, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    head.load_state_dict(best_state)
    return head.eval()


def stack(embeddings: dict[str, np.ndarray], paths: Sequence[str]) -> np.ndarray:
    """``(N, L+1, 3, D)`` float32 array of the given files' embeddings."""
    return np.stack([embeddings[p] for p in paths]).astype(np.float32)


def frozen_predictions(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                       config: ModelConfig, system: str, **train_kwargs) -> pd.DataFrame:
    """Train a head per split (selection on its validation clips) and predict its test clips.

    Clips without an embedding (files that failed) are left out. Returns the predictions table
    (``system, protocol, fold, stem, actor, emotion, predicted``).
    """
    meta = meta[meta["path"].isin(embeddings.keys())]
    label_index = {name: i for i, name in enumerate(config.labels)}
    frames = []
    for split in splits:
        train, val, test = split.frames(meta)
        labels = [part["emotion"].astype(str).map(label_index).to_numpy() for part in (train, val)]
        head = train_frozen_head(config, stack(embeddings, train["path"]), labels[0],
                                 stack(embeddings, val["path"]), labels[1], **train_kwargs)
        with torch.no_grad():
            predicted = head(torch.as_tensor(stack(embeddings, test["path"]))).argmax(-1).numpy()
        frames.append(prediction_table(system, split.protocol, split.fold, test,
                                       np.asarray(config.labels)[predicted]))
    return pd.concat(frames, ignore_index=True)


def layer_probe(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                stat: str = "mean") -> pd.DataFrame:
    """Which layer carries emotion: a logistic-regression probe on each layer's pooled embedding.

    Trained on train+validation clips of each split, scored on its test clips. Returns one row per
    (layer, fold) with ``accuracy`` and ``uar``.
    """
    meta = meta[meta["path"].isin(embeddings.keys())]
    column = STATS.index(stat)
    rows = []
    for split in splits:
        train, val, test = split.frames(meta)
        fit = pd.concat([train, val])
        x_fit, x_test = stack(embeddings, fit["path"]), stack(embeddings, test["path"])
        for layer in range(x_fit.shape[1]):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
            probe.fit(x_fit[:, layer, column], fit["emotion"].astype(str))
            scores = score(test["emotion"].astype(str), probe.predict(x_test[:, layer, column]))
            rows.append({"layer": layer, "fold": split.fold, "protocol": split.protocol,
                         "accuracy": scores.accuracy, "uar": scores.uar})
    return pd.DataFrame(rows)
