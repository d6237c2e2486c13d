"""Partial fine-tuning from cached states: the fixed lower layers run once per clip, not once per epoch.

With ``ModelConfig(train_layers=k)`` only the encoder's top ``k`` layers train (with the norm after them,
the layer weights and the head). Everything below is fixed, so its output for a clip never changes:
:func:`cache_layer_states` takes it from the frozen mode's encoder pass
(:func:`~ser_utils.training.embeddings.extract_embeddings`, one pass per clip for both modes, keyed by
the file's content, the checkpoint, the encoder's options, the precision and the code), two arrays per
clip:

* the input of the first trained layer, every frame of the clip: ``(T_frames, D)`` float16 (for
  Whisper-base about 0.2 MB for a 3.7 s clip);
* the :func:`~ser_utils.models.heads.layer_statistics` of every hidden state of the frozen encoder,
  ``(L + 1, 3, D)`` float16 (the frozen mode's embeddings): those below the trained layers let the weighted
  layer sum see every layer; all of them train the frozen head a standardising classifier starts from
  (``ModelConfig.standardize``: linear probing, then fine-tuning).

Each epoch then runs only the ``k`` top layers (:meth:`EmotionClassifier.forward_cached`), which gives
the same logits as the whole encoder with the lower layers fixed (tested), up to the float16 storage.

**Crops.** Training here uses whole clips. A random crop of the audio (``TrainConfig.max_seconds``) would
change every fixed layer's states (attention spans the clip), which is what the cache exists to avoid
recomputing; a crop of the cached frames would hand the trained layers states contextualised over the
whole clip but cut, which they never see at test time. RAVDESS clips average 3.7 s, so the project
recipe's 3 s crops cut little; the cached path asks for ``max_seconds=None`` and says so otherwise.
Likewise SpecAugment (wav2vec2's time masks before the transformer) acts below the trained layers and
does not apply: the fixed layers run in eval mode in both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..backbones import SpeechEncoder
from ..data.audio import SAMPLE_RATE
from ..models.classifier import EmotionClassifier
from .embeddings import extract_embeddings


@dataclass
class CachedStates:
    """What :func:`cache_layer_states` gives, keyed by path: the first trained layer's input ``(T, D)``,
    every hidden state's statistics ``(L+1, 3, D)`` (both float16), and the files that failed;
    ``frame_rate``: encoder frames per second of audio."""

    start: int
    frame_rate: float
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    lower: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    computed: int = 0

    def dataset(self, paths: Sequence[str], labels: Sequence[int]) -> CachedStatesDataset:
        """The clips of ``paths`` (all cached) with their class indices."""
        return CachedStatesDataset([self.inputs[p] for p in paths], [self.lower[p] for p in paths], labels,
                                   self.frame_rate)


def cache_layer_states(encoder: SpeechEncoder, paths: Sequence[str | Path], cache_root: str | Path, model_id: str,
                       train_layers: int, *, dtype: torch.dtype | str = "auto", batch_size: int | None = None,
                       progress: bool = True) -> CachedStates:
    """The cached lower-layer states of every file for training the top ``train_layers`` layers.

    The frozen mode's embeddings with the frames of the first trained layer's input
    (:func:`~ser_utils.training.embeddings.extract_embeddings` with ``frames_of``): one encoder pass
    serves both, and whichever runs second reads the cache. ``model_id`` names the checkpoint
    (``backbones.backbone_fingerprint``); ``dtype`` is the encoder's autocast precision (``"auto"``: bf16
    where the hardware runs it natively), part of the key. Whisper with ``input="pad30"`` is refused: each
    clip would hold 1,500 frames (8x the memory and the work). Files that fail to load are reported in
    ``failures`` and left out.
    """
    if encoder.options.get("input") == "pad30":
        raise ValueError("cached states of Whisper's pad30 input would hold 1,500 frames per clip: use input='clip' "
                         "or train through the whole encoder")
    start = encoder.num_layers - train_layers
    encoder.check_start(start)
    found = extract_embeddings(encoder, paths, cache_root, model_id, batch_size=batch_size, dtype=dtype,
                               frames_of=(start,), progress=progress)
    return CachedStates(start, frame_rate(encoder), found.frames[start], found.arrays, found.failures, found.hits,
                        found.computed)


class CachedStatesDataset(Dataset):
    """Clips as cached states: items ``(input (T, D), statistics (L+1, 3, D), label, seconds)``.

    :meth:`collate` pads the inputs with zeros to the batch's longest clip: ``((x (B, T, D), frames (B,),
    lower (B, L+1, 3, D)), labels (B,), audio seconds)``, the arguments of
    :meth:`EmotionClassifier.forward_cached`.
    """

    normalize = False  # set by the loop for clip datasets; states are past any input normalization

    def __init__(self, inputs: Sequence[np.ndarray], lower: Sequence[np.ndarray], labels: Sequence[int],
                 frame_rate: float):
        self.inputs, self.lower = list(inputs), list(lower)
        self.labels, self.frame_rate = np.asarray(labels, dtype=np.int64), frame_rate
        self.train, self.epoch = False, 0

    def __len__(self) -> int:
        return len(self.inputs)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.inputs]

    def __getitem__(self, index: int):
        return self.inputs[index], self.lower[index], int(self.labels[index]), len(self.inputs[index]) / self.frame_rate

    @staticmethod
    def collate(items):
        inputs, lower, labels, seconds = zip(*items, strict=True)
        frames = torch.tensor([len(x) for x in inputs])
        x = torch.zeros(len(inputs), int(frames.max()), inputs[0].shape[-1])
        for row, array in enumerate(inputs):
            x[row, :len(array)] = torch.from_numpy(array.astype(np.float32))
        lower = torch.from_numpy(np.stack(lower).astype(np.float32))
        return (x, frames, lower), torch.tensor(labels), float(sum(seconds))


class FromCachedStates(nn.Module):
    """A classifier trained from cached states: ``forward(x, frames, lower)`` is its
    :meth:`~EmotionClassifier.forward_cached`; it saves (and its ``best/`` folder loads) as the classifier
    itself, which scores audio through the whole encoder."""

    def __init__(self, classifier: EmotionClassifier):
        super().__init__()
        reason = classifier.config.from_cached_states
        if reason:
            raise ValueError(reason)
        self.classifier = classifier

    @property
    def config(self):
        return self.classifier.config

    def train(self, mode: bool = True) -> FromCachedStates:
        self.training = mode
        self.classifier.train(mode)  # its own rule: the fixed layers stay in eval mode
        return self

    def forward(self, x: torch.Tensor, frames: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        return self.classifier.forward_cached(x, frames, lower)

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        return self.classifier.save_pretrained(directory, extra)


def frame_rate(encoder: SpeechEncoder) -> float:
    """Encoder frames per second of audio (50 for wav2vec2 and Whisper)."""
    second = torch.tensor([10 * SAMPLE_RATE])
    return float(encoder.frame_lengths(second)[0]) / 10
