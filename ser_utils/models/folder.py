"""The model folder: one writer and one reader for every encoder model (fine-tuned and frozen).

A folder holds ``ser_config.json`` (its ``format``, the model's settings, the encoder's architecture and
options, provenance) and ``model.safetensors`` (every tensor). The weights are written first and the
config last, each atomically: a config on disk always names a complete folder. The config records the
weights file's SHA-256, so a file changed after it was written (a flipped bit, an edit, a copy cut short)
is refused, not scored. Reading checks the format and the digest and runs no code from the folder; any
problem is one ``ValueError`` naming the folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from ..backbones import SpeechEncoder, build_backbone, config_from_dict
from ..core.atomic import atomic_path, atomic_write_text
from .deployable import check_labels, check_number, shown

CONFIG_NAME = "ser_config.json"
WEIGHTS_NAME = "model.safetensors"
#: What a damaged or foreign folder raises while it is read (turned into one ValueError naming it).
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, SafetensorError)
#: The sane range of each size an encoder's config may set (``field: (low, high)``, whole numbers), checked
#: before the encoder is built: a layer count of 1e30 ended in C++ stack frames, a width of 1e6 would
#: allocate terabytes. The largest published encoders (Whisper large, XLS-R 2B: 32-48 layers of
#: 1,280-1,920) sit well inside. A list (a wav2vec2's conv_dim) has each element checked.
BACKBONE_SIZES = {
    "d_model": (1, 8192), "encoder_layers": (1, 128), "encoder_attention_heads": (1, 256),
    "encoder_ffn_dim": (1, 65536), "num_mel_bins": (1, 512), "max_source_positions": (1, 65536),  # Whisper
    "hidden_size": (1, 8192), "num_hidden_layers": (1, 128), "num_attention_heads": (1, 256),
    "intermediate_size": (1, 65536), "num_feat_extract_layers": (1, 32), "conv_dim": (1, 8192),
    "conv_kernel": (1, 4096), "conv_stride": (1, 4096), "num_conv_pos_embeddings": (1, 4096),
    "num_conv_pos_embedding_groups": (1, 4096),  # wav2vec2, HuBERT, WavLM, data2vec-audio
}
#: The same for the head's settings (``model`` of a fine-tuned folder, ``head`` of a frozen one) and the
#: frozen head's input (hidden states x width).
HEAD_SIZES = {"head_hidden": (0, 65536), "train_layers": (1, 128)}
FROZEN_SIZES = {"layers": (2, 129), "width": (1, 8192)}


def read_json(path: str | Path):
    """A JSON file's value; ``ValueError`` for one nested too deeply to parse (``json`` recurses, and a
    config nested 100,000 deep raised ``RecursionError``, a traceback)."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be a config") from None


def check_settings(meta: dict) -> None:
    """Every number and label of an encoder folder's config in its sane range (:data:`BACKBONE_SIZES`,
    :data:`HEAD_SIZES`, :func:`check_labels`), and the head's rate the encoder's: ``ValueError`` naming the
    first field that is not, before anything is built or any audio read."""
    backbone = meta.get("backbone")
    for field, (low, high) in BACKBONE_SIZES.items():
        value = backbone.get(field) if isinstance(backbone, dict) else None
        for item in (value if isinstance(value, list) else [value] if value is not None else []):
            check_number(item, f"{CONFIG_NAME}: backbone.{field}", low, high)
    for field, (low, high) in FROZEN_SIZES.items():
        if field in meta:
            check_number(meta[field], f"{CONFIG_NAME}: {field}", low, high)
    for key in ("head", "model"):
        head = meta.get(key)
        if not isinstance(head, dict):
            continue
        for field, (low, high) in HEAD_SIZES.items():
            if head.get(field) is not None:
                check_number(head[field], f"{CONFIG_NAME}: {key}.{field}", low, high)
        if "dropout" in head:
            check_number(head["dropout"], f"{CONFIG_NAME}: {key}.dropout", 0, 1, whole=False)
        if head.get("sample_rate", SpeechEncoder.sample_rate) != SpeechEncoder.sample_rate:
            # Every encoder takes 16 kHz; a head claiming another rate was silently ignored before.
            raise ValueError(f"{CONFIG_NAME}: {key}.sample_rate is {shown(head['sample_rate'])}; the "
                             f"encoder takes {SpeechEncoder.sample_rate} Hz")
        check_labels(head.get("labels"), f"{CONFIG_NAME}: {key}.labels")


