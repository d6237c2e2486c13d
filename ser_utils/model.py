"""Emotion classifier on a pretrained speech encoder: the encoder, a layer choice, a pooling, an MLP head.

The original write-up's recipe is one configuration (:data:`ORIGINAL_RECIPE`: last hidden state, first
frame, Linear -> ReLU -> Dropout -> Linear); the project's default (:class:`ModelConfig` defaults) uses
a learned weighted sum of all hidden layers, masked mean pooling and a frozen convolutional front
end, the usual choices of the SER literature (Pepino et al. 2021; Wang et al. 2021; SUPERB).

The encoder is any :class:`~ser_utils.backbones.SpeechEncoder` (wav2vec2, HuBERT, WavLM,
data2vec-audio, Whisper), loaded strictly from its checkpoint. The classifier sees only what the
interface hands out - every layer's hidden states and a frame mask - so padding never changes a
clip's output here either: every pooling mode ignores padded frames, and the encoders keep padding
out of each clip's own frames (see :mod:`ser_utils.backbones`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PretrainedConfig

from .atomic import atomic_path, atomic_write_text
from .audio import collate, normalize
from .backbones import FREEZE_MODES, MaskedGroupNorm, SpeechEncoder, build_backbone, config_from_dict, load_backbone
from .corpus import EMOTIONS
from .device import autocast_dtype, inference_batch_size

POOLINGS = ("first", "mean", "mean+std")
LAYER_MODES = ("last", "weighted")
CONFIG_NAME = "ser_config.json"
WEIGHTS_NAME = "model.safetensors"
#: Written into every saved model folder and checked on load (``/1``: a wav2vec2-style backbone saved
#: under ``backbone.*`` before the encoder interface, still read).
FORMAT = "ser_utils.EmotionClassifier/2"
OLD_FORMATS = ("ser_utils.EmotionClassifier/1",)


@dataclass(frozen=True)
class ModelConfig:
    """What the classifier looks like on top of the backbone.

    Attributes
    ----------
    pooling : ``"first"`` (frame 0, the original's "CLS-like" token), ``"mean"`` (masked mean over
        frames) or ``"mean+std"`` (masked statistics pooling; doubles the head's input).
    layers : ``"last"`` (last hidden state) or ``"weighted"`` (softmax-weighted sum of all hidden
        states, weights learned).
    head_hidden : width of the head's hidden layer.
    dropout : dropout between the head's two linear layers.
    freeze : ``"feature-encoder"`` (convolutional front end fixed), ``"backbone"`` (only the head
        and layer weights train) or ``"none"``.
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
    labels: tuple[str, ...] = EMOTIONS
    sample_rate: int = 16_000
    normalize: bool = True

    def __post_init__(self):
        for name, value, allowed in (("pooling", self.pooling, POOLINGS),
                                     ("layers", self.layers, LAYER_MODES),
                                     ("freeze", self.freeze, FREEZE_MODES)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; choose one of {allowed}")
        object.__setattr__(self, "labels", tuple(self.labels))

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}


#: The original write-up: last hidden state, first frame, Linear(768, 256) -> ReLU -> Dropout ->
#: Linear(256, 8), whole backbone trained.
ORIGINAL_RECIPE = ModelConfig(pooling="first", layers="last", head_hidden=256, dropout=0.3, freeze="none")


class EmotionClassifier(nn.Module):
    """Speech encoder + layer choice + pooling + MLP head.

    ``forward(waves, lengths)`` takes zero-padded audio ``(B, T)`` at 16 kHz (per-clip normalized when
    ``config.normalize``) and the true lengths in samples ``(B,)``; it returns logits ``(B, n_classes)``.
    """

    def __init__(self, config: ModelConfig, backbone: SpeechEncoder):
        super().__init__()
        self.config = config
        self.backbone = backbone
        n_states = backbone.num_layers + 1
        self.layer_weights = nn.Parameter(torch.zeros(n_states)) if config.layers == "weighted" else None
        width = backbone.hidden_size * (2 if config.pooling == "mean+std" else 1)
        self.head = nn.Sequential(
            nn.Linear(width, config.head_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, len(config.labels)),
        )
        self.apply_freeze()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, name_or_dir: str, config: ModelConfig | None = None, *,
                      options: dict | None = None, **kwargs) -> EmotionClassifier:
        """Head on a pretrained backbone (hub name, local folder or installed weight package), loaded
        by its family with every tensor from the checkpoint (:func:`ser_utils.backbones.load_backbone`;
        a :class:`~ser_utils.backbones.BackboneError` otherwise). ``options``: the encoder's own
        settings (Whisper: ``{"input": "clip" | "pad30"}``).

        Input normalization and rate follow the encoder (a wav2vec2 checkpoint's feature extractor).
        """
        backbone, _ = load_backbone(name_or_dir, options=options, **kwargs)
        config = replace(config or ModelConfig(), normalize=backbone.normalize_input,
                         sample_rate=backbone.sample_rate)
        return cls(config, backbone)

    @classmethod
    def from_config(cls, backbone_config: PretrainedConfig, config: ModelConfig | None = None,
                    options: dict | None = None):
        """Randomly initialised backbone of the given architecture and family (tests, benchmarks)."""
        backbone = build_backbone(backbone_config, options)
        return cls(replace(config or ModelConfig(), normalize=backbone.normalize_input), backbone)

    def apply_freeze(self) -> None:
        """Set ``requires_grad`` according to ``config.freeze``."""
        self.backbone.freeze(self.config.freeze)

    # -- shapes -------------------------------------------------------------------------------
    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip for input lengths in samples (the encoder's own formula)."""
        return self.backbone.frame_lengths(lengths)

    # -- forward ------------------------------------------------------------------------------
    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All hidden states ``(B, L+1, T_frames, D)`` and the frame mask ``(B, T_frames)``."""
        frozen = self.config.freeze == "backbone"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return self.backbone(waves, lengths)

    def combine_layers(self, states: torch.Tensor) -> torch.Tensor:
        """``(B, L+1, T, D)`` -> ``(B, T, D)``: the last layer, or the learned weighted sum."""
        if self.layer_weights is None:
            return states[:, -1]
        weights = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
        return torch.einsum("l,bltd->btd", weights, states)

    def pool(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` frames -> ``(B, D)`` (or ``(B, 2D)`` for mean+std), ignoring padding."""
        return pool_frames(frames, mask, self.config.pooling)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, mask = self.hidden_states(waves, lengths)
        return self.head(self.pool(self.combine_layers(states), mask))

    @torch.inference_mode()
    def layer_embeddings(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-layer pooled embeddings for the frozen mode: ``(B, L+1, 3, D)`` holding, per hidden
        layer, the first frame, the masked mean and the masked standard deviation."""
        return layer_statistics(*self.hidden_states(waves, lengths))

    # -- the deployable-model interface (predict, evaluate) -----------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.config.labels)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def min_seconds(self) -> float:
        """Shortest clip the encoder takes, in seconds."""
        return self.backbone.min_samples / self.backbone.sample_rate

    needs_groups = False  # a fine-tuned network has no features to standardise per group
    normalization = None

    def describe(self) -> str:
        return (f"fine-tuned {self.backbone.family} ({self.backbone.num_layers} layers x {self.backbone.hidden_size}, "
                f"layers: {self.config.layers}, pooling: {self.config.pooling})")

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        """The ``ValueError`` a clip would raise in :meth:`predict_proba`, without scoring it."""
        for wave in waves:
            self.backbone.check_lengths(torch.tensor([len(wave)]))

    @torch.inference_mode()
    def predict_proba(self, waves: Sequence[np.ndarray], groups: Sequence[str] | None = None,
                      batch_size: int | None = None, precision: torch.dtype | str | None = "auto") -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (rows sum to 1) for float32 16 kHz clips of any
        lengths. Clips are normalized as in training and batched by length. ``batch_size`` and
        ``precision`` (an autocast dtype, ``None`` for float32) default to what suits the hardware
        (:mod:`ser_utils.device`). ``groups`` (adaptation) is refused: see :attr:`needs_groups`."""
        if groups is not None:
            from .normalization import GroupError

            raise GroupError(f"adaptation standardises features per group, and a fine-tuned {self.backbone.family} "
                             "network has none to standardise: score it without adaptation, or use a baseline "
                             "or frozen-encoder model")
        self.eval()
        device = next(self.parameters()).device
        batch_size = batch_size or inference_batch_size(device)
        dtype = autocast_dtype(device) if precision == "auto" else precision
        probs = np.zeros((len(waves), len(self.config.labels)), dtype=np.float32)
        order = np.argsort([-len(w) for w in waves], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch, lengths = collate([normalize(waves[i]) if self.config.normalize else waves[i]
                                      for i in rows])
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = self(batch.to(device), lengths.to(device))
            probs[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return probs

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write a self-contained model directory: ``ser_config.json`` (head settings, labels,
        pre-processing, the backbone's architecture and options) and ``model.safetensors`` (all weights)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.config.to_dict(), "backbone": self.backbone.config.to_dict(),
                "backbone_options": self.backbone.options, "format": FORMAT, **(extra or {})}
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as weights:  # weights first: a config names a whole folder
            save_file(state, str(weights))
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> EmotionClassifier:
        """Load a directory written by :meth:`save_pretrained`; needs no network and no training code."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_NAME).read_text())
            if meta.get("format") not in (FORMAT, *OLD_FORMATS):
                raise ValueError(f"{CONFIG_NAME} has format {meta.get('format')!r}, this code reads {FORMAT!r}")
            config = ModelConfig(**{**meta["model"], "labels": tuple(meta["model"]["labels"])})
            backbone = build_backbone(config_from_dict(meta["backbone"]), meta.get("backbone_options"),
                                      normalize_input=config.normalize)  # Whisper's encoder takes none
            model = cls(config, backbone)
            state = load_file(str(directory / WEIGHTS_NAME), device=map_location)
            if meta["format"] in OLD_FORMATS:  # the wav2vec2 model itself was the backbone
                state = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
                         for k, v in state.items()}
            model.load_state_dict(state)
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, SafetensorError) as err:
            raise ValueError(f"{directory}: not a usable emotion-classifier checkpoint ({err})") from err
        return model.eval()


def masked_mean_std(frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over the valid frames only: ``frames`` ``(B, ..., T, D)`` and ``mask``
    ``(B, T)`` (bool) -> two ``(B, ..., D)`` tensors. The one masked statistic of the package (pooling,
    frozen-embedding cache)."""
    weights = mask.reshape(mask.shape[0], *([1] * (frames.ndim - 3)), mask.shape[1], 1).to(frames.dtype)
    count = weights.sum(-2).clamp(min=1)
    mean = (frames * weights).sum(-2) / count
    var = (((frames - mean.unsqueeze(-2)) * weights) ** 2).sum(-2) / count
    return mean, var.clamp(min=1e-8).sqrt()


def layer_statistics(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every layer's first frame, masked mean and masked standard deviation: ``states``
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


__all__ = ["FORMAT", "FREEZE_MODES", "LAYER_MODES", "ORIGINAL_RECIPE", "POOLINGS", "EmotionClassifier",
           "MaskedGroupNorm", "ModelConfig", "layer_statistics", "masked_mean_std", "pool_frames"]
