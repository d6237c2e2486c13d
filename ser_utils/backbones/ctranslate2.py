"""CTranslate2 model files (what faster-whisper users have on disk), read without CTranslate2.

A CTranslate2 folder holds ``model.bin`` (or ``model.bin.part1..N``, joined in order) and a
``config.json`` of decoding settings. ``model.bin`` is a short header and named raw arrays (CTranslate2's
``ModelSpec._serialize``): uint32 binary version (6), the spec name (``WhisperSpec``), uint32 spec
revision, uint32 variable count, then per variable its name, rank, dims, a dtype code, a byte count
and the raw little-endian bytes; then aliases (a name standing for another variable, e.g. tied
embeddings). Strings are a uint16 length (with the terminating NUL) and UTF-8 bytes. Nothing in the
file is executed.

Weights quantised to int8 or int16 carry a ``weight_scale`` beside them (int8: one per output row,
int16: one scalar); they are dequantised here (``weight / weight_scale``).

:func:`to_transformers` maps a ``WhisperSpec``'s variables to transformers' ``WhisperForConditionalGeneration``
names. CTranslate2's converter (``converters/transformers.py``, ``WhisperLoader``) fuses a layer's
q, k and v projections into ``self_attention/linear_0`` (and the cross-attention's k and v into
``attention/linear_1``) with a zero bias for k, which has none in Whisper: they are split back, and
the zero is checked.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import BackboneError

BINARY_VERSION = 6
#: dtype codes of CTranslate2's DataType enum (include/ctranslate2/types.h), in order.
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32, "float16": np.float16,
          "bfloat16": np.uint16}  # bfloat16: read as raw 16-bit words, viewed by torch


@dataclass
class ModelFile:
    """What a CTranslate2 ``model.bin`` holds: spec name and revision, variables (``name -> tensor``,
    as stored, scalars included) and their stored dtypes, the shape of every variable in the file
    (also those not loaded), and the files read."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    dtypes: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    files: list[Path]

    @property
    def quantization(self) -> str:
        """The stored dtype of the weight matrices (``float16``, ``int8`` ...)."""
        weights = [d for n, d in self.dtypes.items() if n.endswith("/weight")]
        return max(set(weights), key=weights.count) if weights else "none"


def model_files(folder: str | Path) -> list[Path]:
    """``model.bin``, or ``model.bin.part1..N`` in order; :class:`BackboneError` for a gap."""
    folder = Path(folder)
    if (folder / "model.bin").is_file():
        return [folder / "model.bin"]
    parts = {int(m.group(1)): p for p in folder.glob("model.bin.part*")
             if (m := re.fullmatch(r"model\.bin\.part(\d+)", p.name))}
    if not parts:
        raise BackboneError(f"{folder}: no model.bin (not a CTranslate2 model folder)")
    missing = sorted(set(range(1, max(parts) + 1)) - set(parts))
    if missing:
        raise BackboneError(f"{folder}: model.bin.part{missing[0]} is missing (parts "
                            f"{', '.join(str(i) for i in sorted(parts))} are there)")
    return [parts[i] for i in sorted(parts)]


def is_ctranslate2_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "model.bin").is_file() or any(folder.glob("model.bin.part*"))


