"""The deployable-model interface, defined once beside the models that implement it, and the one loader
of a model folder.

Every model ``predict`` / ``evaluate`` / notebook 06 use - :class:`~ser_utils.models.baseline.BaselineModel`,
:class:`~ser_utils.models.frozen.FrozenEncoderModel`, :class:`~ser_utils.models.classifier.EmotionClassifier` -
is a :class:`Deployable`: labels, input rate, shortest clip, its normalization, and ``predict_proba``.
:func:`load_deployable` picks the class from what the folder says it is (its ``format`` field).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..backbones import SpeechEncoder
from ..core.config import SettingError
from .folder import CONFIG_NAME, folder_format


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

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        for wave in waves:
            self.encoder.check_lengths(torch.tensor([len(wave)]))


def load_deployable(directory: str | Path, device: str | None = None, *, allow_pickle: bool = False) -> Deployable:
    """The model in a folder, by the format its config names (:class:`ModelLoadError` naming it otherwise).

    Folders of every earlier layout load: ``ser_utils.EmotionClassifier/1`` and ``/2``,
    ``ser_utils.FrozenEncoderModel/1``, baselines with ``pipeline.skops`` (or a legacy ``pipeline.joblib``
    with ``allow_pickle``).
    """
    from ..core.device import default_device
    from . import baseline, classifier, frozen

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: no such model directory")
    if (directory / CONFIG_NAME).is_file():
        kind = folder_format(directory)
        if kind in frozen.FORMATS:
            return frozen.FrozenEncoderModel.from_pretrained(directory, device)  # ValueError naming the folder
        if kind in classifier.FORMATS:
            return classifier.EmotionClassifier.from_pretrained(directory).to(device or default_device())
        try:
            json.loads((directory / CONFIG_NAME).read_text())
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{directory}: unreadable {CONFIG_NAME} ({err})") from err
        raise ModelLoadError(f"{directory}: {CONFIG_NAME} has format {kind!r}, this code reads "
                             f"{', '.join(classifier.FORMATS + frozen.FORMATS)}: export the model again")
    if baseline.is_baseline_folder(directory):
        try:
            return baseline.BaselineModel.from_pretrained(directory, allow_pickle=allow_pickle)
        except SettingError:
            raise  # a pickle refused: the caller's setting, named as such
        except (OSError, KeyError, ValueError, EOFError) as err:
            raise ModelLoadError(f"not a usable baseline model: {err}") from err
        except Exception as err:  # an allowed pickle can raise anything while it is unpickled
            raise ModelLoadError(f"{directory}: not a usable baseline model ({type(err).__name__}: {err})") from err
    raise ModelLoadError(f"{directory}: not a model directory (expected {CONFIG_NAME} of a trained encoder, "
                         "or config.json + pipeline.skops of a baseline)")
