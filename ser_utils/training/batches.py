"""What the fine-tuning loop iterates over: clips with random training crops, batches of similar length,
and their collation into padded tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.audio import SAMPLE_RATE, collate, crop, longest_first, normalize


class ClipDataset(Dataset):
    """Waveforms + labels; in training each item is a random crop of at most ``max_samples``.

    Items are ``(normalized waveform, label, index)``. Crops are seeded by ``(seed, epoch, index)``,
    so they are reproducible and independent of how many loader processes run.
    """

    def __init__(self, waves: Sequence[np.ndarray], labels: Sequence[int], *, max_samples: int | None = None,
                 train: bool = False, normalize: bool = True, seed: int = 0):
        self.waves, self.labels = list(waves), np.asarray(labels, dtype=np.int64)
        self.max_samples, self.train, self.normalize, self.seed = max_samples, train, normalize, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.waves)

    def lengths(self) -> list[int]:
        cap = self.max_samples if self.train and self.max_samples else None
        return [min(len(w), cap) if cap else len(w) for w in self.waves]

    @staticmethod
    def collate(items):
        return collate_items(items)

    def __getitem__(self, index: int):
        wave = self.waves[index]
        if self.train and self.max_samples:
            wave = crop(wave, self.max_samples, np.random.default_rng([self.seed, self.epoch, index]))
        return (normalize(wave) if self.normalize else wave), int(self.labels[index]), index


class LengthGroupedBatches(Sampler):
    """Batches of similar length (less padding, less wasted compute).

    Training: shuffle, sort within windows of ``50 * batch_size`` clips, cut into batches, shuffle
    the batches (the window keeps batches random, as in Hugging Face's LengthGroupedSampler).
    Evaluation (``shuffle=False``): sorted by length. ``epoch`` seeds each epoch's order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0):
        self.lengths, self.batch_size, self.shuffle, self.seed = np.asarray(lengths), batch_size, shuffle, seed
        self.epoch = 0

    def _batches(self) -> list[list[int]]:
        if not self.shuffle:
            return longest_first(self.lengths, self.batch_size)
        rng = np.random.default_rng([self.seed, self.epoch])
        order, window = rng.permutation(len(self.lengths)), 50 * self.batch_size
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            batches += [chunk[rows].tolist() for rows in longest_first(self.lengths[chunk], self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def collate_items(items):
    """``[(wave, label, index)]`` -> ``((waves (B, T), lengths (B,)), labels (B,), audio seconds)``: the
    model's inputs, the labels, and how much audio the batch holds (for the training log)."""
    waves, labels, _ = zip(*items, strict=True)
    batch, lengths = collate(waves)
    return (batch, lengths), torch.tensor(labels), float(lengths.sum()) / SAMPLE_RATE


def clip_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, workers: int) -> DataLoader:
    """Length-grouped batches (:class:`LengthGroupedBatches` over ``dataset.lengths()``), collated by the
    dataset's ``collate`` (clips: :func:`collate_items`; cached states: their own)."""
    sampler = LengthGroupedBatches(dataset.lengths(), batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate, num_workers=workers,
                      pin_memory=torch.cuda.is_available())
