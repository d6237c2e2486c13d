"""predict / evaluate: bad arguments and outputs fail before any work, strict JSON, manifests with
gaps and repeats, corrupt or unsafe baseline folders, and file-by-file streaming."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_utils.__main__ import main
from ser_utils.data.corpus import EMOTIONS
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.features import make_extractor
from ser_utils.models.baseline import BaselineModel
from ser_utils.models.classifiers import CLASSIFIERS, make_classifier
from ser_utils.serving.predict import EmotionRecognizer


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three 1 s speech-like clips (sad, angry, happy) at 16 kHz."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for emotion in ("sad", "angry", "happy"):
        sf.write(str(folder / f"{emotion}.wav"), synthesize_clip(emotion, 3, seconds=1.0, rng=rng), 16000)
    return folder


def run(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


@pytest.mark.parametrize("option", [("--window", "0"), ("--window", "-1"), ("--window", "nan"), ("--hop", "0"),
                                    ("--hop", "inf")])
def test_bad_window_or_hop_is_one_line_before_any_work(capsys, clips, tmp_path, option):
    # The model folder does not exist: the arguments are checked before anything is loaded.
    for command in (["predict", clips], ["evaluate", "--manifest", tmp_path / "m.csv"]):
        status, out, err = run(capsys, *command, "--model", tmp_path / "nowhere", *option)
        assert status == 2 and not out
        assert err == [f"error: {option[0]}: the scoring {option[0][2:]} must be a positive number of seconds, "
                       f"got {float(option[1])}"]


def test_a_hop_longer_than_the_window_warns_about_the_gaps(capsys, clips, model_dir):
    status, out, err = run(capsys, "predict", clips, "--model", model_dir, "--window", 2, "--hop", 5)
    assert status == 0 and out.count("\n") == 3
    assert err == ["warning: --hop: the hop (5 s) is longer than the window (2 s): 3 s of every 5 s of audio longer "
                   "than the window are not scored"]


def test_a_folder_without_audio_says_so(capsys, tmp_path, model_dir):
    (tmp_path / "notes.txt").write_text("no audio here")
    status, out, err = run(capsys, "predict", tmp_path, "--model", model_dir)
    assert status == 1 and not out
    assert len(err) == 1 and str(tmp_path) in err[0] and "no audio files found" in err[0]


def test_unwritable_outputs_fail_before_scoring(capsys, clips, model_dir, tmp_path):
    (tmp_path / "taken").mkdir()
    cases = [("--csv", tmp_path / "missing" / "out.csv", "does not exist"),
             ("--json", tmp_path / "taken", "is a directory")]
    for option, path, reason in cases:
        status, out, err = run(capsys, "predict", clips, "--model", model_dir, option, path)
        assert status == 2 and not out  # nothing was scored
        assert len(err) == 1 and option in err[0] and str(path) in err[0] and reason in err[0]
    status, out, err = run(capsys, "evaluate", "--manifest", clips / "m.csv", "--model", model_dir,
                           "--json", tmp_path / "missing" / "s.json")
    assert status == 2 and len(err) == 1 and "--json" in err[0]


def test_json_is_strict_silent_windows_are_null(capsys, model_dir, tmp_path):
    rng = np.random.default_rng(1)
    wave = np.concatenate([synthesize_clip("angry", 3, seconds=2.0, rng=rng), np.zeros(4 * 16000, np.float32)])
    sf.write(str(tmp_path / "long.wav"), wave, 16000)
    out_file = tmp_path / "scores.json"
    status, _, _ = run(capsys, "predict", tmp_path / "long.wav", "--model", model_dir, "--window", 2, "--hop", 2,
                       "--json", out_file)
    assert status == 0

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    result = json.loads(out_file.read_text(), parse_constant=reject)[0]
    silent = [w for w in result["windows"] if w["silent"]]
    assert len(silent) == 2 and all(w[e] is None for w in silent for e in EMOTIONS)
    assert all(isinstance(w["angry"], float) for w in result["windows"] if not w["silent"])


def test_evaluate_keeps_every_reason_when_no_file_can_be_scored(capsys, model_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.wav", "b.wav"], "label": ["sad", "angry"]}).to_csv(manifest, index=False)
    status, out, err = run(capsys, "evaluate", "--manifest", manifest, "--model", model_dir)
    assert status == 1 and not out
    assert len(err) == 3 and "a.wav" in err[0] and "b.wav" in err[1]
    assert err[2] == f"error: {manifest}: none of the 2 file(s) could be scored"


def test_evaluate_reports_empty_cells_and_an_empty_manifest(capsys, clips, model_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{clips / 'sad.wav'},sad\n,angry\n{clips / 'happy.wav'},\n")
    status, out, err = run(capsys, "evaluate", "--manifest", manifest, "--model", model_dir)
    assert status == 1 and "clips: 1" in out
    assert err == [f"error: {manifest} line 3: empty path cell, row left out",
                   f"error: {manifest} line 4: empty label cell, row left out"]
    manifest.write_bytes(b"")
    status, out, err = run(capsys, "evaluate", "--manifest", manifest, "--model", model_dir)
    assert status == 2 and err == [f"error: {manifest}: empty file (expected a CSV with columns path,label)"]


def test_evaluate_scores_repeated_rows_once_per_label(capsys, clips, model_dir, tmp_path):
    sad, angry = clips / "sad.wav", clips / "angry.wav"
    manifest = tmp_path / "m.csv"
    rows = [(sad, "sad"), (sad, "sad"), (sad, "sad"), (angry, "angry"), (angry, "sad")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    out_file = tmp_path / "s.json"
    status, _, err = run(capsys, "evaluate", "--manifest", manifest, "--model", model_dir, "--json", out_file)
    assert status == 0
    assert err == [f"warning: {manifest}: 2 repeated row(s) (lines 3, 4) are scored once"]
    summary = json.loads(out_file.read_text())
    assert summary["n"] == 3  # (sad, sad), (angry, angry), (angry, sad): one row per distinct path and label
    assert sum(summary["confusion"]["sad"].values()) == 2


# -- baseline model folders -------------------------------------------------------------------------------

def _fitted_baseline(classifier: str = "logreg") -> BaselineModel:
    """A real egemaps extractor with a pipeline fitted on random 88-dim features (fast)."""
    extractor = make_extractor("egemaps")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, extractor.n_features)), np.array(EMOTIONS * 10)
    params = {"n_estimators": 5} if classifier == "rf" else {"max_iter": 20} if classifier == "mlp" else None
    pipeline = make_classifier(classifier, params, probability=True).fit(X, y)
    return BaselineModel(extractor, pipeline, classifier=classifier)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_every_classifier_round_trips_through_skops_without_pickle(tmp_path, classifier):
    model = _fitted_baseline(classifier)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "pipeline.skops").is_file() and not (tmp_path / "pipeline.joblib").exists()
    loaded = BaselineModel.from_pretrained(tmp_path)
    X = np.random.default_rng(1).normal(size=(5, model.extractor.n_features))
    assert np.array_equal(loaded.pipeline.predict_proba(X), model.pipeline.predict_proba(X))


def _legacy_folder(tmp_path, payload) -> object:
    """A baseline folder in the old layout: config.json + a pipeline.joblib pickle holding ``payload``."""
    folder = tmp_path / "legacy"
    _fitted_baseline().save_pretrained(folder)
    (folder / "pipeline.skops").unlink()
    (folder / "pipeline.joblib").write_bytes(pickle.dumps(payload))
    return folder


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this runs a shell command
        return (__import__("os").system, (f"touch {self.marker}",))


def test_a_pickle_is_not_executed_unless_explicitly_allowed(capsys, tmp_path, clips):
    marker = tmp_path / "pwned"
    folder = _legacy_folder(tmp_path, _Exploit(marker))
    status, out, err = run(capsys, "predict", clips, "--model", folder)
    assert status == 2 and not out and not marker.exists()
    assert len(err) == 1 and "pipeline.joblib: a pickle" in err[0] and "--allow-pickle" in err[0]
    # The opt-in does what it says: the file's code runs (here: it is not even a pipeline).
    status, _, err = run(capsys, "predict", clips, "--model", folder, "--allow-pickle")
    assert marker.exists() and status == 2 and len(err) == 1 and "not a fitted classifier" in err[0]


def test_corrupt_baseline_folders_are_one_line_exit_2(capsys, tmp_path, clips):
    import skops.io

    good = tmp_path / "good"
    _fitted_baseline().save_pretrained(good)
    other = tmp_path / "other-object"
    _fitted_baseline().save_pretrained(other)
    skops.io.dump({"not": "a pipeline"}, other / "pipeline.skops")
    not_object = tmp_path / "config-list"
    _fitted_baseline().save_pretrained(not_object)
    (not_object / "config.json").write_text("[1, 2]")
    garbage = tmp_path / "garbage"
    _fitted_baseline().save_pretrained(garbage)
    (garbage / "pipeline.skops").write_bytes(b"PK\x03\x04 truncated")
    for folder, reason in ((other, "not a fitted classifier"), (not_object, "not a ser-utils baseline model config"),
                           (garbage, "not a readable skops file")):
        status, out, err = run(capsys, "predict", clips, "--model", folder)
        assert status == 2 and not out
        assert len(err) == 1 and str(folder) in err[0] and reason in err[0], err
    assert run(capsys, "predict", clips, "--model", good)[0] == 0


# -- streaming --------------------------------------------------------------------------------------------

def test_files_are_read_lazily_one_buffer_at_a_time(model_dir, clips):
    recognizer = EmotionRecognizer.from_pretrained(model_dir)
    files = sorted(clips.glob("*.wav")) * 3
    pulled = []

    def paths():
        for path in files:
            pulled.append(path)
            yield path

    stream = recognizer.iter_predictions(paths(), buffer_seconds=1.5)  # room for one 1 s clip
    first = next(stream)
    assert first[1] is not None and len(pulled) == 2  # the second file was read, nothing further
    rest = list(stream)
    assert len(pulled) == len(files) and len(rest) == len(files) - 1
    batched, _ = recognizer.predict_files(files)  # one buffer: same scores
    streamed = [first[1], *(p for _, p, _ in rest)]
    for a, b in zip(batched, streamed, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
