"""Self-supervised speech backbones: which family a checkpoint is, and loading it tensor by tensor.

A checkpoint (hub name or local folder with ``config.json`` and ``model.safetensors`` or
``pytorch_model.bin``, sharded or not) is loaded by its ``model_type`` into its own transformers
class (:data:`FAMILIES`). Hub repositories save the backbone inside a task model - a
``Wav2Vec2ForPreTraining`` (keys ``wav2vec2.*`` next to ``quantizer.*``, ``project_q.*``,
``project_hid.*``), a ``HubertForCTC`` (``hubert.*`` next to ``lm_head.*``) - or on its own (no
prefix). The task prefix is stripped, task-head tensors are set aside, and the legacy weight-norm
names ``weight_g``/``weight_v`` are matched to today's ``parametrizations.weight.original0/1``.

Loading is strict: every tensor of the backbone must come from the checkpoint with its shape, else
:class:`BackboneError` names the first few offenders. Nothing is silently left at its random
initialisation, and the report is one line (:meth:`LoadReport.summary`), not a table per run.

Padding per family: feature encoders with a per-channel group norm in their first layer (wav2vec2-base,
HuBERT-base, WavLM-base) normalise over time, so padded clips need the masked group norm of
:mod:`ser_utils.model` and the attention mask; layer-norm feature encoders (wav2vec2 large-lv60 and
XLS-R, HuBERT/WavLM large, data2vec-audio) normalise each frame and need the attention mask only.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from torch import nn

#: Weight files in the order transformers prefers them (an index file lists the shards).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: Legacy weight-norm names (``torch.nn.utils.weight_norm``) -> today's parametrization names.
LEGACY_NAMES = {"weight_g": "parametrizations.weight.original0",
                "weight_v": "parametrizations.weight.original1"}
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


FAMILIES = {family.model_type: family for family in (
    Family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", "wav2vec2"),
    Family("hubert", "HubertConfig", "HubertModel", "hubert"),
    Family("wavlm", "WavLMConfig", "WavLMModel", "wavlm"),
    Family("data2vec-audio", "Data2VecAudioConfig", "Data2VecAudioModel", "data2vec_audio"),
)}


class BackboneError(ValueError):
    """A checkpoint that cannot serve as a backbone (unreadable, unsupported, incomplete); one line."""


def family_of(config) -> Family:
    """The :class:`Family` of a transformers config (or of its ``model_type`` string)."""
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise BackboneError(f"model_type {model_type!r} is not a supported backbone; "
                            f"supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def config_from_dict(settings: dict):
    """A backbone config from its ``to_dict()`` form (``model_type`` picks the class)."""
    config_class, _ = family_of(settings.get("model_type")).classes()
    return config_class.from_dict(settings)


class MaskedGroupNorm(nn.Module):
    """Per-channel normalisation over each clip's valid frames only (wav2vec2-base's first norm).

    A drop-in for ``nn.GroupNorm(C, C)`` with the same parameter names. ``lengths`` (valid frames per
    row) is set by :class:`EmotionClassifier` around each forward pass; with ``lengths=None`` it is
    exactly ``nn.GroupNorm``.
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
        steps = torch.arange(x.shape[-1], device=x.device)
        mask = (steps[None, :] < self.lengths[:, None].to(x.device)).unsqueeze(1).float()
        count = mask.sum(-1, keepdim=True).clamp(min=1)
        mean = (x * mask).sum(-1, keepdim=True) / count
        var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        normed = (x - mean) * torch.rsqrt(var + self.eps)
        return (normed * self.weight[None, :, None].float() + self.bias[None, :, None].float()).to(dtype)


def build_backbone(config) -> nn.Module:
    """A randomly initialised backbone of the config's family (tests, benchmarks, loading)."""
    _, model_class = family_of(config).classes()
    return model_class(config)


def uses_group_norm(backbone: nn.Module) -> bool:
    """Whether the feature encoder's first layer normalises over time (a group norm, possibly masked),
    which padding would change; layer norms work per frame. Read from the model, not the config:
    data2vec-audio has layer norms whatever its config says."""
    return isinstance(getattr(backbone.feature_extractor.conv_layers[0], "layer_norm", None),
                      (nn.GroupNorm, MaskedGroupNorm))