class _Parts:
    """The parts of a split file read as one stream (no joined copy is written)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.index, self.handle = paths, 0, open(paths[0], "rb")

    def _next(self) -> bool:
        if self.index + 1 == len(self.paths):
            return False
        self.handle.close()
        self.index += 1
        self.handle = open(self.paths[self.index], "rb")
        return True

    def tell(self) -> tuple[int, int]:
        """(part, offset) of the next byte."""
        return self.index, self.handle.tell()

    def seek(self, place: tuple[int, int]) -> None:
        self.handle.close()
        self.index = place[0]
        self.handle = open(self.paths[self.index], "rb")
        self.handle.seek(place[1])

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = self.handle.read(n)
            if not chunk:
                if not self._next():
                    break
                continue
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def skip(self, n: int) -> None:
        while n > 0:
            here = self.handle.tell()
            step = min(n, self.paths[self.index].stat().st_size - here)
            self.handle.seek(here + step)
            n -= step
            if n and not self._next():
                raise EOFError

    def close(self) -> None:
        self.handle.close()


def read_model(folder: str | Path, keep: Callable[[str], bool] = lambda name: True) -> ModelFile:
    """Read a CTranslate2 ``model.bin`` (or its parts); only variables for which ``keep(name)`` is true
    are loaded (the others are skipped on disk; scalars are always kept), aliases resolved among those
    kept.

    Raises :class:`BackboneError` for anything that is not a whole file of a known binary version.
    """
    files = model_files(folder)
    stream = _Parts(files)
    name = "<header>"
    try:
        version = _u32(stream)
        if version != BINARY_VERSION:
            raise BackboneError(f"{files[0]}: CTranslate2 binary version {version}; this reader knows "
                                f"version {BINARY_VERSION} (CTranslate2 4.x)")
        spec, revision, count = _string(stream), _u32(stream), _u32(stream)
        variables, dtypes, shapes, skipped = {}, {}, {}, {}
        for _ in range(count):
            name = _string(stream)
            dims = [_u32(stream) for _ in range(_byte(stream))]
            dtype, size = _dtype(_byte(stream), name), _u32(stream)
            shapes[name] = tuple(dims)
            if dims and not keep(name):
                skipped[name] = (stream.tell(), size, dtype, dims)  # an alias that is kept may need it
                stream.skip(size)
                continue
            variables[name], dtypes[name] = _read_tensor(stream, size, dtype, dims, name), dtype
        name = "<aliases>"
        aliases = [(_string(stream), _string(stream)) for _ in range(_u32(stream))]
        for alias, target in aliases:
            shapes[alias] = shapes.get(target, ())
            if not keep(alias):
                continue
            if target not in variables and target in skipped:  # tied to a variable not kept: read it now
                place, size, dtype, dims = skipped[target]
                stream.seek(place)
                variables[target], dtypes[target] = _read_tensor(stream, size, dtype, dims, target), dtype
            if target not in variables:
                raise ValueError(f"alias {alias} names {target}, which the file does not hold")
            variables[alias], dtypes[alias] = variables[target], dtypes[target]
        variables = {n: v for n, v in variables.items() if keep(n) or not v.ndim}
        dtypes = {n: d for n, d in dtypes.items() if n in variables}
    except EOFError:
        raise BackboneError(f"{folder}: model.bin ends inside {name} (the file is truncated, or a part is "
                            "missing)") from None
    except (UnicodeDecodeError, ValueError, struct.error) as err:
        raise BackboneError(f"{folder}: not a CTranslate2 model.bin ({err})") from None
    finally:
        stream.close()
    return ModelFile(spec, revision, variables, dtypes, shapes, files)


def _u32(stream) -> int:
    raw = stream.read(4)
    if len(raw) < 4:
        raise EOFError
    return struct.unpack("<I", raw)[0]


def _byte(stream) -> int:
    raw = stream.read(1)
    if not raw:
        raise EOFError
    return raw[0]


def _string(stream) -> str:
    raw = stream.read(2)
    if len(raw) < 2:
        raise EOFError
    text = stream.read(struct.unpack("<H", raw)[0])
    if not text or text[-1] != 0:
        raise EOFError if len(text) == 0 else ValueError("a name without its terminating NUL")
    return text[:-1].decode("utf-8")


def _dtype(code: int, name: str) -> str:
    if code >= len(DTYPES):
        raise ValueError(f"{name}: unknown dtype code {code}")
    return DTYPES[code]


def _read_tensor(stream, size: int, dtype: str, dims: list[int], name: str) -> torch.Tensor:
    raw = stream.read(size)
    if len(raw) != size:
        raise EOFError
    return _tensor(raw, dtype, dims, name)


def _tensor(raw: bytes, dtype: str, dims: list[int], name: str) -> torch.Tensor:
    array = np.frombuffer(raw, dtype=_NUMPY[dtype]).astype(_NUMPY[dtype], copy=True)
    if array.size != int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"{name}: {len(raw)} bytes do not make a {dtype} array of shape {tuple(dims)}")
    tensor = torch.from_numpy(array.reshape(dims))
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def dequantized(model: ModelFile) -> dict[str, torch.Tensor]:
    """The float32 value of every array variable (scalars and ``*_scale`` companions dropped):
    ``int8`` / ``int16`` weights divided by their ``weight_scale``, floats converted."""
    values = {}
    for name, tensor in model.variables.items():
        if name.endswith("_scale") or tensor.ndim == 0:
            continue
        scale = model.variables.get(f"{name}_scale")
        if model.dtypes[name] in ("int8", "int16"):
            if scale is None:
                raise BackboneError(f"{name}: {model.dtypes[name]} weights without a weight_scale (quantised "
                                    "in a way this reader does not know)")
            scale = scale.float()
            shape = (-1,) + (1,) * (tensor.ndim - 1) if scale.ndim == 1 else ()
            values[name] = tensor.float() / scale.reshape(shape)
        elif model.dtypes[name] == "int32":
            values[name] = tensor
        else:
            values[name] = tensor.float()
    return values


#: ``WhisperSpec`` variable names -> transformers' names (``{i}``: layer index).
_LAYER_NAMES = {
    "self_attention/layer_norm/gamma": "self_attn_layer_norm.weight",
    "self_attention/layer_norm/beta": "self_attn_layer_norm.bias",
    "self_attention/linear_1/weight": "self_attn.out_proj.weight",
    "self_attention/linear_1/bias": "self_attn.out_proj.bias",
    "attention/layer_norm/gamma": "encoder_attn_layer_norm.weight",
    "attention/layer_norm/beta": "encoder_attn_layer_norm.bias",
    "attention/linear_0/weight": "encoder_attn.q_proj.weight",
    "attention/linear_0/bias": "encoder_attn.q_proj.bias",
    "attention/linear_2/weight": "encoder_attn.out_proj.weight",
    "attention/linear_2/bias": "encoder_attn.out_proj.bias",
    "ffn/layer_norm/gamma": "final_layer_norm.weight",
    "ffn/layer_norm/beta": "final_layer_norm.bias",
    "ffn/linear_0/weight": "fc1.weight",
    "ffn/linear_0/bias": "fc1.bias",
    "ffn/linear_1/weight": "fc2.weight",
    "ffn/linear_1/bias": "fc2.bias",
}
_TOP_NAMES = {
    "encoder/conv1/weight": "model.encoder.conv1.weight", "encoder/conv1/bias": "model.encoder.conv1.bias",
    "encoder/conv2/weight": "model.encoder.conv2.weight", "encoder/conv2/bias": "model.encoder.conv2.bias",
    "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
    "encoder/layer_norm/gamma": "model.encoder.layer_norm.weight",
    "encoder/layer_norm/beta": "model.encoder.layer_norm.bias",
    "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
    "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
    "decoder/layer_norm/gamma": "model.decoder.layer_norm.weight",
    "decoder/layer_norm/beta": "model.decoder.layer_norm.bias",
    "decoder/projection/weight": "proj_out.weight",
}
#: Fused projections: CTranslate2 name -> the transformers projections it holds, in order.
_FUSED = {"self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
          "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj")}
_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)")


def to_transformers(values: dict[str, torch.Tensor], source: str = "model.bin") -> dict[str, torch.Tensor]:
    """A ``WhisperSpec``'s float values (:func:`dequantized`) under ``WhisperForConditionalGeneration``
    names. Fused q/k/v projections are split back; their k bias must be zero (Whisper's k has none),
    else :class:`BackboneError`. Variables of no known name are left out."""
    state = {}
    for name, value in values.items():
        if name in _TOP_NAMES:
            state[_TOP_NAMES[name]] = value
            continue
        match = _LAYER.fullmatch(name)
        if not match:
            continue
        part, index, rest = match.groups()
        prefix = f"model.{part}.layers.{index}."
        fused, _, kind = rest.rpartition("/")
        if fused in _FUSED:
            targets = _FUSED[fused]
            pieces = value.chunk(len(targets), dim=0)
            for target, piece in zip(targets, pieces, strict=True):
                if kind == "bias" and target.endswith("k_proj"):
                    if piece.abs().max() > 0:
                        raise BackboneError(f"{source}: {name} has a non-zero key bias "
                                            f"(max {float(piece.abs().max()):.3g}); Whisper's k_proj has none")
                    continue
                state[f"{prefix}{target}.{kind}"] = piece.contiguous()
        elif rest in _LAYER_NAMES:
            state[prefix + _LAYER_NAMES[rest]] = value
    return state


def whisper_config(model: ModelFile):
    """A ``transformers.WhisperConfig`` with the sizes the arrays of a ``WhisperSpec`` have (read from the
    header: also for the parts not loaded)."""
    from transformers import WhisperConfig

    if model.spec != "WhisperSpec":
        raise BackboneError(f"{model.files[0]}: a CTranslate2 {model.spec}, not a Whisper model "
                            "(supported CTranslate2 spec: WhisperSpec)")
    shapes = model.shapes
    try:
        sizes = {"d_model": shapes["encoder/conv1/weight"][0], "num_mel_bins": shapes["encoder/conv1/weight"][1],
                 "encoder_layers": _count_layers(shapes, "encoder"),
                 "decoder_layers": _count_layers(shapes, "decoder"),
                 "encoder_ffn_dim": shapes["encoder/layer_0/ffn/linear_0/weight"][0],
                 "max_source_positions": shapes["encoder/position_encodings/encodings"][0],
                 "encoder_attention_heads": int(model.variables["encoder/num_heads"]),
                 "vocab_size": shapes["decoder/embeddings/weight"][0],
                 "max_target_positions": shapes["decoder/position_encodings/encodings"][0],
                 "decoder_ffn_dim": shapes["decoder/layer_0/ffn/linear_0/weight"][0],
                 "decoder_attention_heads": int(model.variables["decoder/num_heads"])}
    except (KeyError, IndexError) as err:
        raise BackboneError(f"{model.files[0]}: a WhisperSpec without {err.args[0]}") from None
    sizes = {k: int(v) for k, v in sizes.items()}
    if sizes["vocab_size"] <= 50_257:  # not Whisper's vocabulary: its special-token ids would not exist
        sizes.update(pad_token_id=None, bos_token_id=None, eos_token_id=None,
                     decoder_start_token_id=sizes["vocab_size"] - 1)
    return WhisperConfig(**sizes)


def _count_layers(names: Iterable[str], part: str) -> int:
    indices = {int(m.group(2)) for n in names if (m := _LAYER.fullmatch(n)) and m.group(1) == part}
    return max(indices) + 1 if indices else 0
