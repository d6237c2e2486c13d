"""Command line: ``python -m ser_utils COMMAND ...`` (``--help`` on each command)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .config import PROFILES, PROTOCOLS
from .console import drop_stdout, error, one_line, say, stdout_reader_gone, warn, warning_lines
from .pipeline import add_arguments as add_pipeline_arguments
from .pipeline import run_from_args as run_pipeline_from_args

ALLOW_PICKLE_HELP = ("also load an old baseline saved as pipeline.joblib: a pickle runs any code its author put in "
                     "it, so only for model folders you made yourself")


def option_message(err: Exception) -> str:
    """An error for the command line: one that a setting's value caused (``config.SettingError``) names
    the option that set it, e.g. ``--window: the scoring window must be ...``."""
    setting = getattr(err, "setting", None)
    return f"--{setting.replace('_', '-')}: {err}" if setting else str(err)


def _validate(args: argparse.Namespace) -> int:

    from .corpus import CorpusError, discover, validate

    try:
        with warning_lines(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RAVDESS corpus is not complete")  # the report says it all
            report = validate(discover(args.directory), strict=args.strict)
    except CorpusError as err:
        error(str(err))
        return 1
    say(str(report))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic_corpus

    root = make_synthetic_corpus(args.directory, actors=range(1, args.actors + 1), seconds=args.seconds,
                                 sample_rate=args.sample_rate, channels=args.channels,
                                 suffix=args.suffix, seed=args.seed)
    print(f"synthetic corpus in {root}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .config import get_profile, with_overrides
    from .finetuning import run_finetune
    from .sources import load_corpus, prepare_backbone
    from .systems import RECIPES, StudyBackbone, study_recipes
    from .train import processes_state

    if args.recipe not in RECIPES:
        print(f"error: --recipe {args.recipe!r}; choose one of {tuple(RECIPES)}", file=sys.stderr)
        return 2
    # Under `accelerate launch` the main process prepares data and backbone (and writes results); the
    # others find them ready.
    processes = processes_state()
    profile = get_profile(args.profile, data_dir=args.data, backbone=args.backbone)
    with processes.main_process_first():
        backbone = StudyBackbone.check(prepare_backbone(profile), {"whisper": {"input": args.input or "clip"}})
        meta = load_corpus(profile) if not backbone.reason else None  # the check comes before hours of training
    if backbone.reason:
        processes.print(f"error: {backbone.reason}", file=sys.stderr)
        return 2
    processes.print(backbone.report.summary())
    run = with_overrides(profile.run.encoders, epochs=args.epochs, batch_size=args.batch_size, folds=args.folds)
    recipe = study_recipes(run)[args.recipe]
    recipe = with_overrides(recipe, training=with_overrides(recipe.training, patience=args.patience))
    start = time.perf_counter()
    metrics, _ = run_finetune(profile, meta, backbone, [recipe], [args.protocol], folds=run.folds,
                              random_repeats=run.random_repeats, out_root=Path(args.out) if args.out else None,
                              names=[args.name] if args.name else None)
    if not processes.is_main_process:
        return 0
    print(metrics[["system", "protocol", "fold", "accuracy", "uar", "macro_f1", "n_test"]].to_string(index=False))
    print(f"{len(metrics)} fold(s) in {time.perf_counter() - start:.0f} s")
    return 0


def _backbone(args: argparse.Namespace) -> int:
    from .backbones import RESOLUTION_ORDER, backbone_check

    options = {"input": args.input} if args.input else None
    report, reason = backbone_check(args.checkpoint, options)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.to_dict(), "resolution_order": RESOLUTION_ORDER}, indent=1))
    else:  # one line: what was loaded, then where the name led (and the order names are tried in)
        print(f"{report.summary()}; found as: {report.resolved} (names: {RESOLUTION_ORDER})")
    return 0


def _load_recognizer(directory: str, allow_pickle: bool = False):
    from .predict import EmotionRecognizer, ModelLoadError

    try:
        return EmotionRecognizer.from_pretrained(directory, allow_pickle=allow_pickle)
    except (ModelLoadError, ValueError) as err:
        error(option_message(err))
        return None


def _check_run_options(args: argparse.Namespace, outputs: dict[str, str | None], inputs: list) -> bool:
    """Window, hop and output files, checked before any work: one line on stderr when one is bad. An
    output may be neither an input (``inputs``) nor the other output. A warning waits in ``args.gap``
    for :func:`_check_model_window`."""
    from .predict import check_window
    from .prediction_io import check_output, check_outputs_apart

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
    from .atomic import WriteError, atomic_to_csv, atomic_write_text

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


def _interrupted(err, done: int, total: int) -> int:
    error(f"interrupted ({err.name}) after {done} of {total} file(s); no output file written")
    return err.exit_status


def _predict(args: argparse.Namespace) -> int:
    from .crosscorpus import speaker_groups
    from .interrupts import Interrupted, deferred
    from .normalization import GroupError
    from .prediction_io import audio_files, format_prediction, predictions_table, to_json

    with warning_lines():  # repeated files
        files, failures = audio_files(args.paths)
    outputs = {"--csv": args.csv, "--json": args.json}
    if not _check_run_options(args, outputs, [*files, *_model_files(args.model)]):
        return 2
    recognizer = _load_recognizer(args.model, args.allow_pickle)
    if recognizer is None or not _check_model_window(args, recognizer):
        return 2
    for message in failures.values():
        error(one_line(message))
    predictions = []
    try:
        with deferred(), warning_lines():  # Ctrl-C / SIGTERM: stop between files, keep old outputs
            # Adapted features need every file of a group at once; otherwise files stream one after another.
            groups = speaker_groups(files, args.adapt, args.speaker_pattern)
            if groups is not None or recognizer.needs_groups:
                scored, unreadable = recognizer.predict_files(files, window=args.window, hop=args.hop, groups=groups)
                stream = [(p.path, p, "") for p in scored] + [(p, None, why) for p, why in unreadable.items()]
            else:
                stream = recognizer.iter_predictions(files, window=args.window, hop=args.hop)
            for path, prediction, reason in stream:
                if prediction is None:
                    failures[path] = reason
                    error(one_line(reason))
                    continue
                predictions.append(prediction)  # small: scores and windows, not audio
                if prediction.warning:
                    warn(one_line(prediction.warning))
                if args.json != "-":
                    say(format_prediction(prediction))  # a closed stdout stops the lines only
    except GroupError as err:
        error(option_message(err))
        return 2
    except Interrupted as err:
        return _interrupted(err, len(predictions), len(files))
    if not predictions and (args.csv or args.json not in (None, "-")):
        kept = [f"{o} {p} holds {'the header row only' if o == '--csv' else 'an empty list'}"
                for o, p in outputs.items() if p and p != "-"]
        warn(f"no file could be scored: {'; '.join(kept)}")
    written = _write_outputs({"--csv": (args.csv, predictions_table(predictions, recognizer.labels)),
                              "--json": (args.json if args.json != "-" else None, to_json(predictions))})
    if args.json == "-":
        say(to_json(predictions))
    return 1 if failures or not predictions or not written else 0


def _evaluate(args: argparse.Namespace) -> int:
    from .crosscorpus import evaluate_manifest
    from .interrupts import Interrupted, deferred
    from .prediction_io import NothingScoredError, manifest_files, strict_json

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
            error(one_line(message))
        error(option_message(err))
        return 1
    except (OSError, ValueError) as err:
        error(option_message(err))
        return 2
    for message in result["failures"].values():
        error(one_line(message))
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


def _compare_results(args: argparse.Namespace) -> int:
    from .compare import agree, compare_results, format_comparison

    try:
        table = compare_results(args.a, args.b, metric=args.metric)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_comparison(table, args.metric))
    return 0 if agree(table) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_utils", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pipeline = commands.add_parser("pipeline", help="run the notebooks and render the reports")
    add_pipeline_arguments(pipeline)
    pipeline.set_defaults(func=run_pipeline_from_args)

    check = commands.add_parser("validate", help="check a RAVDESS folder against the known shape")
    check.add_argument("directory")
    check.add_argument("--strict", action="store_true", help="fail on a partial corpus")
    check.set_defaults(func=_validate)

    synth = commands.add_parser("synth", help="write a synthetic RAVDESS-named corpus")
    synth.add_argument("directory")
    synth.add_argument("--actors", type=int, default=24)
    synth.add_argument("--seconds", type=float, default=1.5)
    synth.add_argument("--sample-rate", type=int, default=16_000)
    synth.add_argument("--channels", type=int, default=1)
    synth.add_argument("--suffix", default=".wav", choices=(".wav", ".flac"))
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_synth)

    tune = commands.add_parser("finetune", help="fine-tune a wav2vec2 recipe under a protocol (GPU; "
                               "`accelerate launch -m ser_utils finetune ...` for several GPUs)")
    tune.add_argument("--profile", choices=PROFILES, default=None)
    tune.add_argument("--recipe", default="project", help="a recipe of ser_utils.systems.RECIPES (default: project)")
    tune.add_argument("--protocol", choices=PROTOCOLS, default="actor-kfold")
    tune.add_argument("--folds", type=int, nargs="*", help="only these folds (default: the profile's; full: all)")
    tune.add_argument("--epochs", type=int)
    tune.add_argument("--patience", type=int)
    tune.add_argument("--batch-size", type=int)
    tune.add_argument("--backbone", help="local folder, installed weight package or hub name (default: the "
                      "profile's first, SER_BACKBONE)")
    tune.add_argument("--input", choices=("clip", "pad30"), help="Whisper only: each clip at its own length (clip, "
                      "the default) or padded to 30 s")
    tune.add_argument("--data", help="corpus folder (default: the profile's, RAVDESS_DIR)")
    tune.add_argument("--out", help="checkpoint folder (default: <work dir>/models/<family>, e.g. .../wav2vec2)")
    tune.add_argument("--name", help="system name in the results (default: <prefix>-<recipe>-ft, e.g. w2v2-project-ft)")
    tune.set_defaults(func=_finetune)

    check_backbone = commands.add_parser(
        "backbone", help="load a checkpoint as training would and say what it holds (run before a long job)")
    check_backbone.add_argument("checkpoint", help="a local folder (transformers or CTranslate2 / faster-whisper), an "
                                "installed weight package (whisper-base, whisper-tiny.en) or a hub name, tried in "
                                "this order")
    check_backbone.add_argument("--json", action="store_true", help="print a JSON object")
    check_backbone.add_argument("--input", choices=("clip", "pad30"), help="Whisper only: each clip at its own "
                                "length (clip, the default) or padded to 30 s (pad30)")
    check_backbone.set_defaults(func=_backbone)

    from .crosscorpus import ADAPTATIONS, LABEL_MODES
    from .evaluate import METRICS
    from .predict import DEFAULT_HOP, DEFAULT_WINDOW

    guess = commands.add_parser("predict", help="emotion of audio files or folders with a trained model")
    guess.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    guess.add_argument("--model", required=True, help="wav2vec2 checkpoint or baseline model directory")
    guess.add_argument("--json", nargs="?", const="-", help="write JSON to FILE (or stdout without FILE)")
    guess.add_argument("--csv", help="write per-window and per-file rows to this CSV file")
    guess.add_argument("--window", type=float, default=DEFAULT_WINDOW, help="window length, seconds")
    guess.add_argument("--hop", type=float, default=DEFAULT_HOP, help="hop between windows, seconds")
    guess.add_argument("--adapt", choices=ADAPTATIONS, default="none",
                       help="standardise features per group first: corpus = all files of the call, speaker = "
                            "per --speaker-pattern (needed by speaker-normalized models)")
    guess.add_argument("--speaker-pattern", help="regular expression finding the speaker in each path (its first "
                       "group, else the whole match), e.g. 'Actor_(\\d+)'")
    guess.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    guess.set_defaults(func=_predict)

    score = commands.add_parser("evaluate", help="score a model on a path,label manifest (other corpora)")
    score.add_argument("--model", required=True)
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
    score.set_defaults(func=_evaluate)

    same = commands.add_parser("compare-results", help="do two results folders agree? per-system differences "
                               "against the bootstrap intervals (exit 0: all agree, 1: some do not)")
    same.add_argument("a", help="results folder (reports/results, or reports/)")
    same.add_argument("b", help="the other results folder")
    same.add_argument("--metric", choices=METRICS, default="uar")
    same.set_defaults(func=_compare_results)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # outside scoring (loading a model, writing): the default Ctrl-C, said in one line
        error("interrupted")
        return 130
    except BrokenPipeError:  # the other commands' stdout read by `| head`: the reader has what it wanted
        if not stdout_reader_gone():
            raise  # a pipe other than stdout: a real failure
        drop_stdout()
        return 0


if __name__ == "__main__":
    sys.exit(main())
