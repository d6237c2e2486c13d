"""The predict and evaluate commands, through the command line's ``main`` (in this process), on real and
bad files."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_utils.__main__ import main
from ser_utils.data.audio import load_audio, stream_audio
from ser_utils.data.corpus import EMOTIONS
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.models.classifiers import make_classifier
from ser_utils.models.deployable import Deployable
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


# -- long files scored while they are read ------------------------------------------------------------

def _long_file(path, seconds, rate=48000, channels=2, seed=0):
    """Speech-like stretches between short pauses, and every fifth a 9.5 s silence (whole windows silent)."""
    rng = np.random.default_rng(seed)
    parts, total, k = [], 0, 0
    while total < seconds * rate:
        parts.append(synthesize_clip(EMOTIONS[k % 8], 1 + k % 4, seconds=4.0, sample_rate=rate, rng=rng))
        parts.append(np.zeros(int(rate * (9.5 if k % 5 == 2 else 0.3)), np.float32))
        total, k = total + len(parts[-2]) + len(parts[-1]), k + 1
    mono = np.concatenate(parts)[:int(seconds * rate)]
    sf.write(str(path), np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1), rate)
    return path


def _streamed(recognizer, path, **kwargs):
    seen = []
    (name, prediction, reason), = recognizer.iter_predictions([path], on_window=lambda p, row: seen.append((p, row)),
                                                              **kwargs)
    assert reason == "" and name == str(path), reason
    return prediction, seen


@pytest.mark.parametrize("model", ["wav2vec2", "baseline-svm", "baseline-logreg"])
def test_a_long_file_streamed_gives_the_whole_file_results(tmp_path, model_dir, baseline_dir, model):
    if model == "baseline-svm":  # the same features, an SVM (each clip scored on its own, like the encoders)
        from ser_utils.models.baseline import BaselineModel

        loaded = BaselineModel.from_pretrained(baseline_dir)
        refit = make_classifier("svm", probability=True).fit(np.random.default_rng(0).normal(size=(64, 88)),
                                                             np.array(EMOTIONS * 8))
        loaded.pipeline = refit
        recognizer = EmotionRecognizer(loaded)
    else:
        recognizer = EmotionRecognizer.from_pretrained(model_dir if model == "wav2vec2" else baseline_dir)
    path = _long_file(tmp_path / "long.wav", 45.3)  # five 10 s blocks; windows cross block edges
    whole = recognizer.predict_wave(load_audio(path, max_seconds=None), name=str(path))  # the whole-file path
    (_, plain, _), = recognizer.iter_predictions([path])  # nobody follows the windows: the whole-file path
    pd.testing.assert_frame_equal(plain.windows, whole.windows, check_exact=True)
    assert whole.windows["silent"].any() and not whole.windows["silent"].all()
    for buffer in (600.0, 30.0):  # followed window by window: streamed, in batches of 1, 2, 4, ... windows
        streamed, seen = _streamed(recognizer, path, buffer_seconds=buffer)
        assert pd.DataFrame([row for _, row in seen]).equals(streamed.windows)
        assert streamed.duration == whole.duration and streamed.warning == whole.warning
        # Logistic regression multiplies a batch of windows at once (BLAS): the last bit may depend on the batch.
        exact = model != "baseline-logreg"
        pd.testing.assert_frame_equal(streamed.windows, whole.windows, check_exact=exact, rtol=0, atol=1e-15)
        assert streamed.probabilities == (whole.probabilities if exact else pytest.approx(whole.probabilities,
                                                                                          rel=0, abs=1e-15))


class _Stub(Deployable):
    """Probabilities from a window's own samples (mean, spread, ends, length): any wrong sample shows."""

    labels, sample_rate, min_seconds = tuple(EMOTIONS), 16000, 0.01

    def describe(self):
        return "stub"

    def check_clips(self, waves):
        pass

    def predict_proba(self, waves, groups=None):
        x = np.array([[w.mean(), w.std(), w[0], w[-1], len(w) / 1e5, w.max(), w.min(), w[len(w) // 2]] for w in waves])
        e = np.exp(10 * x.reshape(len(waves), 8))
        return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("window, hop", [(4.0, 2.0), (4.0, 3.0), (2.5, 1.3), (3.0, 5.0), (10.0, 10.0), (12.0, 7.0)])
@pytest.mark.parametrize("seconds, rate", [(31.37, 48000), (23.0, 16000), (12.0, 16000), (4.0, 16000)])
def test_streamed_windows_are_window_bounds_of_the_whole_file(tmp_path, window, hop, seconds, rate):
    recognizer = EmotionRecognizer(_Stub())
    path = _long_file(tmp_path / "f.wav", seconds, rate=rate, channels=1, seed=int(seconds))
    wave = load_audio(path, max_seconds=None)
    whole = recognizer.predict_wave(wave, window=window, hop=hop, name=str(path))
    assert [(round(a * 16000), round(b * 16000)) for a, b in whole.windows[["start", "end"]].to_numpy()] == \
        window_bounds(len(wave), window, hop)
    _, streamed, reason = recognizer._stream_file(path, window, hop, 600.0, None)  # any length, even one window
    assert reason == ""
    pd.testing.assert_frame_equal(streamed.windows, whole.windows, check_exact=True)
    assert streamed.probabilities == whole.probabilities and streamed.duration == whole.duration


def test_the_first_window_is_scored_after_one_block(tmp_path, model_dir, monkeypatch):
    from ser_utils.serving import windows

    pulled, at_first = [], []

    def counted(*args, **kwargs):
        for chunk in stream_audio(*args, **kwargs):
            pulled.append(len(chunk))
            yield chunk

    monkeypatch.setattr(windows, "stream_audio", counted)
    path = _long_file(tmp_path / "long.wav", 95.0)
    recognizer = EmotionRecognizer.from_pretrained(model_dir)
    stream = recognizer.iter_predictions([path], on_window=lambda p, row: at_first.append(len(pulled)))
    assert next(stream)[2] == ""
    assert at_first[0] == 1 and len(pulled) >= 10  # one 10 s block read before the first window's scores


def test_a_file_that_fails_midway_is_one_failure_after_its_first_windows(tmp_path, model_dir):
    data = 0.1 * np.sin(np.arange(16000 * 40) / 5).astype(np.float32)
    data[16000 * 35] = np.nan
    path = tmp_path / "late-nan.wav"
    sf.write(str(path), data, 16000, subtype="FLOAT")
    seen = []
    recognizer = EmotionRecognizer.from_pretrained(model_dir)
    (_, prediction, reason), = recognizer.iter_predictions([path], on_window=lambda p, row: seen.append(row))
    assert prediction is None and reason == f"{path}: contains NaN or infinite samples" and seen
    (_, _, whole_reason), = recognizer.iter_predictions([path])  # not followed: loaded whole, the same reason
    assert whole_reason == reason


def test_windows_option_prints_each_window_then_the_file(tmp_path, model_dir, cli):
    long = _long_file(tmp_path / "long.wav", 40.0)
    short = tmp_path / "short.wav"
    sf.write(str(short), synthesize_clip("sad", 2, seconds=3.0), 16000)
    csv = tmp_path / "out.csv"
    done = cli("predict", short, long, "--model", model_dir, "--windows", "--csv", csv)
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    table = pd.read_csv(csv)
    expected = []
    for name, rows in table.groupby("file", sort=False):
        for row in rows.itertuples():
            if row.row == "window":
                span = f"{row.start:.3f}-{row.end:.3f}"
                expected.append([name, span, "silent", "-"] if row.silent else [name, span, row.emotion])
            else:
                expected.append([name, row.emotion])
    assert [line[:len(e)] for line, e in zip(lines, expected, strict=True)] == expected
    assert [len(line) for line in lines].count(3) == 2  # the two files' own lines, unchanged
    plain = cli("predict", short, long, "--model", model_dir)
    assert plain.stdout.splitlines() == [line for line in done.stdout.splitlines() if line.count("\t") == 2]


def _random_baseline(features: str):
    """A baseline of ``features`` with a logistic regression fitted on random rows (fast; scores are real
    functions of the features, which is all this needs)."""
    from ser_utils.features import make_extractor
    from ser_utils.models.baseline import BaselineModel

    extractor = make_extractor(features)
    X = np.random.default_rng(0).normal(size=(80, extractor.n_features))
    return EmotionRecognizer(BaselineModel(extractor, make_classifier("logreg", None, probability=True).fit(
        X, np.array(EMOTIONS * 10)), classifier="logreg"))


@pytest.mark.parametrize("model", ["egemaps", "mfcc-set", "wav2vec2"])
def test_audio_far_above_full_scale_is_scored_as_its_scaled_down_self(tmp_path, model_dir, model):
    recognizer = (EmotionRecognizer.from_pretrained(model_dir) if model == "wav2vec2" else _random_baseline(model))
    speech = synthesize_clip("angry", 2, seconds=2.0, rng=np.random.default_rng(3))  # one window
    unscaled, scaled = tmp_path / "x1000.wav", tmp_path / "scaled.wav"
    sf.write(str(unscaled), 1000 * speech, 16000, subtype="FLOAT")  # a float WAV never scaled to [-1, 1]
    sf.write(str(scaled), speech / np.abs(speech).max(), 16000, subtype="FLOAT")
    loud, reference = recognizer.predict_file(unscaled), recognizer.predict_file(scaled)
    # openSMILE wrapped the samples like 16-bit integers: eGeMAPS scored noise (max difference 0.5 before)
    np.testing.assert_allclose(list(loud.probabilities.values()), list(reference.probabilities.values()),
                               rtol=0, atol=1e-5)
    assert "each window over full scale was scaled down to peak 1.0 before scoring" in loud.warning
    assert reference.warning == ""


def test_a_long_file_far_above_full_scale_streamed_gives_the_whole_file_results(tmp_path, baseline_dir):
    recognizer = EmotionRecognizer.from_pretrained(baseline_dir)  # eGeMAPS: the features that wrapped
    speech = load_audio(_long_file(tmp_path / "long.wav", 25.0, rate=16000, channels=1), max_seconds=None)
    path = tmp_path / "x1000.wav"
    sf.write(str(path), 1000 * speech, 16000, subtype="FLOAT")
    whole = recognizer.predict_file(path)
    streamed, _ = _streamed(recognizer, path)  # scored while decoded: each window scaled on its own too
    pd.testing.assert_frame_equal(streamed.windows, whole.windows, check_exact=False, rtol=0, atol=1e-12)
    assert streamed.warning == whole.warning and "scaled down to peak 1.0" in whole.warning
