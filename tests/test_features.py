import shutil
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_utils.data.audio import SilentAudioError, load_audio
from ser_utils.data.corpus import discover, parse_filename
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.features import (
    LIBROSA_FAMILIES,
    ClipTooShortError,
    EgemapsConfig,
    EgemapsFeatures,
    FeatureConfig,
    LibrosaFeatures,
    egemaps_group,
    extract_corpus,
    make_extractor,
)

SR = 16_000


@pytest.fixture(scope="module")
def real_clip(corpus_16k):
    """A clip of the generated corpus, then of the real one."""
    return load_audio(next(iter(sorted(p for p in corpus_16k.rglob("03-01-*") if p.suffix in (".wav", ".flac")))))


def test_librosa_features_shape_names_and_families(real_clip):
    extractor = LibrosaFeatures()
    vector = extractor.extract(real_clip)
    names, families = extractor.feature_names(), extractor.feature_families()
    # 40 MFCC x 3 (deltas) + 64 mel + 12 chroma + 6 tonnetz + 7 contrast + 5 scalars = 214, x (mean, std)
    assert vector.shape == (428,) == (extractor.n_features,) and vector.dtype == np.float32
    assert np.isfinite(vector).all()
    assert len(names) == len(set(names)) == len(families) == 428
    assert names[:3] == ["mfcc_0_mean", "mfcc_0_std", "mfcc_1_mean"] and names[-1] == "rolloff_std"
    assert tuple(dict.fromkeys(families)) == LIBROSA_FAMILIES
    assert all(n.startswith(f) for n, f in zip(names, families, strict=True))


def test_config_changes_the_layout_consistently(real_clip):
    extractor = LibrosaFeatures(FeatureConfig(n_mfcc=13, mfcc_deltas=0, n_mels=32,
                                              stats=("mean", "std", "max")))
    assert extractor.extract(real_clip).shape == ((13 + 32 + 12 + 6 + 7 + 5) * 3,)
    assert "mfcc_delta" not in extractor.feature_families()
    assert len(extractor.feature_names()) == extractor.n_features


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="stats"):
        FeatureConfig(stats=("mean", "kurtosis"))
    with pytest.raises(ValueError, match="mfcc_deltas"):
        FeatureConfig(mfcc_deltas=3)
    with pytest.raises(ValueError, match="delta_width"):
        FeatureConfig(min_seconds=0.05)
    with pytest.raises(ValueError, match=r"'eGeMAPSv03' is not an openSMILE feature set.*eGeMAPSv02"):
        EgemapsConfig(feature_set="eGeMAPSv03")
    with pytest.raises(ValueError, match="Functionals"):
        EgemapsConfig(feature_level="LowLevelDescriptors")
    assert EgemapsConfig(feature_set="GeMAPSv01b").feature_set == "GeMAPSv01b"


def test_one_stft_matches_librosa_called_on_the_signal(real_clip):
    """The shared-STFT frames equal librosa's own per-feature calls (tonnetz excepted, documented)."""
    c = FeatureConfig()
    frames = LibrosaFeatures(c).frames(real_clip)
    kw = {"y": real_clip, "sr": SR, "n_fft": c.n_fft, "hop_length": c.hop_length}
    expected = {
        "mfcc": librosa.feature.mfcc(**kw, n_mfcc=c.n_mfcc, n_mels=c.n_mels),
        "contrast": librosa.feature.spectral_contrast(**kw),
        "centroid": librosa.feature.spectral_centroid(**kw),
        "bandwidth": librosa.feature.spectral_bandwidth(**kw),
        "rolloff": librosa.feature.spectral_rolloff(**kw),
        "chroma": librosa.feature.chroma_stft(**kw, tuning=0.0),
        "rms": librosa.feature.rms(y=real_clip, frame_length=c.n_fft, hop_length=c.hop_length),
    }
    for family, reference in expected.items():
        # float32 rounding scales with the family's range (MFCC c0 is near -670 where c1 is near 0)
        atol = 1e-5 + 1e-6 * np.abs(reference).max()
        np.testing.assert_allclose(frames[family], reference, rtol=1e-5, atol=atol, err_msg=family)


