"""``python -m ser_utils train``: a model folder from a labelled manifest (the work is in
:mod:`ser_utils.study.manifest_training`). Every refusal is one ``error:`` line and status 2 with nothing
written; a Ctrl-C or SIGTERM stops with one line and leaves no folder behind (the folder is written beside
``--out`` and renamed into place only when complete)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core.console import error, say, warn, warning_lines
from ..core.interrupts import Interrupted, deferred, raising

#: Backbone ``train`` embeds with unless ``--backbone`` or ``--features`` says otherwise.
DEFAULT_TRAIN_BACKBONE = "whisper-base"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m ser_utils train``."""
    from ..core.config import PROFILES

    parser.add_argument("--manifest", required=True, help="CSV with columns path,label[,speaker]; paths relative "
                        "to the manifest's folder")
    parser.add_argument("--out", required=True, help="the model folder to write (refused if it exists, unless --force)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder (once training is done)")
    parser.add_argument("--labels", help="the class names in output order, comma-separated (default: the manifest's, "
                        "in order of first appearance); each must be in the manifest")
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--backbone", help=f"a pretrained encoder: installed weight package, local folder or hub name "
                        f"(default: {DEFAULT_TRAIN_BACKBONE}); frozen, a head on its per-layer embeddings")
    inputs.add_argument("--features", choices=("egemaps", "mfcc-set"), help="a handcrafted model instead: these "
                        "features + the best of the baselines' classifiers")
    parser.add_argument("--normalize", choices=("none", "speaker"), default="none", help="speaker: standardise each "
                        "speaker's features with its own clips (needs the speaker column; predict / evaluate then "
                        "need --adapt speaker)")
    parser.add_argument("--heads", choices=("linear", "all"), default="linear", help="frozen heads to choose among: "
                        "linear (ridge, logistic regression and shrinkage LDA on every layer's mean+std: the "
                        "study's selected head's candidates; default) or all (also the project's MLPs: about twice "
                        "the time)")
    parser.add_argument("--train-layers", type=int, metavar="K", help="partial fine-tuning of the backbone's top K "
                        "layers as the study runs it (from cached lower-layer states; a CPU is enough) instead of a "
                        "frozen head; each training early-stops on validation speakers cut off its clips")
    parser.add_argument("--profile", choices=PROFILES, default=None, help="whose caches to share (default: "
                        "$SER_PROFILE, else full)")


def train(args: argparse.Namespace) -> int:
    with deferred():  # the imports: see cli.commands' docstring
        from ..study import manifest_training as mt

    problem = _option_problem(args)
    if problem:
        error(problem)
        return 2
    try:
        with raising(), warning_lines():  # a Ctrl-C stops at once; the partial folder is removed on the way out
            _run(args, mt, args.out)
        return 0
    except mt.TrainingError as err:
        error(str(err))
        return 2
    except Interrupted as err:
        _end_bars()
        error(f"interrupted ({err.name}); no model folder written")
        return err.exit_status


def train_model(manifest: str | Path, out: str | Path, *, backbone: str | None = None, features: str | None = None,
                normalize: str = "none", heads: str = "linear", labels: Sequence[str] | None = None,
                train_layers: int | None = None, force: bool = False, profile: str | None = None) -> dict:
    """``python -m ser_utils train`` from Python (the same code, the same printed lines): the model folder
    ``out`` from the labelled ``manifest``; returns what it stores as ``evaluation.json`` (the chosen head's
    cross-validated ``uar``, ``accuracy``, ``macro_f1``, ``confusion``, ...). A refusal raises
    :class:`~ser_utils.study.manifest_training.TrainingError` (one line), with nothing written. ``train_layers``:
    ``--train-layers K``."""
    from ..core.config import display_path
    from ..study import manifest_training as mt

    args = argparse.Namespace(manifest=str(manifest), out=str(out), backbone=backbone, features=features,
                              normalize=normalize, heads=heads, labels=",".join(labels) if labels else None,
                              force=force, train_layers=train_layers, profile=profile)
    problem = _option_problem(args)
    if problem:
        raise mt.TrainingError(problem)
    with warning_lines():
        # From Python (a notebook): the folder said relative to the repository, as reports name paths.
        return _run(args, mt, display_path(out))


