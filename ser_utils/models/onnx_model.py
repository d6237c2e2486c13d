"""An exported encoder model (:mod:`ser_utils.models.onnx_export`) scored with onnxruntime, without torch.

The folder holds ``ser_config.json`` (format, labels, rates, shortest and longest input, the front end, the
normalization, each file's SHA-256), ``model.onnx`` (encoder + head), and for a frozen-encoder model
``head.onnx`` and ``head_statistics.npz`` (adaptation), for Whisper ``mel_filters.npy``. The front end runs
here in numpy: Whisper's log-mel (:func:`log_mel`, the torch one of :mod:`ser_utils.backbones.whisper`
written again without torch) or wav2vec2's per-clip normalisation. Same interface as every deployable
model (labels, rates, ``check_clips``, ``predict_proba`` with groups), so ``predict`` and ``evaluate``
use it as they use the torch folders. This module imports neither torch nor anything that does.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.audio import longest_first, normalize

CONFIG_NAME = "ser_config.json"
FORMAT = "ser_utils.OnnxModel/1"
MODEL_FILE, HEAD_FILE, STATS_FILE, MEL_FILE = "model.onnx", "head.onnx", "head_statistics.npz", "mel_filters.npy"
N_FFT, HOP = 400, 160  # Whisper: 25 ms windows every 10 ms at 16 kHz
#: Clips per onnxruntime call (longest first, as the torch models batch them).
BATCH = 8
#: torch.hann_window(400): the periodic Hann window.
HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def is_onnx_folder(directory: str | Path) -> bool:
    """Whether ``directory``'s ``ser_config.json`` names the ONNX format (read as JSON, nothing else)."""
    try:
        meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def log_mel(wave: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Whisper's log-mel of one clip ``(n,)`` -> ``(n_mels, n // 160)`` float32: reflect-padded 25 ms Hann
    windows every 10 ms, power spectrum, the mel filters, ``log10`` clamped at 1e-10 and at 8 below the
    clip's maximum, then ``(x + 4) / 4`` (the ``WhisperFeatureExtractor``'s, as the torch front end)."""
    frames = len(wave) // HOP
    padded = np.pad(np.asarray(wave, np.float32), (N_FFT // 2, N_FFT // 2), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:frames]
    spectrum = np.fft.rfft(windows * HANN, axis=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    log_spec = np.log10(np.maximum(filters @ power.T, 1e-10))
    return ((np.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0).astype(np.float32)


class OnnxModel:
    """A model folder of :mod:`ser_utils.models.onnx_export`: ``predict_proba(waves, groups)`` with onnxruntime.

    >>> model = OnnxModel.from_folder("whisper-frozen-onnx")        # doctest: +SKIP
    """

    def __init__(self, meta: dict, session, head=None, statistics: dict | None = None,
                 filters: np.ndarray | None = None):
        self.meta = meta
        self.session, self.head, self.filters = session, head, filters
        self.statistics = statistics or {}
        self.labels = tuple(meta["labels"])
        self.sample_rate = int(meta["sample_rate"])
        self.min_seconds = float(meta["min_seconds"])
        self.max_seconds = None if meta["max_seconds"] is None else float(meta["max_seconds"])
        normalization = dict(meta["normalization"])
        if "prior_var" in self.statistics:
            normalization["prior_var"] = self.statistics["prior_var"]
        self.normalization = normalization if normalization.get("kind", "none") != "none" else None
        self.front = meta["front_end"]
        self.system = meta["description"].split(":")[0]

    @property
    def needs_groups(self) -> bool:
        return self.normalization is not None

    def describe(self) -> str:
        return f"ONNX export of {self.meta['description']}"

    def check_clips(self, waves: Sequence[np.ndarray]) -> None:
        """The encoder's own checks: a clip shorter than one frame, or longer than Whisper's 30 s input."""
        shortest = round(self.min_seconds * self.sample_rate)
        for wave in waves:
            if len(wave) < shortest:
                raise ValueError(f"clips of {len(wave)} samples are shorter than one frame of the "
                                 f"{self.meta['family']} backbone ({shortest} samples = "
                                 f"{1000 * self.min_seconds:g} ms)")
            if self.max_seconds is not None and len(wave) > self.max_seconds * self.sample_rate:
                raise ValueError(f"clips of {len(wave) / self.sample_rate:g} s are longer than Whisper's "
                                 f"{self.max_seconds:g} s input; score long audio in windows")

    def predict_proba(self, waves: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` of float32 16 kHz clips; ``groups`` adapts a frozen model's
        embeddings per group first (:func:`~ser_utils.features.normalization.adapt_features`)."""
        from ..features.normalization import GroupError, adapt_features

        if groups is not None and not self.meta["frozen"]:
            raise GroupError(f"adaptation standardises features per group, and a fine-tuned {self.meta['family']} "
                             "network has none to standardise: score it without adaptation, or use a baseline "
                             "or frozen-encoder model")
        if groups is None and self.needs_groups:
            adapt_features(np.zeros((0, 1)), None, self.normalization, train_mean=np.zeros(1),
                           train_scale=np.ones(1), model=self.system)  # raises the one message for it
        self.check_clips(waves)
        probs, embeddings = self._run(list(waves))
        if groups is None or len(waves) == 0:
            return probs
        flat = embeddings.reshape(len(waves), -1).astype(np.float64)
        flat = adapt_features(flat, groups, self.normalization, train_mean=self.statistics["mean"].reshape(-1),
                              train_scale=self.statistics["std"].reshape(-1), model=self.system)
        adapted = flat.reshape(embeddings.shape).astype(np.float32)
        return self.head.run(None, {"embeddings": adapted})[0]

    def _run(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        probs = np.zeros((len(waves), len(self.labels)), np.float32)
        embeddings = None
        for rows in longest_first([len(w) for w in waves], BATCH):
            audio, lengths = self._inputs([waves[i] for i in rows])
            out = self.session.run(None, {"audio": audio, "lengths": lengths})
            probs[rows] = out[0]
            if len(out) > 1:
                if embeddings is None:
                    embeddings = np.zeros((len(waves), *out[1].shape[1:]), np.float32)
                embeddings[rows] = out[1]
        return probs, embeddings

    def _inputs(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The graph's ``audio`` (zero-padded batch of the front end's output) and ``lengths`` (samples)."""
        lengths = np.array([len(w) for w in waves], np.int64)
        if self.front["kind"] == "waveform":
            parts = [normalize(w) if self.front["normalize"] else np.asarray(w, np.float32) for w in waves]
        elif self.front["input"] == "pad30":  # every clip its own 30 s input, silence after it
            parts = [log_mel(np.pad(w, (0, self.front["max_samples"] - len(w))), self.filters) for w in waves]
        else:
            parts = [log_mel(w, self.filters) for w in waves]
        longest = max(p.shape[-1] for p in parts)
        batch = np.zeros((len(parts), *parts[0].shape[:-1], longest), np.float32)
        for row, part in enumerate(parts):
            batch[row, ..., :part.shape[-1]] = part
        return batch, lengths

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, directory: str | Path) -> OnnxModel:
        """Load an ONNX folder; ``ValueError`` naming it (one line) when it is damaged or foreign: every
        file must match the SHA-256 its config records, every setting be in range."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_NAME).read_text())
            _check_meta(meta)
            for name, digest in meta["files_sha256"].items():
                _verify(directory / name, digest)
            session = _session(directory / MODEL_FILE)
            head = _session(directory / HEAD_FILE) if meta["frozen"] else None
            statistics = _statistics(directory / STATS_FILE) if meta["frozen"] else None
            filters = np.load(directory / MEL_FILE, allow_pickle=False) if MEL_FILE in meta["files_sha256"] else None
        except (OSError, KeyError, TypeError, ValueError, RecursionError, RuntimeError) as err:
            raise ValueError(f"{directory}: not a usable ONNX model folder ({_one_line(err)})") from None
        front = meta["front_end"]
        if front["kind"] == "log-mel" and (filters is None or filters.shape[0] != front.get("n_mels")):
            raise ValueError(f"{directory}: not a usable ONNX model folder ({MEL_FILE} missing or of the wrong shape)")
        return cls(meta, session, head, statistics, filters)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def _check_meta(meta) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{CONFIG_NAME} does not name the format {FORMAT}")
    labels = meta.get("labels")
    if (not isinstance(labels, list) or not 2 <= len(labels) <= 100 or len(set(map(str, labels))) < len(labels)
            or not all(isinstance(x, str) and x.strip() and len(x) <= 100
                       and not any(unicodedata.category(c) == "Cc" for c in x) for x in labels)):
        raise ValueError(f"{CONFIG_NAME}: labels must be 2 to 100 distinct printable class names")
    if meta.get("sample_rate") != 16_000:
        raise ValueError(f"{CONFIG_NAME}: sample_rate is {meta.get('sample_rate')!r}; the encoder takes 16000 Hz")
    for field, high in (("min_seconds", 60.0), ("max_seconds", 3600.0)):
        value = meta.get(field)
        if not (value is None and field == "max_seconds") and not (
                isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= high):
            raise ValueError(f"{CONFIG_NAME}: {field} is {value!r}, not a number of seconds from 0 to {high:g}")
    front = meta.get("front_end")
    if not isinstance(front, dict) or front.get("kind") not in ("log-mel", "waveform"):
        raise ValueError(f"{CONFIG_NAME}: front_end must be log-mel or waveform")
    if front["kind"] == "log-mel" and (front.get("input") not in ("clip", "pad30")
                                       or not isinstance(front.get("max_samples"), int)):
        raise ValueError(f"{CONFIG_NAME}: front_end.input must be clip or pad30, with max_samples")
    digests = meta.get("files_sha256")
    if (not isinstance(digests, dict) or MODEL_FILE not in digests
            or any("/" in n or n.startswith(".") for n in digests)):  # files of this folder only
        raise ValueError(f"{CONFIG_NAME}: files_sha256 must name {MODEL_FILE} and the folder's other files")
    if meta.get("frozen") and not {HEAD_FILE, STATS_FILE} <= set(digests):
        raise ValueError(f"{CONFIG_NAME}: a frozen model's folder names {HEAD_FILE} and {STATS_FILE}")
    if not isinstance(meta.get("normalization"), dict) or not isinstance(meta.get("description"), str):
        raise ValueError(f"{CONFIG_NAME}: normalization and description are missing")


def _verify(path: Path, digest: str) -> None:
    """``ValueError`` unless ``path`` is a file whose SHA-256 is ``digest``. Streamed: holding Whisper-base's
    graph as bytes while onnxruntime parsed it raised the peak memory by 120 MB."""
    if not path.is_file():
        raise ValueError(f"{path.name} is missing: {CONFIG_NAME} names a file the folder does not hold")
    with open(path, "rb") as handle:
        if hashlib.file_digest(handle, "sha256").hexdigest() != digest:
            raise ValueError(f"{path.name} does not match the SHA-256 that {CONFIG_NAME} records: the file changed "
                             "or was damaged after it was written")


def _session(model: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own notes are not the user's business
    # Threads that wait by spinning took CPU from the scoring on a shared 2-core machine: Whisper-base on a 6 s
    # window took 0.28-0.33 s with spinning, 0.20-0.24 s without (load average 2.9).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) are not ValueErrors
        raise ValueError(f"onnxruntime cannot load the graph: {_one_line(err)}") from None


def _statistics(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
