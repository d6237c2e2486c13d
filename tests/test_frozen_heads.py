"""Heads on frozen embeddings: the closed-form linear head is scikit-learn's ridge classifier, choices read
validation scores only, and the study writes the selected system beside the recipe's own."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler

from ser_utils.data.corpus import EMOTIONS
from ser_utils.evaluation.inner_cv import inner_folds
from ser_utils.evaluation.splits import make_splits
from ser_utils.features.normalization import Normalization, SpeakerNormalizer
from ser_utils.models.frozen import FrozenEncoderModel
from ser_utils.models.heads import FrozenHead, ModelConfig
from ser_utils.results.analysis import frozen_head_choices, frozen_heads_post_hoc, frozen_heads_summary
from ser_utils.results.store import read_predictions, read_table
from ser_utils.study.systems import PROJECT, export_selected_frozen, run_frozen, selected_candidates
from ser_utils.training.frozen_heads import (
    RIDGE_ALPHAS,
    Trial,
    choose,
    frozen_predictions,
    normalized_variants,
    train_frozen_head,
)
from ser_utils.training.head_selection import (
    LDA_SHRINKAGES,
    LOGISTIC_CS,
    SELECTED_ALPHAS,
    ShrinkageLDA,
    _Kernel,
    select_head,
    training_prior,
)

LINEAR_ALL = ModelConfig(pooling="mean+std", layers="all", head_hidden=0)


def toy_embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 3, 3, 16)`` embeddings whose mean and std statistics carry the class, and the classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 8
    x = rng.normal(size=(n, 3, 3, 16)).astype(np.float32)
    x[:, 1:, 1:, :8] += 0.8 * np.eye(8)[y][:, None, None, :]
    return x, y


def test_the_linear_head_is_the_ridge_classifier_chosen_on_validation_and_refitted():
    x, y = toy_embeddings(240)
    train, val = slice(0, 160), slice(160, 240)
    head = train_frozen_head(LINEAR_ALL, x[train], y[train], x[val], y[val])
    assert head.alpha in RIDGE_ALPHAS and 0.0 <= head.val_uar <= 1.0
    features = x[:, :, 1:3].reshape(len(x), -1)  # every layer's mean and std, in the head's order
    # scikit-learn on training + validation clips, standardised as the head does (sample std)
    scaler = StandardScaler().fit(features)
    scaler.scale_ = features.std(0, ddof=1)
    reference = RidgeClassifier(alpha=head.alpha).fit(scaler.transform(features), y)
    with torch.no_grad():
        ours = head(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(ours, reference.decision_function(scaler.transform(features)), atol=2e-4)
    with pytest.raises(ValueError, match="alphas"):
        train_frozen_head(LINEAR_ALL, x[train], y[train], x[val], y[val], alphas=())


def test_the_penalty_is_the_one_with_the_best_validation_uar():
    x, y = toy_embeddings(120, seed=1)
    x[:, :, :, 8:] += np.random.default_rng(2).normal(scale=3.0, size=(120, 3, 3, 8))  # noise to overfit
    alphas = (0.01, 1.0, 100.0, 1e4)
    alone = {a: train_frozen_head(LINEAR_ALL, x[:80], y[:80], x[80:], y[80:], alphas=(a,)).val_uar for a in alphas}
    assert len(set(alone.values())) > 1  # the penalties differ on validation
    chosen = train_frozen_head(LINEAR_ALL, x[:80], y[:80], x[80:], y[80:], alphas=alphas)
    assert chosen.val_uar == max(alone.values())
    assert chosen.alpha == next(a for a in alphas if alone[a] == chosen.val_uar)  # the first on a tie


def test_heads_are_checked_and_a_linear_head_reads_every_layer():
    head = FrozenHead(LINEAR_ALL, 3, 16, torch.zeros(3, 3, 16), torch.ones(3, 3, 16))
    assert head.head[0].in_features == 3 * 2 * 16 and len(head.head) == 1 and head.layer_weights is None
    assert LINEAR_ALL.head_name == "linear-all-mean+std" and ModelConfig().head_name == "mlp-weighted-mean"
    with pytest.raises(ValueError, match="head_hidden=-1"):
        ModelConfig(head_hidden=-1)
    with pytest.raises(ValueError, match="layers='all'"):
        from ser_utils.backbones.checkpoints import tiny_backbone_config
        from ser_utils.models.classifier import EmotionClassifier

        EmotionClassifier.from_config(tiny_backbone_config(), LINEAR_ALL)


def trial(fold, head, seed, val_uar, variance=None):
    return Trial("actor-kfold", fold, head, variance, seed, val_uar, np.zeros(1, dtype=int), None)


def test_a_choice_reads_validation_scores_and_keeps_the_first_on_a_tie():
    trials = [trial(1, "mlp", 0, 0.5), trial(1, "linear", None, 0.6), trial(1, "mlp", 1, 0.7),
              trial(2, "mlp", 0, 0.8), trial(2, "linear", None, 0.8), trial(2, "mlp", 1, 0.1)]
    seed0 = {t.fold: t for t in choose(trials)}
    assert (seed0[1].head, seed0[2].head, seed0[2].seed) == ("linear", "mlp", 0)  # a tie keeps the first
    seed1 = {t.fold: t for t in choose(trials, seed=1)}
    assert (seed1[1].head, seed1[2].head) == ("mlp", "linear")  # the closed-form head takes part at every seed
    assert {t.head for t in choose(trials, ["mlp"])} == {"mlp"}


def test_the_study_writes_the_selected_system_beside_the_recipes_own(frozen_study, monkeypatch):
    profile, meta, backbone, embeddings = frozen_study
    from ser_utils.study import systems

    monkeypatch.setattr(systems, "backbone_embeddings", lambda *args, **kwargs: embeddings)
    metrics, _, _ = run_frozen(profile, meta, backbone, [PROJECT], ["actor-kfold"], folds=[1, 2],
                               normalizations=[Normalization("speaker-k", 10)], mlp_candidates=False)
    assert set(metrics["system"]) == {"whisper-project-frozen", "whisper-project-frozen+spknorm-k10",
                                      "whisper-selected-frozen", "whisper-selected-frozen+spknorm-k10"}
    splits = [s for s in make_splits(meta, "actor-kfold") if s.fold in (1, 2)]
    own = frozen_predictions(meta, splits, embeddings, PROJECT.model, "whisper-project-frozen")
    saved = read_predictions(profile.results_dir, ["whisper-project-frozen"])
    assert (saved["predicted"].to_numpy() == own["predicted"].to_numpy()).all()  # the recipe's head as before
    trials = read_table(profile.results_dir, "frozen_heads")
    plain = trials[trials["system"] == "whisper-selected-frozen"]
    assert set(plain["head"]) == {c.name for c in selected_candidates(PROJECT, mlp=False)}
    assert len(plain) == 2 * (len(SELECTED_ALPHAS) + len(LOGISTIC_CS) + len(LDA_SHRINKAGES))  # every setting, fold
    assert plain["inner_grouped"].all() and (plain["inner_folds"] == 4).all()
    normed = trials[trials["system"] == "whisper-selected-frozen+spknorm-k10"]
    assert set(normed["variance"]) == {"mean", "shrunk"}
    choices = read_table(profile.results_dir, "frozen_selection")
    for (system, fold), chosen in choices.groupby(["system", "fold"]):
        candidates = trials[(trials["system"] == system) & (trials["fold"] == fold)]
        assert len(chosen) == 1 and chosen["inner_uar"].iloc[0] == candidates["inner_uar"].max()
    selected = metrics[metrics["system"] == "whisper-selected-frozen"].set_index("fold")["uar"]
    chosen = choices[choices["system"] == "whisper-selected-frozen"].set_index("fold")
    assert np.allclose(selected.sort_index(), chosen["test_uar"].sort_index())
    summary = frozen_heads_summary(trials, choices)
    assert summary.loc["whisper-selected-frozen", "inner-CV-chosen (headline)"] == \
        f"{100 * chosen['test_uar'].mean():.1f}"
    ridge = plain[plain["head"] == "ridge-all-mean+std"]
    own_setting = ridge.loc[ridge.groupby("fold")["inner_uar"].idxmax(), "test_uar"].mean() * 100
    assert summary.loc["whisper-selected-frozen", "ridge-all-mean+std (post hoc)"] == f"{own_setting:.1f}"
    per_fold = frozen_head_choices(choices)
    assert list(per_fold.columns) == [1, 2] and "/ mean (inner" in per_fold.loc[
        "whisper-selected-frozen+spknorm-k10", 1].replace("/ shrunk (inner", "/ mean (inner")
    post_hoc = frozen_heads_post_hoc(trials)
    assert set(post_hoc.index.get_level_values("system")) == set(trials["system"])
    settings = set(post_hoc.loc["whisper-selected-frozen"].index)
    assert {"ridge-all-mean+std alpha=300", "logreg-all-mean+std C=0.01", "lda-all-mean+std shrinkage=0.4"} <= settings


def test_the_exported_selected_system_predicts_what_its_fold_chose(frozen_study):
    profile, meta, backbone, embeddings = frozen_study
    exported = export_selected_frozen(profile, meta, backbone, embeddings, PROJECT, [Normalization("speaker-k", 10)],
                                      mlp_candidates=False)
    assert list(exported) == ["whisper-selected-frozen", "whisper-selected-frozen+spknorm-k10"]
    folder = exported["whisper-selected-frozen"]
    evaluation = json.loads((folder / "evaluation.json").read_text())
    candidates = {c.name: c for c in selected_candidates(PROJECT, mlp=False)}
    assert evaluation["head"] in candidates
    model = FrozenEncoderModel.from_pretrained(folder, device="cpu")
    assert model.model_config.head_name == candidates[evaluation["head"]].config.head_name
    split = make_splits(meta, "actor-kfold")[0]
    test = split.frames(meta)[2]
    x = np.stack([embeddings[p] for p in test["path"]]).astype(np.float32)
    with torch.no_grad():
        from_embeddings = model.head(torch.as_tensor(x)).argmax(-1).numpy()
    accuracy = float(np.mean(np.asarray(EMOTIONS)[from_embeddings] == test["emotion"].to_numpy()))
    assert evaluation["accuracy"] == pytest.approx(accuracy)


def test_normalized_variants_are_built_from_the_embeddings_alone(frozen_study):
    _, meta, _, embeddings = frozen_study
    variants = normalized_variants(meta, embeddings, Normalization("speaker"))
    assert set(variants) == {"mean", "shrunk"}
    per_actor = pd.DataFrame(variants["mean"][0][:, 1, 1, :4]).groupby(meta["actor"].to_numpy()).mean()
    assert np.allclose(per_actor, 0.0, atol=1e-4)  # each speaker centred with their own clips


def test_no_test_clip_reaches_the_choice_and_inner_folds_never_share_an_actor(frozen_study):
    """Poisoned test rows (embeddings scaled and shifted) change neither the choice nor any inner score, plain or
    speaker-normalized (the prior variance is pooled over training speakers only); inner folds are actor-disjoint
    and hold training actors only."""
    _, meta, _, embeddings = frozen_study
    split = make_splits(meta, "actor-kfold")[0]
    train, val, test = (meta.index.get_indexer(part.index) for part in split.frames(meta))
    train = np.sort(np.concatenate([train, val]))
    x = np.stack([embeddings[p] for p in meta["path"]]).astype(np.float32)
    y = meta["emotion"].map({e: i for i, e in enumerate(EMOTIONS)}).to_numpy()
    actors = meta["actor"].astype(str).to_numpy()
    poisoned = x.copy()
    poisoned[test] = 50.0 * poisoned[test] + 7.0
    candidates = selected_candidates(PROJECT, mlp=False)
    for normalization in (Normalization(), Normalization("speaker-k", 10)):
        clean, dirty = (select_head(data, y, actors, train, test, candidates, normalization) for data in (x, poisoned))
        assert clean.choice.chosen == dirty.choice.chosen and clean.choice.scores == dirty.choice.scores
    folds = inner_folds(y[train], actors[train])
    for fit, score_rows in folds:
        assert not set(actors[train][fit]) & set(actors[train][score_rows])
        assert not set(actors[train][fit]) & set(actors[test])


def test_the_dual_logistic_regression_is_scikit_learns_on_the_standardised_features():
    x, y = toy_embeddings(200, seed=3)
    kernel = _Kernel(LINEAR_ALL, x[:150], y[:150], x[150:], tol=1e-8)  # the study's tolerance is looser
    predicted, head = kernel.model("logistic", 0.01)
    features = x[:, :, 1:3].reshape(len(x), -1)
    scaler = StandardScaler().fit(features[:150])
    scaler.scale_ = features[:150].std(0, ddof=1)
    reference = LogisticRegression(C=0.01, max_iter=5000, tol=1e-8).fit(scaler.transform(features[:150]), y[:150])
    with torch.no_grad():
        ours = head(torch.as_tensor(x[150:])).numpy()
    np.testing.assert_allclose(ours, reference.decision_function(scaler.transform(features[150:])), atol=2e-3)
    assert (predicted == ours.argmax(-1)).all()


@pytest.mark.parametrize("fit_rows", [60, 150])  # fewer clips than the 96 features (the study's case), and more
def test_the_discriminant_analysis_is_scikit_learns_on_the_span_of_the_training_clips(fit_rows):
    """The exported head computes scikit-learn's shrinkage LDA fitted on the training clips' coordinates in their
    own span (from an SVD of the standardised features, not the kernel's eigendecomposition)."""
    x, y = toy_embeddings(fit_rows + 50, seed=5)
    kernel = _Kernel(LINEAR_ALL, x[:fit_rows], y[:fit_rows], x[fit_rows:])
    features = x[:, :, 1:3].reshape(len(x), -1).astype(np.float64)
    mean, std = features[:fit_rows].mean(0), features[:fit_rows].std(0, ddof=1)
    z = (features - mean) / std
    u, singular, vt = np.linalg.svd(z[:fit_rows], full_matrices=False)
    keep = singular**2 > 1e-9 * singular[0] ** 2
    fit_coordinates, score_coordinates = u[:, keep] * singular[keep], z[fit_rows:] @ vt[keep].T
    for shrinkage in LDA_SHRINKAGES:
        predicted, head = kernel.model("lda", shrinkage)
        reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(fit_coordinates, y[:fit_rows])
        with torch.no_grad():
            ours = head(torch.as_tensor(x[fit_rows:])).numpy()
        np.testing.assert_allclose(ours, reference.decision_function(score_coordinates), rtol=1e-4, atol=1e-3)
        assert (predicted == ours.argmax(-1)).all()


def test_the_discriminant_analysis_never_predicts_a_class_it_did_not_see_and_refuses_what_it_cannot_solve():
    x, y = toy_embeddings(120, seed=6)
    seen = y != 3
    kernel = _Kernel(LINEAR_ALL, x[seen], y[seen], x)
    weights, bias = kernel.discriminant.solve(0.4)
    assert weights.shape == (kernel.coordinates.shape[1], 8) and bias[3] == -1e9 and not weights[:, 3].any()
    assert 3 not in kernel.fit("lda", 0.4)[0]
    with pytest.raises(ValueError, match="singular"):
        kernel.discriminant.solve(0.0)
    with pytest.raises(ValueError, match="two classes"):
        ShrinkageLDA(kernel.coordinates[:10], np.zeros(10, dtype=int), 8)
    with pytest.raises(ValueError, match="orthogonal columns"):  # raw features: x.T @ x is not diagonal
        ShrinkageLDA(x[:, :, 1:3].reshape(len(x), -1), y, 8)


def test_the_training_prior_is_the_normalizers_own_over_training_speakers():
    rng = np.random.default_rng(0)
    flat, groups = rng.normal(size=(60, 5)), np.repeat(np.array(["1", "2", "3"]), 20)
    everyone = training_prior(flat, groups, np.ones(60, dtype=bool), 10, seed=4)
    assert np.allclose(everyone, SpeakerNormalizer("shrunk", 10, seed=4).fit(flat, groups).prior_var_)
    first_two = training_prior(flat, groups, groups != "3", None, seed=4)
    assert np.allclose(first_two, SpeakerNormalizer("shrunk").fit(flat[:40], groups[:40]).prior_var_)


def test_the_summary_reads_sgd_rows_whose_penalty_was_read_back_empty():
    rows = pd.DataFrame({"protocol": "actor-kfold", "fold": [1, 1], "head": ["mlp-weighted-mean", "ridge-all-mean+std"],
                         "penalty": ["", "300"], "variance": ["", ""], "inner_uar": [0.6, 0.5],
                         "test_uar": [0.7, 0.8], "chosen": [True, False], "system": "whisper-selected-frozen"})
    summary = frozen_heads_summary(rows, rows[rows["chosen"]])
    assert summary.loc["whisper-selected-frozen", "best setting (post hoc)"] == "80.0 (ridge-all-mean+std alpha=300)"
    assert frozen_head_choices(rows[rows["chosen"]]).loc["whisper-selected-frozen", 1] == \
        "mlp-weighted-mean (inner 60.0)"


def test_the_preconditioned_logistic_regression_finds_scikit_learns_optimum():
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression

    from ser_utils.training.logistic import fit_logistic

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(120, 30)))
    x = u * np.geomspace(300, 0.1, 30)  # orthogonal columns of very different sizes, as kernel coordinates
    y = (x[:, :3] @ rng.normal(size=(3, 4))).argmax(1)
    for c in (0.01, 1.0):
        reference = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
        weights, bias = fit_logistic(x, y, c, 4, tol=1e-12)
        assert np.allclose(softmax(x @ weights + bias, axis=1), reference.predict_proba(x), atol=1e-4)
        # Warm-started from the other C's solution (a regularisation path): the same optimum.
        other = fit_logistic(x, y, 1.0 if c == 0.01 else 0.01, 4, tol=1e-12)
        weights, bias = fit_logistic(x, y, c, 4, tol=1e-12, init=other)
        assert np.allclose(softmax(x @ weights + bias, axis=1), reference.predict_proba(x), atol=1e-4)


def test_a_two_class_or_incomplete_logistic_fit_keeps_one_row_per_class():
    from ser_utils.training.logistic import fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = np.where(x[:, 0] > 0, 2, 0)  # classes 0 and 2 of 3
    weights, bias = fit_logistic(x, y, 1.0, 3)
    logits = x @ weights + bias
    assert weights.shape == (3, 3) and set(logits.argmax(1)) == {0, 2}
    assert (logits.argmax(1) == y).mean() > 0.9
