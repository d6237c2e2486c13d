"""Self-supervised waveform encoders: wav2vec2 (base, large-lv60, XLS-R), HuBERT, WavLM, data2vec-audio.

Each ``model_type`` is built with its own transformers class (:data:`FAMILIES`) and wrapped in
:class:`SSLEncoder`, which keeps padding out of every clip's output:

* feature encoders whose first layer is a per-channel group norm (wav2vec2-base, HuBERT/WavLM base)
  normalize over time, so each clip is normalized over its own samples only (:class:`MaskedGroupNorm`),
  which is also what the model saw in pre-training, where batches were cropped rather than padded;
* the transformer gets the frame-level attention mask, derived from the input lengths with the
  model's own output-length formula, and data2vec-audio's stacked positional convolutions see zeros
  beyond each clip, as a clip alone does.

"Last layer" is the model's ``last_hidden_state`` (after the encoder's final layer norm in the
layer-norm variants).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import BackboneError, SpeechEncoder, lengths_mask, masked_moments

GROUP_NORM_PADDING = "masked group norm + attention mask"
LAYER_NORM_PADDING = "attention mask"


@dataclass(frozen=True)
class Family:
    """A backbone family: its ``model_type``, its transformers classes and its key prefix in task models."""

    model_type: str
    config_class: str
    model_class: str
    prefix: str

    def classes(self):
        import transformers

        return getattr(transformers, self.config_class), getattr(transformers, self.model_class)


SSL_FAMILIES = {family.model_type: family for family in (
    Family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", "wav2vec2"),
    Family("hubert", "HubertConfig", "HubertModel", "hubert"),
    Family("wavlm", "WavLMConfig", "WavLMModel", "wavlm"),
    Family("data2vec-audio", "Data2VecAudioConfig", "Data2VecAudioModel", "data2vec_audio"),
)}


class MaskedGroupNorm(nn.Module):
    """Per-channel normalization over each clip's valid frames only (wav2vec2-base's first norm).

    A drop-in for ``nn.GroupNorm(C, C)`` with the same parameter names. ``lengths`` (valid frames per
    row) is set by :class:`SSLEncoder` around each forward pass; with ``lengths=None`` it is exactly
    ``nn.GroupNorm``.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        if norm.num_groups != norm.num_channels:
            raise ValueError("MaskedGroupNorm replaces per-channel GroupNorm(C, C) only")
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.lengths: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, T)
        if self.lengths is None or bool((self.lengths >= x.shape[-1]).all()):
            # No padding: the fused kernel (autocast runs group norm in float32).
            return nn.functional.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
        dtype, x = x.dtype, x.float()  # statistics over ~10^4 frames need float32, also under bf16
        mask = lengths_mask(self.lengths.to(x.device), x.shape[-1]).unsqueeze(1).float()
        mean, var = masked_moments(x, mask, -1, keepdim=True)
        normed = (x - mean) * torch.rsqrt(var + self.eps)
        return (normed * self.weight[None, :, None].float() + self.bias[None, :, None].float()).to(dtype)


def uses_group_norm(model: nn.Module) -> bool:
    """Whether the feature encoder's first layer normalizes over time (a group norm, possibly masked),
    which padding would change; layer norms work per frame. Read from the model, not the config:
    data2vec-audio has layer norms whatever its config says."""
    return isinstance(getattr(model.feature_extractor.conv_layers[0], "layer_norm", None),
                      (nn.GroupNorm, MaskedGroupNorm))