def padding_strategy(backbone: nn.Module) -> str:
    return GROUP_NORM_PADDING if uses_group_norm(backbone) else LAYER_NORM_PADDING


def _unavailable(name_or_dir: str) -> BackboneError:
    return BackboneError(f"pretrained weights '{name_or_dir}' are not available here (no network access to "
                         "the Hugging Face Hub and no local copy); set SER_MODEL to a local copy")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host answers a TCP connection within ``timeout`` seconds.

    Offline, the hub client retries each file with back-off (about 25 s per checkpoint); asking once
    first lets an offline machine fall back to its local hub cache at once. Behind a proxy, or with
    ``HF_HUB_OFFLINE`` set, the hub client's own rules apply (True / False as they say).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct connection says nothing about the proxy's
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _resolve(name_or_dir: str, filename: str) -> str | None:
    """Local path of ``filename`` in a folder or hub repository (``None``: the repository lacks it)."""
    from transformers.utils import cached_file

    folder = Path(name_or_dir)
    if folder.is_dir():
        return str(folder / filename) if (folder / filename).is_file() else None
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # offline, the hub client logs every retry: one error says it once
    try:
        return cached_file(name_or_dir, filename, _raise_exceptions_for_missing_entries=False,
                           local_files_only=not hub_reachable())
    except (OSError, ValueError) as err:
        raise _unavailable(name_or_dir) from err
    finally:
        hub_log.setLevel(level)


def load_backbone_config(name_or_dir: str):
    """The checkpoint's config, of its family's class; :class:`BackboneError` if unreadable or unsupported."""
    if not Path(name_or_dir).is_dir() and Path(name_or_dir).exists():
        raise BackboneError(f"{name_or_dir}: not a folder (a checkpoint is a folder with config.json)")
    path = _resolve(name_or_dir, "config.json")
    if path is None and not Path(name_or_dir).is_dir():
        raise _unavailable(name_or_dir)  # offline, the hub client answers "no such file"
    if path is None:
        raise BackboneError(f"{name_or_dir}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BackboneError(f"{path}: unreadable config ({err})") from err
    config_class, _ = family_of(settings.get("model_type")).classes()
    return config_class.from_dict(settings)


def read_checkpoint(name_or_dir: str) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of the checkpoint's weights (shards joined) and the file they came from."""
    for filename in WEIGHT_FILES:
        path = _resolve(name_or_dir, filename)
        if path is None:
            continue
        try:
            if filename.endswith(".index.json"):
                shards = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
                state = {}
                for shard in shards:
                    shard_path = _resolve(name_or_dir, shard)
                    if shard_path is None:
                        raise BackboneError(f"{name_or_dir}: shard {shard} listed in {filename} is missing")
                    state.update(_read_weights(shard_path))
                return state, filename
            return _read_weights(path), filename
        except BackboneError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError) as err:
            raise BackboneError(f"{path}: unreadable weights ({type(err).__name__}: {err})") from err
    raise BackboneError(f"{name_or_dir}: no weights ({' or '.join(WEIGHT_FILES[::2])})")


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)  # weights only: no code from pickles


def modern_name(key: str) -> str:
    """``...conv.weight_g`` -> ``...conv.parametrizations.weight.original0`` (others unchanged)."""
    stem, _, last = key.rpartition(".")
    return f"{stem}.{LEGACY_NAMES[last]}" if last in LEGACY_NAMES else key


