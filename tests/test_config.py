import warnings
from pathlib import Path

import pytest

import ser_utils.core.config as config_module
from ser_utils.core.config import DEFAULT_BACKBONE, DEFAULT_WHISPER, REPO_ROOT, display_path, get_profile


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("SER_PROFILE", "RAVDESS_DIR", "SER_MODEL", "SER_BACKBONE", "SER_WHISPER", "SER_WORK_DIR",
                 "SER_REPORTS_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_full_profile_defaults():
    profile = get_profile()
    assert profile.name == "full" and not profile.is_smoke
    assert profile.data_dir is None
    assert profile.backbones == (DEFAULT_BACKBONE, DEFAULT_WHISPER) == ("facebook/wav2vec2-base", "whisper-base")
    assert profile.backbone == DEFAULT_BACKBONE
    assert profile.reports_dir == REPO_ROOT / "reports"
    assert profile.describe_data() == "kagglehub:uwrfkaggler/ravdess-emotional-speech-audio"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("RAVDESS_DIR", str(tmp_path))
    monkeypatch.setenv("SER_BACKBONE", str(tmp_path))
    monkeypatch.setenv("SER_WHISPER", "whisper-tiny.en")
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    profile = get_profile("full")
    assert profile.data_dir == tmp_path.resolve()
    assert profile.backbones == (str(tmp_path.resolve()), "whisper-tiny.en")
    assert profile.cache_dir == tmp_path / "work" / "full" / "cache"
    monkeypatch.setenv("SER_BACKBONE", "someone/wav2vec2-large")
    assert get_profile("full").backbone == "someone/wav2vec2-large"


def test_ser_model_is_the_old_name_of_ser_backbone_and_says_so_once(monkeypatch):
    monkeypatch.setattr(config_module, "_ALIAS_WARNED", set())
    monkeypatch.setenv("SER_MODEL", "someone/hubert-base")
    with pytest.warns(FutureWarning, match="SER_MODEL is read as SER_BACKBONE"):
        assert get_profile("full").backbone == "someone/hubert-base"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_profile("full").backbone == "someone/hubert-base"  # once per process
    monkeypatch.setenv("SER_BACKBONE", "someone/wavlm-base")  # the new name wins
    assert get_profile("full").backbone == "someone/wavlm-base"


def test_smoke_profile_never_writes_into_reports(monkeypatch):
    monkeypatch.setenv("SER_PROFILE", "smoke")
    profile = get_profile()
    assert profile.is_smoke
    assert REPO_ROOT / "reports" not in profile.results_dir.parents


def test_keyword_overrides_and_bad_names(tmp_path):
    assert get_profile("full", data_dir=str(tmp_path), backbone=None).data_dir == tmp_path.resolve()
    assert get_profile("full", backbone="x/y").backbones == ("x/y", DEFAULT_WHISPER)
    assert get_profile("full", backbones=("a",)).backbones == ("a",)
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")


def test_display_path_is_relative_to_the_repository():
    assert display_path(REPO_ROOT / "reports" / "x.html") == str(Path("reports") / "x.html")
    assert display_path(REPO_ROOT.parent / "shared" / "data") == str(Path("..") / "shared" / "data")


def test_relative_paths_in_the_environment_work_from_any_folder(monkeypatch, tmp_path):
    # `RAVDESS_DIR=../shared/data/ravdess-16k make all` runs kernels in notebooks/, not in the repository.
    monkeypatch.setenv("RAVDESS_DIR", "tests")
    monkeypatch.chdir(tmp_path)
    assert get_profile("full").data_dir == REPO_ROOT / "tests"
    (tmp_path / "tests").mkdir()
    assert get_profile("full").data_dir == tmp_path / "tests"  # present here: taken as given


def test_extra_corpora_are_comma_separated_paths_relative_to_the_repository(monkeypatch):
    from ser_utils.core.config import extra_corpora

    monkeypatch.setenv("SER_EXTRA_CORPORA", " corpora/a.csv, /data/b/manifest.csv ,")
    assert extra_corpora() == [REPO_ROOT / "corpora" / "a.csv", Path("/data/b/manifest.csv")]
    monkeypatch.delenv("SER_EXTRA_CORPORA")
    assert extra_corpora() == [] and extra_corpora("") == []


def test_a_systems_note_says_how_it_was_trained_chosen_and_normalized():
    from ser_utils.core.names import system_note

    assert system_note("whisper-project-frozen") == ""
    assert system_note("whisper-project-ft-top1").startswith("partial fine-tuning: the top 1 encoder layer(s)")
    both = system_note("whisper-selected-frozen+spknorm-k10").split("; ")
    assert both[0].startswith("frozen head chosen per split by inner cross-validation on the training actors")
    assert both[1] == "speaker-normalized: statistics from 10 unlabelled clips per speaker"
    assert system_note("egemaps+svm+spknorm").startswith("transductive")
