"""Use a trained model on your own audio: load once, predict many.

:class:`EmotionRecognizer` wraps either a fine-tuned wav2vec2 directory (``ser_config.json`` +
``model.safetensors``) or a saved baseline pipeline (``config.json`` + ``pipeline.skops``); the model
directory carries its labels and pre-processing, so nothing is guessed at prediction time.

Audio longer than ``window`` seconds is scored in overlapping windows (``hop`` seconds apart, the last
one aligned with the end); the file's probabilities are the mean over its non-silent windows.
Files are read one after another as they are scored (:meth:`EmotionRecognizer.iter_predictions`), so
memory stays flat whatever the number of files. When the caller follows windows (``on_window``, the
``--windows`` lines), a file longer than one window is scored while it is decoded: its windows are cut
from the blocks the loader yields (:func:`~ser_utils.data.audio.stream_audio`) and scored in batches that
start at one window and double up to the buffer, so the first window's scores come after one 10 s block
of the file, not after all of it. The windows and their samples are those of the whole-file path, and so
are the scores of models that score each clip on its own (SVM, random forest, the encoders on a CPU);
heads that multiply a batch of windows at once (logistic regression, MLP) may differ in the last bit
(1e-16), as they already do between a file scored alone and in a buffer with others.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..core import config, interrupts
from ..data.audio import (
    SILENCE_PEAK,
    AudioError,
    SilentAudioError,
    audio_seconds,
    is_silent,
    level_warning,
    load_audio,
    peak_warning,
    within_full_scale,
)
from ..models.onnx_model import OnnxModel, is_onnx_folder
from .windows import StreamTally, check_window, cut_windows, stream_windows, window_bounds

if TYPE_CHECKING:  # the torch models are imported when a torch folder is loaded: an ONNX folder needs none
    from ..models.deployable import Deployable

DEFAULT_WINDOW = config.DEFAULT_WINDOW  # seconds (core.config says why 6)
DEFAULT_HOP = config.DEFAULT_HOP
#: Audio held in memory at once while scoring many files, in seconds (10 minutes at 16 kHz: 38 MB):
#: short clips are batched together up to this much (enough to fill GPU batches), a longer file is
#: scored on its own. Memory does not grow with the number of files.
BUFFER_SECONDS = 600.0
#: ``on_window(path, row)``: told each scored window's row (see :meth:`EmotionRecognizer.iter_predictions`).
WindowCallback = Callable[[str, dict], None]
#: What a recognizer reads from its model (:class:`~ser_utils.models.deployable.Deployable`).
INTERFACE = ("labels", "sample_rate", "min_seconds", "max_seconds", "needs_groups", "normalization", "describe")


@dataclass
class FilePrediction:
    """Scores of one file: per-window rows and the aggregate.

    ``windows`` has columns ``start``, ``end`` (seconds), ``silent`` and one probability per label;
    ``probabilities`` (label -> probability, summing to 1) is the mean over non-silent windows;
    ``warning`` is ``""`` or a line saying why the scores may mean little (a peak far above full scale).
    """

    path: str
    duration: float
    probabilities: dict[str, float]
    windows: pd.DataFrame = field(repr=False)
    warning: str = ""

    @property
    def emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    def to_dict(self) -> dict:
        return {"file": self.path, "duration": round(self.duration, 3), "emotion": self.emotion,
                "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
                "warning": self.warning or None, "windows": self.windows.round(6).to_dict(orient="records")}


class EmotionRecognizer:
    """A trained emotion model, ready for audio files or waveforms.

    >>> recognizer = EmotionRecognizer.from_pretrained("path/to/model")       # doctest: +SKIP
    >>> recognizer.predict_file("speech.wav").emotion                          # doctest: +SKIP
    """

    def __init__(self, model: Deployable | OnnxModel):
        self.model = model

    def __getattr__(self, name: str):
        """The model's side of the interface (labels, sample_rate, min_seconds, needs_groups, normalization,
        describe), read from the model itself: one definition, in :mod:`ser_utils.models.deployable`."""
        if name in INTERFACE:
            return getattr(self.__dict__["model"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None, *,
                        allow_pickle: bool = False) -> EmotionRecognizer:
        """Load any deployable model folder (:func:`~ser_utils.models.loading.load_deployable`), or an ONNX
        export (:class:`~ser_utils.models.onnx_model.OnnxModel`: onnxruntime, torch is never imported).

        ``allow_pickle=True`` also loads an old baseline saved as ``pipeline.joblib`` - a pickle, which
        runs any code it holds: only for folders you made yourself.
        """
        if is_onnx_folder(directory):
            return cls(OnnxModel.from_folder(directory))
        from ..models.loading import load_deployable

        return cls(load_deployable(directory, device, allow_pickle=allow_pickle))

    def predict_proba(self, waves: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities ``(n, n_labels)`` of float32 mono clips at :attr:`sample_rate`; ``groups`` (one
        per clip) adapts features per group (models that have features to adapt). A clip beyond full
        scale is scaled down to peak 1.0 first, for every kind of model
        (:func:`~ser_utils.data.audio.within_full_scale`)."""
        return self.model.predict_proba([within_full_scale(w) for w in waves], groups=groups)

    def predict_wave(self, wave: np.ndarray, *, window: float | None = DEFAULT_WINDOW,
                     hop: float | None = DEFAULT_HOP, name: str = "<waveform>") -> FilePrediction:
        """Score one waveform (windows when longer than ``window``)."""
        return self._score([(name, wave)], window, hop)[0]

    def predict_file(self, path: str | Path, *, window: float | None = DEFAULT_WINDOW,
                     hop: float | None = DEFAULT_HOP) -> FilePrediction:
        """Score one audio file (any format, rate and channel count soundfile reads)."""
        return self.predict_wave(load_audio(path, self.sample_rate, max_seconds=None), window=window,
                                 hop=hop, name=str(path))

    def iter_predictions(self, paths: Iterable[str | Path], *, window: float | None = DEFAULT_WINDOW,
                         hop: float | None = DEFAULT_HOP, buffer_seconds: float = BUFFER_SECONDS,
                         on_window: WindowCallback | None = None) -> Iterator[tuple[str, FilePrediction | None, str]]:
        """Score files as they are read: yields ``(path, prediction, "")`` or ``(path, None, reason)``
        per file, in order.

        ``paths`` is consumed lazily and at most ``buffer_seconds`` of audio (or one longer file) is held
        at once, so memory does not grow with the number of files; short clips in the buffer are scored
        in one batch. ``on_window(path, row)``, when given, is called with each window's row (``start``,
        ``end``, ``silent`` and one probability per label, as in :attr:`FilePrediction.windows`) as soon
        as it is scored, in order, before its file is yielded; a file longer than one window is then
        scored while it is decoded (see the module), holding at most ``buffer_seconds`` of its windows.
        Inside :func:`ser_utils.core.interrupts.deferred`, a Ctrl-C or SIGTERM stops the iteration before
        the next file or batch of windows (``interrupts.Interrupted``), never as a file's failure.
        """
        check_window(window, hop)
        buffer, held = [], 0
        for path in paths:
            interrupts.check()  # a Ctrl-C / SIGTERM (inside interrupts.deferred) stops here, between files
            if self._streams(path, window, on_window is not None):
                yield from self._score_buffer(buffer, window, hop, on_window)
                buffer, held = [], 0
                yield self._stream_file(path, window, hop, buffer_seconds, on_window)
                continue
            try:
                wave = load_audio(path, self.sample_rate, max_seconds=None)
            except AudioError as err:
                yield from self._score_buffer(buffer, window, hop, on_window)
                buffer, held = [], 0
                yield str(path), None, str(err)
                continue
            if buffer and held + len(wave) > buffer_seconds * self.sample_rate:
                yield from self._score_buffer(buffer, window, hop, on_window)
                buffer, held = [], 0
            buffer.append((str(path), wave))
            held += len(wave)
        yield from self._score_buffer(buffer, window, hop, on_window)

    def _score_buffer(self, named_waves, window, hop,
                      on_window: WindowCallback | None = None) -> Iterator[tuple[str, FilePrediction | None, str]]:
        if not named_waves:
            return
        try:
            predictions = self._score(named_waves, window, hop)
        except ValueError:  # one unusable clip (e.g. too short for the model): isolate it, score the rest
            for name, wave in named_waves:
                interrupts.check()
                try:
                    prediction = self._score([(name, wave)], window, hop)[0]
                except ValueError as err:
                    yield name, None, _named(name, err)
                    continue
                _report_windows(prediction, on_window)
                yield name, prediction, ""
            return
        for prediction in predictions:
            _report_windows(prediction, on_window)
            yield prediction.path, prediction, ""

    @staticmethod
    def _streams(path, window: float | None, following: bool) -> bool:
        """Whether ``path`` is scored while it is decoded: followed window by window, and longer than one
        window (its header's length; either answer gives the same windows)."""
        seconds = audio_seconds(path) if following and window is not None else None
        return seconds is not None and seconds > window

    def _stream_file(self, path, window: float, hop: float | None, buffer_seconds: float,
                     on_window: WindowCallback | None) -> tuple[str, FilePrediction | None, str]:
        """Score ``path`` while it is decoded (:func:`~ser_utils.serving.windows.stream_windows`: the windows
        of :func:`window_bounds`, the same samples as the whole-file path), in batches of 1, 2, 4, ...
        windows up to ``buffer_seconds`` of audio, each window's row told to ``on_window`` once scored."""
        tally = StreamTally()
        largest = max(1, int(buffer_seconds // window))
        batches = stream_windows(path, window, hop, self.sample_rate, largest=largest, tally=tally)
        return self._score_batches(str(path), batches, tally, on_window)

    def predict_stream(self, chunks: Iterable[np.ndarray], *, name: str = "<stream>",
                       window: float | None = DEFAULT_WINDOW, hop: float | None = DEFAULT_HOP,
                       on_window: WindowCallback | None = None) -> tuple[str, FilePrediction | None, str]:
        """Score audio that arrives in float32 mono chunks at :attr:`sample_rate` (``predict -``): each window
        is scored as soon as its last sample has arrived and told to ``on_window`` at once (one window per
        batch when followed, else batches up to :data:`BUFFER_SECONDS`); the end of the chunks scores the last
        window. Returns ``(name, prediction, "")`` or ``(name, None, reason)`` as
        :meth:`iter_predictions` does per file; what the chunks raise (a bad stream) is raised."""
        check_window(window, hop)
        if window is None:  # the whole stream as one clip
            return self._score_buffer_one(name, np.concatenate([np.zeros(0, np.float32), *chunks]), hop, on_window)
        tally = StreamTally()
        largest = 1 if on_window is not None else max(1, int(BUFFER_SECONDS // window))
        batches = cut_windows(chunks, window, hop, self.sample_rate, largest=largest, tally=tally)
        return self._score_batches(name, batches, tally, on_window)

    def _score_buffer_one(self, name: str, wave: np.ndarray, hop, on_window) -> tuple[str, FilePrediction | None, str]:
        if len(wave) == 0:
            return name, None, f"{name}: empty audio (0 samples)"
        return next(self._score_buffer([(name, wave)], None, hop, on_window))

    def _score_batches(self, name: str, batches: Iterator, tally: StreamTally,
                       on_window: WindowCallback | None) -> tuple[str, FilePrediction | None, str]:
        """Score the window batches of one file or stream as they come (see :meth:`_stream_file`)."""
        rows = []
        try:
            for pieces in batches:
                interrupts.check()  # a Ctrl-C / SIGTERM stops a long file between batches
                voiced = [w for _, _, w in pieces if w is not None]
                probs = self.predict_proba(voiced) if voiced else np.zeros((0, len(self.labels)))
                cursor = 0
                for a, b, w in pieces:
                    p = np.full(len(self.labels), np.nan) if w is None else probs[cursor]
                    cursor += w is not None
                    rows.append(_window_row(a, b, w is None, p, self.labels, self.sample_rate))
                    if on_window is not None:
                        on_window(name, rows[-1])
            return name, self._summary(name, tally.samples, pd.DataFrame(rows), peak_warning(tally.peak, name)), ""
        except ValueError as err:  # AudioError (unreadable, NaN, silent), a window the model refuses
            return name, None, _named(name, err)

    def predict_files(self, paths: Iterable[str | Path], *, window: float | None = DEFAULT_WINDOW,
                      hop: float | None = DEFAULT_HOP,
                      groups: Sequence[str] | None = None) -> tuple[list[FilePrediction], dict[str, str]]:
        """Score many files (see :meth:`iter_predictions`). Returns the predictions of the files that
        worked and, for each file that did not, the reason (the good ones are still scored).

        ``groups`` (one per path: speaker, or one name for all) adapts features per group; the
        group statistics come from the group's readable files, so those files are loaded together.
        ``normalization.GroupError`` (a group too small, or a speaker-normalized model without groups)
        is raised, not isolated.
        """
        check_window(window, hop)
        if groups is not None:
            return self._predict_grouped(list(paths), list(groups), window, hop)
        if self.needs_groups:
            self.predict_proba([], groups=None)  # raises GroupError: this model needs groups
        predictions, failures = [], {}
        for path, prediction, reason in self.iter_predictions(paths, window=window, hop=hop):
            if prediction is None:
                failures[path] = reason
            else:
                predictions.append(prediction)
        return predictions, failures

    def _predict_grouped(self, paths: list, groups: list, window, hop) -> tuple[list[FilePrediction], dict[str, str]]:
        from ..features.normalization import GroupError

        if len(groups) != len(paths):
            raise ValueError(f"{len(groups)} groups for {len(paths)} files")
        paths, groups = _once_each(paths, groups)
        loaded, kept, failures = [], [], {}
        for path, group in zip(paths, groups, strict=True):
            interrupts.check()
            try:
                loaded.append((str(path), load_audio(path, self.sample_rate, max_seconds=None)))
                kept.append(str(group))
            except AudioError as err:
                failures[str(path)] = str(err)
        try:
            return self._score(loaded, window, hop, kept), failures
        except GroupError:
            raise
        except ValueError:  # an unusable clip: find it alone (no group needed to tell), then score the rest together
            usable = []
            for (name, wave), group in zip(loaded, kept, strict=True):
                try:
                    self._summarisable(wave, window, hop)
                    usable.append(((name, wave), group))
                except ValueError as err:
                    failures[name] = f"{name}: {err}"
            return self._score([u for u, _ in usable], window, hop, [g for _, g in usable]), failures

    def _summarisable(self, wave: np.ndarray, window, hop) -> None:
        """Raise the ValueError a clip's windows give the model, without scoring them."""
        pieces = [wave[a:b] for a, b in window_bounds(len(wave), window, hop, self.sample_rate)
                  if not is_silent(wave[a:b])]
        self.model.check_clips(pieces or [wave])

    def _score(self, named_waves: list[tuple[str, np.ndarray]], window, hop,
               groups: Sequence[str] | None = None) -> list[FilePrediction]:
        pieces, owners = [], []
        plans = []
        for index, (_, wave) in enumerate(named_waves):
            bounds = window_bounds(len(wave), window, hop, self.sample_rate)
            silent = [is_silent(wave[a:b]) for a, b in bounds]
            plans.append((bounds, silent))
            for (a, b), quiet in zip(bounds, silent, strict=True):
                if not quiet:
                    pieces.append(wave[a:b])
                    owners.append(index)
        piece_groups = None if groups is None else [groups[i] for i in owners]
        probs = (self.predict_proba(pieces, groups=piece_groups) if pieces
                 else np.zeros((0, len(self.labels))))
        results, cursor = [], 0
        for (name, wave), (bounds, silent) in zip(named_waves, plans, strict=True):
            rows = []
            for (a, b), quiet in zip(bounds, silent, strict=True):
                p = np.full(len(self.labels), np.nan) if quiet else probs[cursor]
                cursor += 0 if quiet else 1
                rows.append(_window_row(a, b, quiet, p, self.labels, self.sample_rate))
            results.append(self._summary(name, len(wave), pd.DataFrame(rows), level_warning(wave, name)))
        return results

    def _summary(self, name: str, n_samples: int, table: pd.DataFrame, warning: str | None) -> FilePrediction:
        """A file's prediction from its window rows: the mean over its non-silent windows."""
        if table["silent"].all():
            raise SilentAudioError(f"{name}: silent (peak amplitude below {SILENCE_PEAK:g} once its mean, "
                                   "the DC offset, is removed)")
        voiced = table.loc[~table["silent"], list(self.labels)]
        mean = voiced.mean().to_numpy()
        return FilePrediction(name, n_samples / self.sample_rate,
                              dict(zip(self.labels, map(float, mean / mean.sum()), strict=True)), table, warning or "")


def _window_row(a: int, b: int, silent: bool, probabilities: np.ndarray, labels: Sequence[str], rate: int) -> dict:
    """One row of :attr:`FilePrediction.windows`: bounds in seconds, silence, one probability per label."""
    return {"start": a / rate, "end": b / rate, "silent": silent,
            **dict(zip(labels, map(float, probabilities), strict=True))}


def _report_windows(prediction: FilePrediction, on_window: WindowCallback | None) -> None:
    if on_window is not None:
        for row in prediction.windows.to_dict(orient="records"):
            on_window(prediction.path, row)


def _named(name: str, err: Exception) -> str:
    """A file's failure reason, naming the file once."""
    return str(err) if str(err).startswith(name) else f"{name}: {err}"


def _once_each(paths: list, groups: list) -> tuple[list, list]:
    """Each file once (by its real path), so a file named three times is one clip of its group, not
    three; a file given under two groups is a ``GroupError``."""
    from ..features.normalization import GroupError

    seen: dict[str, tuple[str, str]] = {}
    kept_paths, kept_groups, repeated = [], [], []
    for path, group in zip(paths, groups, strict=True):
        key = os.path.realpath(path)
        if key in seen:
            if seen[key][1] != str(group):
                raise GroupError(f"{path}: in two groups ({seen[key][1]!r} and {str(group)!r}); a clip's "
                                 "statistics can count for one group only")
            repeated.append(seen[key][0])
            continue
        seen[key] = (str(path), str(group))
        kept_paths.append(path)
        kept_groups.append(group)
    if repeated:
        names = list(dict.fromkeys(repeated))
        warnings.warn(f"{len(names)} file(s) given more than once ({', '.join(names[:3])}"
                      f"{', ...' if len(names) > 3 else ''}): each counts once in its group", stacklevel=3)
    return kept_paths, kept_groups