def test_features_are_deterministic(real_clip):
    for extractor in (LibrosaFeatures(), EgemapsFeatures()):
        assert np.array_equal(extractor.extract(real_clip), extractor.extract(real_clip.copy()))


def test_egemaps_has_88_named_functionals_in_known_groups(real_clip):
    extractor = EgemapsFeatures()
    vector = extractor.extract(real_clip)
    assert vector.shape == (88,) == (extractor.n_features,) and np.isfinite(vector).all()
    assert "other" not in extractor.feature_families()
    assert egemaps_group("F0semitoneFrom27.5Hz_sma3nz_amean") == "pitch"
    assert egemaps_group("jitterLocal_sma3nz_amean") == "voice quality"


def test_make_extractor_round_trips_its_config():
    extractor = LibrosaFeatures(FeatureConfig(n_mfcc=20, stats=("mean",)))
    again = make_extractor("mfcc-set", extractor.config.to_dict())
    assert again.config == extractor.config and again.feature_names() == extractor.feature_names()
    with pytest.raises(ValueError, match="unknown feature set"):
        make_extractor("wav2vec2")


@pytest.fixture
def small_corpus(synthetic_corpus, tmp_path):
    """Six clips of the synthetic corpus, copied so a test may edit them."""
    files = sorted(synthetic_corpus.rglob("*.wav"))[:6]
    for path in files:
        shutil.copy(path, tmp_path / path.name)
    return discover(tmp_path)


def test_second_run_reads_the_cache_and_edits_recompute_only_what_changed(small_corpus, tmp_path):
    cache = tmp_path / "cache"
    extractor = LibrosaFeatures()
    first = extract_corpus(small_corpus, extractor, cache, n_jobs=1, progress=False)
    second = extract_corpus(small_corpus, extractor, cache, n_jobs=1, progress=False)
    assert (first.computed, first.hits, second.computed, second.hits) == (6, 0, 0, 6)
    assert np.array_equal(first.X, second.X) and first.X.shape == (6, 428)
    path = small_corpus["path"].iloc[0]
    sf.write(path, 0.5 * sf.read(path, dtype="float32")[0], SR)  # a changed file
    edited = extract_corpus(small_corpus, extractor, cache, n_jobs=1, progress=False)
    assert (edited.computed, edited.hits) == (1, 5)
    assert not np.array_equal(edited.X[0], first.X[0]) and np.array_equal(edited.X[1:], first.X[1:])
    other = extract_corpus(small_corpus, LibrosaFeatures(FeatureConfig(n_mfcc=20)), cache, n_jobs=1,
                           progress=False)  # a changed parameter
    assert (other.computed, other.hits) == (6, 0)


def test_parallel_extraction_equals_in_process_extraction(small_corpus, tmp_path):
    # Bit-identical: workers and this process must not differ in BLAS threads (see frames()).
    extractor = LibrosaFeatures()
    parallel = extract_corpus(small_corpus, extractor, tmp_path / "cache", n_jobs=2, min_parallel=0,
                              progress=False)
    assert np.array_equal(parallel.X, extractor.transform([load_audio(p) for p in small_corpus["path"]]))


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory) -> pd.DataFrame:
    """A corpus table (RAVDESS names, actor 01) of two good clips, then: a file that is not audio,
    a silent clip, a 0.1 s clip and a 60 s clip. Built by hand, since discover() would already drop
    the file that is not audio."""
    root = tmp_path_factory.mktemp("bad")
    for stem, emotion in (("03-01-05-01-01-01-01", "angry"), ("03-01-04-01-01-01-01", "sad")):
        sf.write(str(root / f"{stem}.wav"), synthesize_clip(emotion, 1, seconds=1.0), SR)
    (root / f"{NOT_AUDIO}.wav").write_text("this is not audio")
    sf.write(str(root / f"{SILENT}.wav"), np.zeros(SR, np.float32), SR)
    sf.write(str(root / f"{SHORT}.wav"), synthesize_clip("fearful", 1, seconds=0.1), SR)
    long = np.tile(synthesize_clip("happy", 1, seconds=3.0), 20)
    sf.write(str(root / "03-01-03-01-01-01-01.wav"), long, SR)
    return pd.DataFrame([{**parse_filename(p), "path": str(p)} for p in sorted(root.glob("*.wav"))])


