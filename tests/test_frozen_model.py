"""The deployable frozen-encoder model (a tiny random Whisper + a trained head): the study's export, its
folder, and predict / evaluate with adaptation through the command line."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ser_utils.__main__ import main
from ser_utils.data.audio import load_audio, load_many
from ser_utils.data.synthetic import make_shifted_corpus
from ser_utils.features.normalization import GroupError, Normalization
from ser_utils.models.frozen import FrozenEncoderModel
from ser_utils.serving.predict import EmotionRecognizer
from ser_utils.study.systems import PROJECT, export_frozen
from ser_utils.training.frozen_heads import frozen_predictions


@pytest.fixture(scope="module")
def exported(frozen_study):
    profile, meta, backbone, embeddings = frozen_study
    return {kind: export_frozen(profile, meta, backbone, embeddings, PROJECT, normalization)[1]
            for kind, normalization in (("plain", Normalization()), ("spknorm", Normalization("speaker-k", 10)))}


def test_the_exported_model_predicts_what_the_study_scored(frozen_study, exported):
    profile, meta, _, embeddings = frozen_study
    assert exported["plain"] == profile.models_dir / "whisper-frozen"
    assert exported["spknorm"] == profile.models_dir / "whisper-frozen-spknorm"
    evaluation = json.loads((exported["plain"] / "evaluation.json").read_text())
    assert evaluation["system"] == "whisper-project-frozen" and evaluation["test_actors"] == [1, 11, 20]
    from ser_utils.evaluation.splits import make_splits

    split = make_splits(meta, "actor-kfold")[0]
    study_rows = frozen_predictions(meta, [split], embeddings, PROJECT.model, "whisper-project-frozen", n_jobs=1)
    model = FrozenEncoderModel.from_pretrained(exported["plain"], device="cpu")
    test = split.frames(meta)[2]
    waves, _ = load_many(test["path"])
    predicted = np.asarray(model.labels)[model.predict_proba([waves[p] for p in test["path"]]).argmax(1)]
    assert (predicted == study_rows["predicted"].to_numpy()).all()
    assert evaluation["accuracy"] == pytest.approx(float(np.mean(predicted == test["emotion"].to_numpy())))


def test_the_folder_round_trips_and_describes_itself(exported):
    plain = FrozenEncoderModel.from_pretrained(exported["plain"], device="cpu")
    assert plain.labels[0] == "neutral" and plain.sample_rate == 16_000 and not plain.needs_groups
    assert plain.describe().startswith("whisper-project-frozen: frozen whisper encoder (2 layers x 32")
    assert plain.min_seconds == pytest.approx(0.025)
    normed = FrozenEncoderModel.from_pretrained(exported["spknorm"], device="cpu")
    assert normed.needs_groups and normed.normalization["kind"] == "speaker"
    assert normed.normalization["prior_var"].shape == (3 * 3 * 32,)  # in the weights file, not in the JSON
    assert "prior_var" not in json.loads((exported["spknorm"] / "ser_config.json").read_text())["normalization"]
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(8000 + 100 * i)).astype(np.float32) for i in range(4)]
    with pytest.raises(GroupError, match="speaker normalization and needs groups"):
        normed.predict_proba(waves)
    proba = normed.predict_proba(waves, groups=["a"] * 4)
    assert proba.shape == (4, 8) and np.allclose(proba.sum(1), 1, atol=1e-5)
    # a plain model adapted per group maps each group's statistics onto the training ones, group by group
    adapted = plain.predict_proba(waves, groups=["g"] * 4)
    assert not np.allclose(adapted, plain.predict_proba(waves))
    others = [3 * w[::-1].copy() for w in waves]
    mixed = plain.predict_proba(waves + others, groups=["g"] * 4 + ["h"] * 4)
    assert np.allclose(mixed[:4], adapted, atol=1e-6)
    with pytest.raises(ValueError, match="not a usable frozen-encoder model"):
        (exported["plain"] / "model.safetensors").rename(exported["plain"] / "moved")
        try:
            FrozenEncoderModel.from_pretrained(exported["plain"])
        finally:
            (exported["plain"] / "moved").rename(exported["plain"] / "model.safetensors")


def test_predict_and_evaluate_with_adaptation_on_a_frozen_whisper_folder(exported, tmp_path, capsys):
    manifest = make_shifted_corpus(tmp_path / "shifted", speakers=range(31, 33), clips_per_emotion=2, seconds=0.6)
    assert main(["evaluate", "--model", str(exported["spknorm"]), "--manifest", str(manifest), "--adapt", "speaker",
                 "--labels", "manifest", "--json", str(tmp_path / "scores.json")]) == 0
    out = capsys.readouterr().out
    assert "adapt: speaker  labels: manifest" in out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["n"] == len(pd.read_csv(manifest)) and 0 <= scores["uar"] <= 1
    assert scores["settings"]["model_description"].startswith("whisper-project-frozen+spknorm-k10: frozen whisper")
    assert main(["evaluate", "--model", str(exported["spknorm"]), "--manifest", str(manifest)]) == 2
    assert "needs groups" in capsys.readouterr().err
    clips = sorted(manifest.parent.rglob("*.wav"))[:3]
    assert main(["predict", *map(str, clips), "--model", str(exported["plain"]), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 3 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in results)
    # A window longer than Whisper's 30 s input could score no file: refused before any work, one line.
    for command in (["predict", str(clips[0])], ["evaluate", "--manifest", str(manifest)]):
        assert main([*command, "--model", str(exported["plain"]), "--window", "40"]) == 2
        captured = capsys.readouterr()
        assert not captured.out and captured.err.splitlines() == [
            "error: --window 40 is longer than the model's longest input (30 s): score in windows of at most 30 s"]
    assert main(["predict", str(clips[0]), "--model", str(exported["plain"]), "--window", "30"]) == 0


def test_a_fine_tuned_network_is_never_adapted(tmp_path):
    from ser_utils.backbones.checkpoints import tiny_whisper_config
    from ser_utils.models.classifier import EmotionClassifier
    from ser_utils.models.heads import ModelConfig

    torch.manual_seed(0)
    EmotionClassifier.from_config(tiny_whisper_config(), ModelConfig()).save_pretrained(tmp_path / "ft")
    recognizer = EmotionRecognizer.from_pretrained(tmp_path / "ft", device="cpu")
    assert recognizer.describe().startswith("fine-tuned whisper (2 layers x 32")
    with pytest.raises(GroupError, match="a fine-tuned whisper network has none to standardise"):
        recognizer.predict_proba([np.zeros(8000, np.float32) + 0.1], groups=["a"])


def test_the_input_comparison_subset_keeps_every_emotion(synthetic_meta):
    from ser_utils.study.systems import comparison_subset

    ten = comparison_subset(synthetic_meta, 10)
    assert len(ten) == 240 and ten.groupby("actor").size().eq(10).all()
    assert set(ten["emotion"].astype(str)) == set(synthetic_meta["emotion"].astype(str))  # all 8
    assert ((ten["statement"] == 1) & (ten["repetition"] == 1)).all()  # from the quick subset
    assert len(comparison_subset(synthetic_meta, 60)) == len(synthetic_meta)


def _edit_config(folder, change):
    path = folder / "ser_config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _cut_weights(folder, keep):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:keep(path.stat().st_size)])


def _flip_bit(folder, offset):  # at 20: in the JSON header; at -100: in a tensor's values (the file still parses)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


CHANGED = "model.safetensors does not match the SHA-256 that ser_config.json records"
#: How a Whisper model folder gets damaged or edited, and what the one line says.
DAMAGE = {
    "truncated": (lambda f: _cut_weights(f, lambda n: n // 2), CHANGED),
    "header-bit": (lambda f: _flip_bit(f, 20), CHANGED),
    "value-bit": (lambda f: _flip_bit(f, -100), CHANGED),
    "wrong-layer-count": (lambda f: _edit_config(f, lambda c: {**c, "layers": 7}),
                          "does not fit ser_config.json: head tensor 'layer_weights' has shape [3] in the file, "
                          "[7] by the config"),
    "unknown-family": (lambda f: _edit_config(f, lambda c: {**c, "backbone": {**c["backbone"], "model_type": "nope"}}),
                       "model_type 'nope' is not a supported backbone"),
    "null-config": (lambda f: (f / "ser_config.json").write_text("null"), "ser_config.json has format None"),
    "null-head": (lambda f: _edit_config(f, lambda c: {**c, "head": None}), "'head' must be an object, not null"),
    "duplicated-labels": (lambda f: _edit_config(f, lambda c: {**c, "head": {**c["head"], "labels": ["sad"] * 8}}),
                          "two or more classes, each named once (sad repeated)"),
    "missing-config": (lambda f: (f / "ser_config.json").unlink(), "not a model directory"),
    "missing-weights": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_whisper_folder_is_one_line_and_status_2_never_scores(exported, tmp_path, capsys, damage):
    import shutil

    folder = shutil.copytree(exported["plain"], tmp_path / "model")
    edit, expected = DAMAGE[damage]
    edit(folder)
    clip = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(str(clip), (0.1 * np.sin(np.arange(8000) / 3)).astype(np.float32), 16000)
    assert main(["predict", str(clip), "--model", str(folder)]) == 2
    captured = capsys.readouterr()
    assert not captured.out and len(captured.err.splitlines()) == 1 and expected in captured.err


def _speech(rate, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


#: Audio a user may hand a Whisper folder: (samples (n,) or (n, channels), rate) and the expected outcome:
#: an exit status and a piece of the one error line (status 1: the file fails, others would still be scored).
AUDIO = {
    "nan": (lambda: (np.where(np.arange(16000) == 100, np.nan, _speech(16000)), 16000),
            (1, "contains NaN or infinite samples")),
    "inf": (lambda: (np.where(np.arange(16000) == 100, np.inf, _speech(16000)), 16000),
            (1, "contains NaN or infinite samples")),
    "1ms": (lambda: (_speech(16000, 0.001), 16000), (1, "shorter than one frame of the whisper backbone")),
    "25ms": (lambda: (_speech(16000, 0.025), 16000), (0, "")),
    "30ms": (lambda: (_speech(16000, 0.030), 16000), (0, "")),
    "8kHz": (lambda: (_speech(8000), 8000), (0, "")),
    "96kHz": (lambda: (_speech(96000), 96000), (0, "")),
    "6-channel": (lambda: (np.tile(_speech(16000)[:, None], (1, 6)), 16000), (0, "")),
    "x1000": (lambda: (1000 * _speech(16000), 16000), (0, "")),
}


@pytest.mark.parametrize("kind", AUDIO)
def test_odd_audio_through_a_whisper_folder_is_scored_as_the_loader_reads_it_or_is_one_line(exported, tmp_path,
                                                                                            capsys, kind):
    import soundfile as sf

    make, (status, message) = AUDIO[kind]
    samples, rate = make()
    path = tmp_path / f"{kind}.wav"
    sf.write(str(path), samples, rate, subtype="FLOAT")
    if status:
        assert main(["predict", str(path), "--model", str(exported["plain"])]) == status
        out, err = capsys.readouterr()
        assert not out and len(err.splitlines()) == 1 and err.startswith(f"error: {path}: ") and message in err
        return
    csv = tmp_path / "scores.csv"
    assert main(["predict", str(path), "--model", str(exported["plain"]), "--csv", str(csv)]) == 0
    captured = capsys.readouterr()
    recognizer = EmotionRecognizer.from_pretrained(exported["plain"])
    table = pd.read_csv(csv).query("row == 'aggregate'")
    scored = table[list(recognizer.labels)].to_numpy()[0]
    # what the one loader makes of the file (down-mixed, resampled to 16 kHz), scaled down to full scale
    wave = load_audio(path) if kind != "x1000" else _speech(16000) / np.abs(_speech(16000)).max()
    expected = recognizer.predict_wave(wave).probabilities
    np.testing.assert_allclose(scored, [expected[label] for label in recognizer.labels], rtol=0, atol=2e-6)
    if kind == "6-channel":  # six equal channels are the mono clip
        mono = recognizer.predict_wave(_speech(16000)).probabilities
        np.testing.assert_allclose(scored, [mono[label] for label in recognizer.labels], rtol=0, atol=2e-6)
    assert ("scaled down to peak 1.0" in captured.err) == (kind == "x1000")
