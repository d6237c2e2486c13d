"""Partial fine-tuning in the study: the top ``k`` encoder layers of the project recipe trained from cached
lower-layer states (:mod:`ser_utils.training.partial`), which fits a 2-core CPU where the whole encoder
does not.

The candidates (``EncoderRun.partial_layers`` x ``partial_lrs``, the backbone's learning rate) are trained
on the first selected actor-kfold fold; the one with the best **validation** UAR (its own validation
actors, early stopping keeps its best epoch) is chosen, and its test fold is scored only then. That
fold's chosen model is the row's fold; every other fold and seed trains the chosen setting, with early
stopping on its own validation UAR. Candidates' folds live under ``<out_root>/selection/``; the choice
is recorded in ``finetune_selection.csv``, every epoch of every fold in ``training_curves.csv``.

Since issue 34 the study's default is one candidate (``EncoderRun.partial_lrs = (2e-4,)``, the setting the
last full run's fold-1 validation actors chose over 5e-5): a fixed, stated setting, so no trial run is
spent on choosing it (the one candidate's fold-1 run is adopted as the system's fold, as a chosen one is).
A choice among several would be two validation actors' word (about 120 clips), which inner
cross-validation would cost four trainings per candidate to improve on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..core.config import EncoderRun, Profile
from ..evaluation.splits import PROTOCOLS, Split
from ..results.store import write_systems, write_table
from ..training.loop import FoldFolder
from .finetuning import default_out_root, finetune_predictions
from .systems import Recipe, StudyBackbone, is_main_process, protocol_splits

#: Why partial fine-tuning runs under none of the protocols asked for.
NO_PROTOCOL = "random-80-20 only, and partial_random_repeats=0 (partial fine-tuning runs under actor-kfold)"


def partial_candidates(recipe: Recipe, run: EncoderRun) -> list[Recipe]:
    """The project recipe with each candidate ``train_layers`` and backbone learning rate, at the partial
    run's sizes; whole clips (cached states cannot be cropped, see :mod:`ser_utils.training.partial`)."""
    training = replace(recipe.training, epochs=run.partial_epochs, batch_size=run.partial_batch_size,
                       max_seconds=None, patience=min(recipe.training.patience, 2), lr_head=run.partial_lr_head)
    return [Recipe(recipe.name, replace(recipe.model, train_layers=k, freeze="feature-encoder", standardize=True),
                   replace(training, lr_backbone=lr))
            for k in run.partial_layers for lr in run.partial_lrs]


def partial_reason(backbone: StudyBackbone, recipe: Recipe, run: EncoderRun, modes: Sequence[str],
                   protocols: Sequence[str] = PROTOCOLS) -> str | None:
    """Why partial fine-tuning does not run for ``backbone`` under ``protocols`` (``None``: it runs)."""
    if "finetune" not in modes:
        return "fine-tune mode not selected"
    if not partial_protocols(protocols, run):
        return NO_PROTOCOL
    if not run.partial_layers:
        return "partial_layers=() (not selected)"
    if backbone.reason:
        return backbone.reason
    if backbone.family == "wavlm":
        return "WavLM's layers share a relative position bias from its first layer: no top layers alone"
    if backbone.options.get("input") == "pad30":
        return "cached states of Whisper's pad30 input would hold 1,500 frames per clip: use input 'clip'"
    too_deep = [k for k in run.partial_layers if k > backbone.report.layers]
    if too_deep:
        return f"partial_layers {too_deep}: the backbone has {backbone.report.layers} layers"
    return replace(recipe.model, train_layers=1, freeze="feature-encoder").from_cached_states


def partial_protocols(protocols: Sequence[str], run: EncoderRun) -> list[str]:
    """The protocols of ``protocols`` partial fine-tuning runs under: the random split only with
    ``run.partial_random_repeats`` seeds (none by default since issue 34)."""
    return [p for p in protocols if p != "random-80-20" or run.partial_random_repeats]


def frame_states(backbone: StudyBackbone, recipe: Recipe, run: EncoderRun, modes: Sequence[str]) -> tuple[int, ...]:
    """The hidden states partial fine-tuning trains from (each candidate's first trained layer's input), for
    the frozen mode's encoder pass to cache at once; none when it does not run."""
    if partial_reason(backbone, recipe, run, modes):
        return ()
    return tuple(sorted({backbone.report.layers - k for k in run.partial_layers}))


def candidate_name(system: str, recipe: Recipe) -> str:
    return f"{system}-lr{recipe.training.lr_backbone:g}"


