"""The wav2vec2 systems of the study and how each is run under a protocol (notebook 04 and the CLI).

Four systems: the original recipe and the project's configuration, each fine-tuned and on frozen
embeddings. Every run writes per-clip predictions and per-fold metrics to the results folder; a
system that cannot run on this machine writes "not run" rows with the reason instead of numbers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .backbones import LoadReport
from .config import Profile
from .device import default_device
from .evaluate import metrics_from_predictions, not_run_rows, write_metrics, write_predictions
from .model import ORIGINAL_RECIPE, ModelConfig
from .splits import PROTOCOLS, make_splits, save_splits
from .train import ORIGINAL_TRAINING, TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A named model + training configuration."""

    name: str
    model: ModelConfig
    training: TrainConfig


#: The original write-up, reproduced: first frame of the last layer, whole model trained at one rate.
ORIGINAL = Recipe("original", ORIGINAL_RECIPE, ORIGINAL_TRAINING)
#: The project's configuration: weighted layers, masked mean pooling, frozen feature encoder,
#: separate learning rates, warm-up + linear decay, 3 s random crops.
PROJECT = Recipe("project", ModelConfig(), TrainConfig())


def system_name(recipe: Recipe, mode: str) -> str:
    """Result name of a recipe in a mode, e.g. ``w2v2-project-ft`` or ``w2v2-original-frozen``."""
    return f"w2v2-{recipe.name}-{'ft' if mode == 'finetune' else 'frozen'}"


def prepare_backbone(profile: Profile) -> str:
    """The profile's backbone name or folder; the smoke profile's tiny random model is made on first use."""
    if profile.is_smoke:
        from .synthetic import make_tiny_wav2vec2

        make_tiny_wav2vec2(profile.model)
    return profile.model


def backbone_check(name_or_dir: str) -> tuple[LoadReport | None, str | None]:
    """The check of ``python -m ser_utils backbone``, run before any long job: the backbone's load
    report and ``None``, or ``None`` and the one-line reason it cannot run (unavailable, unsupported,
    or not every backbone tensor in the checkpoint)."""
    from .backbones import BackboneError, check_backbone

    try:
        report = check_backbone(name_or_dir)
    except BackboneError as err:
        return None, str(err)
    return (report, None) if report.complete else (None, report.problem())


def protocol_splits(meta: pd.DataFrame, protocol: str, profile: Profile, *, folds: Sequence[int] | None = None,
                    random_repeats: int = 5) -> list:
    """The splits of ``protocol`` (optionally only ``folds``), saved next to the results."""
    splits = make_splits(meta, protocol, seed=profile.seed, n_repeats=random_repeats)
    if folds:
        splits = [s for s in splits if s.fold in set(folds)]
    if is_main_process():
        save_splits(splits, profile.results_dir / "splits" / f"{protocol}.json")
    return splits


def is_main_process() -> bool:
    """False in the other processes of ``accelerate launch``: they train, but never write results."""
    from .train import processes_state

    return processes_state().is_main_process


def write_system(predictions: pd.DataFrame, profile: Profile, system: str) -> pd.DataFrame:
    """Write a system's predictions and fold metrics; returns the metrics table."""
    write_predictions(predictions, profile.results_dir, system)
    rows = metrics_from_predictions(predictions)
    write_metrics(rows, profile.results_dir, system)
    return pd.DataFrame(rows)


def write_systems(predictions: dict[str, list[pd.DataFrame]], profile: Profile) -> pd.DataFrame:
    """Write each system's predictions (all protocols together: one file per system) and fold metrics."""
    return pd.concat([write_system(pd.concat(frames, ignore_index=True), profile, system)
                      for system, frames in predictions.items()], ignore_index=True)


def write_not_run(profile: Profile, systems: Sequence[str], reason: str,
                  protocols: Sequence[str] = PROTOCOLS) -> pd.DataFrame:
    """Record that ``systems`` were not run, and why, in place of numbers."""
    rows = [row for system in systems for row in not_run_rows(system, protocols, reason)]
    for system in systems:
        write_metrics([r for r in rows if r["system"] == system], profile.results_dir, system)
        stale = profile.results_dir / "predictions" / f"{system}.csv"
        stale.unlink(missing_ok=True)  # predictions of an earlier run would contradict "not run"
    return pd.DataFrame(rows)


