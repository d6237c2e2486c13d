"""``train``: a model folder from a user's labelled manifest (any label set), with the study's own parts.

* the manifest: ``path,label[,speaker]`` read as ``evaluate`` reads it (:mod:`ser_utils.serving.prediction_io`:
  paths relative to the manifest, columns without case, ragged rows and empty cells refused by line). Labels
  are stored as ``evaluate`` compares them (stripped, lower case), so ``evaluate`` on a manifest with the
  same labels scores the folder; two spellings of one label (``Angry`` / ``angry``) are refused, not merged.
* the inputs: a backbone's per-layer pooled embeddings (:func:`ser_utils.training.embeddings.extract_embeddings`,
  the study's cache) or handcrafted features (:func:`ser_utils.features.extract_corpus`, its cache), both keyed
  by file content: a second ``train`` on the same clips embeds nothing again.
* the choice: every candidate head (the study's :func:`ser_utils.study.systems.selected_candidates`, or each
  classifier and grid point of the baselines) scored by inner cross-validation
  (:mod:`ser_utils.evaluation.inner_cv`), grouped by speaker when the manifest names speakers, stratified by
  class otherwise (optimistic: a speaker on both sides); the best mean UAR is refitted on every clip.
* the folder: the format ``predict`` and ``evaluate`` load, written beside ``--out`` and renamed into place
  only when complete, with ``evaluation.json`` and a ``README.md`` model card.

Each file is one training example, embedded whole (as the study embeds RAVDESS clips, so the caches are
shared); a file longer than :data:`MAX_CLIP_SECONDS` is skipped with a line (cut long recordings into clips;
``predict`` scores long files in windows).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import atomic_write_text
from ..data.audio import audio_seconds
from ..evaluation.inner_cv import INNER_FOLDS, InnerChoice, cross_validate, inner_folds
from ..evaluation.metrics import score
from ..features.normalization import GroupError, Normalization
from ..models.deployable import check_labels
from ..serving.prediction_io import _manifest_rows, read_manifest
from .crosscorpus import manifest_groups

#: Fewest clips of a class: one in the scored part of each inner fold.
MIN_CLASS_CLIPS = INNER_FOLDS
#: Longest file trained on, seconds (Whisper's whole input); longer ones are skipped with a line.
MAX_CLIP_SECONDS = 30.0
#: The model card's name inside the folder.
CARD_NAME = "README.md"


class TrainingError(ValueError):
    """A manifest or setting that cannot train (one line; the command's status 2, nothing written)."""


@dataclass
class TrainingData:
    """The usable rows of a manifest: ``table`` (``path``, ``label``, ``line``, ``speaker`` if any), the class
    names in output order, and the rows left out (``failures``: key -> one line each)."""

    table: pd.DataFrame
    labels: tuple[str, ...]
    speakers: bool
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return self.table["label"].map({name: i for i, name in enumerate(self.labels)}).to_numpy()

    @property
    def groups(self) -> np.ndarray | None:
        return self.table["speaker"].astype(str).to_numpy() if self.speakers else None

    def keep(self, paths: set[str], failures: dict[str, str]) -> TrainingData:
        """Only the rows whose file is in ``paths`` (the others failed: ``failures``)."""
        table = self.table[self.table["path"].isin(paths)].reset_index(drop=True)
        return replace(self, table=table, failures={**self.failures, **failures})


def _key(label: str) -> str:
    return " ".join(label.lower().split())


def read_training_manifest(manifest: str | Path, labels: Sequence[str] | None = None,
                           normalize: str = "none") -> TrainingData:
    """The manifest's rows, its labels (``labels``' order, else first appearance), its speakers; every
    refusal a :class:`TrainingError` of one line."""
    manifest = Path(manifest)
    try:
        raw = _manifest_rows(manifest)
    except OSError as err:
        raise TrainingError(f"{manifest}: cannot be read ({err.strerror or err})") from None
    except ValueError as err:
        raise TrainingError(str(err)) from None
    order = _label_order(manifest, raw, labels)
    table, failures = read_manifest(manifest, order)
    table = table.rename_axis("line").reset_index()
    _check_one_label_per_file(manifest, table)
    speakers = "speaker" in table.columns
    if speakers:
        try:
            table["speaker"] = manifest_groups(table.set_index("line"), "speaker", manifest)
        except GroupError as err:
            raise TrainingError(str(err).replace("speaker adaptation", "training by speaker")) from None
        if table["speaker"].nunique() < 2:
            raise TrainingError(f"{manifest}: one speaker ({table['speaker'].iloc[0]!r}); cross-validation grouped "
                                "by speaker needs two or more (or leave the speaker column out)")
    if normalize == "speaker" and not speakers:
        raise TrainingError(f"--normalize speaker: {manifest} has no speaker column")
    return TrainingData(table, tuple(order), speakers, failures)


def _label_order(manifest: Path, raw: pd.DataFrame, labels: Sequence[str] | None) -> list[str]:
    """The class names, stored as ``evaluate`` compares them (lower case); spellings of one label refused."""
    spelled = [s for s in dict.fromkeys(raw["label"]) if s]
    by_key: dict[str, list[str]] = {}
    for spelling in spelled:
        by_key.setdefault(_key(spelling), []).append(spelling)
    clash = next((s for s in by_key.values() if len(s) > 1), None)
    if clash:
        lines = [int(raw.index[raw["label"] == s][0]) for s in clash[:2]]
        raise TrainingError(f"{manifest}: labels {clash[0]!r} (line {lines[0]}) and {clash[1]!r} (line {lines[1]}) "
                            "differ only in case or spaces; write each class one way")
    found = [s.lower() for s in spelled]
    if labels is not None:
        wanted = [_key(x) for x in labels if x.strip()]
        if sorted(set(wanted)) != sorted(set(_key(f) for f in found)) or len(set(wanted)) != len(wanted):
            raise TrainingError(f"--labels {','.join(labels)}: the manifest's labels are {','.join(found)} "
                                "(list each once)")
        found = [next(f for f in found if _key(f) == w) for w in wanted]
    if len(found) < 2:
        raise TrainingError(f"{manifest}: {len(found)} class ({', '.join(found) or 'none'}); a model needs two or more")
    try:
        return list(check_labels(found, f"{manifest}: labels"))
    except ValueError as err:
        raise TrainingError(str(err)) from None


def _check_one_label_per_file(manifest: Path, table: pd.DataFrame) -> None:
    files = table.assign(file=[os.path.realpath(p) for p in table["path"]])
    labels = files.groupby("file")["label"].nunique()
    if (labels > 1).any():
        lines = files.loc[files["file"].isin(labels.index[labels > 1]), "line"].tolist()[:4]
        raise TrainingError(f"{manifest}: a file under two labels (lines {', '.join(map(str, lines))}); "
                            "a training clip has one class")


def too_long(data: TrainingData, limit: float = MAX_CLIP_SECONDS) -> dict[str, str]:
    """Files longer than ``limit`` seconds (their headers say): path -> the line saying it is skipped."""
    skipped = {}
    for path in dict.fromkeys(data.table["path"]):
        seconds = audio_seconds(path)
        if seconds is not None and seconds > limit:
            skipped[path] = (f"{path}: {seconds:.1f} s, longer than {limit:g} s; skipped (cut long recordings into "
                             "clips of one emotion)")
    return skipped


def check_trainable(data: TrainingData, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner folds, once every class has enough clips and every fold trains on every class."""
    left_out = f" ({len(data.failures)} file(s) left out)" if data.failures else ""
    counts = data.table["label"].value_counts()
    for label in data.labels:
        if counts.get(label, 0) < MIN_CLASS_CLIPS:
            raise TrainingError(f"class {label!r} has {counts.get(label, 0)} usable clip(s){left_out}; "
                                f"cross-validation "
                                f"needs at least {MIN_CLASS_CLIPS} of each class")
    y = data.y
    try:
        folds = inner_folds(y, data.groups, seed=seed)
    except ValueError as err:
        raise TrainingError(f"{err}{left_out}") from None
    for fit, _ in folds:
        missing = sorted(set(range(len(data.labels))) - set(y[fit].tolist()))
        if missing:
            name = data.labels[missing[0]]
            speakers = data.table.loc[data.table["label"] == name, "speaker"].nunique()
            raise TrainingError(f"class {name!r} is spoken by {speakers} speaker(s): cross-validation grouped by "
                                "speaker leaves it out of a fold's training part; add speakers, or leave the speaker "
                                "column out (an optimistic estimate)")
    return folds


@dataclass
class Outcome:
    """What training chose and measured: the fitted model (a deployable with ``save_pretrained``), the inner
    choice, the chosen candidate's out-of-fold predictions (class indices, row order), and a description;
    ``why``: how it was chosen, where the default (the best candidate, refitted on every clip) does not say it."""

    model: object
    choice: InnerChoice
    predicted: np.ndarray
    head: str
    inputs: str
    why: str | None = None


def train_frozen(data: TrainingData, folds, embeddings: dict[str, np.ndarray], encoder, system: str,
                 normalization: Normalization, *, mlp: bool = True, seed: int = 0) -> Outcome:
    """The study's selected frozen head (:func:`ser_utils.training.frozen_heads.select_head`) on the manifest's
    clips: chosen by inner cross-validation, refitted on every clip."""
    from ..models.frozen import FrozenEncoderModel
    from ..training.embeddings import stack
    from ..training.head_selection import select_head
    from .systems import PROJECT, Recipe, selected_candidates

    labels = data.labels
    recipe = Recipe("project", replace(PROJECT.model, labels=labels), PROJECT.training)
    x, y = stack(embeddings, data.table["path"]), data.y
    groups = data.groups if data.groups is not None else np.zeros(len(y), dtype=str)
    every = np.arange(len(y))
    selection = select_head(x, y, groups, every, np.array([], dtype=int), selected_candidates(recipe, mlp),
                            normalization, grouped=data.speakers, seed=seed)
    chosen = selection.chosen
    predicted = np.zeros(len(y), dtype=int)
    for (_, scored), fold_predicted in zip(folds, selection.choice.predictions[selection.choice.chosen], strict=True):
        predicted[scored] = fold_predicted  # the chosen candidate's inner-fold predictions, as scored
    model = FrozenEncoderModel(encoder, selection.model, system=system, normalization=selection.normalization)
    head = chosen.head.name + ("" if chosen.penalty is None else f" ({_penalty(chosen.head.fit)} {chosen.penalty:g})")
    head += f", {chosen.variance} variance" if chosen.variance else ""
    return Outcome(model, selection.choice, predicted, head, f"{encoder.family} embeddings")


def _penalty(fit: str) -> str:
    from ..training.head_selection import PENALTY_NAMES

    return PENALTY_NAMES.get(fit, "penalty")


def baseline_candidates(smoke: bool = False) -> dict[str, tuple[str, dict]]:
    """Every classifier and grid point of the handcrafted baselines: name -> (classifier, params)."""
    from .baselines import GRIDS, SMOKE_GRIDS

    grids = SMOKE_GRIDS if smoke else GRIDS
    return {f"{name} {_params(p)}".strip(): (name, p) for name, grid in grids.items() for p in grid}


def _params(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def train_baseline(data: TrainingData, folds, X: np.ndarray, extractor, system: str, normalize: str, *,
                   smoke: bool = False, seed: int = 0) -> Outcome:
    """A handcrafted baseline: every classifier and grid point scored by inner cross-validation, the best
    refitted on every clip. With speaker normalization each speaker's features are standardised with its
    own clips (labels unused; the prior variance pooled over all training speakers)."""
    from ..features.normalization import SpeakerNormalizer, normalizer_config
    from ..models.baseline import BaselineModel
    from ..models.classifiers import fit_quietly, make_classifier

    recorded = None
    if normalize == "speaker":
        normalizer = SpeakerNormalizer("shrunk", seed=seed)
        X = normalizer.fit_transform(X, data.groups)
        recorded = normalizer_config("shrunk", normalizer.prior_var_, None)
    y = np.asarray(data.labels)[data.y]
    out_of_fold: dict[str, np.ndarray] = {}

    def candidate(name: str, classifier: str, params: dict):
        def fit_score(fit: np.ndarray, scored: np.ndarray):
            predicted = fit_quietly(make_classifier(classifier, params, seed), X[fit], y[fit]).predict(X[scored])
            out_of_fold.setdefault(name, np.empty(len(y), dtype=object))[scored] = predicted
            return predicted, None
        return fit_score

    candidates = baseline_candidates(smoke)
    choice = cross_validate({n: candidate(n, c, p) for n, (c, p) in candidates.items()}, y, folds,
                            grouped=data.speakers)
    classifier, params = candidates[choice.chosen]
    pipeline = fit_quietly(make_classifier(classifier, params, seed, probability=True), X, y)
    model = BaselineModel(extractor, pipeline, labels=data.labels, classifier=classifier, params=params,
                          system=system, normalization=recorded, info={"n_train_clips": len(y), "seed": seed})
    index = {name: i for i, name in enumerate(data.labels)}
    predicted = np.array([index[p] for p in out_of_fold[choice.chosen]])
    return Outcome(model, choice, predicted, choice.chosen, f"{extractor.name} features")


def evaluation(data: TrainingData, outcome: Outcome, *, manifest: str, backbone: str, normalize: str,
               skipped: int) -> dict:
    """``evaluation.json``: the chosen head's cross-validated scores, confusion and every candidate's UAR."""
    scores = score(data.y, outcome.predicted, data.labels)
    counts = data.table["label"].value_counts()
    grouped = outcome.choice.grouped
    folds = len(outcome.choice.scores[outcome.choice.chosen])
    return {
        "system": outcome.model.system, "manifest": manifest, "inputs": backbone, "normalize": normalize,
        "labels": list(data.labels), "clips": len(data.table), "left_out": skipped,
        "speakers": int(data.table["speaker"].nunique()) if data.speakers else None,
        "class_counts": {label: int(counts.get(label, 0)) for label in data.labels},
        "cv": {"folds": folds, "grouped_by_speaker": grouped,
               "note": ("speaker-grouped: no speaker in both parts of a fold" if grouped else
                        "stratified by class without speakers: the same speaker may be in training and validation, "
                        "so the estimate is optimistic")},
        "head": outcome.head,
        "why": outcome.why or (f"the best mean inner-CV UAR of {len(outcome.choice.scores)} candidates over "
                               f"{folds} folds ({100 * outcome.choice.mean():.1f} %), refitted on every clip"),
        "accuracy": scores.accuracy, "uar": scores.uar, "macro_f1": scores.macro_f1,
        "confusion": {t: {p: int(scores.confusion[i, j]) for j, p in enumerate(data.labels)}
                      for i, t in enumerate(data.labels)},
        "candidates": outcome.choice.table(),
    }


def summary_lines(result: dict) -> list[str]:
    """What ``train`` prints (and the card repeats): scores, the head and why, the confusion matrix."""
    cv = result["cv"]
    labels = result["labels"]
    lines = [f"clips: {result['clips']}  classes: {', '.join(labels)}  speakers: {result['speakers'] or 'not given'}"
             f"  left out: {result['left_out']}",
             f"inputs: {result['inputs']}  normalize: {result['normalize']}",
             f"head: {result['head']}: {result['why']}",
             f"cross-validated ({cv['folds']} folds, {cv['note']}): accuracy {result['accuracy']:.4f}  "
             f"UAR {result['uar']:.4f}  macro-F1 {result['macro_f1']:.4f}",
             "confusion (rows: true, columns: predicted):"]
    table = pd.DataFrame(result["confusion"]).T.loc[labels, labels]
    return lines + table.to_string().splitlines()


def model_card(result: dict) -> str:
    """``README.md``: what the folder is, how it was chosen and how well it did, how to use it."""
    counts = "\n".join(f"| {label} | {n} |" for label, n in result["class_counts"].items())
    candidates = "\n".join(f"| {c['candidate']} | {100 * c['inner_uar']:.1f} | {'yes' if c['chosen'] else ''} |"
                           for c in result["candidates"])
    body = "\n".join(f"    {line}" for line in summary_lines(result))
    return f"""# {result['system']}

A speech emotion model trained by `python -m ser_utils train` on `{result['manifest']}`:
{result['clips']} clips, {len(result['labels'])} classes ({', '.join(result['labels'])}).

- inputs: {result['inputs']}; speaker normalization: {result['normalize']}
- head: {result['head']}, {result['why']}
- cross-validation: {result['cv']['folds']} folds, {result['cv']['note']}

## Cross-validated scores

{body}

## Clips per class

| class | clips |
|---|---|
{counts}

## Candidates (mean inner-CV UAR, %)

| candidate | UAR | chosen |
|---|---|---|
{candidates}

## Use

    python -m ser_utils predict my_audio/ --model THIS_FOLDER
    python -m ser_utils evaluate --model THIS_FOLDER --manifest other.csv
"""


def write_model_folder(out: str | Path, outcome: Outcome, result: dict, *, force: bool = False) -> Path:
    """Write the folder beside ``out`` and rename it into place once complete; an interrupt or failure
    leaves ``out`` as it was (absent, or the previous folder under ``force``)."""
    out = Path(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        outcome.model.save_pretrained(partial)
        atomic_write_text(partial / "evaluation.json", json.dumps(result, indent=1))
        atomic_write_text(partial / CARD_NAME, model_card(result))
        if out.exists() and force:
            out.rename(old)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out
