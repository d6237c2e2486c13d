"""Emotion classifier on a pretrained speech encoder: the encoder, a layer choice, a pooling, an MLP head
(:mod:`ser_utils.models.heads`), trained end to end by the fine-tuning loop.

The encoder is any :class:`~ser_utils.backbones.SpeechEncoder` (wav2vec2, HuBERT, WavLM,
data2vec-audio, Whisper), loaded strictly from its checkpoint. The classifier sees only what the
interface hands out - every layer's hidden states and a frame mask - so padding never changes a
clip's output here either: every pooling mode ignores padded frames, and the encoders keep padding
out of each clip's own frames (see :mod:`ser_utils.backbones`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig

from ..backbones import SpeechEncoder, build_backbone, lengths_mask, load_backbone
from ..core.device import autocast, autocast_dtype, inference_batch_size
from ..data.audio import collate, longest_first, normalize
from .deployable import EncoderDeployable
from .folder import build_encoder, encoder_meta, load_weights, read_folder, reading, section, write_folder
from .heads import (
    STATS,
    FrozenHead,
    ModelConfig,
    combine_layers,
    layer_statistics,
    layer_weights,
    masked_mean_std,
    mlp_head,
    pool_frames,
)

#: Written into every saved model folder and checked on load; ``/1``: a wav2vec2-style backbone saved
#: under ``backbone.*`` before the encoder interface, still read.
FORMAT = "ser_utils.EmotionClassifier/2"
FORMATS = (FORMAT, "ser_utils.EmotionClassifier/1")


class EmotionClassifier(nn.Module, EncoderDeployable):
    """Speech encoder + layer choice + pooling + MLP head.

    ``forward(waves, lengths)`` takes zero-padded audio ``(B, T)`` at 16 kHz (per-clip normalized when
    ``config.normalize``) and the true lengths in samples ``(B,)``; it returns logits ``(B, n_classes)``.
    """

    def __init__(self, config: ModelConfig, backbone: SpeechEncoder):
        super().__init__()
        if config.layers == "all":
            raise ValueError("layers='all' (every layer's pooled statistics side by side) is a frozen head's input; "
                             "a fine-tuned classifier takes 'last' or 'weighted'")
        self.config = config
        self.backbone = backbone
        self.layer_weights = layer_weights(config, backbone.num_layers + 1)
        self.head = mlp_head(backbone.hidden_size * config.pooled_width, config)
        if config.standardize:  # per hidden state and dimension; identity until warm_start sets them
            self.register_buffer("layer_mean", torch.zeros(backbone.num_layers + 1, backbone.hidden_size))
            self.register_buffer("layer_std", torch.ones(backbone.num_layers + 1, backbone.hidden_size))
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
        """Set ``requires_grad`` according to ``config.freeze`` (or ``config.train_layers``)."""
        self.backbone.freeze(self.config.freeze)
        if self.config.train_layers is not None:
            self.backbone.train_top(self.config.train_layers)

    @property
    def first_trained_layer(self) -> int:
        """Index of the hidden state that is the trained layers' input (``L - train_layers``; 0 otherwise)."""
        return self.backbone.num_layers - (self.config.train_layers or self.backbone.num_layers)

    def train(self, mode: bool = True) -> EmotionClassifier:
        """As ``nn.Module.train``; under partial fine-tuning the fixed layers stay in eval mode (no dropout,
        no SpecAugment), so they give what their cached states hold."""
        super().train(mode)
        if mode and self.config.train_layers is not None:
            self.backbone.eval()
            for module in self.backbone.top_modules(self.config.train_layers):
                module.train()
        return self

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

    def standardized(self, states: torch.Tensor, first: int = 0) -> torch.Tensor:
        """``(B, S, T, D)`` hidden states ``first .. first+S-1`` standardised (``config.standardize``; else as
        they are)."""
        if not self.config.standardize:
            return states
        rows = slice(first, first + states.shape[1])
        return (states - self.layer_mean[None, rows, None].to(states.dtype)) / self.layer_std[None, rows, None].to(
            states.dtype)

    @torch.no_grad()
    def warm_start(self, head: FrozenHead) -> EmotionClassifier:
        """Start from a frozen head trained on this encoder's pooled states (linear probing, then fine-tuning:
        Kumar et al. 2022): its standardisation, layer weights and MLP, so the classifier computes what the
        head does on the frozen encoder. Needs ``config.standardize`` and the head's pooling and layers."""
        if not self.config.standardize or (head.config.pooling, head.config.layers) != (self.config.pooling,
                                                                                          self.config.layers):
            raise ValueError("warm_start: a standardising classifier and a frozen head of the same pooling and layers")
        stat = STATS.index(self.config.pooling)
        self.layer_mean.copy_(head.mean[:, stat])
        self.layer_std.copy_(head.std[:, stat])
        if self.layer_weights is not None:
            self.layer_weights.copy_(head.layer_weights)
        self.head.load_state_dict(head.head.state_dict())
        return self

    def combine_layers(self, states: torch.Tensor) -> torch.Tensor:
        """``(B, L+1, T, D)`` -> ``(B, T, D)``: the last layer, or the learned weighted sum."""
        return combine_layers(states, self.layer_weights)

    def pool(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` frames -> ``(B, D)`` (or ``(B, 2D)`` for mean+std), ignoring padding."""
        return pool_frames(frames, mask, self.config.pooling)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, mask = self.hidden_states(waves, lengths)
        return self.head(self.pool(self.combine_layers(self.standardized(states)), mask))

    def forward_cached(self, x: torch.Tensor, frames: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` from cached lower-layer states, the same as :meth:`forward` on the
        clips (within float tolerance) when ``config.train_layers`` is set and
        ``config.from_cached_states`` is ``None``.

        ``x`` ``(B, T_frames, D)``: hidden state :attr:`first_trained_layer` (zero beyond each clip);
        ``frames`` ``(B,)``: each clip's valid frames; ``lower`` ``(B, S, 3, D)``, ``S >= first_trained_layer``:
        the :func:`~ser_utils.models.heads.layer_statistics` of the hidden states (those below ``x`` are used).
        The top layers run on ``x``; each layer is pooled, then weighted (pooling is linear for ``first`` and
        ``mean``, and so is the standardisation).
        """
        reason = self.config.from_cached_states
        if reason:
            raise ValueError(reason)
        start = self.first_trained_layer
        mask = lengths_mask(frames.to(x.device), x.shape[1])
        upper = self.backbone.forward_from(x, mask, start)
        if self.layer_weights is None:
            return self.head(self.pool(self.standardized(upper[:, -1:], self.backbone.num_layers)[:, 0], mask))
        states = self.standardized(torch.cat([x[:, None].to(upper.dtype), upper], dim=1), start)
        pooled = states[:, :, 0] if self.config.pooling == "first" else masked_mean_std(states, mask)[0]
        below = self.standardized(lower[:, :start, STATS.index(self.config.pooling), None], 0)[:, :, 0]
        below = below.to(pooled.dtype)
        every_layer = torch.cat([below, pooled], dim=1)[:, :, None]  # (B, L+1, 1, D)
        return self.head(combine_layers(every_layer, self.layer_weights)[:, 0])

    @torch.inference_mode()
    def layer_embeddings(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-layer pooled embeddings for the frozen mode: ``(B, L+1, 3, D)`` holding, per hidden
        layer, the first frame, the masked mean and the masked standard deviation."""
        return layer_statistics(*self.hidden_states(waves, lengths))

    # -- the deployable-model interface (predict, evaluate) -----------------------------------
    @property
    def encoder(self) -> SpeechEncoder:
        return self.backbone

    @property
    def model_config(self) -> ModelConfig:
        return self.config

    def describe(self) -> str:
        trained = f", top {self.config.train_layers} trained" if self.config.train_layers else ""
        return (f"fine-tuned {self.backbone.family} ({self.backbone.num_layers} layers x {self.backbone.hidden_size}"
                f"{trained}, layers: {self.config.layers}, pooling: {self.config.pooling})")

    @torch.inference_mode()
    def predict_proba(self, waves: Sequence[np.ndarray], groups: Sequence[str] | None = None,
                      batch_size: int | None = None, precision: torch.dtype | str | None = "auto") -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (rows sum to 1) for float32 16 kHz clips of any
        lengths. Clips are normalized as in training and batched by length. ``batch_size`` and
        ``precision`` (an autocast dtype, ``None`` for float32) default to what suits the hardware
        (:mod:`ser_utils.core.device`). ``groups`` (adaptation) is refused: see :attr:`needs_groups`."""
        if groups is not None:
            from ..features.normalization import GroupError

            raise GroupError(f"adaptation standardises features per group, and a fine-tuned {self.backbone.family} "
                             "network has none to standardise: score it without adaptation, or use a baseline "
                             "or frozen-encoder model")
        self.eval()
        device = next(self.parameters()).device
        batch_size = batch_size or inference_batch_size(device)
        dtype = autocast_dtype(device) if precision == "auto" else precision
        probs = np.zeros((len(waves), len(self.config.labels)), dtype=np.float32)
        for rows in longest_first([len(w) for w in waves], batch_size):
            batch, lengths = collate([normalize(waves[i]) if self.config.normalize else waves[i]
                                      for i in rows])
            with autocast(device, dtype):
                logits = self(batch.to(device), lengths.to(device))
            probs[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return probs

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write a self-contained model folder (:mod:`ser_utils.models.folder`): head settings, labels,
        pre-processing, the backbone's architecture and options, and all weights."""
        meta = {"model": self.config.to_dict(), **encoder_meta(self.backbone), "format": FORMAT, **(extra or {})}
        return write_folder(directory, meta, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> EmotionClassifier:
        """Load a folder written by :meth:`save_pretrained` (or the earlier layout); needs no network and
        no training code."""
        with reading(directory, "emotion-classifier checkpoint"):
            meta, state = read_folder(directory, FORMATS, map_location)
            settings = section(meta, "model")
            config = ModelConfig(**{**settings, "labels": tuple(settings["labels"])})
            model = cls(config, build_encoder(meta, config.normalize))
            if meta["format"] != FORMAT:  # the wav2vec2 model itself was the backbone
                state = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
                         for k, v in state.items()}
            load_weights(model, state, "model")
        return model.eval()


__all__ = ["FORMAT", "FORMATS", "EmotionClassifier", "layer_statistics"]
