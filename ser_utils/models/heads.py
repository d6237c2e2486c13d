"""What sits on an encoder's hidden states: the layer choice, the pooling and the MLP head.

One definition for both ways the study trains a head: :class:`~ser_utils.models.classifier.EmotionClassifier`
runs them on the encoder's frames, :class:`FrozenHead` on the cached per-layer statistics of the frozen mode.
The original write-up's recipe is one configuration (:data:`ORIGINAL_RECIPE`: last hidden state, first frame,
Linear -> ReLU -> Dropout -> Linear); the project's default (:class:`ModelConfig` defaults) is a learned
weighted sum of all hidden layers with masked mean pooling, the usual choices of the SER literature
(Pepino et al. 2021; Wang et al. 2021; SUPERB). Every pooling ignores padded frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from ..backbones import FREEZE_MODES, masked_moments
from ..data.corpus import EMOTIONS

POOLINGS = ("first", "mean", "mean+std")
LAYER_MODES = ("last", "weighted", "all")
#: The per-layer statistics of the frozen mode, in cache order.
STATS = ("first", "mean", "std")


@dataclass(frozen=True)
class ModelConfig:
    """What the classifier looks like on top of the backbone.

    Attributes
    ----------
    pooling : ``"first"`` (frame 0, the original's "CLS-like" token), ``"mean"`` (masked mean over
        frames) or ``"mean+std"`` (masked statistics pooling; doubles the head's input).
    layers : ``"last"`` (last hidden state), ``"weighted"`` (softmax-weighted sum of all hidden
        states, weights learned) or ``"all"`` (every hidden state's pooled statistics side by side: a
        frozen head's input, ``(L+1) x D`` wide per statistic).
    head_hidden : width of the head's hidden layer; 0: a linear head (one Linear layer).
    dropout : dropout between the head's two linear layers.
    freeze : ``"feature-encoder"`` (convolutional front end fixed), ``"backbone"`` (only the head
        and layer weights train) or ``"none"``.
    train_layers : partial fine-tuning: only the top ``k`` transformer layers of the encoder train (with
        the norm after them, the layer weights and the head), everything below is fixed and runs in
        eval mode; ``None``: what ``freeze`` says.
    standardize : standardise each hidden layer's frames per dimension with training-set statistics of
        the pooled statistic (buffers), as :class:`FrozenHead` standardises its input: the classifier then
        computes exactly what a frozen head does, and can start from one
        (:meth:`~ser_utils.models.classifier.EmotionClassifier.warm_start`: linear probing, then
        fine-tuning). Pooling ``first`` or ``mean``.
    labels : class names, in output order.
    sample_rate : input rate in Hz.
    normalize : zero-mean unit-variance per clip before the backbone (the encoder's
        ``normalize_input``: wav2vec2-style checkpoints' ``do_normalize``; never for Whisper).
    """

    pooling: str = "mean"
    layers: str = "weighted"
    head_hidden: int = 256
    dropout: float = 0.2
    freeze: str = "feature-encoder"
    train_layers: int | None = None
    standardize: bool = False
    labels: tuple[str, ...] = EMOTIONS
    sample_rate: int = 16_000
    normalize: bool = True

    def __post_init__(self):
        for name, value, allowed in (("pooling", self.pooling, POOLINGS),
                                     ("layers", self.layers, LAYER_MODES),
                                     ("freeze", self.freeze, FREEZE_MODES)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; choose one of {allowed}")
        if self.train_layers is not None:
            if isinstance(self.train_layers, bool) or not isinstance(self.train_layers, int) or self.train_layers < 1:
                raise ValueError(f"train_layers={self.train_layers!r}; a whole number >= 1 (None: as freeze says)")
            if self.freeze == "backbone":
                raise ValueError("train_layers trains encoder layers, freeze='backbone' trains none: choose one")
        if isinstance(self.head_hidden, bool) or not isinstance(self.head_hidden, int) or self.head_hidden < 0:
            raise ValueError(f"head_hidden={self.head_hidden!r}; a whole number >= 0 (0: a linear head)")
        if self.standardize and self.pooling not in ("first", "mean"):
            raise ValueError(f"standardize: with pooling 'first' or 'mean' (a frozen head's), not {self.pooling!r}")
        if isinstance(self.labels, str) or not all(isinstance(label, str) and label.strip() for label in self.labels):
            raise ValueError(f"labels={self.labels!r}; class names, each a non-empty string")
        object.__setattr__(self, "labels", tuple(self.labels))
        doubled = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if len(self.labels) < 2 or doubled:
            raise ValueError(f"labels={list(self.labels)}: two or more classes, each named once"
                             + (f" ({', '.join(doubled)} repeated)" if doubled else ""))

    @property
    def from_cached_states(self) -> str | None:
        """Why the top layers cannot train from cached lower-layer states (``None``: they can).

        The cache holds, per clip, the input of the first trained layer (every frame) and the pooled
        statistics of each frozen layer; the weighted layer sum is then taken after pooling, which is the
        same for the first frame and the masked mean (both linear) but not for the standard deviation."""
        if self.train_layers is None:
            return "only partial fine-tuning (train_layers) trains from cached states"
        if self.pooling == "mean+std" and self.layers == "weighted":
            return ("a weighted sum of layers pooled with mean+std needs every frozen layer's frames: train "
                    "through the whole encoder, or pool with mean")
        return None

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}

    @property
    def pooled_width(self) -> int:
        """How many ``D``-wide vectors the pooling hands the head (2 for mean+std)."""
        return 2 if self.pooling == "mean+std" else 1

    @property
    def head_name(self) -> str:
        """What the head is, in a few characters: ``mlp-weighted-mean``, ``linear-all-mean+std``, ..."""
        return f"{'linear' if self.head_hidden == 0 else 'mlp'}-{self.layers}-{self.pooling}"


#: The original write-up: last hidden state, first frame, Linear(768, 256) -> ReLU -> Dropout ->
#: Linear(256, 8), whole backbone trained.
ORIGINAL_RECIPE = ModelConfig(pooling="first", layers="last", head_hidden=256, dropout=0.3, freeze="none")


def layer_weights(config: ModelConfig, n_states: int) -> nn.Parameter | None:
    """The learned layer weights (logits, zeros: every layer equal at the start), or ``None`` for ``last``."""
    return nn.Parameter(torch.zeros(n_states)) if config.layers == "weighted" else None


def combine_layers(states: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``(B, L+1, X, D)`` -> ``(B, X, D)``: the last layer, or the softmax-weighted sum over layers
    (``X``: frames, or the statistics of the frozen mode)."""
    if weights is None:  # "last"; "all" never combines (FrozenHead.classify)
        return states[:, -1]
    return torch.einsum("l,blxd->bxd", torch.softmax(weights, dim=0).to(states.dtype), states)


def mlp_head(width: int, config: ModelConfig) -> nn.Sequential:
    """Linear(width, hidden) -> ReLU -> Dropout -> Linear(hidden, n_classes): logits ``(B, n_classes)``;
    ``head_hidden=0``: Linear(width, n_classes) alone."""
    if config.head_hidden == 0:
        return nn.Sequential(nn.Linear(width, len(config.labels)))
    return nn.Sequential(nn.Linear(width, config.head_hidden), nn.ReLU(), nn.Dropout(config.dropout),
                         nn.Linear(config.head_hidden, len(config.labels)))


def masked_mean_std(frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over the valid frames only: ``frames`` ``(B, ..., T, D)`` and ``mask``
    ``(B, T)`` (bool) -> two ``(B, ..., D)`` tensors (the standard deviation at least 1e-4)."""
    weights = mask.reshape(mask.shape[0], *([1] * (frames.ndim - 3)), mask.shape[1], 1).to(frames.dtype)
    mean, var = masked_moments(frames, weights, -2)
    return mean, var.clamp(min=1e-8).sqrt()


def layer_statistics(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every layer's first frame, masked mean and masked standard deviation (:data:`STATS`): ``states``
    ``(B, L+1, T, D)`` and ``mask`` ``(B, T)`` -> ``(B, L+1, 3, D)`` (the frozen-embedding cache)."""
    mean, std = masked_mean_std(states, mask)
    return torch.stack([states[:, :, 0], mean, std], dim=2)


def pool_frames(frames: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``(B, T, D)`` over valid frames (``mask``: ``(B, T)`` bool) -> ``(B, D)`` or ``(B, 2D)``."""
    if pooling == "first":
        return frames[:, 0]
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; choose one of {POOLINGS}")
    mean, std = masked_mean_std(frames, mask)
    return mean if pooling == "mean" else torch.cat([mean, std], dim=-1)


class FrozenHead(nn.Module):
    """The classifier head of :class:`~ser_utils.models.classifier.EmotionClassifier` on cached per-layer
    statistics.

    Input ``(B, L+1, 3, D)`` (:func:`layer_statistics`); features are standardised with training-set
    statistics (per layer, statistic and dimension), then combined over layers (:func:`combine_layers`),
    pooled as configured (the statistics the pooling reads, side by side) and classified by
    :func:`mlp_head` (``layers="all"``: every layer's statistics side by side, uncombined). ``forward`` =
    :meth:`classify` of :meth:`standardise`; training standardises once.
    """

    #: The statistics (of :data:`STATS`) each pooling reads.
    POOLED: ClassVar[dict[str, list[int]]] = {"first": [0], "mean": [1], "mean+std": [1, 2]}

    def __init__(self, config: ModelConfig, n_layers: int, dim: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.config = config
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.layer_weights = layer_weights(config, n_layers)
        self.head = mlp_head(dim * config.pooled_width * (n_layers if config.layers == "all" else 1), config)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L+1, 3, D)`` -> the standardised statistics the pooling reads, ``(B, L+1, S, D)``."""
        stats = self.POOLED[self.config.pooling]
        return (x[:, :, stats] - self.mean[:, stats]) / self.std[:, stats]

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` of standardised statistics (:meth:`standardise`)."""
        if self.config.layers == "all":  # every layer side by side
            return self.head(z.flatten(1))
        return self.head(combine_layers(z, self.layer_weights).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.standardise(x))
