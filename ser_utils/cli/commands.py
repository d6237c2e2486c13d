"""What each ``python -m ser_utils`` command does, given its parsed arguments (the parser is in
``ser_utils.__main__``). Every line a command prints goes through :mod:`ser_utils.core.console`: results on
stdout that survive a closed pipe, one ``error:`` / ``warning:`` line each on stderr. Each handler returns
the exit status (0 done, 1 some inputs failed, 2 an unusable setting).

Each handler imports what it needs inside ``interrupts.deferred()``: a Ctrl-C during the imports waits
for them to finish (a second one does not), then stops the command with one line, because a
KeyboardInterrupt inside an extension module's initialization came out as an ImportError and a traceback
(numpy: "PyCapsule_Import could not import module datetime"; scipy's HiGHS: "initialization failed").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from ..core.console import error, one_line, say, warn, warning_lines
from ..core.interrupts import Interrupted, deferred


def option_message(err: Exception) -> str:
    """An error for the command line: one that a setting's value caused (``config.SettingError``) names
    the option that set it, e.g. ``--window: the scoring window must be ...``."""
    setting = getattr(err, "setting", None)
    return f"--{setting.replace('_', '-')}: {err}" if setting else str(err)


def validate(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..data.corpus import CorpusError, discover, validate

    try:
        with warning_lines(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RAVDESS corpus is not complete")  # the report says it all
            report = validate(discover(args.directory), strict=args.strict)
    except CorpusError as err:
        error(str(err))
        return 1
    say(str(report))
    return 0


def synth(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..data.synthetic import make_synthetic_corpus

    root = make_synthetic_corpus(args.directory, actors=range(1, args.actors + 1), seconds=args.seconds,
                                 sample_rate=args.sample_rate, channels=args.channels,
                                 suffix=args.suffix, seed=args.seed)
    say(f"synthetic corpus in {root}")
    return 0


def finetune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    with deferred():  # the imports: see the module docstring
        from ..core.config import get_profile, with_overrides
        from ..study.finetuning import run_finetune
        from ..study.sources import load_corpus, prepare_backbone
        from ..study.systems import RECIPES, StudyBackbone, study_recipes
        from ..training.loop import processes_state

    if args.recipe not in RECIPES:
        error(f"--recipe {args.recipe!r}; choose one of {tuple(RECIPES)}")
        return 2
    # Under `accelerate launch` the main process prepares data and backbone (and writes results); the
    # others find them ready.
    processes = processes_state()
    profile = get_profile(args.profile, data_dir=args.data, backbone=args.backbone)
    with processes.main_process_first():
        backbone = StudyBackbone.check(prepare_backbone(profile), {"whisper": {"input": args.input or "clip"}})
        meta = load_corpus(profile) if not backbone.reason else None  # the check comes before hours of training
    if backbone.reason:
        if processes.is_main_process:
            error(backbone.reason)
        return 2
    if processes.is_main_process:
        say(backbone.report.summary())
    run = with_overrides(profile.run.encoders, epochs=args.epochs, batch_size=args.batch_size, folds=args.folds)
    recipe = study_recipes(run)[args.recipe]
    recipe = with_overrides(recipe, training=with_overrides(recipe.training, patience=args.patience))
    if args.train_layers is not None:  # partial: the top layers from cached states, on whole clips
        if not 1 <= args.train_layers <= backbone.report.layers:
            error(f"--train-layers {args.train_layers}: the {backbone.family} backbone has {backbone.report.layers} "
                  f"layers (train 1 to {backbone.report.layers})")
            return 2
        recipe = with_overrides(recipe, model=with_overrides(recipe.model, train_layers=args.train_layers),
                                training=replace(recipe.training, max_seconds=None))
    start = time.perf_counter()
    metrics, _ = run_finetune(profile, meta, backbone, [recipe], [args.protocol], folds=run.folds,
                              random_repeats=run.random_repeats, out_root=Path(args.out) if args.out else None,
                              names=[args.name] if args.name else None)
    if not processes.is_main_process:
        return 0
    say(metrics[["system", "protocol", "fold", "accuracy", "uar", "macro_f1", "n_test"]].to_string(index=False))
    say(f"{len(metrics)} fold(s) in {time.perf_counter() - start:.0f} s")
    return 0


def backbone(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..backbones import RESOLUTION_ORDER, backbone_check

    options = {"input": args.input} if args.input else None
    report, reason = backbone_check(args.checkpoint, options)
    if reason:
        error(reason)
        return 2
    if args.json:
        say(json.dumps({**report.to_dict(), "resolution_order": RESOLUTION_ORDER}, indent=1))
    else:  # one line: what was loaded, then where the name led (and the order names are tried in)
        say(f"{report.summary()}; found as: {report.resolved} (names: {RESOLUTION_ORDER})")
    return 0


def _load_recognizer(directory: str, allow_pickle: bool = False):
    """The model folder's recognizer, or ``None`` after one error line. A Ctrl-C waits until the model is
    loaded (a second one does not): loading imports libraries, and a KeyboardInterrupt inside an extension
    module's initialization comes out as an ImportError ("initialization failed"), a traceback."""
    with deferred():  # raises Interrupted at its end if a signal came
        from ..serving.predict import EmotionRecognizer

        try:
            return EmotionRecognizer.from_pretrained(directory, allow_pickle=allow_pickle)
        except ValueError as err:  # ModelLoadError among them (not imported: an ONNX folder imports no torch)
            error(option_message(err))
            return None


