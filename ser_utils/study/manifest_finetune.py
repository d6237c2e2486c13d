"""``train --train-layers K``: partial fine-tuning on a labelled manifest, as the study runs it.

The study's setting (:func:`ser_utils.study.partial.partial_candidates` at the profile's
``EncoderRun.partial_*`` sizes: backbone lr 2e-4, head lr 1e-4, 1 epoch, batch 8, whole clips): the top ``K``
encoder layers, the layer weights and the head train from the lower layers' cached states
(:func:`ser_utils.training.partial.cache_layer_states`, the embeddings' content-keyed cache), starting from a
frozen head trained on the same clips (linear probing, then fine-tuning). One setting, stated, not chosen.

Every training cuts its own validation part off its training clips, as the study's splits do: two speakers
(the remaining speakers keep every class), or a stratified 10 % of the clips when the manifest has no speaker
column; the warm-start head and the epochs stop early on it.

* the cross-validated scores: the frozen heads' inner folds
  (:func:`~ser_utils.study.manifest_training.check_trainable`), each trained as above, its held-out clips
  scored from the cached states (the same logits as the whole encoder, tested in ``tests/test_partial.py``);
* the model: trained on every clip except its validation part, which early stopping needs; the best epoch's
  checkpoint is the folder, copied as notebook 04 exports ``whisper-project-ft-top1``
  (:func:`ser_utils.study.finetuning.export_model`), so ``predict`` and ``evaluate`` load it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.console import say
from ..evaluation.inner_cv import InnerChoice
from ..evaluation.metrics import score
from .manifest_training import Outcome, TrainingData, TrainingError

#: Validation speakers cut off each training part (the study's ``actor_kfold`` default).
VAL_SPEAKERS = 2
#: Validation share of a training part without speakers (the study's ``random_80_20``).
VAL_SHARE = 0.1


def option_problem(train_layers: int | None, features: str | None, normalize: str) -> str | None:
    """What ``--train-layers`` cannot go with, as the error line says it (``None``: nothing)."""
    if train_layers is None:
        return None
    if features:
        return (f"--train-layers with --features {features}: partial fine-tuning trains an encoder's layers; "
                "a handcrafted model has none")
    if normalize == "speaker":
        return ("--train-layers with --normalize speaker: the study fine-tunes without speaker normalization; "
                "leave one of them out")
    if train_layers < 1:
        return f"--train-layers {train_layers}: train 1 or more of the encoder's top layers"
    return None


@dataclass
class Part:
    """One training: the rows it trains on, early-stops on, and scores (none for the final model)."""

    train: np.ndarray
    val: np.ndarray
    scored: np.ndarray


def plan(data: TrainingData, folds, seed: int = 0) -> list[Part]:
    """Each inner fold's training, then the final one on every clip; each with its own validation part.
    Refused (one line) when a training part cannot give up validation clips and keep every class."""
    every = np.arange(len(data.table))
    parts = [(fit, scored) for fit, scored in folds] + [(every, np.array([], dtype=int))]
    return [Part(*_cut_validation(data, fit, seed), scored) for fit, scored in parts]


def _cut_validation(data: TrainingData, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = data.y
    if not data.speakers:
        from sklearn.model_selection import train_test_split

        size = max(round(VAL_SHARE * len(rows)), len(data.labels))  # stratified: one clip of each class
        train, val = train_test_split(rows, test_size=size, stratify=y[rows], random_state=seed)
        return np.sort(train), np.sort(val)
    speakers = data.groups
    chosen: list[str] = []
    for speaker in np.random.default_rng(seed).permutation(sorted(set(speakers[rows]))):
        rest = rows[~np.isin(speakers[rows], [*chosen, speaker])]
        if len(chosen) < VAL_SPEAKERS and np.unique(y[rest]).size == len(data.labels):
            chosen.append(str(speaker))
    if not chosen:
        raise TrainingError(f"--train-layers: {len(set(speakers[rows]))} speaker(s) in a training part; early "
                            "stopping needs a validation speaker whose clips every class can spare (add speakers)")
    val = np.isin(speakers[rows], chosen)
    return rows[~val], rows[val]


class FineTunedFolder:
    """The final training's best checkpoint as the model ``write_model_folder`` saves: the folder copied as
    the study exports a fine-tuned fold (``EmotionClassifier``'s format; ``system`` names it)."""

    def __init__(self, best: Path, system: str):
        self.best, self.system = Path(best), system

    def save_pretrained(self, directory: str | Path) -> Path:
        shutil.copytree(self.best, directory)
        return Path(directory)


def check_backbone(backbone, train_layers: int) -> None:
    """The study's reasons partial fine-tuning does not run (WavLM, Whisper's pad30 input), and ``K`` below
    the backbone's layer count (all of them is whole-encoder fine-tuning: ``finetune``)."""
    from ..core.config import EncoderRun
    from .partial import partial_reason
    from .systems import PROJECT

    layers = backbone.report.layers
    if train_layers >= layers:
        raise TrainingError(f"--train-layers {train_layers}: the {backbone.family} backbone has {layers} layers; "
                            f"choose 1 to {layers - 1} (every layer is the finetune command's)")
    reason = partial_reason(backbone, PROJECT, EncoderRun(partial_layers=(train_layers,)), ("finetune",))
    if reason:
        raise TrainingError(f"--train-layers with --backbone {backbone.checkpoint}: {reason}")


def recipe(run, labels: Sequence[str], train_layers: int):
    """The study's partial fine-tuning recipe at ``run``'s sizes, for these labels (its first stated lr)."""
    from .partial import partial_candidates
    from .systems import PROJECT, Recipe

    project = Recipe("project", replace(PROJECT.model, labels=tuple(labels)), PROJECT.training)
    run = replace(run, partial_layers=(train_layers,), partial_lrs=run.partial_lrs[:1])
    return partial_candidates(project, run)[0]


def train_partial(data: TrainingData, parts: Sequence[Part], states, backbone, chosen, system: str,
                  work: Path) -> Outcome:
    """Train every part (inner folds, then the final model) in ``work``; score the inner folds' held-out
    clips from the cached states."""
    predicted = np.zeros(len(data.table), dtype=int)
    scores, predictions = [], []
    for i, part in enumerate(parts, start=1):
        final = i == len(parts)
        folder = work / system / ("final" if final else "inner-cv") / ("model" if final else f"fold{i}")  # bars' names
        result = _train(data, part, states, backbone, chosen, folder)
        where = "final model" if final else f"inner fold {i}/{len(parts) - 1}"
        line = (f"{where}: {len(part.train)} clips trained, {len(part.val)} for early stopping "
                f"({_validation(data, part)}); best epoch {result.best_epoch} (validation UAR "
                f"{result.best_val_uar:.4f})")
        if not final:
            predicted[part.scored] = _predict(result.best_dir, states, data.table["path"].iloc[part.scored])
            scores.append(score(data.y[part.scored], predicted[part.scored], data.labels).uar)
            predictions.append(predicted[part.scored])
            line += f"; held-out UAR {scores[-1]:.4f}"
        say(line)
    head = _describe(chosen)
    choice = InnerChoice(head, {head: scores}, data.speakers, {head: [None] * len(scores)}, {head: predictions})
    return Outcome(FineTunedFolder(result.best_dir, system), choice, predicted, head, "",
                   why=_why(choice, _validation(data, parts[-1])))


def _train(data: TrainingData, part: Part, states, backbone, chosen, folder: Path):
    """One training from cached states, as the study trains a split (:func:`~.finetuning.train_from_states`)."""
    from ..models.classifier import EmotionClassifier
    from .finetuning import train_from_states

    paths, y = data.table["path"].to_numpy(), data.y
    sets = [(list(paths[rows]), y[rows]) for rows in (part.train, part.val)]
    return train_from_states(states, sets, chosen.model, lambda: EmotionClassifier.from_backbone(
        backbone.checkpoint, chosen.model, options=backbone.options), chosen.training, folder)


def _predict(best: Path, states, paths: Sequence[str]) -> np.ndarray:
    """Class indices of ``paths`` by the checkpoint in ``best``, from their cached states, in order (as the
    study scores its partially fine-tuned folds' test clips)."""
    from ..models.classifier import EmotionClassifier
    from .finetuning import predict_cached

    return predict_cached(EmotionClassifier.from_pretrained(best), states, list(paths))


def _validation(data: TrainingData, part: Part) -> str:
    if not data.speakers:
        return "drawn stratified by class: 10 %, at least one of each class"
    speakers = sorted(set(data.groups[part.val]))
    return "speaker" + ("s " if len(speakers) > 1 else " ") + ", ".join(speakers)


def _describe(chosen) -> str:
    t = chosen.training
    return (f"top {chosen.model.train_layers} layer(s) fine-tuned from a frozen head (lr {t.lr_backbone:g}, "
            f"head lr {t.lr_head:g}, {t.epochs} epoch(s), batch {t.batch_size}, whole clips)")


def _why(choice: InnerChoice, final_validation: str) -> str:
    """``evaluation.json``'s ``why`` for a fine-tuned folder: one stated setting, and what the model saw."""
    folds = len(choice.scores[choice.chosen])
    return (f"the study's partial fine-tuning setting (stated, not chosen): mean inner-CV UAR "
            f"{100 * choice.mean():.1f} % over {folds} folds, each early-stopped on validation clips cut off its "
            f"training part; the model trained on every clip except its validation clips ({final_validation}), "
            f"early-stopped on them")
