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

CONFIG_NAME = "ser_config.json"
WEIGHTS_NAME = "model.safetensors"
#: What a damaged or foreign folder raises while it is read (turned into one ValueError naming it).
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, SafetensorError)


def write_folder(directory: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` to ``model.safetensors``, then ``meta`` (with its ``format``) to ``ser_config.json``."""
    if "format" not in meta:
        raise ValueError("a model folder's config names its format")
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
        meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
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
    read without the check)."""
    meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{CONFIG_NAME} has format {found!r}, this code reads {formats[0]!r}")
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{WEIGHTS_NAME} is missing: {CONFIG_NAME} names weights the folder does not hold")
    data = weights.read_bytes()
    recorded = meta.get("weights_sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise ValueError(f"{WEIGHTS_NAME} does not match the SHA-256 that {CONFIG_NAME} records: the file changed "
                         "or was damaged after it was written")
    return meta, {k: v.to(map_location) for k, v in load(data).items()}


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
