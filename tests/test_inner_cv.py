"""Inner cross-validation: folds that never share a speaker, and a choice made only on training rows."""

import numpy as np
import pandas as pd
import pytest

from ser_utils.data.corpus import expected_stems, parse_filename
from ser_utils.evaluation.inner_cv import cross_validate, inner_folds
from ser_utils.evaluation.splits import actor_kfold


def _ravdess_table() -> pd.DataFrame:
    """The 1,440 RAVDESS clips as names alone: stem, actor, emotion."""
    return pd.DataFrame([{"stem": stem, **parse_filename(stem + ".wav")} for stem in expected_stems()])


def test_inner_folds_never_put_an_actor_on_both_sides_and_never_see_test_actors():
    meta = _ravdess_table()
    for split in actor_kfold(meta):
        train_rows = meta[meta["stem"].isin(split.train + split.val)].reset_index(drop=True)
        folds = inner_folds(train_rows["emotion"], train_rows["actor"])
        assert len(folds) == 4
        test_actors = set(meta.loc[meta["stem"].isin(split.test), "actor"])
        scored = set()
        for fit, score in folds:
            fit_actors, score_actors = set(train_rows["actor"][fit]), set(train_rows["actor"][score])
            assert not fit_actors & score_actors
            assert not (fit_actors | score_actors) & test_actors
            scored |= set(score)
        assert scored == set(range(len(train_rows)))  # every training row is scored exactly once


def test_without_speakers_the_folds_are_stratified_by_class():
    labels = np.repeat(["a", "b", "c"], [40, 20, 8])
    folds = inner_folds(labels, None, n_folds=4)
    for _, score in folds:
        assert sorted(np.unique(labels[score], return_counts=True)[1]) == [2, 5, 10]


def test_too_few_speakers_or_examples_is_an_error():
    with pytest.raises(ValueError, match="2 speakers"):
        inner_folds(["a", "b"] * 5, ["s1"] * 10)
    with pytest.raises(ValueError, match="2 examples of every class"):
        inner_folds(["a"] * 9 + ["b"], None)


def test_the_choice_is_the_best_mean_inner_score_and_keeps_each_folds_extra():
    labels = np.array(["a", "b"] * 20)
    folds = inner_folds(labels, np.repeat(np.arange(8), 5))
    truth = {"right": lambda fit, score: (labels[score], len(fit)),
             "wrong": lambda fit, score: (np.where(labels[score] == "a", "b", "a"), None)}
    choice = cross_validate(truth, labels, folds, grouped=True)
    assert choice.chosen == "right" and choice.mean() == 1.0 and choice.mean("wrong") == 0.0
    assert choice.extras["right"] == [len(fit) for fit, _ in folds]
    assert [row["chosen"] for row in choice.table()] == [True, False]
