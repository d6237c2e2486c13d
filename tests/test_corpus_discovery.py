"""Corpus discovery on awkward real-world layouts: one clip per stem, differing second copies,
symlinked actor folders, video and song files; and cache entries that are empty files."""

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from ser_utils.core.cache import ArrayCache, cached_map
from ser_utils.data.corpus import discover, validate
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.evaluation.splits import random_80_20


@pytest.fixture(scope="module")
def two_actors(tmp_path_factory):
    return make_synthetic_corpus(tmp_path_factory.mktemp("two") / "corpus", actors=[1, 2], seconds=0.3)


def _copy(corpus, tmp_path):
    target = tmp_path / "corpus"
    shutil.copytree(corpus, target)
    return target


def _report(meta):
    with warnings.catch_warnings():  # two actors of 24: a partial corpus, on purpose
        warnings.filterwarnings("ignore", message="RAVDESS corpus is not complete")
        return validate(meta)


def test_a_clip_in_two_formats_is_one_clip_and_reported(two_actors, tmp_path):
    root = _copy(two_actors, tmp_path)
    for wav in sorted((root / "Actor_01").glob("*.wav"))[:30]:
        data, rate = sf.read(str(wav))
        sf.write(str(wav.with_suffix(".flac")), data, rate)
    meta = discover(root)
    assert len(meta) == 120 and meta["stem"].is_unique
    assert meta.attrs["duplicates"] == 30
    assert {how for _, _, how in meta.attrs["duplicate_files"]} == {"other format"}
    report = _report(meta)
    assert "duplicate copies ignored: 30 (30 other format)" in str(report)
    # No clip can now be on both sides of a split.
    train, val, test = random_80_20(meta).frames(meta)
    assert not set(train["stem"]) & set(test["stem"]) and len(train) + len(val) + len(test) == 120


def test_a_second_copy_with_other_content_is_reported(two_actors, tmp_path):
    root = _copy(two_actors, tmp_path)
    second = root / "audio_speech_actors_01-24"  # the Kaggle layout: every actor folder again, deeper
    shutil.copytree(root / "Actor_01", second / "Actor_01")
    changed = sorted((second / "Actor_01").glob("*.wav"))[0]
    data, rate = sf.read(str(changed))
    sf.write(str(changed), data * 0.5, rate)
    with pytest.warns(UserWarning, match=r"1 second cop\(ies\) differ in content") as caught:
        meta = discover(root)
    assert changed.name in str(caught[0].message)
    assert len(meta) == 120 and meta["path"].str.startswith(str(root / "Actor_01")).sum() == 60
    kinds = sorted(how for _, _, how in meta.attrs["duplicate_files"])
    assert kinds == ["DIFFERENT content"] + ["same bytes"] * 59
    report = str(_report(meta))
    assert "copies that DIFFER from the one used: 1" in report and changed.name in report


def test_symlinked_actor_folders_are_followed_without_looping(two_actors, tmp_path):
    root = tmp_path / "linked"
    root.mkdir()
    for actor in ("Actor_01", "Actor_02"):
        os.symlink(two_actors / actor, root / actor, target_is_directory=True)
    os.symlink(root, two_actors / "Actor_01" / "loop", target_is_directory=True)  # a link back up the tree
    try:
        meta = discover(root)
    finally:
        (two_actors / "Actor_01" / "loop").unlink()
    assert len(meta) == 120 and meta.attrs["duplicates"] == 0


def test_video_and_song_files_are_counted_in_the_report(two_actors, tmp_path):
    root = _copy(two_actors, tmp_path)
    wave = np.zeros(1600, np.float32)
    for name in ("01-01-03-01-01-01-01", "02-01-03-01-01-01-01", "03-02-03-01-01-01-01"):
        sf.write(str(root / "Actor_01" / f"{name}.wav"), wave, 16000)
    done = subprocess.run([sys.executable, "-m", "ser_utils", "validate", str(root)], capture_output=True,
                          text=True)
    assert done.returncode == 0
    assert "left out (not audio-only speech): 2 video-modality, 1 song file(s)" in done.stdout


def test_an_empty_cache_entry_is_recomputed(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"content")
    cache = ArrayCache(tmp_path / "cache", "test", {"k": 1})
    first = cached_map(lambda p: np.arange(3.0), [source], cache, progress=False)
    entry = next(cache.dir.glob("*.npy"))
    entry.write_bytes(b"")  # a disk that filled up, a copy that was cut short
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cached_map(lambda p: np.arange(3.0), [source], cache, progress=False)
    assert first.computed == 1 and again.computed == 1 and again.hits == 0
    assert np.array_equal(again.arrays[str(source)], np.arange(3.0)) and entry.stat().st_size > 0


def test_other_formats_are_found_and_one_clip_in_several_formats_is_one_clip(two_actors, tmp_path):
    root = tmp_path / "corpus"
    for wav in sorted(two_actors.rglob("*.wav")):  # the corpus as AIFF only
        target = root / wav.relative_to(two_actors).with_suffix(".aiff")
        target.parent.mkdir(parents=True, exist_ok=True)
        data, rate = sf.read(str(wav))
        sf.write(str(target), data, rate, format="AIFF")
    assert len(discover(root)) == 120
    first = sorted((root / "Actor_01").glob("*.aiff"))[:2]
    for aiff in first:
        data, rate = sf.read(str(aiff))
        sf.write(str(aiff.with_suffix(".oga")), data, rate, format="OGG")  # a lossy copy beside it
        sf.write(str(aiff.with_suffix(".wav")), data, rate)
    meta = discover(root)
    assert len(meta) == 120 and meta.attrs["duplicates"] == 4
    kept = meta.set_index("stem").loc[[p.stem for p in first], "path"]
    assert [os.path.splitext(p)[1] for p in kept] == [".aiff", ".aiff"]  # lossless first, then by name
    assert {how for _, _, how in meta.attrs["duplicate_files"]} == {"other format"}
    lossy = tmp_path / "lossy"
    (lossy / "Actor_01").mkdir(parents=True)
    for suffix, container in ((".ogg", "OGG"), (".wav", "WAV")):  # "ogg" sorts before "wav" by name
        data, rate = sf.read(str(first[0]))
        sf.write(str(lossy / "Actor_01" / f"{first[0].stem}{suffix}"), data, rate, format=container)
    assert discover(lossy)["path"].str.endswith(".wav").all()