def _check_run_options(args: argparse.Namespace, outputs: dict[str, str | None], inputs: list) -> bool:
    """Window, hop and output files, checked before any work: one line on stderr when one is bad. An
    output may be neither an input (``inputs``) nor the other output. A warning waits in ``args.gap``
    for :func:`_check_model_window`."""
    with deferred():  # the imports: see the module docstring
        from ..serving.predict import check_window
        from ..serving.prediction_io import check_output, check_outputs_apart

    try:
        gap = check_window(args.window, args.hop)
        for option, path in outputs.items():
            check_output(path, option)
        check_outputs_apart(outputs, inputs)
    except ValueError as err:
        error(option_message(err))
        return False
    args.gap = gap
    return True


def _model_files(model: str) -> list[Path]:
    """The files of the model folder ``model`` (inputs too: an output may not replace one of them)."""
    folder = Path(model)
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else [folder]


def _check_model_window(args: argparse.Namespace, recognizer) -> bool:
    """``--window`` / ``--hop`` against what the loaded model can score: no file could satisfy them."""
    shortest, rate = recognizer.min_seconds, recognizer.sample_rate
    if args.window is not None and args.window < shortest:
        error(f"--window {args.window:g} is shorter than the model's shortest input ({shortest:g} s): no window "
              "could be scored")
    elif args.window is not None and recognizer.max_seconds is not None and args.window > recognizer.max_seconds:
        error(f"--window {args.window:g} is longer than the model's longest input ({recognizer.max_seconds:g} s): "
              f"score in windows of at most {recognizer.max_seconds:g} s")
    elif args.hop is not None and args.hop * rate < 1:
        error(f"--hop {args.hop:g} is shorter than one sample at the model's {rate} Hz")
    else:
        if getattr(args, "gap", None):
            warn(f"--hop: {args.gap}")
        return True
    return False


def _write_outputs(outputs: dict[str, tuple[str | None, object]]) -> bool:
    """Write each ``option -> (path, content)`` atomically (CSV from a DataFrame, else text); a failure
    is one line and the other outputs are still written. Returns whether all were written."""
    from ..core.atomic import WriteError, atomic_to_csv, atomic_write_text

    written = True
    for path, content in outputs.values():
        if not path:
            continue
        try:
            if isinstance(content, str):
                atomic_write_text(path, content)
            else:
                atomic_to_csv(content, path, index=False)
        except WriteError as err:
            error(str(err))
            written = False
    return written


