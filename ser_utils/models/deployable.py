"""The deployable-model interface, defined once beside the models that implement it (the loader of a
model folder is :func:`ser_utils.models.loading.load_deployable`).

Every model ``predict`` / ``evaluate`` / notebook 06 use - :class:`~ser_utils.models.baseline.BaselineModel`,
:class:`~ser_utils.models.frozen.FrozenEncoderModel`, :class:`~ser_utils.models.classifier.EmotionClassifier` -
is a :class:`Deployable`: labels, input rate, shortest clip, its normalization, and ``predict_proba``.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch

from ..backbones import SpeechEncoder


class ModelLoadError(ValueError):
    """A model directory that cannot be used; the message names it."""


#: Most classes a model may have: each is printed on every file's line (a 10,000-label folder made 89,045-
#: character lines), and emotion label sets have a few dozen at most.
MAX_LABELS = 100
#: Longest class name, in characters (it is printed on every line too).
MAX_LABEL_CHARS = 100


def check_number(value, field: str, low: float, high: float, *, whole: bool = True) -> None:
    """``ValueError`` naming ``field`` unless ``value`` is a number (a whole one when ``whole``) from ``low``
    to ``high``: a model folder's sizes are checked before anything is built from them (a sample rate of
    1e9 made every file allocate 14 GiB, a layer count of 1e30 crashed in C++)."""
    kinds = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise ValueError(f"{field} is {shown(value)}, not a {'whole ' if whole else ''}number from {low:g} to "
                         f"{high:g}")


def shown(value) -> str:
    """A config value as a message shows it: short, on one line (``1e+09``, ``"text"``, ``a list``)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool | int | str) or value is None:
        return json.dumps(value)[:40]
    return f"a {type(value).__name__}"


def check_labels(labels, field: str = "labels") -> tuple[str, ...]:
    """The class names as a tuple; ``ValueError`` naming ``field`` unless they are 2 to :data:`MAX_LABELS`
    distinct non-empty strings of printable characters. A control character is refused, not escaped: a
    label is printed as is in every output line and CSV column, where a tab or line break would split it."""
    if isinstance(labels, str) or not isinstance(labels, list | tuple):
        raise ValueError(f"{field} must be a list of class names")
    if not 2 <= len(labels) <= MAX_LABELS:
        raise ValueError(f"{field}: {len(labels)} classes; a model has 2 to {MAX_LABELS}")
    for label in labels:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"{field}: {shown(label)} is not a class name (a non-empty string of at "
                             f"most {MAX_LABEL_CHARS} characters)")
        odd = next((c for c in label if unicodedata.category(c) == "Cc"), None)
        if odd is not None:
            raise ValueError(f"{field}: {label[:40]!r} holds the control character {odd!r}; class names are "
                             "printed in output lines, where it would split them")
    doubled = sorted({x for x in labels if labels.count(x) > 1})
    if doubled:  # the wording of heads.ModelConfig's own check
        raise ValueError(f"{field}: two or more classes, each named once ({', '.join(doubled[:5])} repeated)")
    return tuple(labels)


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
