"""What every backbone is to the rest of the package: waves and lengths in, the hidden states of every
layer and a frame mask out (s3prl's upstream interface). The classifier, the embedding cache and the
fine-tuning loop use only this, never a family's internals.

Also here: the one error type of the package's backbones and the one-line load report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

#: What "freeze" may say: nothing trains, the front end (convolutions before the transformer) is fixed,
#: or everything trains.
FREEZE_MODES = ("feature-encoder", "backbone", "none")


class BackboneError(ValueError):
    """A checkpoint that cannot serve as a backbone (unreadable, unsupported, incomplete); one line."""


class SpeechEncoder(nn.Module):
    """A pretrained speech encoder seen from outside: ``forward(waves, lengths)`` -> ``(states, mask)``.

    ``waves`` ``(B, T)`` are zero-padded float32 clips at :attr:`sample_rate` (per-clip normalized first
    when :attr:`normalize_input` says so), ``lengths`` ``(B,)`` their true lengths in samples. ``states``
    ``(B, L+1, T_frames, D)`` holds the input of the first transformer layer and the output of each
    layer, the last one after the encoder's final layer norm where it has one; ``mask`` ``(B, T_frames)``
    is True on each clip's own frames. Padding never changes a clip's states on its own frames.

    Subclasses set :attr:`family`, :attr:`config` (the transformers config of the architecture, saved
    with trained models), :attr:`options` (settings of the encoder that are not in the checkpoint, e.g.
    Whisper's input mode), and implement :meth:`forward`, :meth:`frame_lengths` and :meth:`front_end`.
    """

    family: str = ""
    sample_rate: int = 16_000
    #: Shortest clip the encoder takes, in samples (one frame of its front end).
    min_samples: int = 400
    #: Longest clip the encoder takes, in samples (``None``: any length; Whisper: its 30 s input).
    max_samples: int | None = None
    #: How padded batches are kept from changing a clip's output (shown by the ``backbone`` command).
    padding: str = ""
    #: Whether clips are standardised (zero mean, unit variance) before the encoder.
    normalize_input: bool = False

    def __init__(self, config, options: dict | None = None):
        super().__init__()
        self.config = config
        self.options = dict(options or {})

    @property
    def num_layers(self) -> int:
        """Transformer layers; :meth:`forward` returns one more hidden state (the layers' input)."""
        raise NotImplementedError

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    def description(self) -> str:
        """The input front end in words, e.g. ``80-bin log-mel (25 ms / 10 ms), input: clip``."""
        raise NotImplementedError

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip for ``lengths`` in samples."""
        raise NotImplementedError

    def front_end_parameters(self) -> list[nn.Parameter]:
        """The parameters ``freeze="feature-encoder"`` fixes (the convolutions before the transformer)."""
        raise NotImplementedError

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward_from(self, x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        """The top layers alone: ``x`` ``(B, T_frames, D)`` is hidden state ``start`` (the input of layer
        ``start``, 0-based, as :meth:`forward` returns it) and ``mask`` ``(B, T_frames)`` its frame mask;
        returns hidden states ``start+1 .. L`` ``(B, L - start, T_frames, D)``, exactly what
        :meth:`forward` gives for them (the last one after the final layer norm where there is one).
        Lets partial fine-tuning run the frozen lower layers once per clip and cache their output."""
        raise BackboneError(f"{self.family} backbones cannot run their top layers from cached states")

    def top_modules(self, k: int) -> list[nn.Module]:
        """The modules partial fine-tuning trains: the top ``k`` transformer layers and the norm after them."""
        raise NotImplementedError

    def check_start(self, start: int) -> None:
        if not 0 <= start < self.num_layers:
            raise ValueError(f"start={start}: the {self.family} backbone's layers are 0 .. {self.num_layers - 1}")

    def train_top(self, k: int) -> None:
        """Only the top ``k`` transformer layers (and the norm after them) train; everything below is fixed."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_layers:
            raise ValueError(f"train_layers={k!r}: the {self.family} backbone has {self.num_layers} layers "
                             f"(train 1 to {self.num_layers})")
        for parameter in self.parameters():
            parameter.requires_grad = False
        for module in self.top_modules(k):
            for parameter in module.parameters():
                parameter.requires_grad = True

    def freeze(self, mode: str) -> None:
        """Set ``requires_grad``: ``backbone`` (nothing trains), ``feature-encoder`` (the front end is
        fixed), ``none`` (everything trains)."""
        if mode not in FREEZE_MODES:
            raise ValueError(f"freeze={mode!r}; choose one of {FREEZE_MODES}")
        for parameter in self.parameters():
            parameter.requires_grad = mode != "backbone"
        if mode == "feature-encoder":
            for parameter in self.front_end_parameters():
                parameter.requires_grad = False

    def check_lengths(self, lengths: torch.Tensor) -> None:
        """A clear error for clips shorter than :attr:`min_samples`."""
        if int(lengths.min()) < self.min_samples:
            raise ValueError(f"clips of {int(lengths.min())} samples are shorter than one frame of the "
                             f"{self.family} backbone ({self.min_samples} samples = "
                             f"{1000 * self.min_samples / self.sample_rate:g} ms)")

    def frame_mask(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """``(B, n_frames)`` bool: True on each clip's own frames (``lengths`` in samples)."""
        return lengths_mask(self.frame_lengths(lengths), n_frames)


def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool, True on the first ``lengths[b]`` steps of row ``b``: the one way a length
    becomes a mask (samples, convolution frames, log-mel frames, encoder frames)."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def masked_moments(x: torch.Tensor, weights: torch.Tensor, dim: int, keepdim: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance of ``x`` along ``dim`` over the steps where ``weights`` (0/1, broadcast
    to ``x``) is 1: the one masked statistic of the package (masked group norm, pooling, the frozen
    embeddings). A row with no valid step counts as one step (mean 0)."""
    count = weights.sum(dim, keepdim=True).clamp(min=1)
    mean = (x * weights).sum(dim, keepdim=True) / count
    var = (((x - mean) * weights) ** 2).sum(dim, keepdim=True) / count
    return (mean, var) if keepdim else (mean.squeeze(dim), var.squeeze(dim))


@dataclass
class LoadReport:
    """What a checkpoint gave the backbone: family, front end, padding, size and tensor counts.

    ``tensors_loaded`` of ``tensors_expected`` backbone tensors came from the checkpoint;
    ``head_tensors`` were set aside (task heads, a decoder), ``unused`` are backbone-prefixed tensors
    the model has no place for. ``missing`` and ``mismatched`` (``key: checkpoint shape -> model
    shape``) are problems. ``resolved`` says where the name led (local folder, installed package, hub).
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
    front_end: str = ""
    resolved: str = ""
    set_aside: str = "task-head"

    @property
    def complete(self) -> bool:
        return self.tensors_loaded == self.tensors_expected and not self.missing and not self.mismatched

    def problem(self) -> str | None:
        """One line saying what is wrong (``None`` when every backbone tensor was loaded)."""
        if self.complete:
            return None
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (would be random): {first_few(self.missing)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} of the wrong shape: {first_few(self.mismatched)}")
        return (f"{self.source}: only {self.tensors_loaded} of {self.tensors_expected} {self.family} backbone "
                f"tensors in {self.weights_file}; " + "; ".join(parts))

    def summary(self) -> str:
        kind = "encoder" if self.family == "whisper" else "backbone"
        aside = ""
        if self.head_tensors:
            aside = (", decoder set aside" if self.set_aside == "decoder"
                     else f", {self.head_tensors} {self.set_aside} tensors set aside")
        unused = f", {len(self.unused)} unused" if self.unused else ""
        front = f", input: {self.front_end}" if self.front_end else ""
        return (f"{self.family}: {self.layers} layers x {self.hidden_size}, {self.parameters:,} parameters{front}, "
                f"padding: {self.padding}; {self.tensors_loaded}/{self.tensors_expected} {kind} tensors loaded "
                f"from {self.weights_file}{aside}{unused}")

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def first_few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")
