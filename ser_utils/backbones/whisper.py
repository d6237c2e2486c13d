"""Whisper's encoder as a backbone: its log-mel front end in torch, and its layers run with a frame mask.

transformers' ``WhisperEncoder`` takes exactly 3,000 mel frames (30 s) and ignores attention masks, so
the encoder is written out here, with the same parameter names (a ``WhisperModel``'s ``encoder.*``
tensors load as they are) and two input modes:

* ``clip`` - each clip at its own length, positional embeddings sliced to its frames (for RAVDESS's
  4 s clips about a tenth of the work of 30 s). Padded batches never change a clip's output: the
  mel frames beyond a clip are zero (what the convolutions' own zero padding gives a clip alone),
  the convolution outputs beyond it are zeroed again, and attention never looks at padded frames.
* ``pad30`` - Whisper's native input, every clip padded with silence to 30 s, as in pre-training
  and as EmoBox feeds it; attention sees the silence, pooling does not.

In both modes the frame mask covers the clip's own frames only, so pooling never averages padded
silence in (transformers' ``WhisperForAudioClassification`` does).

The front end (:func:`log_mel`) is the ``WhisperFeatureExtractor``'s: 25 ms Hann windows every 10 ms
(reflect-padded at the clip's ends), power spectrum, Slaney mel filters, ``log10`` clamped at 1e-10
and at 8 below the clip's maximum, then ``(x + 4) / 4``. It runs batched on the model's device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import BackboneError, SpeechEncoder, lengths_mask

N_FFT, HOP = 400, 160  # 25 ms windows every 10 ms at 16 kHz
INPUT_MODES = ("clip", "pad30")
CLIP_PADDING = "frame mask (padded frames zeroed between convolutions, masked in attention)"
PAD30_PADDING = "silence to 30 s as in pre-training; the clip's own frames pooled"


def mel_filters(n_mels: int, sample_rate: int = 16_000) -> torch.Tensor:
    """``(n_mels, N_FFT // 2 + 1)`` Slaney-scale, Slaney-normalized filters (Whisper's, from librosa)."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=n_mels)).float()


def mel_frames(lengths: torch.Tensor) -> torch.Tensor:
    """Mel frames of clips of ``lengths`` samples (the extractor drops the STFT's last frame)."""
    return torch.div(lengths, HOP, rounding_mode="floor")


def log_mel(waves: torch.Tensor, lengths: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel spectrogram of each clip on its own, batched: ``(B, T)`` zero-padded waves and
    their ``lengths`` -> ``(B, n_mels, T // 160)``, zero beyond each clip's ``length // 160`` frames.

    Each clip is reflect-padded at its own ends (as the extractor pads a clip alone) and its maximum,
    which the dynamic-range clamp is relative to, is taken over its own frames. Computed in float32.
    """
    waves = waves.float()
    half = N_FFT // 2
    framed = waves.new_zeros(waves.shape[0], waves.shape[1] + 2 * half)
    for row, length in enumerate(lengths.tolist()):
        framed[row, :length + 2 * half] = nn.functional.pad(waves[row:row + 1, :length], (half, half),
                                                            mode="reflect")[0]
    window = torch.hann_window(N_FFT, device=waves.device)
    spectrum = torch.stft(framed, N_FFT, HOP, window=window, center=False, return_complex=True)
    n_frames = waves.shape[1] // HOP
    power = spectrum[..., :n_frames].abs() ** 2
    log_spec = torch.clamp(filters.to(waves.device) @ power, min=1e-10).log10()
    valid = lengths_mask(mel_frames(lengths.to(waves.device)), n_frames)
    peak = log_spec.masked_fill(~valid[:, None, :], -math.inf).amax(dim=(1, 2), keepdim=True)
    log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
    return log_spec * valid[:, None, :]


class WhisperAttention(nn.Module):
    """Multi-head self-attention with Whisper's names (``k_proj`` has no bias) and a key mask."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, width = x.shape
        q, k, v = (proj(x).view(batch, frames, self.heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, width))


class WhisperLayer(nn.Module):
    """A pre-norm transformer layer, as ``WhisperEncoderLayer`` (GELU feed-forward)."""

    def __init__(self, width: int, heads: int, ffn: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = WhisperAttention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, ffn)
        self.fc2 = nn.Linear(ffn, width)
        self.final_layer_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), key_mask))
        return x + self.dropout(self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x)))))


