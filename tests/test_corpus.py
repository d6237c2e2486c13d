import shutil

import pytest

from ser_utils.core.config import get_profile
from ser_utils.data.corpus import (
    CorpusError,
    DownloadError,
    InvalidFilenameError,
    discover,
    expected_stems,
    parse_filename,
    validate,
)
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.study import sources


def test_parse_filename_reads_all_seven_fields():
    fields = parse_filename("some/dir/Actor_12/03-01-05-02-01-02-12.wav")
    assert fields["stem"] == "03-01-05-02-01-02-12"
    assert (fields["modality"], fields["vocal_channel"], fields["emotion_code"]) == (3, 1, 5)
    assert (fields["statement"], fields["repetition"], fields["actor"]) == (1, 2, 12)
    assert fields["emotion"] == "angry"
    assert fields["intensity"] == "strong"
    assert fields["gender"] == "female"
    assert parse_filename("03-01-08-01-01-01-07.flac")["gender"] == "male"


def test_emotion_codes_map_to_names_in_order():
    names = [parse_filename(f"03-01-{code:02d}-01-01-01-01")["emotion"] for code in range(1, 9)]
    assert names == ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


@pytest.mark.parametrize("name, fragment", [
    ("03-01-05-02-01-12.wav", "not a RAVDESS file name"),  # six fields
    ("03-01-09-01-01-01-01.wav", "emotion_code"),  # emotion 09
    ("03-01-05-01-01-01-25.wav", "actor"),  # actor 25
    ("03-01-01-02-01-01-01.wav", "no strong-intensity neutral"),
    ("notes.wav", "not a RAVDESS file name"),
])
def test_parse_filename_rejects_bad_names_with_the_name_in_the_message(name, fragment):
    with pytest.raises(InvalidFilenameError, match=fragment) as err:
        parse_filename(name)
    assert name in str(err.value)


def test_expected_stems_has_ravdess_shape():
    stems = expected_stems()
    assert len(stems) == len(set(stems)) == 1440
    one_actor = [parse_filename(s) for s in expected_stems([7])]
    assert len(one_actor) == 60
    assert sum(f["emotion"] == "neutral" for f in one_actor) == 4
    assert sum(f["emotion"] == "angry" for f in one_actor) == 8


def test_a_complete_corpus_validates(corpus_16k_meta):
    report = validate(corpus_16k_meta, strict=True)
    assert report.complete
    assert (report.n_clips, report.n_actors, report.n_emotions) == (1440, 24, 8)
    assert corpus_16k_meta.groupby("actor").size().eq(60).all()
    assert set(corpus_16k_meta["sample_rate"]) == {16000}
    assert "complete" in str(report)


def test_real_clips_last_2_9_to_5_4_seconds(real_meta):
    assert real_meta["duration"].between(2.9, 5.4).all()


def test_discover_deduplicates_the_kaggle_layout(tmp_path):
    # The Kaggle copy holds each actor folder at the top level and again under a sub-folder.
    make_synthetic_corpus(tmp_path, actors=[1, 2], seconds=0.3)
    nested = tmp_path / "audio_speech_actors_01-24"
    for actor in ("Actor_01", "Actor_02"):
        shutil.copytree(tmp_path / actor, nested / actor)
    meta = discover(tmp_path)
    assert len(meta) == 120
    assert meta["file"].is_unique
    assert meta.attrs["duplicates"] == 120
    assert not meta["path"].str.contains("audio_speech_actors").any()  # the nearer copy wins


def test_discover_reports_and_skips_bad_files(tmp_path):
    make_synthetic_corpus(tmp_path, actors=[3], seconds=0.3)
    (tmp_path / "Actor_03" / "notes.wav").write_bytes(b"RIFF")
    (tmp_path / "Actor_03" / "03-01-05-01-01-01-04.wav").write_text("not audio at all")
    song = tmp_path / "Actor_03" / "03-02-05-01-01-01-03.wav"
    shutil.copy(tmp_path / "Actor_03" / "03-01-05-01-01-01-03.wav", song)
    with pytest.warns(UserWarning, match="skipped 2 file") as record:
        meta = discover(tmp_path)
    message = str(record[0].message)
    assert "notes.wav" in message and "03-01-05-01-01-01-04.wav" in message
    assert len(meta) == 60
    assert meta.attrs["not_speech"] == 1
    assert {rel.split("/")[-1] for rel, _ in meta.attrs["skipped"]} == {
        "notes.wav", "03-01-05-01-01-01-04.wav"}


def test_validate_warns_on_partial_corpus_and_raises_when_strict(synthetic_meta):
    partial = synthetic_meta[synthetic_meta["actor"] != 5]
    with pytest.warns(UserWarning, match="not complete"):
        report = validate(partial)
    assert len(report.missing) == 60
    assert all(stem.endswith("-05") for stem in report.missing)
    assert "PARTIAL" in str(report)
    with pytest.raises(CorpusError, match="missing: 60"):
        validate(partial, strict=True)
    with pytest.raises(CorpusError, match="no RAVDESS"):
        validate(partial.iloc[:0])


def test_discover_rejects_a_missing_directory(tmp_path):
    with pytest.raises(CorpusError, match="not a directory"):
        discover(tmp_path / "nowhere")


def test_local_directory_wins_over_download(monkeypatch, tmp_path):
    monkeypatch.setenv("RAVDESS_DIR", str(tmp_path))
    assert sources.locate_corpus(get_profile("full")) == tmp_path.resolve()
    monkeypatch.setenv("RAVDESS_DIR", str(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="RAVDESS_DIR"):
        sources.locate_corpus(get_profile("full"))


def test_failed_download_says_how_to_use_a_local_copy(monkeypatch):
    import kagglehub

    def offline(handle, *args, **kwargs):
        raise ConnectionError(f"cannot reach kaggle.com for {handle}")

    monkeypatch.delenv("RAVDESS_DIR", raising=False)
    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DownloadError) as err:
        sources.locate_corpus(get_profile("full"))
    assert "RAVDESS_DIR" in str(err.value)
    assert "uwrfkaggler/ravdess-emotional-speech-audio" in str(err.value)
