"""The pretrained-encoder systems of the study and how each runs under a protocol (notebook 04, the CLI).

Per backbone (wav2vec2, Whisper, ...), four systems: the original recipe and the project's
configuration, each fine-tuned and on frozen embeddings, plus speaker-normalised frozen variants.
Every run writes per-clip predictions and per-fold metrics to the results folder; a system that
cannot run on this machine writes "not run" rows with the reason instead of numbers. System names:
:mod:`ser_utils.names` (``w2v2-project-frozen``, ``whisper-original-ft+spknorm``, ...).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .audio import SAMPLE_RATE
from .backbones import LoadReport, backbone_check
from .cache import file_digest, params_digest
from .config import Profile, describe_backbone, recompute_before
from .device import default_device
from .evaluate import (
    metrics_from_predictions,
    not_run_rows,
    prediction_table,
    score,
    summarise,
    write_metrics,
    write_predictions,
)
from .fingerprint import code_digest, model_fingerprint
from .model import ORIGINAL_RECIPE, EmotionClassifier, ModelConfig
from .names import encoder_system, guess_family, model_folder
from .normalization import Normalisation
from .splits import PROTOCOLS, Split, make_splits, save_splits
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
RECIPES = {recipe.name: recipe for recipe in (PROJECT, ORIGINAL)}


@dataclass(frozen=True)
class StudyBackbone:
    """A backbone of the study as checked before any long run: the checkpoint name, the encoder's
    options, its family (from the checkpoint; guessed from the name when it cannot be loaded), the
    load report, or the one-line reason it cannot run."""

    checkpoint: str
    family: str
    options: dict = field(default_factory=dict)
    report: LoadReport | None = None
    reason: str | None = None

    @classmethod
    def check(cls, checkpoint: str, options: dict[str, dict] | None = None) -> StudyBackbone:
        """Load ``checkpoint`` as training would (``python -m ser_utils backbone``) and say what it is.
        ``options`` per family (``{"whisper": {"input": "clip"}}``): the checkpoint's family's apply."""
        from .backbones import BackboneError, family_of, load_backbone_config

        try:
            family = family_of(load_backbone_config(checkpoint)).model_type
        except BackboneError as err:
            return cls(checkpoint, guess_family(checkpoint), {}, None, str(err))
        chosen = dict((options or {}).get(family, {}))
        report, reason = backbone_check(checkpoint, chosen)
        return cls(checkpoint, family, chosen, report, reason)

    def system(self, recipe: Recipe, mode: str) -> str:
        """The result name of ``recipe`` in ``mode`` (``frozen`` / ``finetune``) on this backbone."""
        return encoder_system(self.family, recipe.name, mode)

    def describe(self) -> str:
        return describe_backbone(self.checkpoint)


def system_name(recipe: Recipe, mode: str, family: str = "wav2vec2") -> str:
    """Result name of a recipe in a mode, e.g. ``w2v2-project-ft`` or ``whisper-original-frozen``."""
    return encoder_system(family, recipe.name, mode)


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


def default_out_root(profile: Profile, family: str = "wav2vec2") -> Path:
    """Where fine-tuning folds of a backbone family live: ``models_dir/<family>``."""
    return profile.models_dir / family


def frozen_systems(backbone: StudyBackbone, recipes: Sequence[Recipe], normalisations: Sequence[Normalisation] = ()):
    """The frozen systems' names, each recipe plain and with each normalisation."""
    return [backbone.system(r, "frozen") + n.suffix for r in recipes for n in [Normalisation(), *normalisations]]


