"""The deployable-model interface, defined once beside the models that implement it (the loader of a
model folder is :func:`ser_utils.models.loading.load_deployable`).

Every model ``predict`` / ``evaluate`` / notebook 06 use - :class:`~ser_utils.models.baseline.BaselineModel`,
:class:`~ser_utils.models.frozen.FrozenEncoderModel`, :class:`~ser_utils.models.classifier.EmotionClassifier` -
is a :class:`Deployable`: labels, input rate, shortest clip, its normalization, and ``predict_proba``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..backbones import SpeechEncoder


class ModelLoadError(ValueError):
    """A model directory that cannot be used; the message names it."""


class Deployable:
    """What every deployable model offers: waveforms in, probabilities over :attr:`labels` out.

    Subclasses set ``labels`` (class names, in column order), ``sample_rate`` (Hz), ``min_seconds``
    (shortest clip) and ``normalization`` (how the training features were normalized; ``None``: not at
    all), and implement :meth:`describe`, :meth:`check_clips` and :meth:`predict_proba`.
    """

    labels: tuple[str, ...]
    sample_rate: int
    min_seconds: float
    #: Longest clip, in seconds (``None``: any length; a Whisper encoder: its 30 s input).
    max_seconds: float | None = None
    normalization: dict | None = None

    @property
    def needs_groups(self) -> bool:
        """Whether prediction needs groups of clips (a speaker-normalized model)."""
        return self.normalization is not None

    def describe(self) -> str:
        raise NotImplementedError

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        """Raise the ``ValueError`` a clip would raise in :meth:`predict_proba`, without scoring it."""
        raise NotImplementedError

    def predict_proba(self, waves: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> np.ndarray:
        """``(n, len(labels))`` probabilities of float32 mono clips at :attr:`sample_rate`, rows summing to 1."""
        raise NotImplementedError


class EncoderDeployable(Deployable):
    """A :class:`Deployable` on a speech encoder: rate, shortest clip and clip checks are the encoder's.
    Subclasses provide ``encoder`` and ``model_config`` (a :class:`~ser_utils.models.heads.ModelConfig`)."""

    encoder: SpeechEncoder

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model_config.labels)

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @property
    def min_seconds(self) -> float:
        """Shortest clip the encoder takes, in seconds (400 samples = 25 ms for wav2vec2-base and Whisper)."""
        return self.encoder.min_samples / self.encoder.sample_rate

    @property
    def max_seconds(self) -> float | None:
        longest = self.encoder.max_samples
        return None if longest is None else longest / self.encoder.sample_rate

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        for wave in waves:
            self.encoder.check_lengths(torch.tensor([len(wave)]))
