"""``predict -``: the audio on standard input scored as it arrives (the command's other parts and helpers are
in :mod:`ser_utils.cli.commands`; the stream is read by :mod:`ser_utils.serving.live`)."""

from __future__ import annotations

import argparse

from ..core.console import error, one_line, say, warn, warning_lines
from ..core.interrupts import Interrupted, deferred
from . import commands
from .commands import (
    _check_model_window,
    _check_run_options,
    _finishing,
    _load_recognizer,
    _model_files,
    _write_outputs,
)


def predict(args: argparse.Namespace) -> int:
    """The ``predict`` command: standard input when a path is ``-`` (alone), else files and folders
    (:func:`ser_utils.cli.commands.predict`). Dispatched here so that ``commands`` never imports this module."""
    if "-" not in args.paths:
        return commands.predict(args)
    if len(args.paths) > 1:
        error("-: standard input is scored alone; give files and folders in another call")
        return 2
    return predict_stdin(args)


def predict_stdin(args: argparse.Namespace) -> int:
    """``predict -``: the audio on standard input (a WAV stream, or raw PCM with ``--raw``), each window's line
    as soon as its audio has arrived (``--windows``), the stream's line at its end."""
    with deferred():  # the imports: see the module docstring
        from ..serving.live import NAME, StreamError, raw_format, stdin_reader, stream_chunks
        from ..serving.prediction_io import format_prediction, format_window, predictions_table, to_json

    outputs = {"--csv": args.csv, "--json": args.json}
    if not _check_run_options(args, outputs, _model_files(args.model)):
        return 2
    try:
        raw = raw_format(args.rate, args.channels, args.sample_format) if args.raw else None
    except StreamError as err:
        error(f"{'--rate' if 'Hz' in str(err) else '--channels'}: {err}")
        return 2
    if args.adapt != "none":
        error(f"--adapt {args.adapt}: adaptation standardises groups of files; standard input is one stream")
        return 2
    recognizer = _load_recognizer(args.model, args.allow_pickle)
    if recognizer is None or not _check_model_window(args, recognizer):
        return 2
    if recognizer.needs_groups:
        error(f"{args.model}: a speaker-normalized model needs groups of files (--adapt); it cannot score a stream")
        return 2
    window_line = ((lambda path, row: say(format_window(path, row, recognizer.labels)))
                   if args.windows and args.json != "-" else None)
    try:
        with deferred(), warning_lines():  # Ctrl-C / SIGTERM: stop between windows
            _warm_up(recognizer, args.window)
            chunks = stream_chunks(stdin_reader(), recognizer.sample_rate, raw)
            _, prediction, reason = recognizer.predict_stream(chunks, name=NAME, window=args.window, hop=args.hop,
                                                              on_window=window_line)
    except StreamError as err:
        error(one_line(str(err)))
        return 2
    except Interrupted as err:
        error(f"interrupted ({err.name}); the stream was not scored to its end, no output file written")
        return err.exit_status
    _finishing()
    if prediction is None:
        error(reason)
    elif prediction.warning:
        warn(one_line(prediction.warning))
    if prediction is not None and args.json != "-":
        say(format_prediction(prediction))
    predictions = [prediction] if prediction is not None else []
    written = _write_outputs({"--csv": (args.csv, predictions_table(predictions, recognizer.labels)),
                              "--json": (args.json if args.json != "-" else None, to_json(predictions))})
    if args.json == "-":
        say(to_json(predictions))
    return 1 if prediction is None or not written else 0


def _warm_up(recognizer, window: float | None) -> None:
    """Score one window of quiet noise: a model's first call allocates its buffers (onnxruntime, torch), which
    delayed the first window's line of a live stream; done now, while that window's audio is still coming."""
    import numpy as np

    samples = int((window or 1.0) * recognizer.sample_rate)
    recognizer.predict_proba([0.01 * np.random.default_rng(0).standard_normal(samples).astype(np.float32)])
