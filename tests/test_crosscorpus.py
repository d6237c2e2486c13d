"""Prediction-time adaptation and the cross-corpus protocol, through the real command line on a
generated second corpus (other voices, gain and sample rate, 6 of the 8 classes)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from ser_utils.__main__ import main
from ser_utils.backbones.checkpoints import tiny_backbone_config
from ser_utils.data.synthetic import make_shifted_corpus
from ser_utils.features import LibrosaFeatures, extract_corpus
from ser_utils.features.normalization import GroupError
from ser_utils.models.baseline import BaselineModel
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import ModelConfig
from ser_utils.study.crosscorpus import cross_corpus_table, speaker_groups
from ser_utils.study.normalized_systems import fit_speaker_model


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ser_utils", *map(str, args)], capture_output=True, text=True)


def run_main(capsys, *args):
    """The command line in this process (no interpreter start-up): for the error paths."""
    code = main(list(map(str, args)))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.fixture(scope="module")
def models(synthetic_meta, tmp_path_factory):
    """A plain and a speaker-normalized mfcc-set + logreg model on 8 actors x 15 generated clips."""
    meta = synthetic_meta[(synthetic_meta["statement"] == 1) & (synthetic_meta["repetition"] == 1)
                          & (synthetic_meta["actor"] <= 8)]
    table = extract_corpus(meta, LibrosaFeatures(), tmp_path_factory.mktemp("cache"), n_jobs=1, progress=False)
    root = tmp_path_factory.mktemp("models")
    BaselineModel.fit(table, "logreg", {"C": 0.1}).save_pretrained(root / "baseline")
    fit_speaker_model(table, "logreg", {"C": 0.1}, "shrunk", 10,
                      system="mfcc-set+logreg+spknorm-k10").save_pretrained(root / "baseline-spknorm")
    return root


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """3 speakers x 6 emotions x 3 clips of 0.6 s at 22.05 kHz, 8 dB quieter."""
    return make_shifted_corpus(tmp_path_factory.mktemp("shifted"), speakers=range(31, 34), clips_per_emotion=3,
                               seconds=0.6)


def test_the_shifted_corpus_differs_in_voices_gain_rate_and_classes(shifted):
    import soundfile as sf

    table = pd.read_csv(shifted)
    assert list(table.columns) == ["path", "label", "speaker"] and table["speaker"].nunique() == 3
    assert table["label"].nunique() == 6 and len(table) == 54
    assert sf.info(str(shifted.parent / table["path"][0])).samplerate == 22_050


def test_saved_models_record_their_normalization(models):
    plain = json.loads((models / "baseline" / "config.json").read_text())
    normed = json.loads((models / "baseline-spknorm" / "config.json").read_text())
    assert plain["normalization"] == {"kind": "none"}
    assert normed["normalization"]["kind"] == "speaker" and normed["normalization"]["variance"] == "shrunk"
    assert normed["normalization"]["clips_per_speaker"] == 10 and len(normed["normalization"]["prior_var"]) == 428
    assert BaselineModel.from_pretrained(models / "baseline-spknorm").normalization == normed["normalization"]


def test_every_adaptation_and_both_label_modes(models, shifted):
    table = cross_corpus_table({"baseline": models / "baseline"}, [shifted])
    assert len(table) == 6 and (table["status"] == "ok").all() and table["uar"].between(0, 1).all()
    assert (table["n"] == 54).all() and (table["classes"] == 6).all()
    by = table.set_index(["adapt", "labels"])
    for adapt in ("none", "corpus", "speaker"):
        # the true class is among the manifest's: every clip right over all classes stays right
        assert by.loc[(adapt, "manifest"), "accuracy"] >= by.loc[(adapt, "model"), "accuracy"]
    assert by.xs("manifest", level="labels")["accuracy"].nunique() > 1  # adapting changes decisions


@pytest.mark.slow
def test_evaluate_command_with_manifest_labels_and_speaker_adaptation(models, shifted, tmp_path):
    out = tmp_path / "scores.json"
    done = cli("evaluate", "--model", models / "baseline", "--manifest", shifted, "--adapt", "speaker",
               "--labels", "manifest", "--json", out)
    assert done.returncode == 0, done.stderr
    scores = json.loads(out.read_text())
    assert {"accuracy", "uar", "macro_f1", "confusion", "settings"} <= set(scores)
    assert scores["settings"]["adapt"] == "speaker" and scores["settings"]["labels"] == "manifest"
    assert scores["n"] == 54 and len(scores["classes"]) == 6
    assert all(row["other"] == 0 for row in scores["confusion"].values())  # absent classes are never chosen


def test_a_speaker_normalized_model_needs_a_group(models, shifted, capsys):
    done = run_main(capsys, "evaluate", "--model", models / "baseline-spknorm", "--manifest", shifted)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: --adapt: ") and "needs groups of clips: by speaker, or the whole corpus" \
        in done.stderr
    table = cross_corpus_table({"spk": models / "baseline-spknorm"}, [shifted], label_modes=("manifest",))
    assert list(table["status"]) == ["not run", "ok", "ok"] and "needs groups of clips" in table["note"][0]
    assert "--" not in table["note"][0]  # the library's words: no command-line option in a report


def test_too_small_groups_and_missing_speakers_are_one_line(models, shifted, tmp_path, capsys):
    table = pd.read_csv(shifted)
    few = table.groupby("speaker").head(2)  # 2 clips per speaker: too few for speaker statistics
    few.assign(path=[str(shifted.parent / p) for p in few["path"]]).to_csv(tmp_path / "few.csv", index=False)
    done = run_main(capsys, "evaluate", "--model", models / "baseline", "--manifest", tmp_path / "few.csv",
                    "--adapt", "speaker")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "has 2 clip(s)" in done.stderr and "the whole corpus as one group" in done.stderr
    table[["path", "label"]].assign(path=[str(shifted.parent / p) for p in table["path"]]).to_csv(
        tmp_path / "nospk.csv", index=False)
    done = run_main(capsys, "evaluate", "--model", models / "baseline", "--manifest", tmp_path / "nospk.csv",
                    "--adapt", "speaker")
    assert done.returncode == 2 and "speaker column" in done.stderr


@pytest.mark.slow
def test_predict_groups_files_by_a_speaker_pattern(models, shifted, capsys):
    folder = shifted.parent
    done = cli("predict", folder, "--model", models / "baseline-spknorm", "--adapt", "speaker",
               "--speaker-pattern", r"spk(\d+)", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 54
    for args, message in ((("--adapt", "speaker"), "--speaker-pattern"),
                          (("--adapt", "speaker", "--speaker-pattern", "Actor_(\\d+)"), "finds no speaker"),
                          ((), "error: --adapt: ")):
        done = run_main(capsys, "predict", folder, "--model", models / "baseline-spknorm", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_speaker_groups_from_paths():
    paths = ["a/spk1/x.wav", "a/spk2/y.wav", "b/spk1/z.wav"]
    assert speaker_groups(paths, "speaker", r"spk\d") == ["spk1", "spk2", "spk1"]
    assert speaker_groups(paths, "speaker", r"/spk(\d)/") == ["1", "2", "1"]
    assert speaker_groups(paths, "corpus") == ["corpus"] * 3 and speaker_groups(paths, "none") is None
    with pytest.raises(GroupError, match="not a regular expression"):
        speaker_groups(paths, "speaker", "spk(")


def test_a_wav2vec2_checkpoint_is_not_adapted(tmp_path, shifted):
    torch.manual_seed(0)
    EmotionClassifier.from_config(tiny_backbone_config(), ModelConfig()).save_pretrained(tmp_path / "w2v2")
    few = pd.read_csv(shifted).head(4)
    few.assign(path=[str(shifted.parent / p) for p in few["path"]]).to_csv(tmp_path / "few.csv", index=False)
    table = cross_corpus_table({"w2v2": tmp_path / "w2v2"}, [tmp_path / "few.csv"], adaptations=("none", "corpus"),
                               label_modes=("manifest",))
    assert "wav2vec2" in table["note"][1]
    assert list(table["status"]) == ["ok", "not run"] and np.isnan(table["uar"][1])


def test_a_bad_clip_in_a_group_is_reported_and_the_group_still_scored(models, shifted, tmp_path):
    import soundfile as sf

    from ser_utils.serving.predict import EmotionRecognizer

    sf.write(str(tmp_path / "short.wav"), 0.1 * np.sin(np.arange(1600) / 3), 16000)  # 0.1 s: too short
    paths = [shifted.parent / p for p in pd.read_csv(shifted)["path"][:4]] + [tmp_path / "short.wav"]
    recognizer = EmotionRecognizer.from_pretrained(models / "baseline-spknorm")
    predictions, failures = recognizer.predict_files(paths, groups=["corpus"] * 5)
    assert len(predictions) == 4 and list(failures) == [str(tmp_path / "short.wav")]
    with pytest.raises(GroupError, match="has 1 clip"):  # the short clip is left out of its group
        recognizer.predict_files(paths[3:], groups=["corpus"] * 2)
