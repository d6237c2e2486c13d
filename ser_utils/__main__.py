"""Command line: ``python -m ser_utils COMMAND ...`` (``--help`` on each command).

Argument parsing only: what each command does is in :mod:`ser_utils.cli.commands`.
"""

from __future__ import annotations

import signal

# A shell without job control (a script, `nohup ... &`) starts background commands with SIGINT ignored,
# and Python keeps it ignored: a `kill -INT` landed during start-up was dropped and the run went on to
# exit 0, while one landing during scoring (where interrupts.deferred sets its own handler) stopped it.
# The command line honours SIGINT wherever it lands, so it restores Python's Ctrl-C first thing.
if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

# Nothing but what the interpreter has already loaded at import time: everything else (argparse included)
# is imported inside main's try, so a Ctrl-C at any point of start-up (torch's import takes seconds on a
# busy machine) is one line, not a traceback.

ALLOW_PICKLE_HELP = ("also load an old baseline saved as pipeline.joblib: a pickle runs any code its author put in "
                     "it, so only for model folders you made yourself")

#: What ``python -m ser_utils --help`` tells a user (the module docstring above is for developers).
DESCRIPTION = """\
Speech emotion recognition on RAVDESS: run the study, check data and checkpoints, and recognise
the emotion of your own audio with a trained model folder (`make all` writes them under
.cache/full/models/).

  use a trained model:  predict (your audio files or folders, or live audio on stdin), evaluate (a labelled
                        corpus of yours), export (an ONNX folder that predicts without torch)
  train your own:       train (a model folder from your labelled manifest, any label set)
  run the study:        pipeline (the notebooks and reports; `make all`), finetune (one recipe)
  check before a run:   validate (a RAVDESS folder), backbone (a pretrained checkpoint)
  compare two runs:     compare-results
  for tests and trials: synth (a generated corpus with RAVDESS file names)"""

