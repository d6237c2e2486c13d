"""Pretrained speech encoders behind one interface: waves and lengths in, every layer's hidden states and
a frame mask out (:class:`SpeechEncoder`), loaded strictly from their checkpoints.

``base``         the interface, :class:`BackboneError`, the one-line :class:`LoadReport`
``ssl``          wav2vec2, HuBERT, WavLM, data2vec-audio (their transformers classes; masked group norm)
``whisper``      Whisper's encoder: its log-mel front end in torch, ``clip`` and ``pad30`` inputs, a frame mask
``ctranslate2``  CTranslate2 / faster-whisper ``model.bin`` files, read without CTranslate2
``resolve``      where a name leads: local folder, installed weight package (``whisper-base``), hub
``loading``      families by ``model_type``, strict loading, the ``backbone`` check
``checkpoints``  tiny random checkpoints laid out as hub repositories (smoke profile, tests)

Imports only ``core``; nothing here knows of heads, training or the study.
"""

from .base import FREEZE_MODES, BackboneError, LoadReport, SpeechEncoder, lengths_mask, masked_moments
from .loading import (
    FAMILIES,
    backbone_check,
    backbone_tensors,
    build_backbone,
    check_backbone,
    config_from_dict,
    family_of,
    load_backbone,
    load_backbone_config,
    modern_name,
    read_checkpoint,
)
from .resolve import RESOLUTION_ORDER, WEIGHT_PACKAGES, Checkpoint, backbone_fingerprint, hub_reachable, resolve
from .ssl import GROUP_NORM_PADDING, LAYER_NORM_PADDING, Family, MaskedGroupNorm, SSLEncoder, uses_group_norm
from .whisper import INPUT_MODES, WhisperEncoder, log_mel

__all__ = [
    "FAMILIES",
    "FREEZE_MODES",
    "GROUP_NORM_PADDING",
    "INPUT_MODES",
    "LAYER_NORM_PADDING",
    "RESOLUTION_ORDER",
    "WEIGHT_PACKAGES",
    "BackboneError",
    "Checkpoint",
    "Family",
    "LoadReport",
    "MaskedGroupNorm",
    "SSLEncoder",
    "SpeechEncoder",
    "WhisperEncoder",
    "backbone_check",
    "backbone_fingerprint",
    "backbone_tensors",
    "build_backbone",
    "check_backbone",
    "config_from_dict",
    "family_of",
    "hub_reachable",
    "lengths_mask",
    "load_backbone",
    "load_backbone_config",
    "log_mel",
    "masked_moments",
    "modern_name",
    "read_checkpoint",
    "resolve",
    "uses_group_norm",
]