class WhisperEncoder(SpeechEncoder):
    """Whisper's encoder (``transformers.WhisperConfig`` sizes) behind the :class:`SpeechEncoder`
    interface; ``options={"input": "clip" | "pad30"}`` (default ``clip``)."""

    family = "whisper"
    normalize_input = False
    min_samples = N_FFT  # one 25 ms window

    def __init__(self, config, options: dict | None = None):
        options = {"input": "clip", **(options or {})}
        if options["input"] not in INPUT_MODES or set(options) != {"input"}:
            raise BackboneError(f"Whisper options {options}: only input, one of {INPUT_MODES}")
        super().__init__(config, options)
        width = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, width)
        self.embed_positions.requires_grad_(False)  # sinusoids, fixed in Whisper
        self.layers = nn.ModuleList(WhisperLayer(width, config.encoder_attention_heads, config.encoder_ffn_dim,
                                                 config.dropout) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(width)
        self.register_buffer("filters", mel_filters(config.num_mel_bins), persistent=False)
        self.padding = CLIP_PADDING if self.input_mode == "clip" else PAD30_PADDING

    @property
    def input_mode(self) -> str:
        return self.options["input"]

    @property
    def num_layers(self) -> int:
        return self.config.encoder_layers

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    @property
    def max_samples(self) -> int:
        """Longest clip: the positional embeddings span 30 s (1,500 frames of 20 ms)."""
        return self.config.max_source_positions * 2 * HOP

    def description(self) -> str:
        length = "each clip at its own length" if self.input_mode == "clip" else "padded to 30 s"
        return f"{self.config.num_mel_bins}-bin log-mel (25 ms / 10 ms), {length} ({self.input_mode})"

    def front_end_parameters(self) -> list[nn.Parameter]:
        return [*self.conv1.parameters(), *self.conv2.parameters()]

    def freeze(self, mode: str) -> None:
        super().freeze(mode)
        self.embed_positions.requires_grad_(False)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames (20 ms) of each clip's own audio: ceil(mel frames / 2)."""
        return torch.div(mel_frames(lengths) + 1, 2, rounding_mode="floor").long()

    def top_modules(self, k: int) -> list[nn.Module]:
        return [*self.layers[self.num_layers - k:], self.layer_norm]

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input of the first transformer layer ``(B, T_frames, D)`` (log-mel, convolutions,
        positional embeddings) and the frame mask ``(B, T_frames)``."""
        self.check_lengths(lengths)
        if int(lengths.max()) > self.max_samples:
            raise ValueError(f"clips of {int(lengths.max()) / self.sample_rate:g} s are longer than Whisper's "
                             f"{self.max_samples / self.sample_rate:g} s input; score long audio in windows")
        lengths = lengths.to(waves.device)
        pad30 = self.input_mode == "pad30"
        if pad30:  # every clip is its own 30 s input: silence after it, as in pre-training
            waves = nn.functional.pad(waves, (0, self.max_samples - waves.shape[1]))
            as_input = torch.full_like(lengths, self.max_samples)
        else:
            as_input = lengths
        with torch.autocast(waves.device.type, enabled=False):  # the dynamic-range clamp needs float32
            mel = log_mel(waves, as_input, self.filters)
        x = nn.functional.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        if not pad30:  # what conv2's zero padding gives a clip alone
            x = x * _valid(mel_frames(lengths), x)
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)  # (B, T_frames, D)
        return x + self.embed_positions.weight[:x.shape[1]].to(x.dtype), self.frame_mask(lengths, x.shape[1])

    def _layers_from(self, x: torch.Tensor, mask: torch.Tensor, start: int) -> list[torch.Tensor]:
        key_mask = None if self.input_mode == "pad30" else mask  # pad30: attention sees the silence
        states = []
        for layer in self.layers[start:]:
            x = layer(x, key_mask)
            states.append(x)
        states[-1] = self.layer_norm(x)
        return states

    def forward_from(self, x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        self.check_start(start)
        return torch.stack(self._layers_from(x, mask, start), dim=1)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, frame_mask = self.embed(waves, lengths)
        return torch.stack([x, *self._layers_from(x, frame_mask, 0)], dim=1), frame_mask


def _valid(frames: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T)`` 0/1 mask of the first ``frames`` time steps of ``x`` ``(B, C, T)``, in x's dtype."""
    return lengths_mask(frames, x.shape[-1]).unsqueeze(1).to(x.dtype)
