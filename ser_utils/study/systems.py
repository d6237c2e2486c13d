"""The pretrained-encoder systems of the study and how each runs under a protocol (notebook 04, the CLI).

Per backbone (wav2vec2, Whisper, ...), four systems: the original recipe and the project's
configuration, each fine-tuned and on frozen embeddings, plus speaker-normalized frozen variants.
Every run writes per-clip predictions and per-fold metrics to the results folder; a system that
cannot run on this machine writes "not run" rows with the reason instead of numbers. System names:
:mod:`ser_utils.core.names` (``w2v2-project-frozen``, ``whisper-original-ft+spknorm``, ...).
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..backbones import LoadReport, backbone_check, backbone_fingerprint
from ..core.atomic import atomic_write_text
from ..core.config import EncoderRun, Profile, describe_backbone, with_overrides
from ..core.device import default_device
from ..core.names import encoder_system, guess_family, model_folder
from ..data.audio import SAMPLE_RATE
from ..evaluation.metrics import metrics_from_predictions, score
from ..evaluation.splits import PROTOCOLS, load_splits, make_splits, save_splits
from ..features.normalization import Normalization
from ..models.heads import ORIGINAL_RECIPE, ModelConfig
from ..results.store import write_systems, write_table
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


def study_encoder(checkpoint: str, options: dict | None = None):
    """The encoder of ``checkpoint`` with ``options``, loaded once per process and on the study's device:
    the frozen pass, the input comparison, the exports and the partial cache share it (none trains it)."""
    return _study_encoder(checkpoint, json.dumps(options or {}, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _study_encoder(checkpoint: str, options: str):
    from ..backbones import load_backbone

    encoder, _ = load_backbone(checkpoint, options=json.loads(options))
    return encoder.to(default_device()).eval()


def protocol_splits(meta: pd.DataFrame, protocol: str, profile: Profile, *, folds: Sequence[int] | None = None,
                    random_repeats: int = 5) -> list:
    """The splits of ``protocol`` (optionally only ``folds``), saved next to the results.

    The saved file holds every split the folder's results were measured on: a run over fewer folds or
    seeds (partial fine-tuning's one random seed) replaces its own folds and keeps the others'.
    """
    splits = make_splits(meta, protocol, seed=profile.seed, n_repeats=random_repeats)
    if folds:
        splits = [s for s in splits if s.fold in set(folds)]
    if is_main_process():
        path = profile.results.splits(protocol)
        made = {s.fold for s in splits}
        kept = [s for s in load_splits(path) if s.fold not in made] if path.is_file() else []
        save_splits(sorted([*kept, *splits], key=lambda s: s.fold), path)
    return splits


def is_main_process() -> bool:
    """False in the other processes of ``accelerate launch``: they train, but never write results."""
    from ..training.loop import processes_state

    return processes_state().is_main_process


#: The recipe name of the frozen system whose head is chosen per split by inner cross-validation on the
#: split's training clips among :func:`selected_candidates` (``whisper-selected-frozen``).
SELECTED = "selected"


def head_candidates(recipe: Recipe) -> dict[str, ModelConfig]:
    """The recipe's own frozen head, by name (``ModelConfig.head_name``): its row trains it as the recipe
    says (early stopping on the split's validation actors)."""
    return {recipe.model.head_name: recipe.model}


def selected_candidates(recipe: Recipe, mlp: bool = True) -> list:
    """The heads the selected system chooses among by inner cross-validation (none for recipes other than
    the project's): ridge, multinomial logistic regression and shrinkage linear discriminant analysis on every
    layer's mean and standard deviation side by side (standardised; each penalty or shrinkage of a small grid
    a candidate), and, with ``mlp``, the project's
    MLP on the weighted layers with mean and with mean+std pooling."""
    from ..training.head_selection import LDA_SHRINKAGES, LOGISTIC_CS, SELECTED_ALPHAS, HeadCandidate

    if recipe.name != "project":
        return []
    linear = replace(recipe.model, pooling="mean+std", layers="all", head_hidden=0)
    heads = [HeadCandidate("ridge-all-mean+std", linear, "ridge", SELECTED_ALPHAS),
             HeadCandidate("logreg-all-mean+std", linear, "logistic", LOGISTIC_CS),
             HeadCandidate("lda-all-mean+std", linear, "lda", LDA_SHRINKAGES)]
    if mlp:
        heads += [HeadCandidate(config.head_name, config)
                  for config in (recipe.model, replace(recipe.model, pooling="mean+std"))]
    return heads


def frozen_systems(backbone: StudyBackbone, recipes: Sequence[Recipe], normalizations: Sequence[Normalization] = ()):
    """The frozen systems' names, each recipe (and the selected system beside a recipe with head
    candidates) plain and with each normalization."""
    names = [backbone.system(r, "frozen") for r in recipes]
    names += [encoder_system(backbone.family, SELECTED, "frozen") for r in recipes if selected_candidates(r)]
    return [name + n.suffix for name in names for n in [Normalization(), *normalizations]]


def run_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
               protocols: Sequence[str] = PROTOCOLS, *, folds: Sequence[int] | None = None,
               random_repeats: int = 5, batch_size: int | None = None,
               normalizations: Sequence[Normalization] = (), frames_of: Sequence[int] = (),
               mlp_candidates: bool = False, selections: dict | None = None) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Frozen mode: extract (or read cached) per-layer embeddings once, train each recipe's heads per split.

    ``normalizations`` (e.g. speaker, speaker-k10) add a speaker-normalized variant of each system
    (``<system>+spknorm``, ``<system>+spknorm-k10``). Each recipe's own system trains its own head
    (early stopping and the normalization's variance on the split's validation actors, as the recipe says).
    Beside the project recipe, ``<family>-selected-frozen`` chooses per split among
    :func:`selected_candidates` (``mlp_candidates``: with the MLPs) by inner cross-validation on the split's
    training clips (grouped by actor under actor-kfold, stratified by class under random-80-20; the
    variance is a candidate too); the test clips only score the refitted choice. Every candidate's inner and
    (post hoc) test UAR goes to the ``frozen_heads`` table, each split's choice to ``frozen_selection``.
    ``frames_of``: hidden states whose frames the same encoder pass caches for partial fine-tuning
    (:func:`ser_utils.study.partial.frame_states`). ``selections``: a dict to receive each split's
    :class:`~ser_utils.training.head_selection.SplitSelection`, keyed ``(system, protocol, fold)``, so that
    :func:`export_selected_frozen` exports the chosen heads without choosing again.

    Returns the fold metrics of every system, the embeddings (path -> ``(L+1, 3, D)``) and the
    per-layer probe under ``actor-kfold`` (empty if that protocol is not run).
    """
    from ..training.frozen_heads import layer_probe, normalized_variants

    embeddings = backbone_embeddings(profile, meta, backbone, batch_size=batch_size, frames_of=frames_of)
    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)  # files that failed are left out
    splits = {protocol: protocol_splits(meta, protocol, profile, folds=folds, random_repeats=random_repeats)
              for protocol in protocols}
    predictions, tables = {}, []
    for normalization in [Normalization(), *normalizations]:
        variants = normalized_variants(meta, embeddings, normalization, seed=profile.seed)
        for protocol_splits_ in splits.values():
            for recipe in recipes:
                _frozen_recipe(meta, protocol_splits_, variants, backbone, recipe, normalization, profile.seed,
                               predictions)
                candidates = selected_candidates(recipe, mlp_candidates)
                if candidates:
                    tables.append(_selected_system(meta, protocol_splits_, embeddings, backbone, candidates,
                                                   normalization, profile.seed, predictions, selections))
    if is_main_process() and tables:
        trials = pd.concat(tables, ignore_index=True)
        write_table(trials, profile.results_dir, "frozen_heads")
        write_table(trials[trials["chosen"]].drop(columns="chosen").reset_index(drop=True), profile.results_dir,
                    "frozen_selection")
    probe = layer_probe(meta, splits["actor-kfold"], embeddings) if "actor-kfold" in splits else pd.DataFrame()
    return write_systems(predictions, profile.results_dir), embeddings, probe


def _frozen_recipe(meta, splits, variants, backbone: StudyBackbone, recipe: Recipe, normalization: Normalization,
                   seed: int, predictions: dict) -> None:
    """One recipe's own head on one protocol's splits (chosen on validation actors as the recipe says)."""
    from ..training.frozen_heads import choose, frozen_trials, trial_predictions

    fitted = frozen_trials(meta, splits, variants, head_candidates(recipe), seeds=[seed])
    own = backbone.system(recipe, "frozen") + normalization.suffix
    predictions.setdefault(own, []).append(trial_predictions(meta, splits, choose(fitted), own, recipe.model.labels))


def _selected_system(meta, splits, embeddings, backbone: StudyBackbone, candidates: list,
                     normalization: Normalization, seed: int, predictions: dict, store: dict | None = None
                     ) -> pd.DataFrame:
    """The selected system on one protocol's splits: its predictions appended, every candidate's row returned."""
    from ..training.head_selection import selected_heads, selection_predictions, selection_table

    labels = candidates[0].config.labels
    system = encoder_system(backbone.family, SELECTED, "frozen") + normalization.suffix
    selections = selected_heads(meta, splits, embeddings, candidates, normalization, seed=seed)
    if store is not None:
        store.update({(system, s.protocol, s.fold): s for s in selections})
    predictions.setdefault(system, []).append(selection_predictions(meta, splits, selections, system, labels))
    return selection_table(meta, splits, selections, labels).assign(system=system)


def backbone_embeddings(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, *,
                        batch_size: int | None = None, frames_of: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """The per-layer pooled embeddings of every clip of ``meta`` (path -> ``(L+1, 3, D)``), cached (with the
    frames of the hidden states ``frames_of``, for partial fine-tuning)."""
    from ..training.embeddings import extract_embeddings

    return extract_embeddings(study_encoder(backbone.checkpoint, backbone.options), meta["path"], profile.cache_dir,
                              backbone_fingerprint(backbone.checkpoint), batch_size=batch_size,
                              frames_of=frames_of).arrays


def comparison_subset(meta: pd.DataFrame, clips_per_actor: int) -> pd.DataFrame:
    """The clips Whisper's input modes are compared on: ``clips_per_actor`` of each actor's quick subset
    (statement 1, repetition 1: 15 per actor), or of all its clips when more are asked for; normal
    intensity first, so that 8 or more per actor hold every emotion."""
    from ..data.corpus import QUICK_CLIPS_PER_ACTOR, quick_subset

    pool = quick_subset(meta) if clips_per_actor <= QUICK_CLIPS_PER_ACTOR else meta
    pool = pool.sort_values(["actor", "intensity_code", "emotion_code", "stem"], kind="stable")
    return pool.groupby("actor", sort=False).head(clips_per_actor).reset_index(drop=True)


def export_selected_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone,
                           embeddings: dict[str, np.ndarray], recipe: Recipe, normalizations: Sequence[Normalization],
                           fold: int = 1, mlp_candidates: bool = False, selections: dict | None = None
                           ) -> dict[str, Path]:
    """Export the selected frozen system (``recipe``'s :func:`selected_candidates`, chosen by inner
    cross-validation on the fold's training actors), plain and with the first of ``normalizations``, as
    model folders (:func:`export_frozen`); returns system -> folder. ``selections``: :func:`run_frozen`'s, whose
    choice on that fold is exported as it is (else the choice is made again, the same way)."""
    exported = {}
    for normalization in [Normalization(), *list(normalizations)[:1]]:
        system = encoder_system(backbone.family, SELECTED, "frozen") + normalization.suffix
        system, folder = export_frozen(profile, meta, backbone, embeddings, recipe, normalization, fold=fold,
                                       select=True, mlp_candidates=mlp_candidates,
                                       selection=(selections or {}).get((system, "actor-kfold", fold)))
        exported[system] = folder
    return exported


def export_frozen(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, embeddings: dict[str, np.ndarray],
                  recipe: Recipe, normalization: Normalization, fold: int = 1, select: bool = False,
                  mlp_candidates: bool = False, selection=None) -> tuple[str, Path]:
    """Save a frozen system as a model folder for ``predict`` / ``evaluate``: ``models_dir/<family>-frozen``
    (``-frozen-spknorm`` with a speaker normalization); returns the system's name and the folder.

    The head is actor-kfold fold ``fold``'s, trained as in the study: with ``select``, the selected
    system's (the head, penalty and variance chosen by inner cross-validation on the fold's training
    actors, refitted on all of them); otherwise the recipe's own head (validation actors from the training
    part). It never saw its test actors, so its test scores (``evaluation.json`` beside it: the fold's test
    clips as the study scored them) are an honest estimate for unseen speakers.
    """
    from ..models.frozen import FrozenEncoderModel
    from ..training.frozen_heads import choose, frozen_trials, normalized_variants
    from ..training.head_selection import selected_heads

    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)
    split = next(s for s in make_splits(meta, "actor-kfold", seed=profile.seed) if s.fold == fold)
    if select:
        if selection is None:
            (selection,) = selected_heads(meta, [split], embeddings, selected_candidates(recipe, mlp_candidates),
                                          normalization, seed=profile.seed)
        setting = selection.chosen
        head, variance, model_head = setting.head.name, setting.variance, selection.model
        predicted, recorded = selection.predicted[selection.choice.chosen], selection.normalization
    else:
        variants = normalized_variants(meta, embeddings, normalization, seed=profile.seed)
        (trial,) = choose(frozen_trials(meta, [split], variants, head_candidates(recipe), seeds=(profile.seed,)))
        head, variance, model_head, predicted, recorded = (trial.head, trial.variance, trial.model, trial.predicted,
                                                           trial.normalization)
    encoder = study_encoder(backbone.checkpoint, backbone.options)
    system = (encoder_system(backbone.family, SELECTED, "frozen") if select else backbone.system(recipe, "frozen"))
    system += normalization.suffix
    test = split.frames(meta)[2]
    scores = score(test["emotion"].astype(str), np.asarray(recipe.model.labels)[predicted])
    info = {"protocol": "actor-kfold", "fold": fold, "profile": profile.name, "data": profile.describe_data(),
            "backbone": backbone.describe(), "head": head, "variance": variance,
            "test_actors": sorted(int(a) for a in test["actor"].unique()), **scores.as_dict()}
    model = FrozenEncoderModel(encoder, model_head, system=system, normalization=recorded, info=info)
    target = profile.models_dir / model_folder(backbone.family, "frozen", normalization.kind != "none")
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    atomic_write_text(target / "evaluation.json", json.dumps({"system": system, **info}, indent=1))
    return system, target


def compare_input_modes(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipes: Sequence[Recipe],
                        modes: Sequence[str] = ("clip", "pad30")) -> pd.DataFrame:
    """The same frozen heads on the same clips with each Whisper input mode, under actor-kfold.

    One row per (input, recipe, fold): ``uar``, ``accuracy``, and ``frames``, the encoder frames a clip
    costs on average (its own in ``clip``, 1,500 in ``pad30``), which is what the time goes with.
    ``meta`` is usually a subset: ``pad30`` runs the encoder over 30 s per clip.
    """
    import torch

    from ..training.frozen_heads import frozen_predictions

    splits = make_splits(meta, "actor-kfold", seed=profile.seed)
    rows = []
    for mode in modes:
        variant = StudyBackbone(backbone.checkpoint, backbone.family, {**backbone.options, "input": mode})
        encoder = study_encoder(variant.checkpoint, variant.options)
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