def check_parameters(meta: dict, state: dict[str, torch.Tensor]) -> None:
    """``ValueError`` when the config's layer sizes describe more parameters than the weights file holds:
    each size may be in range and their product still far too large to build (the tensors are compared
    one by one only once the encoder is built)."""
    backbone = meta.get("backbone") if isinstance(meta.get("backbone"), dict) else {}
    width = backbone.get("d_model") or backbone.get("hidden_size") or 0
    layers = backbone.get("encoder_layers") or backbone.get("num_hidden_layers") or 0
    ffn = backbone.get("encoder_ffn_dim") or backbone.get("intermediate_size") or 0
    # A lower bound: attention (4 w^2) and feed-forward (2 w f) weights of each layer, positions x width.
    described = layers * (4 * width * width + 2 * width * ffn) + (backbone.get("max_source_positions") or 0) * width
    held = sum(t.numel() for t in state.values())
    if described > held:
        raise ValueError(f"{WEIGHTS_NAME} does not fit {CONFIG_NAME}: the backbone's sizes describe at least "
                         f"{described:,} parameters, the file holds {held:,}")


def write_folder(directory: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` to ``model.safetensors``, then ``meta`` (with its ``format``) to ``ser_config.json``."""
    if "format" not in meta:
        raise ValueError("a model folder's config names its format")
    check_settings(meta)  # a folder this code would refuse to read is never written
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as weights:  # weights first: a config names a whole folder
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(weights))
        with open(weights, "rb") as handle:  # streamed: the weights are not held twice in memory
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    atomic_write_text(directory / CONFIG_NAME, json.dumps({**meta, "weights_sha256": digest}, indent=2, default=str))
    return directory


def folder_format(directory: str | Path) -> str | None:
    """The ``format`` a folder's ``ser_config.json`` names (``None``: no such file, or none named)."""
    try:
        meta = read_json(Path(directory) / CONFIG_NAME)
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


@contextmanager
def reading(directory: str | Path, what: str) -> Iterator[None]:
    """Turn whatever a damaged folder raises inside the block into ``ValueError("<folder>: not a usable <what>")``."""
    try:
        yield
    except READ_ERRORS as err:
        raise ValueError(f"{directory}: not a usable {what} ({err})") from err


def read_folder(directory: str | Path, formats: Sequence[str], map_location: str = "cpu"
                ) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config and tensors of a folder whose format is one of ``formats`` (call inside :func:`reading`).

    The weights must match the SHA-256 the config records (folders written before it was recorded are
    read without the check). Every size and label is checked first (:func:`check_settings`), and the sizes
    against the tensors the file holds (:func:`check_parameters`), before anything is built from them."""
    meta = read_json(Path(directory) / CONFIG_NAME)
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{CONFIG_NAME} has format {found!r}, this code reads {formats[0]!r}")
    check_settings(meta)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{WEIGHTS_NAME} is missing: {CONFIG_NAME} names weights the folder does not hold")
    data = weights.read_bytes()
    recorded = meta.get("weights_sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise ValueError(f"{WEIGHTS_NAME} does not match the SHA-256 that {CONFIG_NAME} records: the file changed "
                         "or was damaged after it was written")
    state = load(data)
    check_parameters(meta, state)
    return meta, {k: v.to(map_location) for k, v in state.items()}


def section(meta: dict, key: str) -> dict:
    """``meta[key]``, which must be a JSON object (an edited config may hold ``null`` or a list there)."""
    value = meta.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{CONFIG_NAME}: {key!r} must be an object, not {json.dumps(value)[:40]}")
    return value


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], part: str) -> None:
    """Load ``state`` into ``module`` strictly; a tensor missing, unexpected or of another shape than the
    config builds is one short ``ValueError`` naming the first (torch lists every one, in many lines)."""
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        key = wrong[0]
        raise ValueError(f"{WEIGHTS_NAME} does not fit {CONFIG_NAME}: {part} tensor {key!r} has shape "
                         f"{list(state[key].shape)} in the file, {list(expected[key].shape)} by the config "
                         f"({len(wrong)} such tensor(s))")
    if missing or unexpected:
        first = (f"{missing[0]!r} missing" if missing else f"{unexpected[0]!r} not expected")
        raise ValueError(f"{WEIGHTS_NAME} does not fit {CONFIG_NAME}: {part} tensor {first} "
                         f"({len(missing)} missing, {len(unexpected)} not expected)")
    module.load_state_dict(state)


def encoder_meta(encoder: SpeechEncoder) -> dict:
    """What rebuilds ``encoder``'s architecture (not its weights): config and options."""
    return {"backbone": encoder.config.to_dict(), "backbone_options": encoder.options}


def build_encoder(meta: dict, normalize_input: bool) -> SpeechEncoder:
    """A randomly initialised encoder of the architecture :func:`encoder_meta` wrote (weights load next)."""
    return build_backbone(config_from_dict(meta["backbone"]), meta.get("backbone_options"),
                          normalize_input=normalize_input)  # Whisper's encoder takes none


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` (``"encoder."``), with the prefix taken off."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
