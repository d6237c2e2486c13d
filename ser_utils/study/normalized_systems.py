"""The systems built on speaker normalization (:mod:`ser_utils.features.normalization`): the baselines and the
enrolment curve, and the deployable speaker-normalized baseline. (Frozen heads with a normalization:
:func:`ser_utils.training.frozen_heads.frozen_predictions`.)

* :func:`evaluate_normalized` - the baselines with a normalization, as
  :func:`ser_utils.study.baselines.evaluate_systems` evaluates them (the variance chosen by inner
  cross-validation on each split's training clips, the statistics computed inside each split and inner
  fold: :class:`~ser_utils.study.baselines.SpeakerStats`).
* :func:`enrolment_curve` - actor-kfold UAR against the number of enrolment clips per speaker.
* :func:`fit_speaker_model` - the deployable speaker-normalized :class:`~ser_utils.models.baseline.BaselineModel`.

System names: ``<features>+<classifier>+spknorm`` and ``<features>+<classifier>+spknorm-k10``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from ..features import FeatureTable
from ..features.normalization import Normalization, SpeakerNormalizer, normalizer_config
from ..models.baseline import BaselineModel
from .baselines import SpeakerStats, SystemResult, SystemSpec, evaluate_systems


def evaluate_normalized(tables: dict[str, FeatureTable], jobs: Sequence[tuple[SystemSpec, Normalization]],
                        splits: dict[str, list], *, grids: dict[str, list[dict]] | None = None, seed: int = 0,
                        n_jobs: int = -1, group: str = "actor", progress: bool = True) -> list[SystemResult]:
    """Evaluate each ``(spec, normalization)`` under every protocol, as ``evaluate_systems`` does.

    Every candidate variance is evaluated as its own system (hyper-parameters chosen by inner
    cross-validation on the split's training clips); per split, the variance whose chosen setting has the
    higher mean inner-CV UAR is kept (the first candidate on a tie), so the test clips play no part in the
    choice. The speaker statistics are computed inside each split and each inner fold
    (:class:`~ser_utils.study.baselines.SpeakerStats`): a training clip is never normalized with statistics
    that read a test clip. Result names get the normalization's suffix; ``selections`` keep every
    candidate with a ``variance`` column.
    """
    specs, owners = [], []
    for spec, normalization in jobs:
        if normalization.kind == "none":
            raise ValueError("evaluate_normalized is for speaker normalization; use evaluate_systems for none")
        for variance in normalization.variances:
            name = spec.system + normalization.suffix
            stats = SpeakerStats(variance, normalization.clips, seed=seed, group=group)
            specs.append(SystemSpec(spec.feature_set, spec.classifier, spec.families, f"{name}#{variance}", stats))
            owners.append((name, variance, spec))
    results = evaluate_systems(tables, specs, splits, grids=grids, seed=seed, n_jobs=n_jobs, progress=progress)
    by_name: dict[tuple[str, str], dict[str, SystemResult]] = {}
    for result in results:
        name, variance = result.system.rsplit("#", 1)
        by_name.setdefault((name, result.protocol), {})[variance] = result
    specs_by_name = {name: spec for name, _, spec in owners}
    return [_merge_variants(name, protocol, candidates, specs_by_name[name])
            for (name, protocol), candidates in by_name.items()]


def _merge_variants(name: str, protocol: str, candidates: dict[str, SystemResult], spec: SystemSpec) -> SystemResult:
    selections = pd.concat([r.selections.assign(variance=v) for v, r in candidates.items()], ignore_index=True)
    chosen_val = selections[selections["chosen"]].groupby(["fold", "variance"], sort=False)["inner_uar"].max()
    order = list(candidates)
    rows, predictions, picked = [], [], {}
    for fold in sorted(selections["fold"].unique()):
        best = max(order, key=lambda v: (chosen_val.get((fold, v), -1.0), -order.index(v)))
        picked[fold] = best
        result = candidates[best]
        rows += [{**row, "system": name} for row in result.rows if row["fold"] == fold]
        predictions.append(result.predictions[result.predictions["fold"] == fold].assign(system=name))
    selections["chosen"] &= selections["variance"] == selections["fold"].map(picked)
    selections["system"] = name
    return SystemResult(name, spec.feature_set, spec.classifier, protocol, rows,
                        pd.concat(predictions, ignore_index=True), selections, families=spec.families)


def chosen_variance(result: SystemResult) -> str:
    """The variance chosen most often over the folds of a :func:`evaluate_normalized` result."""
    chosen = result.selections[result.selections["chosen"]]
    return str(chosen["variance"].value_counts().idxmax())


def enrolment_curve(tables: dict[str, FeatureTable], spec: SystemSpec, splits: list,
                    clips: Sequence[int | None] = (3, 5, 10, 20, 30, None), **kwargs) -> pd.DataFrame:
    """UAR per fold of ``spec`` with ``k`` enrolment clips per speaker, for each ``k`` in ``clips``
    (``None``: all of the speaker's clips). ``splits``: one protocol's splits (actor-kfold).

    Returns one row per (clips, fold): ``clips`` (``"all"`` for ``None``), ``fold``, ``uar``,
    ``accuracy``, ``variance`` (chosen by inner cross-validation).
    """
    protocol = splits[0].protocol
    jobs = [(spec, Normalization("speaker") if k is None else Normalization("speaker-k", k)) for k in clips]
    results = evaluate_normalized(tables, jobs, {protocol: splits}, **kwargs)
    rows = []
    for k, result in zip(clips, results, strict=True):
        chosen = result.selections[result.selections["chosen"]].groupby("fold")["variance"].first()
        for row in result.rows:
            rows.append({"clips": "all" if k is None else str(k), "fold": row["fold"], "uar": row["uar"],
                         "accuracy": row["accuracy"], "variance": chosen[row["fold"]]})
    return pd.DataFrame(rows)


def refit_speaker_model(result: SystemResult, tables: dict[str, FeatureTable], clips: int | None, *, extractor=None,
                        seed: int = 0) -> BaselineModel:
    """The deployable model of an evaluated speaker-normalized system (:func:`evaluate_normalized`): its
    classifier, setting and variance as chosen most often over the folds, refit on every clip."""
    return fit_speaker_model(result.table(tables), result.classifier, result.chosen_params(),
                             chosen_variance(result), clips, extractor=extractor, system=result.system, seed=seed)


def fit_speaker_model(table: FeatureTable, classifier: str, params: dict | None, variance: str,
                      clips: int | None = None, *, extractor=None, system: str | None = None, group: str = "actor",
                      seed: int = 0) -> BaselineModel:
    """The deployable speaker-normalized model: every training speaker standardised with ``clips``
    random clips of their own (``None``: all), then ``classifier`` fit on all clips. The folder it
    saves records the normalization, so prediction standardises each group of new clips the same way.
    """
    normalizer = SpeakerNormalizer(variance, clips, seed=seed).fit(table.X, table.meta[group])
    normed = replace(table, X=normalizer.transform(table.X, table.meta[group]))
    model = BaselineModel.fit(normed, classifier, params, seed=seed, extractor=extractor, system=system)
    model.normalization = normalizer_config(variance, normalizer.prior_var_, clips)
    return model
