"""The deployable frozen-encoder model: a pretrained encoder that stays as it was, the per-layer pooled
embeddings the study's frozen heads were trained on, and one such head; waveforms in, emotion
probabilities out, saved with ``save_pretrained`` and loaded with ``from_pretrained``.

A model folder holds ``ser_config.json`` (format, system, head settings and labels, the encoder's
architecture and options, the normalization, provenance) and ``model.safetensors`` (the encoder's and
the head's tensors, and a speaker-normalized model's prior variance). Loading runs no code from the
folder and needs no network.

With ``groups`` (one name per clip: a speaker, or one name for a corpus) the embeddings are adapted per
group before the head sees them (``normalization.adapt_features``), exactly as a baseline's features
are; a speaker-normalized model needs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..backbones import SpeechEncoder
from ..core.device import autocast, autocast_dtype, default_device, inference_batch_size
from ..data.audio import collate, longest_first, normalize
from ..features.normalization import adapt_features, describe
from .deployable import EncoderDeployable
from .folder import (
    build_encoder,
    encoder_meta,
    folder_format,
    load_weights,
    prefixed,
    read_folder,
    reading,
    section,
    write_folder,
)
from .heads import FrozenHead, ModelConfig, layer_statistics

FORMAT = "ser_utils.FrozenEncoderModel/1"
FORMATS = (FORMAT,)


def embed_waves(encoder: SpeechEncoder, waves: Sequence[np.ndarray], *, batch_size: int | None = None,
                dtype: torch.dtype | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
    """Per-layer pooled embeddings of float32 16 kHz clips, longest first in batches: yields the clips'
    indices and their ``(b, L+1, 3, D)`` float32 embeddings (:func:`~ser_utils.models.heads.layer_statistics`).
    ``dtype``: autocast precision (``None``: float32); clips are standardised first when the encoder wants it."""
    for rows, layers, _ in encode_waves(encoder, waves, batch_size=batch_size, dtype=dtype):
        yield rows, layers


def encode_waves(encoder: SpeechEncoder, waves: Sequence[np.ndarray], *, batch_size: int | None = None,
                 dtype: torch.dtype | None = None, keep: Sequence[int] = ()
                 ) -> Iterator[tuple[list[int], np.ndarray, dict[int, list[np.ndarray]]]]:
    """:func:`embed_waves`, also handing out the frames of the hidden states ``keep`` (indices into the
    ``L+1`` states): yields ``(rows, embeddings (b, L+1, 3, D), {state: [(T_i, D) float32 per clip]})``,
    each clip's frames cut to its own (one encoder pass for the frozen heads and partial fine-tuning)."""
    device = next(encoder.parameters()).device
    encoder.eval()
    for rows in longest_first([len(w) for w in waves], batch_size or inference_batch_size(device)):
        batch, lengths = collate([normalize(waves[i]) if encoder.normalize_input else waves[i] for i in rows])
        with torch.inference_mode(), autocast(device, dtype):
            states, mask = encoder(batch.to(device), lengths.to(device))
            layers = layer_statistics(states, mask)
        frames = mask.sum(1).tolist()
        kept = {state: [x[:n] for x, n in zip(states[:, state].float().cpu().numpy(), frames, strict=True)]
                for state in keep}
        yield rows, layers.float().cpu().numpy(), kept


