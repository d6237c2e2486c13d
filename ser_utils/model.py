"""wav2vec 2.0 emotion classifier: a pretrained backbone, a pooling, and a small MLP head.

The original write-up's recipe is one configuration (:data:`ORIGINAL_RECIPE`: last hidden state, first
frame, Linear -> ReLU -> Dropout -> Linear); the project's default (:class:`ModelConfig` defaults) uses
a learned weighted sum of all hidden layers, masked mean pooling and a frozen convolutional front
end, the usual choices of the SER literature (Pepino et al. 2021; Wang et al. 2021; SUPERB).

The backbone is any family of :mod:`ser_utils.backbones` (wav2vec2, HuBERT, WavLM, data2vec-audio),
loaded strictly from its checkpoint. "Last layer" is the backbone's final hidden state (after the
encoder's final layer norm in the layer-norm variants).

Padding never changes a clip's output. Batches are zero-padded at the end, and

* a feature encoder whose first layer is a group norm (wav2vec2-base, HuBERT/WavLM base) normalises
  each clip over its own samples only (:class:`MaskedGroupNorm`), which is also what the model saw in
  pre-training, where batches were cropped rather than padded;
* the transformer gets the frame-level attention mask, derived from the input lengths with the
  model's own output-length formula (:meth:`EmotionClassifier.frame_lengths`), and data2vec-audio's
  stacked positional convolutions see zeros beyond each clip, as a clip alone does;
* every pooling mode ignores padded frames.
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
from transformers import PretrainedConfig, Wav2Vec2Config, Wav2Vec2FeatureExtractor

from .audio import collate, normalize
from .backbones import MaskedGroupNorm, build_backbone, config_from_dict, load_backbone, uses_group_norm
from .corpus import EMOTIONS
from .device import autocast_dtype, inference_batch_size

POOLINGS = ("first", "mean", "mean+std")
LAYER_MODES = ("last", "weighted")
FREEZE_MODES = ("feature-encoder", "backbone", "none")
CONFIG_NAME = "ser_config.json"
WEIGHTS_NAME = "model.safetensors"
#: Written into every saved model folder and checked on load.
FORMAT = "ser_utils.EmotionClassifier/1"


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
    normalize : zero-mean unit-variance per clip before the backbone (from the checkpoint's
        feature extractor, ``do_normalize``).
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


def tiny_backbone_config(**overrides) -> Wav2Vec2Config:
    """A tiny wav2vec2 (group-norm feature encoder, like wav2vec2-base) for tests and the smoke run.

    Receptive field and stride are the real model's (400 samples, 320 = 20 ms), so frame counts match.
    """
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32, 32, 32, 32, 32, 32, 32), num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4, feat_extract_norm="group",
                    do_stable_layer_norm=False, mask_time_prob=0.05, mask_time_length=2)
    return Wav2Vec2Config(**{**settings, **overrides})


class EmotionClassifier(nn.Module):
    """Self-supervised speech backbone + pooling + MLP head.

    ``forward(waves, lengths)`` takes zero-padded, per-clip normalised audio ``(B, T)`` at 16 kHz and
    the true lengths in samples ``(B,)``; it returns logits ``(B, n_classes)``.
    """

    def __init__(self, config: ModelConfig, backbone: nn.Module):
        super().__init__()
        self.config = config
        self.backbone = backbone
        # LayerDrop skips whole layers in training, so the number of hidden states would vary.
        self.backbone.config.layerdrop = 0.0
        self._install_masked_norm()
        self._padded_frames: torch.Tensor | None = None  # valid frames per clip during a padded forward
        self._install_frame_masks()
        n_states = backbone.config.num_hidden_layers + 1
        self.layer_weights = nn.Parameter(torch.zeros(n_states)) if config.layers == "weighted" else None
        width = backbone.config.hidden_size * (2 if config.pooling == "mean+std" else 1)
        self.head = nn.Sequential(
            nn.Linear(width, config.head_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, len(config.labels)),
        )
        self.apply_freeze()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, name_or_dir: str, config: ModelConfig | None = None,
                      **kwargs) -> EmotionClassifier:
        """Head on a pretrained backbone (hub name or local folder), loaded by its family with every
        tensor from the checkpoint (:func:`ser_utils.backbones.load_backbone`; a
        :class:`~ser_utils.backbones.BackboneError` otherwise).

        Input normalisation and rate follow the checkpoint's feature extractor when it has one.
        """
        backbone, _ = load_backbone(name_or_dir, **kwargs)
        config = config or ModelConfig()
        try:
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(name_or_dir)
            config = replace(config, normalize=bool(extractor.do_normalize),
                             sample_rate=int(extractor.sampling_rate))
        except OSError:
            pass  # no preprocessor_config.json: wav2vec2's defaults (normalise, 16 kHz) stand
        return cls(config, backbone)

    @classmethod
    def from_config(cls, backbone_config: PretrainedConfig, config: ModelConfig | None = None):
        """Randomly initialised backbone of the given architecture and family (tests, benchmarks)."""
        return cls(config or ModelConfig(), build_backbone(backbone_config))

    def _install_masked_norm(self) -> None:
        if not uses_group_norm(self.backbone):
            return  # layer-norm feature encoders normalise per frame: already padding-free
        first = self.backbone.feature_extractor.conv_layers[0]
        if not isinstance(first.layer_norm, MaskedGroupNorm):
            first.layer_norm = MaskedGroupNorm(first.layer_norm)
        # Hub configs carry `gradient_checkpointing: true`, which transformers turns into activation
        # checkpointing of every layer. Recomputing the first conv layer in the backward pass would run
        # without the clip lengths (set for the forward pass only) and so differ from the forward
        # (PyTorch's CheckpointError on padded batches). The feature encoder is recomputed exactly or not
        # at all: not at all. Transformer layers get the attention mask as an argument: they stay as set.
        for layer in self.backbone.feature_extractor.conv_layers:
            layer.gradient_checkpointing = False

    def _install_frame_masks(self) -> None:
        # data2vec-audio's positional embedding is a stack of convolutions with layer norms: the first
        # turns the zeroed padding into values that the next ones carry into the clip's own frames.
        # Zeroing padded frames after each layer makes it what a clip alone sees (zero padding).
        # wav2vec2, HuBERT and WavLM use one convolution over zeroed padding: already exact.
        for layer in getattr(self.backbone.encoder.pos_conv_embed, "layers", ()):
            layer.register_forward_hook(self._zero_padded_frames)

    def _zero_padded_frames(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        if self._padded_frames is None:  # output: (B, D, T_frames)
            return None
        steps = torch.arange(output.shape[-1], device=output.device)
        return output * (steps[None, :] < self._padded_frames[:, None]).unsqueeze(1).to(output.dtype)

    @property
    def _masked_norm(self) -> MaskedGroupNorm | None:
        # Looked up, not stored: a second reference would register the module twice.
        norm = self.backbone.feature_extractor.conv_layers[0].layer_norm
        return norm if isinstance(norm, MaskedGroupNorm) else None

    def apply_freeze(self) -> None:
        """Set ``requires_grad`` according to ``config.freeze``."""
        for parameter in self.backbone.parameters():
            parameter.requires_grad = self.config.freeze == "none"
        if self.config.freeze == "feature-encoder":
            for parameter in self.backbone.parameters():
                parameter.requires_grad = True
            self.backbone.feature_extractor._freeze_parameters()  # every family's (HuBERT has no public one)

    # -- shapes -------------------------------------------------------------------------------
    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip for input lengths in samples (the model's own formula)."""
        return self.backbone._get_feat_extract_output_lengths(lengths).long()

    def _first_norm_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.backbone.config.conv_kernel[0], self.backbone.config.conv_stride[0]
        return torch.div(lengths - kernel, stride, rounding_mode="floor") + 1

    # -- forward ------------------------------------------------------------------------------
    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All hidden states ``(B, L+1, T_frames, D)`` and the frame mask ``(B, T_frames)``."""
        if int(self.frame_lengths(lengths).min()) < 1:
            raise ValueError(f"clips of {int(lengths.min())} samples are shorter than one frame "
                             "of the model (400 samples = 25 ms for wav2vec2-base)")
        samples = torch.arange(waves.shape[1], device=waves.device)
        padded = bool((lengths < waves.shape[1]).any())
        sample_mask = (samples[None, :] < lengths[:, None].to(waves.device)).long() if padded else None
        if self._masked_norm is not None:
            self._masked_norm.lengths = self._first_norm_lengths(lengths)
        if padded:
            self._padded_frames = self.frame_lengths(lengths).to(waves.device)
        frozen = self.config.freeze == "backbone"
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                out = self.backbone(waves, attention_mask=sample_mask, output_hidden_states=True)
        finally:
            if self._masked_norm is not None:
                self._masked_norm.lengths = None
            self._padded_frames = None
        # The last entry is the final layer's output; in the layer-norm variants the encoder's final
        # layer norm comes after it, so the model's last_hidden_state is the true last hidden state.
        states = torch.stack((*out.hidden_states[:-1], out.last_hidden_state), dim=1)
        frames = torch.arange(states.shape[2], device=waves.device)
        frame_mask = frames[None, :] < self.frame_lengths(lengths).to(waves.device)[:, None]
        return states, frame_mask

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
        states, mask = self.hidden_states(waves, lengths)
        mean, std = masked_mean_std(states, mask)
        return torch.stack([states[:, :, 0], mean, std], dim=2)

    @torch.inference_mode()
    def predict_proba(self, waves: Sequence[np.ndarray], batch_size: int | None = None,
                      precision: torch.dtype | str | None = "auto") -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (rows sum to 1) for float32 16 kHz clips of any
        lengths. Clips are normalised as in training and batched by length. ``batch_size`` and
        ``precision`` (an autocast dtype, ``None`` for float32) default to what suits the hardware
        (:mod:`ser_utils.device`)."""
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
        pre-processing, the backbone's architecture) and ``model.safetensors`` (all weights)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.config.to_dict(), "backbone": self.backbone.config.to_dict(),
                "format": FORMAT, **(extra or {})}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> EmotionClassifier:
        """Load a directory written by :meth:`save_pretrained`; needs no network and no training code."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_NAME).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{CONFIG_NAME} has format {meta.get('format')!r}, this code reads {FORMAT!r}")
            config = ModelConfig(**{**meta["model"], "labels": tuple(meta["model"]["labels"])})
            backbone = build_backbone(config_from_dict(meta["backbone"]))
            model = cls(config, backbone)
            model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device=map_location))
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


def pool_frames(frames: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``(B, T, D)`` over valid frames (``mask``: ``(B, T)`` bool) -> ``(B, D)`` or ``(B, 2D)``."""
    if pooling == "first":
        return frames[:, 0]
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; choose one of {POOLINGS}")
    mean, std = masked_mean_std(frames, mask)
    return mean if pooling == "mean" else torch.cat([mean, std], dim=-1)


__all__ = ["FORMAT", "FREEZE_MODES", "LAYER_MODES", "ORIGINAL_RECIPE", "POOLINGS", "EmotionClassifier",
           "MaskedGroupNorm", "ModelConfig", "masked_mean_std", "pool_frames", "tiny_backbone_config"]