NOT_AUDIO, SILENT, SHORT = "03-01-02-01-01-01-01", "03-01-07-01-01-01-01", "03-01-06-01-01-01-01"


@pytest.mark.parametrize("extractor", [LibrosaFeatures(), EgemapsFeatures()], ids=lambda e: e.name)
def test_bad_input_is_reported_by_name_and_the_rest_finishes(bad_corpus, tmp_path, extractor):
    with pytest.warns(UserWarning, match=r"3 file\(s\) failed") as caught:
        table = extract_corpus(bad_corpus, extractor, tmp_path / "cache", n_jobs=1, progress=False)
    reasons = {Path(path).stem: why for path, why in table.failures.items()}
    assert set(reasons) == {NOT_AUDIO, SILENT, SHORT}
    assert all(stem in str(caught[0].message) for stem in reasons)  # the warning names each file
    assert "not a readable audio file" in reasons[NOT_AUDIO]
    assert reasons[SILENT].startswith("SilentAudioError")
    assert reasons[SHORT].startswith("ClipTooShortError") and "0.10 s long" in reasons[SHORT]
    # The two good clips and the 60 s clip have features, and rows line up with meta.
    assert list(table.meta["emotion"]) == ["happy", "sad", "angry"]
    assert table.X.shape == (3, extractor.n_features) and np.isfinite(table.X).all()


def test_short_and_silent_waveforms_raise_clear_errors():
    extractor = LibrosaFeatures()
    with pytest.raises(ClipTooShortError, match=r"0\.10 s long, shorter than min_seconds=0\.5"):
        extractor.extract(np.ones(1600, np.float32))
    with pytest.raises(SilentAudioError, match="silent"):
        extractor.extract(np.zeros(SR, np.float32))
    with pytest.raises(ValueError, match="mono"):
        extractor.extract(np.ones((2, SR), np.float32))


def test_the_same_samples_scored_again_in_one_process_are_not_extracted_again(real_clip, monkeypatch):
    extractor = LibrosaFeatures(FeatureConfig(n_mfcc=13))
    extracted = []

    def counted(wave):
        extracted.append(len(wave))
        return LibrosaFeatures.extract(extractor, wave)

    monkeypatch.setattr(extractor, "extract", counted)
    other = real_clip.copy()
    other[len(other) // 2] += 1e-3  # one sample differs: another clip
    first = extractor.transform([real_clip, other])
    again = extractor.transform([other.copy(), real_clip])  # the same samples in new arrays
    assert len(extracted) == 2 and np.array_equal(again, first[::-1])
    again[0] = 0  # the remembered rows are copies
    assert np.array_equal(extractor.transform([other]), first[1:]) and len(extracted) == 2
    # Another setting is another feature set: extracted anew, never served from the first's rows.
    wider = LibrosaFeatures(FeatureConfig(n_mfcc=20))
    assert wider.transform([real_clip]).shape == (1, wider.n_features) != first[:1].shape
    with pytest.raises(ClipTooShortError):  # an error is raised each time, never remembered
        extractor.transform([real_clip[:100]])
    with pytest.raises(ClipTooShortError):
        extractor.transform([real_clip[:100]])