def run_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
               protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
               random_repeats: int = 5, batch_size: int | None = None,
               normalisations: Sequence[Normalisation] = ()) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Frozen mode: extract (or read cached) per-layer embeddings once, train each recipe's head per split.

    ``normalisations`` (e.g. speaker, speaker-k10) add a speaker-normalised variant of each recipe's
    system (``<system>+spknorm``, ``<system>+spknorm-k10``).

    Returns the fold metrics of every system, the embeddings (path -> ``(L+1, 3, D)``) and the
    per-layer probe under ``actor-kfold`` (empty if that protocol is not run).
    """
    from .embeddings import frozen_predictions, layer_probe

    embeddings = backbone_embeddings(profile, meta, backbone, batch_size=batch_size)
    predictions, probe = {}, pd.DataFrame()
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
        for recipe in recipes:
            name = backbone.system(recipe, "frozen")
            for normalisation in [Normalisation(), *normalisations]:
                predictions.setdefault(name + normalisation.suffix, []).append(frozen_predictions(
                    meta, splits, embeddings, recipe.model, name, normalisation, seed=profile.seed))
        if protocol == "actor-kfold":
            probe = layer_probe(meta, splits, embeddings)
    return write_systems(predictions, profile), embeddings, probe


def backbone_embeddings(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, *,
                        batch_size: int | None = None) -> dict[str, np.ndarray]:
    """The per-layer pooled embeddings of every clip of ``meta`` (path -> ``(L+1, 3, D)``), cached."""
    from .backbones import load_backbone
    from .embeddings import extract_embeddings

    encoder, _ = load_backbone(backbone.checkpoint, options=backbone.options)
    return extract_embeddings(encoder.to(default_device()), meta["path"], profile.cache_dir,
                              model_fingerprint(backbone.checkpoint), batch_size=batch_size).arrays


def best_frozen(metrics: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
                normalisations: Sequence[Normalisation]) -> tuple[Recipe, Normalisation, str] | None:
    """The (recipe, normalisation, system) of the highest actor-kfold UAR among the frozen systems of
    ``backbone`` with one of ``normalisations`` (``Normalisation()``: plain); ``None`` if none ran."""
    summary = summarise(metrics)
    summary = summary[(summary["protocol"] == "actor-kfold") & (summary["status"] == "ok")]
    candidates = [(recipe, n, backbone.system(recipe, "frozen") + n.suffix) for recipe in recipes
                  for n in normalisations]
    uar = summary.set_index("system")["uar_mean"]
    ranked = [c for c in candidates if c[2] in uar.index]
    return max(ranked, key=lambda c: uar[c[2]]) if ranked else None


def export_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, embeddings: dict[str, np.ndarray],
                  recipe: Recipe, normalisation: Normalisation, fold: int = 1) -> Path:
    """Save a frozen system as a model folder for ``predict`` / ``evaluate``: ``models_dir/<family>-frozen``
    (``-frozen-spknorm`` with a speaker normalisation).

    The head is actor-kfold fold ``fold``'s, trained as in the study (validation actors from the
    training part, the variance chosen on them); it never saw its test actors, so its test scores
    (``evaluation.json`` beside it: the fold's test clips as the study scored them) are an honest
    estimate for unseen speakers.
    """
    from .backbones import load_backbone
    from .embeddings import normalised_variants, train_split_head
    from .frozen_model import FrozenEncoderModel

    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)
    split = next(s for s in make_splits(meta, "actor-kfold", seed=profile.seed) if s.fold == fold)
    variants = normalised_variants(meta, embeddings, normalisation, seed=profile.seed)
    fitted = train_split_head(meta, split, variants, recipe.model, seed=profile.seed)
    encoder, _ = load_backbone(backbone.checkpoint, options=backbone.options)
    system = backbone.system(recipe, "frozen") + normalisation.suffix
    test = split.frames(meta)[2]
    predicted = fitted.predict(variants[fitted.variance][0][test.index.to_numpy()])
    scores = score(test["emotion"].astype(str), np.asarray(recipe.model.labels)[predicted])
    info = {"protocol": "actor-kfold", "fold": fold, "profile": profile.name, "data": profile.describe_data(),
            "backbone": backbone.describe(), "variance": fitted.variance,
            "test_actors": sorted(int(a) for a in test["actor"].unique()), **scores.as_dict()}
    model = FrozenEncoderModel(encoder, fitted.head, system=system, normalization=fitted.normalization, info=info)
    target = profile.models_dir / model_folder(backbone.family, "frozen", normalisation.kind != "none")
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    (target / "evaluation.json").write_text(json.dumps({"system": system, **info}, indent=1))
    return target


def compare_input_modes(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
                        modes: Sequence[str] = ("clip", "pad30")) -> pd.DataFrame:
    """The same frozen heads on the same clips with each Whisper input mode, under actor-kfold.

    One row per (input, recipe, fold): ``uar``, ``accuracy``, and ``frames``, the encoder frames a clip
    costs on average (its own in ``clip``, 1,500 in ``pad30``), which is what the time goes with.
    ``meta`` is usually a subset: ``pad30`` runs the encoder over 30 s per clip.
    """
    import torch

    from .backbones import load_backbone
    from .embeddings import frozen_predictions

    splits = make_splits(meta, "actor-kfold", seed=profile.seed)
    rows = []
    for mode in modes:
        variant = StudyBackbone(backbone.checkpoint, backbone.family, {**backbone.options, "input": mode})
        encoder, _ = load_backbone(variant.checkpoint, options=variant.options)
        lengths = torch.as_tensor(meta["duration"].to_numpy() * SAMPLE_RATE).long()
        frames = float(encoder.frame_lengths(lengths).float().mean()) if mode == "clip" else \
            float(encoder.config.max_source_positions)
        embeddings = backbone_embeddings(profile, meta, variant)
        for recipe in recipes:
            predictions = frozen_predictions(meta, splits, embeddings, recipe.model, variant.system(recipe, "frozen"),
                                             seed=profile.seed)
            rows += [{"input": mode, "recipe": recipe.name, "fold": r["fold"], "uar": r["uar"],
                      "accuracy": r["accuracy"], "frames": frames, "n_clips": len(meta)}
                     for r in metrics_from_predictions(predictions)]
    return pd.DataFrame(rows)


def run_finetune(profile: Profile, meta: pd.DataFrame, backbone: str | StudyBackbone, recipes: Sequence[Recipe],
                 protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
                 random_repeats: int = 5, out_root: Path | None = None,
                 names: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Fine-tune mode: every recipe under every protocol; finished folds are reused from disk.

    Checkpoints go under ``out_root`` (default ``models_dir/<family>``); ``names`` replaces the
    systems' result names (default: the backbone's, e.g. ``w2v2-project-ft``), one per recipe. Returns
    the fold metrics of every system and the epoch logs, keyed by (system, protocol, fold).
    """
    from .audio import load_many

    backbone = backbone if isinstance(backbone, StudyBackbone) else StudyBackbone(backbone, guess_family(backbone))
    out_root = out_root or default_out_root(profile, backbone.family)
    names = list(names) if names else [backbone.system(r, "finetune") for r in recipes]
    if len(names) != len(recipes):
        raise ValueError(f"names: {len(names)} given for {len(recipes)} recipe(s)")
    waves, _ = load_many(meta["path"])
    predictions, histories = {name: [] for name in names}, {}
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
        for recipe, name in zip(recipes, names, strict=True):
            predictions[name].append(finetune_predictions(meta, splits, backbone.checkpoint, recipe.model,
                                                          recipe.training, out_root, name, waves,
                                                          options=backbone.options)[0])
            for split in splits:
                log = out_root / name / protocol / f"fold{split.fold}" / "log.jsonl"
                histories[(name, protocol, split.fold)] = pd.read_json(log, lines=True)
    return (write_systems(predictions, profile) if is_main_process() else pd.DataFrame()), histories


def export_model(profile: Profile, system: str = "w2v2-project-ft", protocol: str = "actor-kfold", fold: int = 1,
                 out_root: Path | None = None, backbone: StudyBackbone | None = None) -> Path:
    """Copy one fold's best fine-tuned checkpoint to ``models_dir/<family>-ser`` (``wav2vec2-ser``) as the
    model to use on new audio.

    The fold's model never saw its test actors, so its test scores (written beside it in
    ``evaluation.json``) are an honest estimate for unseen speakers.
    """
    from .evaluate import read_predictions

    backbone = backbone or StudyBackbone(profile.backbone, guess_family(profile.backbone))
    out_root = out_root or default_out_root(profile, backbone.family)
    source = out_root / system / protocol / f"fold{fold}" / "best"
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no trained checkpoint to export")
    target = profile.models_dir / model_folder(backbone.family, "finetune")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    predictions = read_predictions(profile.results_dir, [system])
    tested = predictions[(predictions["protocol"] == protocol) & (predictions["fold"] == fold)]
    scores = score(tested["emotion"], tested["predicted"])
    (target / "evaluation.json").write_text(json.dumps({
        "system": system, "protocol": protocol, "fold": fold, "profile": profile.name,
        "data": profile.describe_data(), "backbone": backbone.describe(),
        "test_actors": sorted(int(a) for a in tested["actor"].unique()), **scores.as_dict()}, indent=1))
    return target


def finetune_predictions(meta: pd.DataFrame, splits: Sequence[Split], backbone: str, model_config: ModelConfig,
                         config: TrainConfig, out_root: str | Path, system: str, waves: dict[str, np.ndarray], *,
                         on_epoch_end: Callable[[dict], None] | None = None, options: dict | None = None,
                         progress: bool = True) -> tuple[pd.DataFrame, list]:
    """Fine-tune one model per split (a fresh ``backbone`` each time: hub name or local folder) and
    predict its test clips with the best checkpoint.

    ``waves`` maps each clip's path to its 16 kHz waveform (clips missing from it - files that failed
    to load - are left out). Each fold lives in ``out_root/<system>/<protocol>/fold<k>``; a finished
    fold (``done.json``) is not trained again, an interrupted one resumes - except under ``FORCE=1``
    (:func:`config.recompute_before`), which retrains folds made before the run. Returns the predictions
    table (``system, protocol, fold, stem, actor, emotion, predicted``) and each fold's
    :class:`FoldResult` (``None`` for folds reused from disk).
    """
    from .batches import ClipDataset
    from .train import processes_state, train_fold

    # Under `accelerate launch` every process trains; only the main one writes files, and the others
    # wait for it wherever they would read what it writes.
    processes = processes_state()
    meta = meta[meta["path"].isin(waves.keys())]
    frames, results = [], []
    for split in splits:
        fold_dir = Path(out_root) / system / split.protocol / f"fold{split.fold}"
        done = fold_dir / "done.json"
        fingerprint = fold_fingerprint(split, meta, backbone, model_config, config, options)
        forced = recompute_before(folds=True)
        stamp = fold_dir / "fingerprint.txt"
        outdated = forced is not None and stamp.is_file() and stamp.stat().st_mtime < forced
        processes.wait_for_everyone()  # every process has looked before the main one removes anything
        if outdated and processes.is_main_process:
            shutil.rmtree(fold_dir)  # FORCE=1 (without KEEP_FOLDS=1): folds from before this run are retrained
        processes.wait_for_everyone()
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            frames.append(pd.read_csv(fold_dir / "predictions.csv", dtype={"stem": str}))
            results.append(None)
            continue
        if processes.is_main_process:
            if fold_dir.is_dir() and (not stamp.is_file() or stamp.read_text() != fingerprint):
                shutil.rmtree(fold_dir)  # made from other data, model or settings: start this fold afresh
            fold_dir.mkdir(parents=True, exist_ok=True)
            stamp.write_text(fingerprint)
        processes.wait_for_everyone()
        train, val, test = split.frames(meta)
        label_index = {name: i for i, name in enumerate(model_config.labels)}
        datasets = [ClipDataset([waves[p] for p in part["path"]],
                                part["emotion"].astype(str).map(label_index).to_numpy(),
                                max_samples=int(config.max_seconds * SAMPLE_RATE) if config.max_seconds else None,
                                train=is_train, seed=config.seed)
                    for part, is_train in ((train, True), (val, False))]
        result = train_fold(lambda: EmotionClassifier.from_backbone(backbone, model_config, options=options),
                            *datasets, config, fold_dir, on_epoch_end=on_epoch_end, progress=progress)
        if processes.is_main_process:
            best = EmotionClassifier.from_pretrained(result.best_dir).to(processes.device)
            probs = best.predict_proba([waves[p] for p in test["path"]], batch_size=config.eval_batch_size)
            table = prediction_table(system, split.protocol, split.fold, test,
                                     np.asarray(best.config.labels)[probs.argmax(1)])
            table.to_csv(fold_dir / "predictions.csv", index=False)
            done.write_text(json.dumps({"best_epoch": result.best_epoch, "best_val_uar": result.best_val_uar,
                                        "training": config.to_dict(), "fingerprint": fingerprint}))
        processes.wait_for_everyone()
        frames.append(pd.read_csv(fold_dir / "predictions.csv", dtype={"stem": str}))
        results.append(result)
    return pd.concat(frames, ignore_index=True), results


def fold_fingerprint(split: Split, meta: pd.DataFrame, backbone: str, model_config: ModelConfig,
                     config: TrainConfig, options: dict | None = None) -> str:
    """What a trained fold depends on: the clips of its split (names and content), the backbone, the
    model and training settings, and the code of audio loading, the backbone and model, and training.
    A finished fold is reused only when this is unchanged."""
    from . import audio, backbones, batches, model, train

    clips = meta[meta["stem"].isin(set(split.train) | set(split.val) | set(split.test))]
    content = {stem: file_digest(path) for stem, path in zip(clips["stem"], clips["path"], strict=True)}
    return params_digest({"split": split.to_dict(), "content": content, "backbone": model_fingerprint(backbone),
                          "options": options or {},
                          "model": model_config.to_dict(), "training": config.to_dict(),
                          "code": code_digest(audio, backbones, model, batches, train)})