def finetune_device_reason(allow_cpu: bool) -> str | None:
    """Why fine-tuning is skipped here (``None``: it runs)."""
    if default_device() == "cuda" or allow_cpu:
        return None
    return ("fine-tuning needs a GPU (on this CPU one fold would take many hours); "
            "run the notebook on a CUDA machine or set finetune_on_cpu=True")


def default_out_root(profile: Profile) -> Path:
    return profile.models_dir / "wav2vec2"


def run_frozen(profile: Profile, meta: pd.DataFrame, backbone: str, recipes: Sequence[Recipe],
               protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
               random_repeats: int = 5, batch_size: int | None = None,
               normalisations: Sequence = ()) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Frozen mode: extract (or read cached) per-layer embeddings once, train each recipe's head per split.

    ``normalisations`` (``normalization.Normalisation``, e.g. speaker, speaker-k10) add a speaker-
    normalised variant of each recipe's system (``<system>+spknorm``, ``<system>+spknorm-k10``).

    Returns the fold metrics of every system, the embeddings (path -> ``(L+1, 3, D)``) and the
    per-layer probe under ``actor-kfold`` (empty if that protocol is not run).
    """
    from .embeddings import extract_embeddings, frozen_predictions, layer_probe
    from .fingerprint import model_fingerprint
    from .model import EmotionClassifier

    model = EmotionClassifier.from_backbone(backbone, ModelConfig(freeze="backbone")).to(default_device())
    embeddings = extract_embeddings(model, meta["path"], profile.cache_dir, model_fingerprint(backbone),
                                    batch_size=batch_size).arrays
    del model
    from .normalization import frozen_normalised_predictions

    predictions, probe = {}, pd.DataFrame()
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
        for recipe in recipes:
            name = system_name(recipe, "frozen")
            predictions.setdefault(name, []).append(frozen_predictions(meta, splits, embeddings, recipe.model, name,
                                                                       seed=profile.seed))
            for normalisation in normalisations:
                predictions.setdefault(name + normalisation.suffix, []).append(frozen_normalised_predictions(
                    meta, splits, embeddings, recipe.model, name, normalisation, seed=profile.seed))
        if protocol == "actor-kfold":
            probe = layer_probe(meta, splits, embeddings)
    return write_systems(predictions, profile), embeddings, probe


def run_finetune(profile: Profile, meta: pd.DataFrame, backbone: str, recipes: Sequence[Recipe],
                 protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
                 random_repeats: int = 5, out_root: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Fine-tune mode: every recipe under every protocol; finished folds are reused from disk.

    Returns the fold metrics of every system and the epoch logs, keyed by (system, protocol, fold).
    """
    from .audio import load_many
    from .train import finetune_predictions

    out_root = out_root or default_out_root(profile)
    waves, _ = load_many(meta["path"])
    predictions, histories = {system_name(r, "finetune"): [] for r in recipes}, {}
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
        for recipe in recipes:
            name = system_name(recipe, "finetune")
            predictions[name].append(finetune_predictions(meta, splits, backbone, recipe.model, recipe.training,
                                                          out_root, name, waves)[0])
            for split in splits:
                log = out_root / name / protocol / f"fold{split.fold}" / "log.jsonl"
                histories[(name, protocol, split.fold)] = pd.read_json(log, lines=True)
    return write_systems(predictions, profile), histories


def export_model(profile: Profile, system: str = "w2v2-project-ft", protocol: str = "actor-kfold", fold: int = 1,
                 out_root: Path | None = None) -> Path:
    """Copy one fold's best checkpoint to ``models_dir/wav2vec2-ser`` as the model to use on new audio.

    The fold's model never saw its test actors, so its test scores (written beside it in
    ``evaluation.json``) are an honest estimate for unseen speakers.
    """

    from .evaluate import read_predictions, score

    source = (out_root or default_out_root(profile)) / system / protocol / f"fold{fold}" / "best"
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no trained checkpoint to export")
    target = profile.models_dir / "wav2vec2-ser"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    predictions = read_predictions(profile.results_dir, [system])
    tested = predictions[(predictions["protocol"] == protocol) & (predictions["fold"] == fold)]
    scores = score(tested["emotion"], tested["predicted"])
    (target / "evaluation.json").write_text(json.dumps({
        "system": system, "protocol": protocol, "fold": fold, "profile": profile.name,
        "data": profile.describe_data(), "backbone": profile.describe_model(),
        "test_actors": sorted(int(a) for a in tested["actor"].unique()), **scores.as_dict()}, indent=1))
    return target
