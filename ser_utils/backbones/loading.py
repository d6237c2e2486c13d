"""Loading a backbone strictly: the checkpoint's family, its encoder, every tensor from the checkpoint.

transformers checkpoints are loaded by their ``model_type`` (:data:`FAMILIES`). Hub repositories save
the backbone inside a task model - a ``Wav2Vec2ForPreTraining`` (keys ``wav2vec2.*`` next to
``quantizer.*``, ``project_q.*``, ``project_hid.*``), a ``HubertForCTC`` (``hubert.*`` next to
``lm_head.*``), a ``WhisperForConditionalGeneration`` (``model.encoder.*`` next to ``model.decoder.*``
and ``proj_out.*``) - or on its own (no prefix). The task prefix is stripped, task heads and decoders
are set aside, and the legacy weight-norm names ``weight_g``/``weight_v`` are matched to today's
``parametrizations.weight.original0/1``. CTranslate2 folders (Whisper) are read by
:mod:`.ctranslate2` and renamed to transformers' names first.

Loading is strict: every tensor of the encoder must come from the checkpoint with its shape, else
:class:`BackboneError` names the first few offenders. Nothing is silently left at its random
initialisation, and the report is one line (:meth:`LoadReport.summary`), not a table per run.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError

from .base import BackboneError, LoadReport, SpeechEncoder
from .resolve import Checkpoint, resolve, unavailable
from .ssl import SSL_FAMILIES, Family, SSLEncoder
from .whisper import WhisperEncoder

#: Weight files in the order transformers prefers them (an index file lists the shards).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: Legacy weight-norm names (``torch.nn.utils.weight_norm``) -> today's parametrization names.
LEGACY_NAMES = {"weight_g": "parametrizations.weight.original0",
                "weight_v": "parametrizations.weight.original1"}
#: Every supported ``model_type``: the wav2vec2-style families and Whisper (its encoder only).
FAMILIES = {**SSL_FAMILIES, "whisper": Family("whisper", "WhisperConfig", "WhisperModel", "encoder")}
#: Key prefixes of a Whisper encoder in the task models that save one.
WHISPER_PREFIXES = ("model.encoder.", "encoder.")


def family_of(config) -> Family:
    """The :class:`Family` of a transformers config (or of its ``model_type`` string)."""
    model_type = getattr(config, "model_type", config)  # a config object, or the value of its model_type
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise BackboneError(f"model_type {model_type!r} is not a supported backbone; "
                            f"supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words (``null``, ``an array``, ...)."""
    kinds = {type(None): "null", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def config_from_dict(settings: dict):
    """A backbone config from its ``to_dict()`` form (``model_type`` picks the class)."""
    if not isinstance(settings, dict):
        raise BackboneError(f"a backbone config is a JSON object, not {json_kind(settings)}")
    config_class, _ = family_of(settings.get("model_type")).classes()
    return config_class.from_dict(settings)


def build_backbone(config, options: dict | None = None, **kwargs) -> SpeechEncoder:
    """A randomly initialised encoder of the config's family (tests, benchmarks, loading, saved models)."""
    if family_of(config).model_type == "whisper":
        return WhisperEncoder(config, options)
    _, model_class = family_of(config).classes()
    return SSLEncoder(model_class(config), options, **kwargs)


def load_backbone_config(name_or_dir: str | Checkpoint):
    """The checkpoint's config, of its family's class; :class:`BackboneError` if unreadable or unsupported."""
    checkpoint = name_or_dir if isinstance(name_or_dir, Checkpoint) else resolve(name_or_dir)
    if checkpoint.format == "ctranslate2":
        from .ctranslate2 import read_model, whisper_config

        return whisper_config(read_model(checkpoint.folder, keep=lambda name: False))
    path = checkpoint.file("config.json")
    if path is None and checkpoint.folder is None:
        raise unavailable(checkpoint.name)  # offline, the hub client answers "no such file"
    if path is None:
        raise BackboneError(f"{checkpoint.name}: no config.json (not a Hugging Face checkpoint folder, and no "
                            "CTranslate2 model.bin)")
    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BackboneError(f"{path}: unreadable config ({err})") from err
    if not isinstance(settings, dict):
        raise BackboneError(f"{path}: a config is a JSON object with model_type, not {json_kind(settings)}")
    try:
        return config_from_dict(settings)
    except BackboneError as err:
        raise BackboneError(f"{path}: {err}") from None


def read_checkpoint(name_or_dir: str | Checkpoint) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a transformers checkpoint's weights (shards joined) and the file they came from."""
    checkpoint = name_or_dir if isinstance(name_or_dir, Checkpoint) else resolve(name_or_dir)
    for filename in WEIGHT_FILES:
        path = checkpoint.file(filename)
        if path is None:
            continue
        try:
            if filename.endswith(".index.json"):
                shards = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
                state = {}
                for shard in shards:
                    shard_path = checkpoint.file(shard)
                    if shard_path is None:
                        raise BackboneError(f"{checkpoint.name}: shard {shard} listed in {filename} is missing")
                    state.update(_read_weights(shard_path))
                return state, filename
            return _read_weights(path), filename
        except BackboneError:
            raise
        except pickle.UnpicklingError as err:
            with open(path, "rb") as handle:  # a bare pickle starts with PROTO; torch.save's zip with "PK"
                bare_pickle = handle.read(1) == b"\x80"
            if not (bare_pickle or "Unsupported global" in str(err)):  # not a pickle of objects: garbage bytes
                raise BackboneError(f"{path}: unreadable weights ({type(err).__name__}: {err})") from err
            # a pickle of objects or calls: torch's message runs to ten lines; the point fits in one
            raise BackboneError(f"{path}: not loaded: this pickle holds more than tensors (objects or calls that "
                                "would run code when unpickled); only plain tensors are read from a .bin. "
                                "Use model.safetensors, or re-save the weights from a trusted copy") from err
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
            raise BackboneError(f"{path}: unreadable weights ({type(err).__name__}: {err})") from err
    raise BackboneError(f"{checkpoint.name}: no weights ({' or '.join(WEIGHT_FILES[::2])})")


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    with warnings.catch_warnings():  # a pickle not written by torch.save: its protocol warning says nothing more
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)  # weights only: no code from pickles


