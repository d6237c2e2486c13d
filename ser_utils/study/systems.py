"""The pretrained-encoder systems of the study and how each runs under a protocol (notebook 04, the CLI).

Per backbone (wav2vec2, Whisper, ...), four systems: the original recipe and the project's
configuration, each fine-tuned and on frozen embeddings, plus speaker-normalized frozen variants.
Every run writes per-clip predictions and per-fold metrics to the results folder; a system that
cannot run on this machine writes "not run" rows with the reason instead of numbers. System names:
:mod:`ser_utils.core.names` (``w2v2-project-frozen``, ``whisper-original-ft+spknorm``, ...).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..backbones import LoadReport, backbone_check, backbone_fingerprint
from ..core.atomic import atomic_write_text
from ..core.config import EncoderRun, Profile, describe_backbone, with_overrides
from ..core.device import default_device
from ..core.names import encoder_system, guess_family, model_folder
from ..data.audio import SAMPLE_RATE
from ..evaluation.metrics import metrics_from_predictions, score, summarise
from ..evaluation.splits import PROTOCOLS, make_splits, save_splits
from ..features.normalization import Normalization
from ..models.heads import ORIGINAL_RECIPE, ModelConfig
from ..results.store import write_systems
from ..training.loop import ORIGINAL_TRAINING, TrainConfig


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


def study_recipes(run: EncoderRun, *, model: dict | None = None, training: dict | None = None) -> dict[str, Recipe]:
    """The study's recipes (original, project) at ``run``'s sizes: its epochs and batch size for both
    (``None``: each recipe's own); ``model`` / ``training`` override the project recipe's settings
    (``None`` values keep its defaults), e.g. ``model={"pooling": "first"}``."""
    sizes = {"epochs": run.epochs, "batch_size": run.batch_size}
    original = with_overrides(ORIGINAL, training=with_overrides(ORIGINAL.training, **sizes))
    project = Recipe("project", with_overrides(PROJECT.model, **(model or {})),
                     with_overrides(PROJECT.training, **{**sizes, **{k: v for k, v in (training or {}).items()
                                                                     if v is not None}}))
    return {"original": original, "project": project}


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
        from ..backbones import BackboneError, family_of, load_backbone_config

        try:
            family = family_of(load_backbone_config(checkpoint)).model_type
        except BackboneError as err:
            return cls(checkpoint, guess_family(checkpoint), {}, None, str(err))
        chosen = dict((options or {}).get(family, {}))
        report, reason = backbone_check(checkpoint, chosen)
        return cls(checkpoint, family, chosen, report, reason)

    def system(self, recipe: Recipe, mode: str) -> str:
        """The result name of ``recipe`` in ``mode`` (``frozen`` / ``finetune``) on this backbone; partial
        fine-tuning says how many layers trained (``whisper-project-ft-top1``)."""
        partial = recipe.model.train_layers if mode == "finetune" else None
        return encoder_system(self.family, recipe.name, mode) + (f"-top{partial}" if partial else "")

    def describe(self) -> str:
        return describe_backbone(self.checkpoint)


def protocol_splits(meta: pd.DataFrame, protocol: str, profile: Profile, *, folds: Sequence[int] | None = None,
                    random_repeats: int = 5) -> list:
    """The splits of ``protocol`` (optionally only ``folds``), saved next to the results."""
    splits = make_splits(meta, protocol, seed=profile.seed, n_repeats=random_repeats)
    if folds:
        splits = [s for s in splits if s.fold in set(folds)]
    if is_main_process():
        save_splits(splits, profile.results.splits(protocol))
    return splits


def is_main_process() -> bool:
    """False in the other processes of ``accelerate launch``: they train, but never write results."""
    from ..training.loop import processes_state

    return processes_state().is_main_process


def frozen_systems(backbone: StudyBackbone, recipes: Sequence[Recipe], normalizations: Sequence[Normalization] = ()):
    """The frozen systems' names, each recipe plain and with each normalization."""
    return [backbone.system(r, "frozen") + n.suffix for r in recipes for n in [Normalization(), *normalizations]]


def run_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
               protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
               random_repeats: int = 5, batch_size: int | None = None,
               normalizations: Sequence[Normalization] = (), frames_of: Sequence[int] = ()
               ) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Frozen mode: extract (or read cached) per-layer embeddings once, train each recipe's head per split.

    ``normalizations`` (e.g. speaker, speaker-k10) add a speaker-normalized variant of each recipe's
    system (``<system>+spknorm``, ``<system>+spknorm-k10``). ``frames_of``: hidden states whose frames the
    same encoder pass caches for partial fine-tuning (:func:`ser_utils.study.partial.frame_states`).

    Returns the fold metrics of every system, the embeddings (path -> ``(L+1, 3, D)``) and the
    per-layer probe under ``actor-kfold`` (empty if that protocol is not run).
    """
    from ..training.embeddings import frozen_predictions, layer_probe

    embeddings = backbone_embeddings(profile, meta, backbone, batch_size=batch_size, frames_of=frames_of)
    predictions, probe = {}, pd.DataFrame()
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
        for recipe in recipes:
            name = backbone.system(recipe, "frozen")
            for normalization in [Normalization(), *normalizations]:
                predictions.setdefault(name + normalization.suffix, []).append(frozen_predictions(
                    meta, splits, embeddings, recipe.model, name, normalization, seed=profile.seed))
        if protocol == "actor-kfold":
            probe = layer_probe(meta, splits, embeddings)
    return write_systems(predictions, profile.results_dir), embeddings, probe


def backbone_embeddings(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, *,
                        batch_size: int | None = None, frames_of: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """The per-layer pooled embeddings of every clip of ``meta`` (path -> ``(L+1, 3, D)``), cached (with the
    frames of the hidden states ``frames_of``, for partial fine-tuning)."""
    from ..backbones import load_backbone
    from ..training.embeddings import extract_embeddings

    encoder, _ = load_backbone(backbone.checkpoint, options=backbone.options)
    return extract_embeddings(encoder.to(default_device()), meta["path"], profile.cache_dir,
                              backbone_fingerprint(backbone.checkpoint), batch_size=batch_size,
                              frames_of=frames_of).arrays


def best_frozen(metrics: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
                normalizations: Sequence[Normalization]) -> tuple[Recipe, Normalization, str] | None:
    """The (recipe, normalization, system) of the highest actor-kfold UAR among the frozen systems of
    ``backbone`` with one of ``normalizations`` (``Normalization()``: plain); ``None`` if none ran."""
    summary = summarise(metrics)
    summary = summary[(summary["protocol"] == "actor-kfold") & (summary["status"] == "ok")]
    candidates = [(recipe, n, backbone.system(recipe, "frozen") + n.suffix) for recipe in recipes
                  for n in normalizations]
    uar = summary.set_index("system")["uar_mean"]
    ranked = [c for c in candidates if c[2] in uar.index]
    return max(ranked, key=lambda c: uar[c[2]]) if ranked else None


def comparison_subset(meta: pd.DataFrame, clips_per_actor: int) -> pd.DataFrame:
    """The clips Whisper's input modes are compared on: ``clips_per_actor`` of each actor's quick subset
    (statement 1, repetition 1: 15 per actor), or of all its clips when more are asked for; normal
    intensity first, so that 8 or more per actor hold every emotion."""
    from ..data.corpus import QUICK_CLIPS_PER_ACTOR, quick_subset

    pool = quick_subset(meta) if clips_per_actor <= QUICK_CLIPS_PER_ACTOR else meta
    pool = pool.sort_values(["actor", "intensity_code", "emotion_code", "stem"], kind="stable")
    return pool.groupby("actor", sort=False).head(clips_per_actor).reset_index(drop=True)


def export_best_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, embeddings: dict[str, np.ndarray],
                       metrics: pd.DataFrame, recipes: Sequence[Recipe], normalizations: Sequence[Normalization],
                       fold: int = 1) -> dict[str, Path]:
    """Export the best plain frozen system of ``backbone`` and the best speaker-normalized one (by actor-kfold
    UAR in ``metrics``) as model folders (:func:`export_frozen`); returns system -> folder."""
    exported = {}
    for choices in ([Normalization()], list(normalizations)):
        best = best_frozen(metrics, backbone, recipes, choices) if choices else None
        if best:
            recipe, normalization, system = best
            exported[system] = export_frozen(profile, meta, backbone, embeddings, recipe, normalization, fold=fold)
    return exported


def export_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, embeddings: dict[str, np.ndarray],
                  recipe: Recipe, normalization: Normalization, fold: int = 1) -> Path:
    """Save a frozen system as a model folder for ``predict`` / ``evaluate``: ``models_dir/<family>-frozen``
    (``-frozen-spknorm`` with a speaker normalization).

    The head is actor-kfold fold ``fold``'s, trained as in the study (validation actors from the
    training part, the variance chosen on them); it never saw its test actors, so its test scores
    (``evaluation.json`` beside it: the fold's test clips as the study scored them) are an honest
    estimate for unseen speakers.
    """
    from ..backbones import load_backbone
    from ..models.frozen import FrozenEncoderModel
    from ..training.embeddings import normalized_variants, train_split_head

    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)
    split = next(s for s in make_splits(meta, "actor-kfold", seed=profile.seed) if s.fold == fold)
    variants = normalized_variants(meta, embeddings, normalization, seed=profile.seed)
    fitted = train_split_head(meta, split, variants, recipe.model, seed=profile.seed)
    encoder, _ = load_backbone(backbone.checkpoint, options=backbone.options)
    system = backbone.system(recipe, "frozen") + normalization.suffix
    test = split.frames(meta)[2]
    predicted = fitted.predict(variants[fitted.variance][0][test.index.to_numpy()])
    scores = score(test["emotion"].astype(str), np.asarray(recipe.model.labels)[predicted])
    info = {"protocol": "actor-kfold", "fold": fold, "profile": profile.name, "data": profile.describe_data(),
            "backbone": backbone.describe(), "variance": fitted.variance,
            "test_actors": sorted(int(a) for a in test["actor"].unique()), **scores.as_dict()}
    model = FrozenEncoderModel(encoder, fitted.head, system=system, normalization=fitted.normalization, info=info)
    target = profile.models_dir / model_folder(backbone.family, "frozen", normalization.kind != "none")
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    atomic_write_text(target / "evaluation.json", json.dumps({"system": system, **info}, indent=1))
    return target


def compare_input_modes(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
                        modes: Sequence[str] = ("clip", "pad30")) -> pd.DataFrame:
    """The same frozen heads on the same clips with each Whisper input mode, under actor-kfold.

    One row per (input, recipe, fold): ``uar``, ``accuracy``, and ``frames``, the encoder frames a clip
    costs on average (its own in ``clip``, 1,500 in ``pad30``), which is what the time goes with.
    ``meta`` is usually a subset: ``pad30`` runs the encoder over 30 s per clip.
    """
    import torch

    from ..backbones import load_backbone
    from ..training.embeddings import frozen_predictions

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