def run_partial_finetune(profile: Profile, meta: pd.DataFrame, backbone: StudyBackbone, recipe: Recipe,
                         run: EncoderRun, protocols: Sequence[str] = PROTOCOLS, *, out_root: Path | None = None
                         ) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Choose a partial setting on validation actors, then train it on every split of ``protocols`` (the random
    split's only with ``run.partial_random_repeats`` seeds, :func:`partial_protocols`).

    Returns the fold metrics of the chosen system (``<family>-<recipe>-ft-top<k>``), the epoch logs keyed
    by (system, protocol, fold), and the selection table (one row per candidate).
    """
    from ..data.audio import load_many

    out_root = out_root or default_out_root(profile, backbone.family)
    protocols = partial_protocols(protocols, run)
    if not protocols:
        raise ValueError(f"partial fine-tuning: {NO_PROTOCOL}")
    candidates = partial_candidates(recipe, run)
    waves, _ = load_many(meta["path"])
    cache = profile.cache_dir
    selection_protocol = "actor-kfold" if "actor-kfold" in protocols else protocols[0]
    first = protocol_splits(meta, selection_protocol, profile, folds=run.folds,
                            random_repeats=run.partial_random_repeats)[:1]
    rows = []
    for candidate in candidates:
        name = candidate_name(backbone.system(candidate, "finetune"), candidate)
        finetune_predictions(meta, first, backbone.checkpoint, candidate.model, candidate.training,
                             out_root / "selection", name, waves, options=backbone.options, cache_root=cache)
        rows.append(_selection_row(out_root / "selection", name, candidate, first[0]))
    selection = pd.DataFrame(rows)
    best = int(selection["val_uar"].to_numpy().argmax())  # the first on a tie
    selection["chosen"] = [i == best for i in range(len(selection))]
    chosen = candidates[best]
    system = backbone.system(chosen, "finetune")
    _adopt(out_root / "selection", selection.loc[best, "candidate"], out_root, system, first[0])
    predictions, histories = [], {}
    for protocol in protocols:
        splits = protocol_splits(meta, protocol, profile, folds=run.folds, random_repeats=run.partial_random_repeats)
        predictions.append(finetune_predictions(meta, splits, backbone.checkpoint, chosen.model, chosen.training,
                                                out_root, system, waves, options=backbone.options,
                                                cache_root=cache)[0])
        for split in splits:
            histories[(system, protocol, split.fold)] = FoldFolder.of(out_root, system, protocol, split.fold).history()
    if not is_main_process():
        return pd.DataFrame(), histories, selection
    selection = selection.assign(system=system)
    write_table(selection, profile.results_dir, "finetune_selection")
    return write_systems({system: predictions}, profile.results_dir), histories, selection


def selection_caption(family: str, selection: pd.DataFrame) -> str:
    """The line above the selection table: a choice among candidates, or one fixed setting's validation score."""
    where = f"the validation actors of {selection['protocol'].iloc[0]} fold {selection['fold'].iloc[0]}"
    if len(selection) > 1:
        return f"{family}: partial setting chosen on {where} (best val_uar):"
    return f"{family}: one fixed partial setting (nothing chosen: partial_layers, partial_lrs); its score on {where}:"


def _selection_row(root: Path, name: str, candidate: Recipe, split: Split) -> dict:
    done = json.loads(FoldFolder.of(root, name, split.protocol, split.fold).done.read_text())
    return {"candidate": name, "train_layers": candidate.model.train_layers,
            "lr_backbone": candidate.training.lr_backbone, "lr_head": candidate.training.lr_head,
            "protocol": split.protocol, "fold": split.fold, "best_epoch": done["best_epoch"],
            "val_uar": done["best_val_uar"]}


def _adopt(root: Path, candidate: str, out_root: Path, system: str, split: Split) -> None:
    """The chosen candidate's trained fold becomes the system's fold (the same fingerprint: it is reused)."""
    source = FoldFolder.of(root, candidate, split.protocol, split.fold)
    target = FoldFolder.of(out_root, system, split.protocol, split.fold)
    if is_main_process() and source.done.read_text() != (target.done.read_text() if target.done.is_file() else ""):
        shutil.rmtree(target.root, ignore_errors=True)
        shutil.copytree(source.root, target.root)


def curves_table(histories: dict) -> pd.DataFrame:
    """Every epoch of every fold: ``system, protocol, fold, epoch, train_loss, val_loss, val_uar, ...``."""
    frames = [history.assign(system=system, protocol=protocol, fold=fold)
              for (system, protocol, fold), history in histories.items() if len(history)]
    if not frames:
        return pd.DataFrame()
    columns = ["system", "protocol", "fold", "epoch", "train_loss", "val_loss", "val_accuracy", "val_uar", "best",
               "seconds", "train_audio_seconds_per_second"]
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in columns if c in table.columns]]