def _run(args: argparse.Namespace, mt, shown: str) -> dict:
    """Read and check the manifest (before any audio is read), then train and write the folder (said as
    ``shown``)."""
    data = mt.read_training_manifest(args.manifest, _labels(args.labels), args.normalize)
    for message in data.failures.values():
        warn(message)
    mt.check_trainable(data)
    return _train(args, mt, data, shown)


def _end_bars() -> None:
    """End the line of a progress bar an interrupt left open (tqdm draws without a newline, so the error
    would be written on the end of the bar's). Not ``bar.close()``: it redraws under tqdm's lock, and after a
    signal landed inside tqdm it sometimes wrote nothing."""
    from tqdm import tqdm

    bars = [bar for bar in list(getattr(tqdm, "_instances", ())) if not getattr(bar, "disable", True)]
    for bar in bars:
        bar.disable = True  # no redraw when it is collected
    if bars:
        sys.stderr.write("\n")


def _labels(text: str | None) -> list[str] | None:
    return None if text is None else [part for part in text.split(",")]


def _option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, as the error line says it (``None``: nothing)."""
    from ..study.manifest_finetune import option_problem

    out = Path(args.out)
    problem = option_problem(args.train_layers, args.features, args.normalize)
    if problem:
        return problem
    if out.exists() and not out.is_dir():
        return f"--out {out}: a file, not a folder"
    if out.exists() and not args.force:
        return f"--out {out}: already exists; choose another folder, or --force to replace it"
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        return f"--out {out}: folder {out.parent} does not exist"
    if not Path(args.manifest).is_file():
        return f"--manifest {args.manifest}: no such file"
    return None


def _train(args: argparse.Namespace, mt, data, shown: str) -> dict:
    from ..core.config import get_profile

    profile = get_profile(args.profile)
    skipped = mt.too_long(data)
    with _work_folder(args) as work:  # fine-tuning's checkpoints, until the folder is written
        if args.features:
            outcome, failures = _baseline(args, mt, data, skipped, profile)
        elif args.train_layers is not None:
            outcome, failures = _partial(args, mt, data, skipped, profile, Path(work))
        else:
            outcome, failures = _frozen(args, mt, data, skipped, profile)
        left_out = len(data.failures) + len(failures)
        data = data.keep(set(data.table["path"]) - set(failures), failures)
        result = mt.evaluation(data, outcome, manifest=args.manifest, backbone=outcome.inputs,
                               normalize=args.normalize, skipped=left_out)
        mt.write_model_folder(args.out, outcome, result, force=args.force)
    for line in mt.summary_lines(result):
        say(line)
    say(f"model folder: {shown} (model card: {Path(shown) / mt.CARD_NAME})")
    return result


def _work_folder(args: argparse.Namespace):
    """A temporary folder for fine-tuning's checkpoints, removed on the way out (a Ctrl-C included)."""
    import contextlib
    import tempfile

    if args.train_layers is None:
        return contextlib.nullcontext()
    return tempfile.TemporaryDirectory(prefix="ser-train-")


def _backbone(args, mt):
    """The ``--backbone`` as the study checks it (Whisper at each clip's own length), refused in one line."""
    from ..study.systems import StudyBackbone

    name = args.backbone or DEFAULT_TRAIN_BACKBONE
    backbone = StudyBackbone.check(name, {"whisper": {"input": "clip"}})
    if backbone.reason:
        raise mt.TrainingError(f"--backbone {name}: {backbone.reason}")
    return backbone


