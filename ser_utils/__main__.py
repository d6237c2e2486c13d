"""Command line: ``python -m ser_utils COMMAND ...`` (``--help`` on each command)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .pipeline import add_arguments as add_pipeline_arguments
from .pipeline import run_from_args as run_pipeline_from_args


def _validate(args: argparse.Namespace) -> int:
    from .corpus import CorpusError, discover, validate

    try:
        report = validate(discover(args.directory), strict=args.strict)
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic_corpus

    root = make_synthetic_corpus(args.directory, actors=range(1, args.actors + 1), seconds=args.seconds,
                                 sample_rate=args.sample_rate, channels=args.channels,
                                 suffix=args.suffix, seed=args.seed)
    print(f"synthetic corpus in {root}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import time

    from .audio import load_many
    from .config import get_profile, with_overrides
    from .corpus import load_corpus
    from .systems import (
        ORIGINAL,
        PROJECT,
        backbone_status,
        prepare_backbone,
        protocol_splits,
        system_name,
        write_system,
    )
    from .train import finetune_predictions

    profile = get_profile(args.profile, data_dir=args.data, model=args.backbone)
    recipe = {"project": PROJECT, "original": ORIGINAL}[args.recipe]
    reason = backbone_status(prepare_backbone(profile))
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    training = with_overrides(recipe.training, epochs=args.epochs, batch_size=args.batch_size,
                              patience=args.patience)
    meta = load_corpus(profile)
    waves, _ = load_many(meta["path"])
    splits = protocol_splits(meta, args.protocol, profile, folds=args.folds)
    name = args.name or system_name(recipe, "finetune")
    out_root = Path(args.out) if args.out else profile.models_dir / "wav2vec2"
    start = time.perf_counter()
    predictions, _ = finetune_predictions(meta, splits, profile.model, recipe.model, training, out_root, name,
                                          waves)
    metrics = write_system(predictions, profile, name)
    print(metrics[["system", "protocol", "fold", "accuracy", "uar", "macro_f1", "n_test"]].to_string(index=False))
    print(f"{len(splits)} fold(s) in {time.perf_counter() - start:.0f} s")
    return 0


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
    tune.add_argument("--profile", choices=("full", "smoke"), default=None)
    tune.add_argument("--recipe", choices=("project", "original"), default="project")
    tune.add_argument("--protocol", choices=("actor-kfold", "random-80-20"), default="actor-kfold")
    tune.add_argument("--folds", type=int, nargs="*", help="only these folds (default: all)")
    tune.add_argument("--epochs", type=int)
    tune.add_argument("--patience", type=int)
    tune.add_argument("--batch-size", type=int)
    tune.add_argument("--backbone", help="hub name or local folder (default: the profile's, SER_MODEL)")
    tune.add_argument("--data", help="corpus folder (default: the profile's, RAVDESS_DIR)")
    tune.add_argument("--out", help="checkpoint folder (default: <work dir>/models/wav2vec2)")
    tune.add_argument("--name", help="system name in the results (default: w2v2-<recipe>-ft)")
    tune.set_defaults(func=_finetune)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
