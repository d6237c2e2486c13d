"""Command line: ``python -m ser_utils COMMAND ...`` (``--help`` on each command)."""

from __future__ import annotations

import argparse
import sys

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

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
