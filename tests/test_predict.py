"""The predict and evaluate commands, through the command line's ``main`` (in this process), on real and
bad files."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_utils.__main__ import main
from ser_utils.data.corpus import EMOTIONS
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.serving.predict import EmotionRecognizer, window_bounds
from ser_utils.serving.prediction_io import predictions_table


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: run ``python -m ser_utils ARGS`` in this process; exit code, stdout and stderr."""

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def test_predict_scores_the_real_48k_stereo_samples(sample_48k, model_dir, cli):
    done = cli("predict", sample_48k, "--model", model_dir, "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 8
    for result in results:
        probabilities = result["probabilities"]
        assert list(probabilities) == list(EMOTIONS)
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-4)
        assert result["emotion"] == max(probabilities, key=probabilities.get)
        assert 1.0 < result["duration"] < 5.0 and len(result["windows"]) == 1


def test_bad_items_get_one_line_each_and_the_good_file_is_still_scored(tmp_path, sample_48k, model_dir, cli):
    good = next(sample_48k.rglob("*.wav"))
    (tmp_path / "notes.wav").write_text("not audio")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0), 16000)
    sf.write(str(tmp_path / "silent.flac"), np.zeros(16000), 16000)
    bad = [tmp_path / "missing.wav", tmp_path / "notes.wav", tmp_path / "empty.wav", tmp_path / "silent.flac"]
    done = cli("predict", good, *bad, "--model", model_dir)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 4
    for path in bad:
        assert sum(path.name in line for line in errors) == 1
    assert done.stdout.count("\n") == 1 and good.name in done.stdout


def test_a_corrupt_or_missing_checkpoint_is_one_clear_line(tmp_path, model_dir, sample_48k, cli):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ser_config.json").write_text((model_dir / "ser_config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    for directory in (broken, tmp_path / "nowhere", tmp_path):
        done = cli("predict", sample_48k, "--model", directory)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and str(directory) in done.stderr


def test_long_audio_is_scored_in_windows_and_aggregated(tmp_path, model_dir, cli):
    rng = np.random.default_rng(0)
    speech = np.concatenate([synthesize_clip(e, 3, seconds=2.0, rng=rng) for e in ("angry", "sad", "happy")])
    wave = np.concatenate([speech, np.zeros(4 * 16000, np.float32)])  # 6 s of speech, 4 s of silence
    path = tmp_path / "long.wav"
    sf.write(str(path), wave, 16000)
    csv = tmp_path / "out.csv"
    done = cli("predict", path, "--model", model_dir, "--window", 4, "--hop", 2, "--csv", csv)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(csv)
    windows, aggregate = table[table["row"] == "window"], table[table["row"] == "aggregate"]
    assert windows["start"].tolist() == [0, 2, 4, 6] and windows["end"].tolist() == [4, 6, 8, 10]
    assert windows["silent"].tolist() == [False, False, False, True]
    voiced = windows.loc[~windows["silent"], list(EMOTIONS)]
    assert np.allclose(aggregate[list(EMOTIONS)].to_numpy()[0], voiced.mean().to_numpy(), atol=1e-5)
    assert aggregate[list(EMOTIONS)].sum(axis=1).iloc[0] == pytest.approx(1, abs=1e-5)


def test_window_bounds():
    assert window_bounds(3 * 16000, 4.0, 2.0) == [(0, 48000)]
    assert window_bounds(9 * 16000, 4.0, 2.0) == [(0, 64000), (32000, 96000), (64000, 128000), (80000, 144000)]
    assert window_bounds(9 * 16000, None, None) == [(0, 144000)]


def test_the_python_api_loads_once_and_predicts_many(model_dir, sample_48k):
    recognizer = EmotionRecognizer.from_pretrained(model_dir)
    files = sorted(sample_48k.rglob("*.wav"))
    batch, failures = recognizer.predict_files(files)
    assert not failures
    single = recognizer.predict_file(files[2])
    assert single.probabilities == pytest.approx(batch[2].probabilities, abs=1e-5)
    assert set(predictions_table(batch)["row"]) == {"window", "aggregate"}


def test_evaluate_on_a_manifest_of_another_corpus(tmp_path, corpus_16k, model_dir, cli):
    clips = sorted(p for p in corpus_16k.rglob("*-01.*") if p.suffix in (".wav", ".flac"))
    sad, angry = ([p for p in clips if p.name.split("-")[2] == code][:3] for code in ("04", "05"))
    chosen = sad + angry
    (tmp_path / "clips").mkdir()
    local = tmp_path / "clips" / chosen[0].name  # relative paths are relative to the manifest
    local.write_bytes(chosen[0].read_bytes())
    rows = [{"path": f"clips/{local.name}", "label": "sad"}]
    rows += [{"path": str(p), "label": "sad" if p.name.split("-")[2] == "04" else "ANGRY"} for p in chosen[1:]]
    rows.append({"path": "missing.wav", "label": "sad"})
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "scores.json"
    done = cli("evaluate", "--model", model_dir, "--manifest", manifest, "--json", out)
    assert done.returncode == 1 and "missing.wav" in done.stderr  # reported, the rest still scored
    summary = json.loads(out.read_text())
    assert summary["n"] == 6 and summary["classes"] == ["sad", "angry"]
    assert 0 <= summary["uar"] <= 1 and set(summary["confusion"]["sad"]) == {"sad", "angry", "other"}
    assert sum(summary["confusion"]["sad"].values()) == 3
    assert "accuracy:" in done.stdout

    pd.DataFrame([{"path": str(chosen[0]), "label": "bored"}]).to_csv(manifest, index=False)
    done = cli("evaluate", "--model", model_dir, "--manifest", manifest)
    assert done.returncode == 2 and "bored" in done.stderr


@pytest.fixture(scope="module")
def baseline_dir(synthetic_meta, tmp_path_factory):
    from ser_utils.features import EgemapsFeatures, extract_corpus
    from ser_utils.models.baseline import BaselineModel

    meta = synthetic_meta[(synthetic_meta["statement"] == 1) & (synthetic_meta["actor"] <= 6)]
    table = extract_corpus(meta, EgemapsFeatures(), tmp_path_factory.mktemp("cache"), n_jobs=1, progress=False)
    directory = tmp_path_factory.mktemp("baseline") / "egemaps-logreg"
    BaselineModel.fit(table, "logreg").save_pretrained(directory)
    return directory


def test_predict_takes_a_saved_baseline_pipeline_too(baseline_dir, sample_48k, tmp_path, cli):
    sf.write(str(tmp_path / "short.wav"), 0.1 * np.sin(np.arange(1600) / 3), 16000)  # 0.1 s: too short
    done = cli("predict", sample_48k, tmp_path / "short.wav", "--model", baseline_dir, "--json")
    assert done.returncode == 1 and "short.wav" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    results = json.loads(done.stdout)
    assert len(results) == 8
    assert all(sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-6) for r in results)