def modern_name(key: str) -> str:
    """``...conv.weight_g`` -> ``...conv.parametrizations.weight.original0`` (others unchanged)."""
    stem, _, last = key.rpartition(".")
    return f"{stem}.{LEGACY_NAMES[last]}" if last in LEGACY_NAMES else key


def backbone_tensors(state: dict[str, torch.Tensor], prefix: str | tuple[str, ...]) -> tuple[dict, list[str]]:
    """Split a checkpoint into the backbone's tensors (task prefix stripped, legacy names modernised)
    and the keys set aside (task heads: ``quantizer.*``, ``project_q.*``, ``lm_head.*``, a decoder...).
    ``prefix`` may be several candidates, the first found in ``state`` is used."""
    for candidate in (prefix,) if isinstance(prefix, str) else prefix:
        marker = candidate if candidate.endswith(".") else f"{candidate}."
        if any(key.startswith(marker) for key in state):
            inside = {modern_name(k[len(marker):]): v for k, v in state.items() if k.startswith(marker)}
            return inside, sorted(k for k in state if not k.startswith(marker))
    return {modern_name(k): v for k, v in state.items()}, []  # a bare backbone, saved without a task head


def _whisper_tensors(checkpoint: Checkpoint, state: dict) -> tuple[dict, list[str]]:
    tensors, aside = backbone_tensors(state, WHISPER_PREFIXES)
    if not aside and any(k.startswith("decoder.") for k in tensors):  # a bare WhisperModel with no prefix
        aside = sorted(k for k in tensors if not k.startswith(("conv", "embed_positions", "layers", "layer_norm")))
        tensors = {k: v for k, v in tensors.items() if k not in set(aside)}
    return tensors, aside


def _ctranslate2_tensors(checkpoint: Checkpoint):
    """Config, encoder tensors (transformers names), set-aside names and the weights file of a CTranslate2 folder."""
    from .ctranslate2 import dequantized, read_model, to_transformers, whisper_config

    model = read_model(checkpoint.folder, keep=lambda name: name.startswith("encoder/"))
    config = whisper_config(model)
    state = to_transformers(dequantized(model), source=str(checkpoint.folder))
    tensors, _ = backbone_tensors(state, WHISPER_PREFIXES)
    aside = [n for n in model.shapes if not n.startswith("encoder/") and model.shapes[n]]
    files = "+".join(p.name for p in model.files)
    return config, tensors, aside, f"{files} (CTranslate2 {model.quantization})"


