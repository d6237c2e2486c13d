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

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write_text
from .backbones import SpeechEncoder, build_backbone, config_from_dict
from .device import autocast_dtype, default_device
from .embeddings import FrozenHead, embed_waves
from .model import ModelConfig
from .normalization import GroupError, adapt_features, describe

FORMAT = "ser_utils.FrozenEncoderModel/1"
CONFIG_NAME, WEIGHTS_NAME = "ser_config.json", "model.safetensors"


class FrozenEncoderModel:
    """A frozen encoder + a :class:`~ser_utils.embeddings.FrozenHead`: ``predict_proba(waves, groups)``.

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
    def labels(self) -> tuple[str, ...]:
        return tuple(self.head.config.labels)

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @property
    def min_seconds(self) -> float:
        """Shortest clip the encoder takes, in seconds."""
        return self.encoder.min_samples / self.encoder.sample_rate

    @property
    def needs_groups(self) -> bool:
        """Whether prediction needs groups of clips (a speaker-normalized model)."""
        return self.normalization is not None

    def describe(self) -> str:
        return (f"{self.system}: frozen {self.encoder.family} encoder ({self.encoder.num_layers} layers x "
                f"{self.encoder.hidden_size}, {self.encoder.description()}) + head; normalization: "
                f"{describe(self.normalization)}")

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        """The ``ValueError`` a clip would raise in :meth:`predict_proba`, without scoring it."""
        for wave in waves:
            self.encoder.check_lengths(torch.tensor([len(wave)]))

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

        ``groups`` adapts the embeddings per group first; :class:`~ser_utils.normalization.GroupError`
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
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        normalization = dict(self.normalization or {"kind": "none"})
        tensors = {**{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()},
                   **{f"head.{k}": v for k, v in self.head.state_dict().items()}}
        if "prior_var" in normalization:  # thousands of numbers: in the weights file, not in the JSON
            tensors["normalization.prior_var"] = torch.tensor(normalization.pop("prior_var"), dtype=torch.float64)
        meta = {"format": FORMAT, "system": self.system, "head": self.head.config.to_dict(),
                "layers": self.encoder.num_layers + 1, "width": self.encoder.hidden_size,
                "backbone": self.encoder.config.to_dict(), "backbone_options": self.encoder.options,
                "normalize_input": self.encoder.normalize_input, "normalization": normalization, "info": self.info}
        with atomic_path(directory / WEIGHTS_NAME) as weights:  # weights first: a config names a whole folder
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(weights))
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> FrozenEncoderModel:
        """Load a folder written by :meth:`save_pretrained`; ``ValueError`` naming it if unusable."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_NAME).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{CONFIG_NAME} has format {meta.get('format')!r}, this code reads {FORMAT!r}")
            config = ModelConfig(**{**meta["head"], "labels": tuple(meta["head"]["labels"])})
            encoder = build_backbone(config_from_dict(meta["backbone"]), meta.get("backbone_options"),
                                     normalize_input=bool(meta["normalize_input"]))  # Whisper's encoder takes none
            state = load_file(str(directory / WEIGHTS_NAME))
            encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
            shape = (meta["layers"], 3, meta["width"])
            head = FrozenHead(config, meta["layers"], meta["width"], torch.zeros(shape), torch.ones(shape))
            head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
            normalization = dict(meta["normalization"])
            if "normalization.prior_var" in state:
                normalization["prior_var"] = state["normalization.prior_var"].numpy()
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, SafetensorError, GroupError) as err:
            raise ValueError(f"{directory}: not a usable frozen-encoder model ({err})") from err
        model = cls(encoder, head, system=meta["system"], normalization=normalization, info=meta.get("info"))
        return model.to(device or default_device())


def is_frozen_model_folder(directory: str | Path) -> bool:
    """Whether ``directory`` holds a :class:`FrozenEncoderModel` (its config names the format)."""
    try:
        return json.loads((Path(directory) / CONFIG_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
