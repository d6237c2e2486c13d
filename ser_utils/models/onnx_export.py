"""``python -m ser_utils export MODEL_DIR --onnx OUT_DIR``: an encoder model folder as an ONNX folder that
:mod:`ser_utils.models.onnx_model` scores without torch.

The graph is the encoder and the head in one: inputs ``audio`` (``(B, T)`` per-clip normalised waves for a
wav2vec2-style encoder; ``(B, n_mels, F)`` Whisper log-mel frames, zero beyond each clip, computed in numpy
because an STFT does not export) and ``lengths`` (``(B,)`` samples), both with dynamic batch and length;
outputs ``probabilities`` and, for a frozen-encoder folder, ``embeddings`` (the per-layer statistics, rounded
to float16 as the head was trained on them). The frame mask is computed inside the graph from ``lengths``,
as the encoders do, so padding changes no clip's scores. A frozen folder also gets ``head.onnx`` (the head on
embeddings alone), which adaptation (``--adapt``, speaker-normalized folders) runs after standardising the
embeddings per group in numpy.

Exported with torch's TorchScript-based exporter (``dynamo=False``): the wav2vec2 encoders branch in Python
on whether a batch is padded; traced on a padded batch, the graph holds the masked path, which is exact for
unpadded clips too. Checked with ``onnx.checker`` and scored once against the torch model before the
folder's config is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import interrupts
from ..core.atomic import atomic_write_text
from .frozen import FrozenEncoderModel
from .heads import layer_statistics
from .onnx_model import CONFIG_NAME, FORMAT, HEAD_FILE, MODEL_FILE, STATS_FILE, OnnxModel

#: ONNX operator set of the exported graphs (onnxruntime 1.32 runs up to 23).
OPSET = 17
#: Largest difference in probability allowed between the torch model and its export on the check clips.
TOLERANCE = 1e-3


class ExportError(ValueError):
    """A model folder that cannot be exported (one line naming it)."""


class _Graph(nn.Module):
    """The exported network: the encoder's input (normalised waves, or Whisper's log-mel) and lengths in,
    probabilities (and a frozen model's embeddings) out."""

    def __init__(self, model):
        super().__init__()
        self.frozen = isinstance(model, FrozenEncoderModel)
        # a frozen model is no nn.Module: its encoder and head are registered here, so their tensors are weights
        self.model = model if not self.frozen else None
        self.encoder = model.encoder
        self.head = model.head if self.frozen else None
        self.requires_grad_(False)
        self.whisper = self.encoder.family == "whisper"

    def states(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.whisper:
            return self.encoder(audio, lengths)
        from ..backbones.whisper import _valid, mel_frames

        encoder = self.encoder  # WhisperEncoder.embed after its log-mel (the numpy front end's)
        x = nn.functional.gelu(encoder.conv1(audio))
        if encoder.input_mode != "pad30":
            x = x * _valid(mel_frames(lengths), x)
        x = nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)
        x = x + encoder.embed_positions.weight[:x.shape[1]]
        mask = encoder.frame_mask(lengths, x.shape[1])
        return torch.stack([x, *encoder._layers_from(x, mask, 0)], dim=1), mask

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor):
        states, mask = self.states(audio, lengths)
        if not self.frozen:
            model = self.model
            logits = model.head(model.pool(model.combine_layers(model.standardized(states)), mask))
            return torch.softmax(logits, dim=-1)
        embeddings = layer_statistics(states, mask).half().float()  # the precision the head was trained on
        return torch.softmax(self.head(embeddings), dim=-1), embeddings


class _Head(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(embeddings), dim=-1)