def _finishing() -> None:
    """Every file is scored: a Ctrl-C or SIGTERM from now on is ignored, and the run finishes with its own
    status. Only its outputs are left to write (atomically, in moments); a signal landing there or during the
    interpreter's exit ended the run with 130 and no line although every output was complete."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # elsewhere Python cannot set handlers
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)


def _interrupted(err, done: int, total: int) -> int:
    error(f"interrupted ({err.name}) after {done} of {total} file(s); no output file written")
    return err.exit_status


def predict(args: argparse.Namespace) -> int:
    """``predict`` on files and folders (``predict -``, standard input: :func:`ser_utils.cli.live.predict`)."""
    with deferred():  # the imports: see the module docstring
        from ..features.normalization import GroupError
        from ..serving.prediction_io import audio_files, format_prediction, format_window, predictions_table, to_json
        if args.adapt != "none":  # the study's module imports scikit-learn: only when adapting
            from ..study.crosscorpus import speaker_groups

    with warning_lines():  # repeated files
        files, failures = audio_files(args.paths)
    outputs = {"--csv": args.csv, "--json": args.json}
    if not _check_run_options(args, outputs, [*files, *_model_files(args.model)]):
        return 2
    recognizer = _load_recognizer(args.model, args.allow_pickle)
    if recognizer is None or not _check_model_window(args, recognizer):
        return 2
    for message in failures.values():
        error(message)
    predictions = []
    # --windows: each window's line as soon as it is scored (long files stream), before its file's line
    window_line = ((lambda path, row: say(format_window(path, row, recognizer.labels)))
                   if getattr(args, "windows", False) and args.json != "-" else None)
    try:
        with deferred(), warning_lines():  # Ctrl-C / SIGTERM: stop between files, keep old outputs
            # Adapted features need every file of a group at once; otherwise files stream one after another.
            groups = speaker_groups(files, args.adapt, args.speaker_pattern) if args.adapt != "none" else None
            grouped = groups is not None or recognizer.needs_groups
            if grouped:
                scored, unreadable = recognizer.predict_files(files, window=args.window, hop=args.hop, groups=groups)
                stream = [(p.path, p, "") for p in scored] + [(p, None, why) for p, why in unreadable.items()]
            else:
                stream = recognizer.iter_predictions(files, window=args.window, hop=args.hop, on_window=window_line)
            for path, prediction, reason in stream:
                if prediction is None:
                    failures[path] = reason
                    error(reason)
                    continue
                predictions.append(prediction)  # small: scores and windows, not audio
                if grouped and window_line is not None:
                    for row in prediction.windows.to_dict(orient="records"):
                        window_line(prediction.path, row)
                if prediction.warning:
                    warn(one_line(prediction.warning))
                if args.json != "-":
                    say(format_prediction(prediction))  # a closed stdout stops the lines only
    except GroupError as err:
        error(option_message(err))
        return 2
    except Interrupted as err:
        return _interrupted(err, len(predictions), len(files))
    _finishing()
    if not predictions and (args.csv or args.json not in (None, "-")):
        kept = [f"{o} {p} holds {'the header row only' if o == '--csv' else 'an empty list'}"
                for o, p in outputs.items() if p and p != "-"]
        warn(f"no file could be scored: {'; '.join(kept)}")
    written = _write_outputs({"--csv": (args.csv, predictions_table(predictions, recognizer.labels)),
                              "--json": (args.json if args.json != "-" else None, to_json(predictions))})
    if args.json == "-":
        say(to_json(predictions))
    return 1 if failures or not predictions or not written else 0


def evaluate(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..serving.prediction_io import NothingScoredError, manifest_files, strict_json
        from ..study.crosscorpus import evaluate_manifest

    inputs = [args.manifest, *manifest_files(args.manifest), *_model_files(args.model)]
    if not _check_run_options(args, {"--json": args.json}, inputs):
        return 2
    recognizer = _load_recognizer(args.model, args.allow_pickle)
    if recognizer is None or not _check_model_window(args, recognizer):
        return 2
    try:
        with deferred(), warning_lines():  # one "warning:" line each, no source echo
            result = evaluate_manifest(recognizer, args.manifest, window=args.window, hop=args.hop,
                                       adapt=args.adapt, labels=args.labels)
    except Interrupted as err:
        error(f"interrupted ({err.name}); nothing scored is kept, no output file written")
        return err.exit_status
    except NothingScoredError as err:
        for message in err.failures.values():
            error(message)
        error(option_message(err))
        return 1
    except (OSError, ValueError) as err:
        error(option_message(err))
        return 2
    _finishing()
    for message in result["failures"].values():
        error(message)
    for message in result["warnings"]:
        warn(one_line(message))
    settings = result["settings"]
    say(f"clips: {result['n']}  classes: {', '.join(result['classes'])}  adapt: {settings['adapt']}  "
        f"labels: {settings['labels']}")
    say(f"accuracy: {result['accuracy']:.4f}  UAR: {result['uar']:.4f}  macro-F1: {result['macro_f1']:.4f}")
    say("confusion (rows: true, columns: predicted; other = a class absent from the manifest"
        + (", never chosen with --labels manifest):" if args.labels == "manifest" else "):"))
    say(result["confusion"].to_string())
    written = True
    if args.json:
        summary = {k: v for k, v in result.items() if k != "confusion"}
        summary["confusion"] = result["confusion"].to_dict(orient="index")
        summary["settings"] = {**settings, "model": args.model}
        written = _write_outputs({"--json": (args.json, strict_json(summary))})
    return 1 if result["failures"] or not written else 0


def export(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..models.onnx_export import export_onnx

    try:
        with deferred(), warning_lines():  # Ctrl-C: the folder is written whole or not at all
            out = export_onnx(args.model, args.onnx)
    except Interrupted as err:
        error(f"interrupted ({err.name}); no ONNX folder written")
        return err.exit_status
    except (OSError, ValueError) as err:
        error(one_line(str(err)))
        return 2
    say(f"{out}: ONNX model (encoder and head in one graph), scores as {args.model} does to within 1e-3; "
        f"predict --model {out} runs without torch")
    return 0


def compare_results(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..results.compare import agree, compare_results, format_comparison

    try:
        table = compare_results(args.a, args.b, metric=args.metric)
    except (OSError, ValueError) as err:
        error(str(err))
        return 2
    say(format_comparison(table, args.metric))
    return 0 if agree(table) else 1


def pipeline(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see the module docstring
        from ..core.atomic import WriteError
        from .pipeline import NotebookFailed, run_pipeline

    try:
        run_pipeline(args.profile, only=args.only, force=args.force, keep_folds=args.keep_folds,
                     dry_run=args.dry_run)
    except NotebookFailed as err:
        error(str(err))
        for line in err.advice:  # the notebook's own advice (a local copy instead of the download), as written
            print(line, file=sys.stderr, flush=True)
        return 1
    except WriteError as err:  # a full disk: the file is named, nothing half-written is left
        error(str(err))
        return 1
    return 0