def _usable(mt, data, failures: dict[str, str]):
    """The data without the files that failed (each said in one line), and its inner folds."""
    for message in failures.values():
        warn(message)
    kept = data.keep(set(data.table["path"]) - set(failures), failures)
    return kept, mt.check_trainable(kept)


def _frozen(args, mt, data, skipped: dict[str, str], profile):
    from ..backbones import backbone_fingerprint
    from ..features.normalization import Normalization
    from ..study.systems import study_encoder
    from ..training.embeddings import extract_embeddings

    backbone = _backbone(args, mt)
    encoder = study_encoder(backbone.checkpoint, backbone.options)
    paths = [p for p in dict.fromkeys(data.table["path"]) if p not in skipped]
    states = extract_embeddings(encoder, paths, profile.cache_dir, backbone_fingerprint(backbone.checkpoint))
    say(f"{backbone.family} embeddings: {states.hits} from the cache, {states.computed} computed")
    failures = {**skipped, **states.failures}
    kept, folds = _usable(mt, data, failures)
    normalization = Normalization("speaker") if args.normalize == "speaker" else Normalization()
    system = f"{Path(args.manifest).stem}-{backbone.family}-frozen{normalization.suffix}"
    outcome = mt.train_frozen(kept, folds, states.arrays, encoder, system, normalization, mlp=args.heads == "all",
                              seed=profile.seed)
    outcome.inputs = f"{backbone.describe()} ({backbone.family}, frozen): per-layer embeddings"
    return outcome, failures


def _partial(args, mt, data, skipped: dict[str, str], profile, work: Path):
    """The study's partial fine-tuning (:mod:`ser_utils.study.manifest_finetune`); every refusal before the
    encoder runs."""
    from ..backbones import backbone_fingerprint
    from ..study import manifest_finetune as mf
    from ..study.systems import study_encoder
    from ..training.partial import cache_layer_states

    backbone = _backbone(args, mt)
    mf.check_backbone(backbone, args.train_layers)
    mf.plan(data, mt.check_trainable(data), profile.seed)  # refused now, not after the encoder pass
    paths = [p for p in dict.fromkeys(data.table["path"]) if p not in skipped]
    states = cache_layer_states(study_encoder(backbone.checkpoint, backbone.options), paths, profile.cache_dir,
                                backbone_fingerprint(backbone.checkpoint), args.train_layers)
    say(f"{backbone.family} embeddings and layer-{states.start} states: {states.hits} from the cache, "
        f"{states.computed} computed")
    failures = {**skipped, **states.failures}
    kept, folds = _usable(mt, data, failures)
    chosen = mf.recipe(profile.run.encoders, kept.labels, args.train_layers)
    system = f"{Path(args.manifest).stem}-{backbone.family}-ft-top{args.train_layers}"
    outcome = mf.train_partial(kept, mf.plan(kept, folds, profile.seed), states, backbone, chosen, system, work)
    outcome.inputs = (f"{backbone.describe()} ({backbone.family}, top {args.train_layers} layer(s) fine-tuned): "
                      f"whole clips")
    return outcome, failures


def _baseline(args, mt, data, skipped: dict[str, str], profile):
    import pandas as pd

    from ..features import extract_corpus, make_extractor

    extractor = make_extractor(args.features)
    paths = [p for p in dict.fromkeys(data.table["path"]) if p not in skipped]
    table = extract_corpus(pd.DataFrame({"path": paths}), extractor, profile.cache_dir)
    say(f"{args.features} features: {table.hits} from the cache, {table.computed} computed")
    failures = {**skipped, **table.failures}
    kept, folds = _usable(mt, data, failures)
    rows = {p: i for i, p in enumerate(table.meta["path"])}
    X = table.X[[rows[p] for p in kept.table["path"]]]
    system = f"{Path(args.manifest).stem}-{args.features}" + ("+spknorm" if args.normalize == "speaker" else "")
    return mt.train_baseline(kept, folds, X, extractor, system, args.normalize, smoke=profile.is_smoke,
                             seed=profile.seed), failures
