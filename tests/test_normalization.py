"""Speaker normalization and enrolment: statistics from features alone, selection on validation data."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from ser_utils.evaluation.splits import make_splits
from ser_utils.features import FeatureTable
from ser_utils.features.normalization import (
    GroupError,
    Normalization,
    SpeakerNormalizer,
    adapt_features,
    normalize_table,
)
from ser_utils.study import baselines
from ser_utils.study.normalized_systems import enrolment_curve, evaluate_normalized
from ser_utils.training.frozen_heads import frozen_predictions

GRIDS = {"logreg": [{"C": 0.01}, {"C": 1.0}]}


@pytest.fixture(scope="module")
def speaker_table(synthetic_meta):
    """Features with a weak emotion signal under a strong per-actor offset and scale (the speaker
    variability that speaker normalization removes). 15 clips per actor, all 24 actors."""
    meta = synthetic_meta[(synthetic_meta["statement"] == 1) & (synthetic_meta["repetition"] == 1)]
    meta = meta.reset_index(drop=True)
    rng = np.random.default_rng(0)
    emotion = pd.factorize(meta["emotion"].astype(str))[0]
    signal = np.eye(8)[emotion] @ rng.normal(size=(8, 12))
    actors = meta["actor"].to_numpy()
    offset = rng.normal(scale=4.0, size=(actors.max() + 1, 12))[actors]
    scale = rng.uniform(0.5, 2.0, size=(actors.max() + 1, 12))[actors]
    X = scale * (signal + 0.7 * rng.normal(size=signal.shape)) + offset
    return FeatureTable(X=X, meta=meta, names=[f"f{i}" for i in range(12)], families=["f"] * 12, feature_set="toy")


def test_each_speaker_is_standardised_with_its_own_clips():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(5, 3, size=(2000, 4)), rng.normal(-2, 0.5, size=(2000, 4))])
    groups = ["a"] * 2000 + ["b"] * 2000
    out = SpeakerNormalizer("shrunk").fit_transform(X, groups)
    for rows in (slice(0, 2000), slice(2000, 4000)):
        assert np.allclose(out[rows].mean(0), 0, atol=1e-9)
        assert np.all(np.abs(out[rows].std(0) - 1) < 0.05)  # many clips: the prior hardly matters
    few = SpeakerNormalizer("shrunk").fit(X[1990:2010], groups[1990:2010])  # 10 clips each: pulled to the prior
    b = X[2000:2010]
    assert np.allclose(few.scales_["b"], np.sqrt((10 * b.var(0) + 10 * few.prior_var_) / 20))
    assert np.all(few.scales_["b"] > b.std(0))  # the loud speaker "a" widens the prior
    means_only = SpeakerNormalizer("mean").fit_transform(X, groups)
    assert np.allclose(means_only[:2000].mean(0), 0) and np.allclose(means_only[:2000].std(0), X[:2000].std(0))


def test_enrolment_statistics_come_from_k_clips_of_each_speaker():
    X = np.arange(24, dtype=float).reshape(12, 2) ** 1.5  # every subset has its own mean
    groups = ["a"] * 6 + ["b"] * 6
    normalizer = SpeakerNormalizer("mean", clips=3, seed=4).fit(X, groups)
    for group, rows in (("a", X[:6]), ("b", X[6:])):
        subsets = [rows[list(c)].mean(0) for c in combinations(range(6), 3)]
        assert any(np.allclose(normalizer.means_[group], m) for m in subsets)
        assert not np.allclose(normalizer.means_[group], rows.mean(0))


def test_small_groups_unknown_groups_and_constant_features_are_handled():
    X = np.ones((5, 3))
    with pytest.raises(GroupError, match="'b' has 1 clip"):
        SpeakerNormalizer(min_clips=2).fit(X, ["a"] * 4 + ["b"])
    normalizer = SpeakerNormalizer().fit(X, ["a"] * 5)
    assert np.all(np.isfinite(normalizer.transform(X, ["a"] * 5)))  # constant columns: centred, not divided by 0
    with pytest.raises(GroupError, match="'z'"):
        normalizer.transform(X, ["z"] * 5)


def test_settings_parse_and_name_systems():
    assert Normalization.parse("speaker-k").suffix == "+spknorm-k10"
    assert Normalization.parse("speaker-k5").clips == 5
    assert Normalization.parse("speaker").suffix == "+spknorm" and Normalization.parse("none").suffix == ""
    for bad in ("speakers", "speaker-kx", "global"):
        with pytest.raises(ValueError, match="normalization"):
            Normalization.parse(bad)


def test_speaker_normalization_removes_speaker_variability(speaker_table):
    kfold = {"actor-kfold": make_splits(speaker_table.meta, "actor-kfold", seed=0)}
    spec = baselines.SystemSpec("toy", "logreg")
    plain = baselines.evaluate_systems({"toy": speaker_table}, [spec], kfold, grids=GRIDS, n_jobs=1, progress=False)
    normed = evaluate_normalized({"toy": speaker_table}, [(spec, Normalization("speaker")),
                                                         (spec, Normalization("speaker-k", 10))],
                                 kfold, grids=GRIDS, n_jobs=1, progress=False)
    assert [r.system for r in normed] == ["toy+logreg+spknorm", "toy+logreg+spknorm-k10"]
    uar = {r.system: np.mean([row["uar"] for row in r.rows]) for r in plain + normed}
    assert uar["toy+logreg+spknorm"] > uar["toy+logreg"] + 0.1
    assert uar["toy+logreg+spknorm-k10"] > uar["toy+logreg"] + 0.05
    for result in normed:  # one variance chosen per fold, on validation UAR
        chosen = result.selections[result.selections["chosen"]]
        assert chosen.groupby("fold")["variance"].nunique().eq(1).all() and len(result.rows) == 6
        assert set(result.predictions["system"]) == {result.system}


def test_shuffling_test_labels_changes_nothing(speaker_table):
    split = make_splits(speaker_table.meta, "actor-kfold", seed=0)[0]
    test = split.masks(speaker_table.meta)[2]
    meta = speaker_table.meta.copy()
    emotions = meta["emotion"].astype(str).to_numpy().copy()
    emotions[test] = np.random.default_rng(0).permutation(emotions[test])
    meta["emotion"] = emotions
    shuffled = FeatureTable(X=speaker_table.X, meta=meta, names=speaker_table.names,
                            families=speaker_table.families, feature_set="toy")
    assert np.array_equal(normalize_table(speaker_table, "shrunk", 10).X, normalize_table(shuffled, "shrunk", 10).X)
    spec = baselines.SystemSpec("toy", "logreg")
    runs = [evaluate_normalized({"toy": t}, [(spec, Normalization("speaker-k", 10))], {"actor-kfold": [split]},
                                grids=GRIDS, n_jobs=1, progress=False)[0] for t in (speaker_table, shuffled)]
    assert np.array_equal(runs[0].predictions["predicted"], runs[1].predictions["predicted"])
    assert runs[0].selections.equals(runs[1].selections)


def test_enrolment_curve_has_a_point_per_k_and_fold(speaker_table):
    splits = make_splits(speaker_table.meta, "actor-kfold", seed=0)[:2]
    curve = enrolment_curve({"toy": speaker_table}, baselines.SystemSpec("toy", "logreg"), splits,
                            clips=(3, 10, None), grids=GRIDS, n_jobs=1, progress=False)
    assert list(curve["clips"].unique()) == ["3", "10", "all"]
    assert len(curve) == 6 and curve["uar"].between(0, 1).all() and set(curve["variance"]) <= {"mean", "shrunk"}


def test_plain_model_adaptation_maps_each_group_onto_the_training_statistics():
    rng = np.random.default_rng(2)
    X = rng.normal(3, 2, size=(30, 5))
    mean, scale = np.full(5, 10.0), np.full(5, 0.5)
    adapted = adapt_features(X, ["g"] * 30, None, train_mean=mean, train_scale=scale)
    assert np.allclose(adapted.mean(0), mean)
    # an offset on the whole group (a gain shifts log-energy features) does not change the result
    assert np.allclose(adapt_features(X + 7, ["g"] * 30, None, train_mean=mean, train_scale=scale), adapted)
    assert adapt_features(X, None, None, train_mean=mean, train_scale=scale) is X
    with pytest.raises(GroupError, match="needs groups of clips"):
        adapt_features(X, None, {"kind": "speaker"}, train_mean=mean, train_scale=scale)


def test_frozen_heads_get_speaker_normalized_variants(speaker_table):
    from ser_utils.models.heads import ModelConfig

    meta = speaker_table.meta
    rng = np.random.default_rng(0)  # (L+1, 3, D) = (3, 3, 4) per clip: the toy features plus noise layers
    embeddings = {p: np.stack([x[:12].reshape(3, 4), rng.normal(size=(3, 4)), x[:12].reshape(3, 4)])
                  for p, x in zip(meta["path"], speaker_table.X, strict=True)}
    split = make_splits(meta, "actor-kfold", seed=0)[:1]
    predictions = frozen_predictions(meta, split, embeddings, ModelConfig(), "w2v2-toy-frozen",
                                     Normalization("speaker-k", 10))
    assert set(predictions["system"]) == {"w2v2-toy-frozen+spknorm-k10"} and len(predictions) == 60
    assert set(predictions["predicted"]) <= set(ModelConfig().labels)