class SSLEncoder(SpeechEncoder):
    """A wav2vec2-style transformers model (``self.model``) behind the :class:`SpeechEncoder` interface."""

    def __init__(self, model: nn.Module, options: dict | None = None, *, normalize_input: bool = True):
        if options:
            raise BackboneError(f"{model.config.model_type} backbones take no options, got {sorted(options)}")
        super().__init__(model.config)
        self.family = model.config.model_type
        self.normalize_input = normalize_input
        self.model = model
        # LayerDrop skips whole layers in training, so the number of hidden states would vary.
        self.model.config.layerdrop = 0.0
        self._padded_frames: torch.Tensor | None = None  # valid frames per clip during a padded forward
        self._install_masked_norm()
        self._install_frame_masks()
        self.padding = GROUP_NORM_PADDING if uses_group_norm(model) else LAYER_NORM_PADDING
        kernels, strides = model.config.conv_kernel, model.config.conv_stride
        self.min_samples = _receptive_field(kernels, strides)
        self.hop = int(torch.tensor(strides).prod())

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def description(self) -> str:
        frame_ms = 1000 * self.hop / self.sample_rate
        return f"raw waveform, {len(self.config.conv_kernel)} conv layers ({frame_ms:g} ms frames)"

    def front_end_parameters(self) -> list[nn.Parameter]:
        return list(self.model.feature_extractor.parameters())

    def freeze(self, mode: str) -> None:
        super().freeze(mode)
        if mode == "feature-encoder":
            self.model.feature_extractor._freeze_parameters()  # every family's (HuBERT has no public one)

    def _install_masked_norm(self) -> None:
        if not uses_group_norm(self.model):
            return  # layer-norm feature encoders normalize per frame: already padding-free
        first = self.model.feature_extractor.conv_layers[0]
        if not isinstance(first.layer_norm, MaskedGroupNorm):
            first.layer_norm = MaskedGroupNorm(first.layer_norm)
        # Hub configs carry `gradient_checkpointing: true`, which transformers turns into activation
        # checkpointing of every layer. Recomputing the first conv layer in the backward pass would run
        # without the clip lengths (set for the forward pass only) and so differ from the forward
        # (PyTorch's CheckpointError on padded batches). The feature encoder is recomputed exactly or not
        # at all: not at all. Transformer layers get the attention mask as an argument: they stay as set.
        for layer in self.model.feature_extractor.conv_layers:
            layer.gradient_checkpointing = False

    def _install_frame_masks(self) -> None:
        # data2vec-audio's positional embedding is a stack of convolutions with layer norms: the first
        # turns the zeroed padding into values that the next ones carry into the clip's own frames.
        # Zeroing padded frames after each layer makes it what a clip alone sees (zero padding).
        # wav2vec2, HuBERT and WavLM use one convolution over zeroed padding: already exact.
        for layer in getattr(self.model.encoder.pos_conv_embed, "layers", ()):
            layer.register_forward_hook(self._zero_padded_frames)

    def _zero_padded_frames(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        if self._padded_frames is None:  # output: (B, D, T_frames)
            return None
        return output * lengths_mask(self._padded_frames, output.shape[-1]).unsqueeze(1).to(output.dtype)

    @property
    def masked_norm(self) -> MaskedGroupNorm | None:
        # Looked up, not stored: a second reference would register the module twice.
        norm = self.model.feature_extractor.conv_layers[0].layer_norm
        return norm if isinstance(norm, MaskedGroupNorm) else None

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip for input lengths in samples (the model's own formula)."""
        return self.model._get_feat_extract_output_lengths(lengths).long()

    def _first_norm_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.config.conv_kernel[0], self.config.conv_stride[0]
        return torch.div(lengths - kernel, stride, rounding_mode="floor") + 1

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_lengths(lengths)
        lengths = lengths.to(waves.device)
        padded = bool((lengths < waves.shape[1]).any())
        sample_mask = lengths_mask(lengths, waves.shape[1]).long() if padded else None
        if self.masked_norm is not None:
            self.masked_norm.lengths = self._first_norm_lengths(lengths)
        if padded:
            self._padded_frames = self.frame_lengths(lengths)
        try:
            out = self.model(waves, attention_mask=sample_mask, output_hidden_states=True)
        finally:
            if self.masked_norm is not None:
                self.masked_norm.lengths = None
            self._padded_frames = None
        # The last entry is the final layer's output; in the layer-norm variants the encoder's final
        # layer norm comes after it, so the model's last_hidden_state is the true last hidden state.
        states = torch.stack((*out.hidden_states[:-1], out.last_hidden_state), dim=1)
        return states, self.frame_mask(lengths, states.shape[2])


    @property
    def _final_norm(self) -> nn.Module | None:
        """The encoder's layer norm after its last layer (the stable-layer-norm variants: large, XLS-R);
        in the base variants it comes before the first layer, below anything partial training trains."""
        encoder = self.model.encoder
        return encoder.layer_norm if type(encoder).__name__.endswith("StableLayerNorm") else None

    def top_modules(self, k: int) -> list[nn.Module]:
        norm = self._final_norm
        return [*self.model.encoder.layers[self.num_layers - k:], *([norm] if norm is not None else [])]

    def forward_from(self, x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        self.check_start(start)
        if self.family == "wavlm":  # its layers share a relative position bias that the first layer computes
            raise BackboneError("WavLM cannot run its top layers from cached states (its relative position "
                                "bias comes from the first layer); train it through the whole encoder")
        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=x, attention_mask=mask.long())
        states = []
        for layer in self.model.encoder.layers[start:]:
            out = layer(x, attention_mask=attention)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        if self._final_norm is not None:
            states[-1] = self._final_norm(x)
        return torch.stack(states, dim=1)


def _receptive_field(kernels, strides) -> int:
    """Samples one output frame of a stack of convolutions sees (400 for wav2vec2: 25 ms)."""
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field