def _normalization(checkpoint: Checkpoint) -> dict:
    """``normalize_input`` from a wav2vec2-style checkpoint's ``preprocessor_config.json`` (``do_normalize``;
    without one, wav2vec2's default: normalize)."""
    path = checkpoint.file("preprocessor_config.json")
    if path is None:
        return {"normalize_input": True}
    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BackboneError(f"{path}: unreadable preprocessor config ({err})") from err
    rate = settings.get("sampling_rate", 16_000) if isinstance(settings, dict) else 16_000
    if rate != 16_000:
        raise BackboneError(f"{path}: sampling_rate {rate}; the package feeds backbones 16 kHz audio")
    return {"normalize_input": bool(settings.get("do_normalize", True))}


def load_backbone(name_or_dir: str, *, strict: bool = True,
                  options: dict | None = None) -> tuple[SpeechEncoder, LoadReport]:
    """The encoder of a checkpoint, its own family's, with every tensor from the checkpoint.

    ``name_or_dir`` is resolved as :mod:`.resolve` says (local folder, installed weight package, hub);
    ``options`` are the encoder's own settings (Whisper: ``{"input": "clip" | "pad30"}``). Raises
    :class:`BackboneError` for an unreadable folder, an unsupported ``model_type`` and (with ``strict``)
    an encoder tensor that is missing or of the wrong shape.
    """
    checkpoint = resolve(name_or_dir)
    if checkpoint.format == "ctranslate2":
        config, tensors, aside, weights_file = _ctranslate2_tensors(checkpoint)
        encoder = build_backbone(config, options)
    else:
        config = load_backbone_config(checkpoint)
        state, weights_file = read_checkpoint(checkpoint)
        if family_of(config).model_type == "whisper":
            tensors, aside = _whisper_tensors(checkpoint, state)
            encoder = build_backbone(config, options)
        else:
            tensors, aside = backbone_tensors(state, family_of(config).prefix)
            encoder = build_backbone(config, options, **_normalization(checkpoint))
    report = _load_tensors(encoder, tensors, aside, checkpoint, weights_file)
    if strict and not report.complete:
        raise BackboneError(report.problem())
    return encoder.eval(), report


def _load_tensors(encoder: SpeechEncoder, tensors: dict, aside: list[str], checkpoint: Checkpoint,
                  weights_file: str) -> LoadReport:
    target_module = encoder.model if isinstance(encoder, SSLEncoder) else encoder
    expected = target_module.state_dict()
    by_modern_name = {modern_name(k): k for k in expected}  # also matches a model on legacy weight norm
    matched, mismatched = {}, {}
    for key, value in tensors.items():
        target = by_modern_name.get(key)
        if target is None:
            continue
        if value.shape != expected[target].shape:
            mismatched[target] = f"{target} {tuple(value.shape)} -> {tuple(expected[target].shape)}"
        else:
            matched[target] = value.to(expected[target].dtype)
    target_module.load_state_dict(matched, strict=False)
    decoder = any("decoder" in k for k in aside)
    return LoadReport(
        source=str(checkpoint.name), family=encoder.family, padding=encoder.padding, layers=encoder.num_layers,
        hidden_size=encoder.hidden_size, parameters=sum(p.numel() for p in encoder.parameters()),
        tensors_loaded=len(matched), tensors_expected=len(expected), weights_file=weights_file,
        head_tensors=len(aside), missing=sorted(k for k in expected if k not in matched and k not in mismatched),
        mismatched=sorted(mismatched.values()), unused=sorted(k for k in tensors if k not in by_modern_name),
        front_end=encoder.description(), resolved=checkpoint.how, set_aside="decoder" if decoder else "task-head")


def check_backbone(name_or_dir: str, options: dict | None = None) -> LoadReport:
    """Load a checkpoint as :func:`load_backbone` does and return its report (the ``backbone`` command)."""
    _, report = load_backbone(name_or_dir, strict=False, options=options)
    return report


def backbone_check(name_or_dir: str, options: dict | None = None) -> tuple[LoadReport | None, str | None]:
    """The check of ``python -m ser_utils backbone``, run before any long job: the load report and
    ``None``, or ``None`` and the one-line reason the backbone cannot run (unavailable, unsupported, or
    not every encoder tensor in the checkpoint)."""
    try:
        report = check_backbone(name_or_dir, options)
    except BackboneError as err:
        return None, str(err)
    return (report, None) if report.complete else (None, report.problem())