EPILOG = """\
examples:
  python -m ser_utils predict my_recording.wav more_audio/ --model .cache/full/models/baseline
  python -m ser_utils evaluate --model .cache/full/models/whisper-frozen --manifest my_corpus.csv
  python -m ser_utils export .cache/full/models/whisper-frozen --onnx whisper-onnx   # predict then needs no torch
  arecord -f S16_LE -r 16000 -c 1 -t raw | python -m ser_utils predict - --raw --windows --model whisper-onnx
  python -m ser_utils train --manifest my_corpus.csv --out my_model   # then predict / evaluate --model my_model
  python -m ser_utils pipeline --dry-run          # which notebooks `make all` would run, and why
  python -m ser_utils backbone whisper-base       # what a checkpoint holds, before a long job

`python -m ser_utils COMMAND --help` lists a command's options; docs/usage.md describes every one."""


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m ser_utils pipeline``."""
    from .core.config import PROFILES

    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="default: $SER_PROFILE, else full")
    parser.add_argument("--only", nargs="*", help="notebook names or numbers, e.g. 03 04_pretrained_encoders")
    parser.add_argument("--force", action="store_true",
                        help="recompute everything: rerun every notebook, recompute cached features, embeddings "
                             "and fine-tuning folds (FORCE=1)")
    parser.add_argument("--keep-folds", action="store_true",
                        help="with --force: keep finished fine-tuning folds whose inputs are unchanged (KEEP_FOLDS=1)")
    parser.add_argument("--dry-run", action="store_true", help="list which notebooks would run and why; run nothing")



def build_parser() -> argparse.ArgumentParser:
    """Every command and its options. Light: the choices and defaults come from core.config, the handlers'
    own imports wait until a command runs (``--help`` imports no numerical library)."""
    import argparse

    from .cli import commands
    from .cli import live as live_command
    from .core.config import PROFILES, PROTOCOLS

    parser = argparse.ArgumentParser(prog="python -m ser_utils", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    pipeline = subparsers.add_parser("pipeline", help="run the study (`make all`): the notebooks whose inputs "
                                     "changed, then the HTML reports")
    _pipeline_arguments(pipeline)
    pipeline.set_defaults(func=commands.pipeline)

    check = subparsers.add_parser("validate", help="check a RAVDESS folder: 1,440 clips, 24 actors, 8 emotions; "
                                  "says what is missing or doubled")
    check.add_argument("directory")
    check.add_argument("--strict", action="store_true", help="fail on a partial corpus")
    check.set_defaults(func=commands.validate)

    synth = subparsers.add_parser("synth", help="write a generated corpus with RAVDESS file names (tests, offline "
                                  "trials)")
    synth.add_argument("directory")
    synth.add_argument("--actors", type=int, default=24)
    synth.add_argument("--seconds", type=float, default=1.5)
    synth.add_argument("--sample-rate", type=int, default=16_000)
    synth.add_argument("--channels", type=int, default=1)
    synth.add_argument("--suffix", default=".wav", choices=(".wav", ".flac"))
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=commands.synth)

    tune = subparsers.add_parser(
        "finetune", help="fine-tune a backbone with one recipe under one protocol (whole encoder: GPU; "
        "--train-layers K: a CPU is enough)",
        description="Fine-tune a backbone with one recipe under one protocol; finished folds are reused. "
        "Several GPUs: accelerate launch -m ser_utils finetune ...")
    tune.add_argument("--profile", choices=PROFILES, default=None)
    tune.add_argument("--recipe", default="project", help="project (pooling + MLP head) or original (first frame, "
                      "the write-up's); default: project")
    tune.add_argument("--protocol", choices=PROTOCOLS, default="actor-kfold")
    tune.add_argument("--folds", type=int, nargs="*", help="only these folds (default: the profile's; full: all)")
    tune.add_argument("--epochs", type=int)
    tune.add_argument("--patience", type=int)
    tune.add_argument("--batch-size", type=int)
    tune.add_argument("--train-layers", type=int, metavar="K", help="partial fine-tuning: only the top K encoder "
                      "layers train (with the layer weights and head), from cached lower-layer states, on whole "
                      "clips; fits a CPU (Whisper-base top 1: about 30 s per fold epoch on 2 cores)")
    tune.add_argument("--backbone", help="local folder, installed weight package or hub name (default: the "
                      "profile's first, SER_BACKBONE)")
    tune.add_argument("--input", choices=("clip", "pad30"), help="Whisper only: each clip at its own length (clip, "
                      "the default) or padded to 30 s")
    tune.add_argument("--data", help="corpus folder (default: the profile's, RAVDESS_DIR)")
    tune.add_argument("--out", help="checkpoint folder (default: <work dir>/models/<family>, e.g. .../wav2vec2)")
    tune.add_argument("--name", help="system name in the results (default: <prefix>-<recipe>-ft, e.g. w2v2-project-ft)")
    tune.set_defaults(func=commands.finetune)

    check_backbone = subparsers.add_parser(
        "backbone", help="load a checkpoint as training would and say what it holds (run before a long job)")
    check_backbone.add_argument("checkpoint", help="a local folder (transformers or CTranslate2 / faster-whisper), an "
                                "installed weight package (whisper-base, whisper-tiny.en) or a hub name, tried in "
                                "this order")
    check_backbone.add_argument("--json", action="store_true", help="print a JSON object")
    check_backbone.add_argument("--input", choices=("clip", "pad30"), help="Whisper only: each clip at its own "
                                "length (clip, the default) or padded to 30 s (pad30)")
    check_backbone.set_defaults(func=commands.backbone)

    from .core.config import ADAPTATIONS, DEFAULT_HOP, DEFAULT_WINDOW, LABEL_MODES, METRICS

    guess = subparsers.add_parser("predict", help="the emotion of your audio files or folders, with a trained "
                                  "model folder")
    guess.add_argument("paths", nargs="+", help="audio files or folders (searched recursively), or - for audio on "
                       "standard input (a WAV stream, or raw PCM with --raw)")
    guess.add_argument("--model", required=True, help="a model folder, e.g. .cache/full/models/baseline")
    guess.add_argument("--json", nargs="?", const="-", help="write JSON to FILE (or stdout without FILE)")
    guess.add_argument("--csv", help="write per-window and per-file rows to this CSV file")
    guess.add_argument("--window", type=float, default=DEFAULT_WINDOW, help="window length, seconds")
    guess.add_argument("--hop", type=float, default=DEFAULT_HOP, help="hop between windows, seconds")
    guess.add_argument("--windows", action="store_true",
                       help="also print one line per window as soon as it is scored (path, start-end seconds, "
                            "emotion, probabilities), before its file's line: a long file is scored while it "
                            "is read, so its first windows show at once")
    guess.add_argument("--adapt", choices=ADAPTATIONS, default="none",
                       help="standardise features per group first: corpus = all files of the call, speaker = "
                            "per --speaker-pattern (needed by speaker-normalized models)")
    guess.add_argument("--speaker-pattern", help="regular expression finding the speaker in each path (its first "
                       "group, else the whole match), e.g. 'Actor_(\\d+)'")
    guess.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    live = guess.add_argument_group("standard input (predict -)")
    live.add_argument("--raw", action="store_true", help="headerless PCM instead of a WAV stream")
    live.add_argument("--rate", type=int, default=16_000, help="--raw: samples per second (default 16000)")
    live.add_argument("--channels", type=int, default=1, help="--raw: interleaved channels, averaged (default 1)")
    live.add_argument("--sample-format", choices=("s16", "s32", "f32"), default="s16",
                      help="--raw: little-endian 16- or 32-bit integers, or 32-bit floats (default s16)")
    guess.set_defaults(func=live_command.predict)

    score = subparsers.add_parser("evaluate", help="accuracy, UAR and confusions of a model on your labelled "
                                  "corpus (a path,label CSV)")
    score.add_argument("--model", required=True, help="a model folder, e.g. .cache/full/models/baseline")
    score.add_argument("--manifest", required=True, help="CSV with columns path,label (emotion names)")
    score.add_argument("--json", help="also write the scores to this JSON file")
    score.add_argument("--window", type=float, default=DEFAULT_WINDOW)
    score.add_argument("--hop", type=float, default=DEFAULT_HOP)
    score.add_argument("--adapt", choices=ADAPTATIONS, default="none",
                       help="standardise features per group first: corpus = the whole manifest, speaker = per "
                            "its speaker column (needed by speaker-normalized models)")
    score.add_argument("--labels", choices=LABEL_MODES, default="model",
                       help="decide among all of the model's classes, or only those in the manifest "
                            "(probabilities renormalized: the usual cross-corpus protocol)")
    score.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    score.set_defaults(func=commands.evaluate)

    from .cli import train as train_command

    learn = subparsers.add_parser("train", help="a model folder from your labelled recordings (a path,label[,speaker] "
                                  "CSV, any labels): head chosen by speaker-grouped cross-validation")
    train_command.add_arguments(learn)
    learn.set_defaults(func=train_command.train)

    onnx = subparsers.add_parser("export", help="write an encoder model folder as an ONNX folder: predict and "
                                 "evaluate then run with onnxruntime, without torch")
    onnx.add_argument("model", help="a frozen or fine-tuned encoder model folder (Whisper, wav2vec2 family)")
    onnx.add_argument("--onnx", required=True, metavar="OUT_DIR", help="the ONNX folder to write (a new folder, or "
                      "an earlier export, which is replaced)")
    onnx.set_defaults(func=commands.export)

    same = subparsers.add_parser("compare-results", help="do two runs agree? each system's difference against the "
                               "bootstrap intervals (exit 0: all agree, 1: some do not)")
    same.add_argument("a", help="results folder (reports/results, or reports/)")
    same.add_argument("b", help="the other results folder")
    same.add_argument("--metric", choices=METRICS, default="uar")
    same.set_defaults(func=commands.compare_results)

    return parser


def main(argv: list[str] | None = None) -> int:
    # A command that has scored everything ignores Ctrl-C and SIGTERM while it writes its outputs and exits
    # (cli.commands._finishing); called from Python (tests, a notebook), the caller's handlers come back.
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(argv)
    finally:
        if __name__ != "__main__":
            for number, handler in handlers.items():
                if handler is not None and signal.getsignal(number) is not handler:  # changed: main thread
                    signal.signal(number, handler)


def _run(argv: list[str] | None) -> int:
    """:func:`main`'s work: parse, run the command, and turn an interrupt or a closed stdout into its status."""
    try:
        from .core.interrupts import deferred

        # A Ctrl-C waits until the parser is built (a second one does not); each handler does the same for
        # its own imports (cli.commands): one landing inside an extension module's initialization came out
        # as an ImportError ("initialization failed", scipy's HiGHS), or left a half-initialized torch that
        # crashed at exit.
        with deferred():
            args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt as err:  # outside scoring (imports, loading a model, writing): one line
        from .core.console import error

        error("interrupted")
        return getattr(err, "exit_status", 130)  # 143 for a SIGTERM that came during the imports
    except BrokenPipeError:  # the other commands' stdout read by `| head`: the reader has what it wanted
        from .core.console import drop_stdout, stdout_reader_gone

        if not stdout_reader_gone():
            raise  # a pipe other than stdout: a real failure
        drop_stdout()
        return 0


def _leave(status: int) -> None:
    """Exit with ``status``; after an interrupt, at once. A Ctrl-C that cut an import short (a second Ctrl-C
    during start-up, or an import outside the parts where signals wait) leaves a half-initialized
    extension module, whose teardown at the interpreter's exit crashed (SIGSEGV after the 'interrupted'
    line) or turned the exit into a death by SIGINT; every file is already closed and every output written
    or removed by then, so nothing is lost by skipping that teardown."""
    if status not in (130, 143):
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say there
            pass
    os._exit(status)


if __name__ == "__main__":
    _leave(main())
