import numpy as np
import pandas as pd
import pytest

from ser_utils.data.corpus import expected_stems, parse_filename
from ser_utils.evaluation.splits import EMOBOX_FOLDS, actor_kfold, load_splits, make_splits, random_80_20, save_splits


def table(actors=range(1, 25)) -> pd.DataFrame:
    """A corpus table as discover() makes it, without audio: splits only need the names."""
    return pd.DataFrame([parse_filename(s) for s in expected_stems(actors)])


def actors_of(meta, stems):
    return set(meta.set_index("stem").loc[list(stems), "actor"])


def test_actor_kfold_uses_exactly_the_emobox_folds():
    meta = table()
    splits = actor_kfold(meta)
    assert [s.fold for s in splits] == [1, 2, 3, 4, 5, 6]
    for split in splits:
        assert actors_of(meta, split.test) == set(EMOBOX_FOLDS[split.fold])
        assert len(split.test) == 240
        assert len(split.train) + len(split.val) + len(split.test) == 1440


def test_no_actor_is_shared_between_train_validation_and_test(corpus_16k_meta):
    for split in actor_kfold(corpus_16k_meta, seed=3):
        train, val, test = (actors_of(corpus_16k_meta, part) for part in (split.train, split.val, split.test))
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(val) == 2 and {a % 2 for a in val} == {0, 1}  # one male, one female
        assert len(train) == 18


def test_every_clip_is_tested_exactly_once_per_kfold_run(corpus_16k_meta):
    tested = [stem for split in actor_kfold(corpus_16k_meta) for stem in split.test]
    assert len(tested) == len(set(tested)) == len(corpus_16k_meta)
    assert set(tested) == set(corpus_16k_meta["stem"])


def test_validation_actors_depend_on_the_seed_only():
    meta = table()
    assert actor_kfold(meta, seed=0) == actor_kfold(meta, seed=0)
    vals = {tuple(s.val for s in actor_kfold(meta, seed=seed)) for seed in range(5)}
    assert len(vals) > 1


def test_random_split_is_stratified_disjoint_and_seeded():
    meta = table()
    split = random_80_20(meta, seed=7)
    assert len(split.test) == 288
    assert len(split.train) + len(split.val) == 1152 and len(split.val) == 116
    assert not set(split.train) & set(split.test) and not set(split.val) & set(split.test)
    test_share = meta.set_index("stem").loc[list(split.test), "emotion"].value_counts(normalize=True)
    all_share = meta["emotion"].value_counts(normalize=True)
    assert np.allclose(test_share.sort_index(), all_share.sort_index(), atol=0.005)
    assert random_80_20(meta, seed=7) == split
    assert random_80_20(meta, seed=8).test != split.test
    assert len(actors_of(meta, split.test)) == 24  # the leak the protocol is known for


def test_make_splits_repeats_random_splits_over_seeds():
    splits = make_splits(table(), "random-80-20", seed=10, n_repeats=3)
    assert [(s.fold, s.seed) for s in splits] == [(1, 10), (2, 11), (3, 12)]
    with pytest.raises(ValueError, match="unknown protocol"):
        make_splits(table(), "leave-one-out")


def test_partial_corpus_keeps_the_folds_it_can(recwarn):
    splits = actor_kfold(table(actors=[1, 2, 3, 4, 5, 6]))
    assert [s.fold for s in splits] == [1, 2, 4, 5, 6]
    assert "fold 3 skipped" in str(recwarn[0].message)


def test_masks_select_rows_and_splits_round_trip(tmp_path):
    meta = table()
    splits = make_splits(meta, "actor-kfold")
    train, val, test = splits[0].masks(meta)
    assert (train.astype(int) + val + test == 1).all()
    path = save_splits(splits, tmp_path / "splits.json")
    assert load_splits(path) == splits


def test_a_run_over_fewer_seeds_keeps_the_saved_splits_of_the_others(tmp_path, monkeypatch):
    """Partial fine-tuning runs one random-80-20 seed after the frozen mode ran five: the splits file next
    to the results must still hold the five every frozen row was measured on."""
    from ser_utils.core.config import get_profile
    from ser_utils.study.systems import protocol_splits

    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    profile = get_profile("full")
    meta = pd.DataFrame([parse_filename(stem + ".wav") for stem in expected_stems()])
    five = protocol_splits(meta, "random-80-20", profile, random_repeats=5)
    one = protocol_splits(meta, "random-80-20", profile, random_repeats=1)
    assert one == five[:1]
    assert load_splits(profile.results.splits("random-80-20")) == five
