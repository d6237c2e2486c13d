"""Frozen-embedding mode: run the backbone once, cache every layer's pooled embedding, train heads.

The backbone (any :class:`~ser_utils.backbones.SpeechEncoder`: wav2vec2, Whisper, ...) runs once over
the corpus (inference mode, length-grouped batches); for each clip the cache holds, per hidden layer,
the first frame, the masked mean and the masked standard deviation (``(L+1, 3, D)``, float16), keyed
by the file's content, the checkpoint and the encoder's options. Heads - weighted layers + MLP, or
any pooling/layer choice of :class:`~ser_utils.models.heads.ModelConfig` - then train from the cache in
seconds per fold on a CPU, with or without speaker normalization (:func:`frozen_predictions`, one
loop for both), and a per-layer probe shows which layer carries emotion.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..backbones import SpeechEncoder
from ..core.cache import ArrayCache, MapResult, file_digest
from ..core.device import autocast_dtype, single_thread
from ..core.fingerprint import code_digest
from ..core.progress import progress as progress_bar
from ..data.audio import SAMPLE_RATE, crop, load_many
from ..evaluation.metrics import prediction_table, score
from ..evaluation.splits import Split
from ..features.normalization import Normalization, SpeakerNormalizer, normalizer_config
from ..models.frozen import encode_waves
from ..models.heads import STATS, FrozenHead, ModelConfig

#: Embeddings of at least this size train their splits' heads in parallel processes (smaller: serially).
PARALLEL_BYTES = 16 * 2**20


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


def train_frozen_head(config: ModelConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, *, epochs: int = 200, patience: int = 20, lr: float = 1e-3,
                      weight_decay: float = 1e-2, batch_size: int = 64, seed: int = 0) -> FrozenHead:
    """Train a :class:`FrozenHead` with AdamW; keep the epoch with the best validation UAR.

    ``x_*``: ``(N, L+1, 3, D)`` embeddings; ``y_*``: class indices ``(N,)``. Runs on one thread: the
    steps are too small for more to help, and spare cores only contend.
    """
    with single_thread():
        torch.manual_seed(seed)
        xt, yt = torch.as_tensor(x_train, dtype=torch.float32), torch.tensor(np.asarray(y_train))
        mean, std = xt.mean(0), xt.std(0).clamp(min=1e-4)
        head = FrozenHead(config, xt.shape[1], xt.shape[-1], mean, std)
        zt, zv = head.standardise(xt), head.standardise(torch.as_tensor(x_val, dtype=torch.float32))
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(seed)
        best, best_state, bad = -1.0, None, 0
        for _ in range(epochs):
            head.train()
            for rows in torch.randperm(len(zt), generator=generator).split(batch_size):
                loss = nn.functional.cross_entropy(head.classify(zt[rows]), yt[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            head.eval()
            with torch.no_grad():
                uar = score(np.asarray(y_val), head.classify(zv).argmax(-1).numpy(), config.labels).uar
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


@dataclass
class SplitHead:
    """A frozen head trained for one split, the variance chosen on validation (``None`` without
    normalization) and the normalization to record in an exported model folder."""

    head: FrozenHead
    variance: str | None = None
    normalization: dict | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices of embeddings ``(N, L+1, 3, D)`` (normalized as the head's training clips were)."""
        with torch.no_grad():
            return self.head(torch.as_tensor(x, dtype=torch.float32)).argmax(-1).numpy()


def normalized_variants(meta: pd.DataFrame, embeddings: dict[str, np.ndarray], normalization: Normalization, *,
                        seed: int = 0) -> dict[str | None, tuple[np.ndarray, dict | None]]:
    """The embeddings of ``meta``'s clips, in its row order, as each candidate of ``normalization`` gives
    them: variance -> (``(N, L+1, 3, D)`` float32, normalization to record); without normalization
    the embeddings themselves under ``None``. Statistics per actor, from all of an actor's clips or
    ``normalization.clips`` random ones; labels play no part."""
    x = stack(embeddings, meta["path"])
    if normalization.kind == "none":
        return {None: (x, None)}
    flat = x.reshape(len(x), -1)
    variants = {}
    for variance in normalization.variances:
        normalizer = SpeakerNormalizer(variance, normalization.clips, seed=seed)
        normed = normalizer.fit_transform(flat, meta["actor"]).astype(np.float32).reshape(x.shape)
        variants[variance] = (normed, normalizer_config(variance, normalizer.prior_var_, normalization.clips))
    return variants