def backbone_tensors(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Split a checkpoint into the backbone's tensors (task prefix stripped, legacy names modernised)
    and the keys set aside (task heads: ``quantizer.*``, ``project_q.*``, ``lm_head.*``, ...)."""
    marker = f"{prefix}."
    if not any(key.startswith(marker) for key in state):  # a bare backbone, saved without a task head
        return {modern_name(k): v for k, v in state.items()}, []
    inside = {modern_name(k[len(marker):]): v for k, v in state.items() if k.startswith(marker)}
    return inside, sorted(k for k in state if not k.startswith(marker))


@dataclass
class LoadReport:
    """What a checkpoint gave the backbone: family, padding, size and tensor counts.

    ``tensors_loaded`` of ``tensors_expected`` backbone tensors came from the checkpoint;
    ``head_tensors`` were set aside (task heads), ``unused`` are backbone-prefixed tensors the model has
    no place for. ``missing`` and ``mismatched`` (``key: checkpoint shape -> model shape``) are problems.
    """

    source: str
    family: str
    padding: str
    layers: int
    hidden_size: int
    parameters: int
    tensors_loaded: int
    tensors_expected: int
    weights_file: str = ""
    head_tensors: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.tensors_loaded == self.tensors_expected and not self.missing and not self.mismatched

    def problem(self) -> str | None:
        """One line saying what is wrong (``None`` when every backbone tensor was loaded)."""
        if self.complete:
            return None
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (would be random): {_first(self.missing)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} of the wrong shape: {_first(self.mismatched)}")
        return (f"{self.source}: only {self.tensors_loaded} of {self.tensors_expected} {self.family} backbone "
                f"tensors in {self.weights_file}; " + "; ".join(parts))

    def summary(self) -> str:
        head = f", {self.head_tensors} task-head tensors set aside" if self.head_tensors else ""
        unused = f", {len(self.unused)} unused" if self.unused else ""
        return (f"{self.family}: {self.layers} layers x {self.hidden_size}, "
                f"{self.parameters:,} parameters, padding: {self.padding}; "
                f"{self.tensors_loaded}/{self.tensors_expected} backbone tensors loaded from "
                f"{self.weights_file}{head}{unused}")

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_backbone(name_or_dir: str, *, strict: bool = True) -> tuple[nn.Module, LoadReport]:
    """The backbone of a checkpoint, its own family's class, with every tensor from the checkpoint.

    Raises :class:`BackboneError` for an unreadable folder, an unsupported ``model_type`` and (with
    ``strict``) a backbone tensor that is missing or of the wrong shape.
    """
    config = load_backbone_config(name_or_dir)
    family = family_of(config)
    state, weights_file = read_checkpoint(name_or_dir)
    tensors, head_keys = backbone_tensors(state, family.prefix)
    model = build_backbone(config)
    expected = model.state_dict()
    by_modern_name = {modern_name(k): k for k in expected}  # also matches a model on legacy weight norm
    matched, mismatched = {}, {}
    for key, value in tensors.items():
        target = by_modern_name.get(key)
        if target is None:
            continue
        if value.shape != expected[target].shape:
            mismatched[target] = f"{target} {tuple(value.shape)} -> {tuple(expected[target].shape)}"
        else:
            matched[target] = value
    model.load_state_dict(matched, strict=False)
    report = LoadReport(
        source=str(name_or_dir), family=family.model_type, padding=padding_strategy(model),
        layers=config.num_hidden_layers, hidden_size=config.hidden_size,
        parameters=sum(p.numel() for p in model.parameters()), tensors_loaded=len(matched),
        tensors_expected=len(expected), weights_file=weights_file, head_tensors=len(head_keys),
        missing=sorted(k for k in expected if k not in matched and k not in mismatched),
        mismatched=sorted(mismatched.values()),
        unused=sorted(k for k in tensors if k not in by_modern_name))
    if strict and not report.complete:
        raise BackboneError(report.problem())
    return model.eval(), report


def check_backbone(name_or_dir: str) -> LoadReport:
    """Load a checkpoint as :func:`load_backbone` does and return its report (the ``backbone`` command)."""
    _, report = load_backbone(name_or_dir, strict=False)
    return report


__all__ = ["FAMILIES", "BackboneError", "Family", "LoadReport", "backbone_tensors", "build_backbone",
           "check_backbone", "config_from_dict", "family_of", "load_backbone", "load_backbone_config",
           "padding_strategy", "read_checkpoint", "uses_group_norm"]