class FrozenEncoderModel(EncoderDeployable):
    """A frozen encoder + a :class:`~ser_utils.models.heads.FrozenHead`: ``predict_proba(waves, groups)``.

    >>> model = FrozenEncoderModel.from_pretrained(".cache/full/models/whisper-ser")    # doctest: +SKIP
    >>> model.predict_proba([wave])                          # (1, 8), rows sum to 1   # doctest: +SKIP
    """

    def __init__(self, encoder: SpeechEncoder, head: FrozenHead, *, system: str, normalization: dict | None = None,
                 info: dict | None = None):
        self.encoder = encoder.eval()
        self.head = head.eval()
        self.system = system
        self.normalization = normalization if normalization and normalization.get("kind") != "none" else None
        self.info = dict(info or {})

    @property
    def model_config(self) -> ModelConfig:
        return self.head.config

    def describe(self) -> str:
        return (f"{self.system}: frozen {self.encoder.family} encoder ({self.encoder.num_layers} layers x "
                f"{self.encoder.hidden_size}, {self.encoder.description()}) + head; normalization: "
                f"{describe(self.normalization)}")

    def to(self, device: str | torch.device) -> FrozenEncoderModel:
        self.encoder.to(device)
        return self

    def embeddings(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """``(n, L+1, 3, D)`` per-layer first frame, mean and standard deviation of each clip, as cached in
        training (autocast precision as there)."""
        if isinstance(waves, np.ndarray) and waves.ndim == 1:
            raise ValueError("pass a list of waveforms, not a single 1-D array")
        device = next(self.encoder.parameters()).device
        out = np.zeros((len(waves), self.encoder.num_layers + 1, 3, self.encoder.hidden_size), dtype=np.float32)
        for rows, layers in embed_waves(self.encoder, list(waves), dtype=autocast_dtype(device)):
            out[rows] = layers.astype(np.float16)  # the precision the heads were trained on
        return out

    def predict_proba(self, waves: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_labels)`` of float32 16 kHz mono clips, columns in :attr:`labels` order.

        ``groups`` adapts the embeddings per group first; :class:`~ser_utils.features.normalization.GroupError`
        when a speaker-normalized model gets none, or a group is too small.
        """
        if groups is None and self.needs_groups:
            adapt_features(np.zeros((0, 1)), None, self.normalization, train_mean=np.zeros(1), train_scale=np.ones(1),
                           model=self.system)  # raises the one message for it
        x = self.embeddings(waves)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)))
        shape = x.shape[1:]
        flat = x.reshape(len(x), -1).astype(np.float64)
        flat = adapt_features(flat, groups, self.normalization, train_mean=self.head.mean.reshape(-1).double().numpy(),
                              train_scale=self.head.std.reshape(-1).double().numpy(), model=self.system)
        with torch.no_grad():
            logits = self.head(torch.as_tensor(flat.reshape(len(x), *shape), dtype=torch.float32))
        return torch.softmax(logits, dim=-1).numpy()

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model folder (:mod:`ser_utils.models.folder`): encoder and head tensors, settings."""
        normalization = dict(self.normalization or {"kind": "none"})
        tensors = {**{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()},
                   **{f"head.{k}": v for k, v in self.head.state_dict().items()}}
        if "prior_var" in normalization:  # thousands of numbers: in the weights file, not in the JSON
            tensors["normalization.prior_var"] = torch.tensor(normalization.pop("prior_var"), dtype=torch.float64)
        meta = {"format": FORMAT, "system": self.system, "head": self.head.config.to_dict(),
                "layers": self.encoder.num_layers + 1, "width": self.encoder.hidden_size,
                **encoder_meta(self.encoder), "normalize_input": self.encoder.normalize_input,
                "normalization": normalization, "info": self.info}
        return write_folder(directory, meta, tensors)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> FrozenEncoderModel:
        """Load a folder written by :meth:`save_pretrained`; ``ValueError`` naming it if unusable."""
        with reading(directory, "frozen-encoder model"):
            meta, state = read_folder(directory, FORMATS)
            settings = section(meta, "head")
            config = ModelConfig(**{**settings, "labels": tuple(settings["labels"])})
            encoder = build_encoder(meta, bool(meta["normalize_input"]))
            load_weights(encoder, prefixed(state, "encoder."), "encoder")
            shape = (meta["layers"], 3, meta["width"])
            head = FrozenHead(config, meta["layers"], meta["width"], torch.zeros(shape), torch.ones(shape))
            load_weights(head, prefixed(state, "head."), "head")
            normalization = dict(meta["normalization"])
            if "normalization.prior_var" in state:
                normalization["prior_var"] = state["normalization.prior_var"].numpy()
        model = cls(encoder, head, system=meta["system"], normalization=normalization, info=meta.get("info"))
        return model.to(device or default_device())


def is_frozen_model_folder(directory: str | Path) -> bool:
    """Whether ``directory`` holds a :class:`FrozenEncoderModel` (its config names the format)."""
    return folder_format(directory) in FORMATS