def train_split_head(meta: pd.DataFrame, split: Split, variants: dict, config: ModelConfig, *,
                     seed: int = 0, **train_kwargs) -> SplitHead:
    """A head per candidate variant (:func:`normalized_variants`, rows in ``meta``'s order) on ``split``'s
    training clips; the one with the higher validation UAR is kept (the first on a tie), so test clips
    play no part."""
    label_index = {name: i for i, name in enumerate(config.labels)}
    (train, y_train), (val, y_val) = ((_rows(meta, part), part["emotion"].astype(str).map(label_index).to_numpy())
                                      for part in split.frames(meta)[:2])
    best, best_uar = None, -1.0
    for variance, (x, recorded) in variants.items():
        head = train_frozen_head(config, x[train], y_train, x[val], y_val, seed=seed, **train_kwargs)
        candidate = SplitHead(head, variance, recorded)
        uar = score(y_val, candidate.predict(x[val]), config.labels).uar if len(variants) > 1 else 0.0
        if best is None or uar > best_uar:
            best, best_uar = candidate, uar
    return best


def _rows(meta: pd.DataFrame, part: pd.DataFrame) -> np.ndarray:
    """Positions in ``meta`` of the rows of ``part`` (a subset of it)."""
    return meta.index.get_indexer(part.index)


def _split_predictions(meta: pd.DataFrame, split: Split, variants: dict, config: ModelConfig, seed: int,
                       train_kwargs: dict) -> np.ndarray:
    fitted = train_split_head(meta, split, variants, config, seed=seed, **train_kwargs)
    x = variants[fitted.variance][0]
    return fitted.predict(x[_rows(meta, split.frames(meta)[2])])


def frozen_predictions(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                       config: ModelConfig, system: str, normalization: Normalization | None = None, *,
                       seed: int = 0, n_jobs: int | None = None, **train_kwargs) -> pd.DataFrame:
    """Train a head per split (selection on its validation clips) and predict its test clips, on the
    embeddings as they are or speaker-normalized (``normalization``: the variance chosen per split on
    validation clips; the system's name gets the normalization's suffix).

    Splits train in ``n_jobs`` processes (``None``: one per core for real-size embeddings, one for
    tiny ones, where starting processes would cost more than it saves); results do not depend on it.
    Clips without an embedding (files that failed) are left out. Returns the predictions table
    (``system, protocol, fold, stem, actor, emotion, predicted``).
    """
    normalization = normalization or Normalization()
    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)
    variants = normalized_variants(meta, embeddings, normalization, seed=seed)
    if n_jobs is None:
        n_jobs = -1 if variants[next(iter(variants))][0].nbytes > PARALLEL_BYTES and len(splits) > 1 else 1
    predicted = Parallel(n_jobs=n_jobs)(delayed(_split_predictions)(meta, split, variants, config, seed, train_kwargs)
                                        for split in splits)
    return pd.concat([prediction_table(system + normalization.suffix, split.protocol, split.fold,
                                       split.frames(meta)[2], np.asarray(config.labels)[indices])
                      for split, indices in zip(splits, predicted, strict=True)], ignore_index=True)


def layer_probe(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                stat: str = "mean") -> pd.DataFrame:
    """Which layer carries emotion: a linear probe (standardised features, ridge classifier: closed form,
    30x faster than a logistic regression and within a point of it) on each layer's pooled embedding.

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
            probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=100.0))
            probe.fit(x_fit[:, layer, column], fit["emotion"].astype(str))
            scores = score(test["emotion"].astype(str), probe.predict(x_test[:, layer, column]))
            rows.append({"layer": layer, "fold": split.fold, "protocol": split.protocol,
                         "accuracy": scores.accuracy, "uar": scores.uar})
    return pd.DataFrame(rows)