def export_onnx(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the encoder model folder ``model_dir`` to the ONNX folder ``out_dir`` (created; an existing
    ONNX folder there is replaced). ``ValueError`` (``ExportError``, ``ModelLoadError``: one line naming the
    folder) for a folder that cannot be exported."""
    from .baseline import is_baseline_folder
    from .loading import load_deployable

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if model_dir.is_dir() and is_baseline_folder(model_dir):
        raise ExportError(f"{model_dir}: a handcrafted-feature baseline (openSMILE / librosa features and a "
                          "scikit-learn pipeline, no network): nothing to export, predict scores it as it is")
    _check_out(model_dir, out_dir)
    model = load_deployable(model_dir, "cpu")
    if getattr(model, "encoder", None) is None:
        raise ExportError(f"{model_dir}: not an encoder model folder")
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write(model, model_dir, staging)
        interrupts.check()  # a Ctrl-C during the export (inside interrupts.deferred): nothing is written
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def _write(model, model_dir: Path, staging: Path) -> None:
    """The ONNX folder's files in ``staging``, checked against ``model``."""
    graph = _Graph(model).eval()
    front = _front_end(model.encoder)
    if front["kind"] == "log-mel":
        np.save(staging / "mel_filters.npy", model.encoder.filters.float().numpy())
    _export_graph(graph, front, staging / MODEL_FILE)
    files = [MODEL_FILE] + (["mel_filters.npy"] if front["kind"] == "log-mel" else [])
    if graph.frozen:
        _export_head(model.head, staging / HEAD_FILE, model.encoder)
        np.savez(staging / STATS_FILE, mean=model.head.mean.double().numpy(), std=model.head.std.double().numpy(),
                 **({"prior_var": np.asarray(model.normalization["prior_var"], dtype=np.float64)}
                    if model.normalization and "prior_var" in model.normalization else {}))
        files += [HEAD_FILE, STATS_FILE]
    meta = _meta(model, model_dir, front, graph.frozen, {name: _sha256(staging / name) for name in files})
    atomic_write_text(staging / CONFIG_NAME, json.dumps(meta, indent=2))
    _compare(model, staging)


def _check_out(model_dir: Path, out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir / CONFIG_NAME).is_file() and any(out_dir.iterdir()):
        raise ExportError(f"--onnx {out_dir}: a folder that is not empty and holds no ONNX model; choose a new "
                          "folder name")
    if out_dir.exists() and out_dir.resolve() == model_dir.resolve():
        raise ExportError(f"--onnx {out_dir}: is the model folder itself; choose a new folder name")
    if out_dir.exists() and json.loads((out_dir / CONFIG_NAME).read_text()).get("format") != FORMAT:
        raise ExportError(f"--onnx {out_dir}: holds a model folder that is not an ONNX export; choose a new "
                          "folder name")


def _front_end(encoder) -> dict:
    if encoder.family == "whisper":
        return {"kind": "log-mel", "n_mels": int(encoder.config.num_mel_bins), "input": encoder.input_mode,
                "max_samples": int(encoder.max_samples)}
    return {"kind": "waveform", "normalize": bool(encoder.normalize_input)}


def _example(encoder, front: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two clips (the masked path is what gets traced)."""
    lengths = torch.tensor([16_000, 12_000])
    if front["kind"] == "log-mel":
        frames = front["max_samples"] // 160 if front["input"] == "pad30" else 100
        return torch.randn(2, front["n_mels"], frames), lengths
    return torch.randn(2, 16_000), lengths


def _export_graph(graph: _Graph, front: dict, path: Path) -> None:
    audio, lengths = _example(graph.encoder, front)
    axes = {"audio": {0: "batch", (2 if front["kind"] == "log-mel" else 1): "time"}, "lengths": {0: "batch"},
            "probabilities": {0: "batch"}, "embeddings": {0: "batch"}}
    outputs = ["probabilities", "embeddings"] if graph.frozen else ["probabilities"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python branches (see the module docstring)
        torch.onnx.export(graph, (audio, lengths), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["audio", "lengths"], output_names=outputs,
                          dynamic_axes={k: v for k, v in axes.items() if k in ("audio", "lengths", *outputs)})
    _check(path)


def _export_head(head, path: Path, encoder) -> None:
    example = torch.randn(2, encoder.num_layers + 1, 3, encoder.hidden_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Head(head).eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["embeddings"], output_names=["probabilities"],
                          dynamic_axes={"embeddings": {0: "batch"}, "probabilities": {0: "batch"}})
    _check(path)


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def _meta(model, model_dir: Path, front: dict, frozen: bool, digests: dict[str, str]) -> dict:
    normalization = dict(model.normalization or {"kind": "none"})
    normalization.pop("prior_var", None)  # in the statistics file
    return {"format": FORMAT, "source": str(model_dir), "source_format": _source_format(model_dir),
            "description": model.describe(), "labels": list(model.labels), "sample_rate": int(model.sample_rate),
            "min_seconds": float(model.min_seconds), "max_seconds": model.max_seconds,
            "family": model.encoder.family, "front_end": front, "frozen": frozen, "normalization": normalization,
            "weights_sha256": digests[MODEL_FILE], "files_sha256": digests, "opset": OPSET,
            "exported_with": {"torch": torch.__version__, "onnx": _version("onnx")}}


def _source_format(model_dir: Path) -> str | None:
    from .folder import folder_format

    return folder_format(model_dir)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _compare(model, folder: Path) -> None:
    """Score three clips of different lengths with both; ``ExportError`` if they differ by more than
    :data:`TOLERANCE` (the export would not be the model)."""
    import os

    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_000, 9_000, 23_456)]
    exported = OnnxModel.from_folder(folder)
    fp32 = os.environ.get("SER_PRECISION")
    os.environ["SER_PRECISION"] = "fp32"  # the graph is float32: compare with the float32 model
    try:
        expected = model.predict_proba(waves)
    finally:
        if fp32 is None:
            os.environ.pop("SER_PRECISION")
        else:
            os.environ["SER_PRECISION"] = fp32
    got = exported.predict_proba(waves)
    worst = float(np.abs(got - expected).max())
    if worst > TOLERANCE:
        raise ExportError(f"{folder}: the exported graph differs from the model by {worst:.2g} in probability "
                          f"(more than {TOLERANCE:g}); not written")
