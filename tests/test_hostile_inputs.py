"""Issue 32's last hostile inputs, through the command line: out-of-range numbers in model folders, labels
with control characters, configs nested too deeply, damaged results tables, manifest cells no file can have,
and a Ctrl-C that lands once predict's outputs are written. Each is one line and the stated status."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from ser_utils.__main__ import main
from ser_utils.core.config import REPO_ROOT
from ser_utils.data.corpus import EMOTIONS
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.features import make_extractor
from ser_utils.models.baseline import BaselineModel
from ser_utils.models.classifiers import make_classifier
from ser_utils.models.frozen import FrozenEncoderModel
from ser_utils.models.heads import FrozenHead, ModelConfig

RESULTS = REPO_ROOT / "reports" / "results"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An MFCC-set + logreg baseline folder (pipeline fitted on random features), a frozen tiny-Whisper folder
    and two 1 s clips."""
    from ser_utils.backbones import load_backbone
    from ser_utils.backbones.checkpoints import make_tiny_whisper

    root = tmp_path_factory.mktemp("hostile")
    extractor = make_extractor("mfcc-set")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, extractor.n_features)), np.array(EMOTIONS * 10)
    BaselineModel(extractor, make_classifier("logreg", None, probability=True).fit(X, y),
                  classifier="logreg").save_pretrained(root / "baseline")
    torch.manual_seed(0)
    encoder, _ = load_backbone(str(make_tiny_whisper(root / "tiny-whisper")))
    states, width = encoder.num_layers + 1, encoder.hidden_size
    head = FrozenHead(ModelConfig(normalize=False), states, width, torch.zeros(states, 3, width),
                      torch.ones(states, 3, width))
    FrozenEncoderModel(encoder, head, system="tiny").save_pretrained(root / "whisper")
    for emotion in ("sad", "angry"):
        sf.write(str(root / f"{emotion}.wav"), synthesize_clip(emotion, 3, seconds=1.0, rng=rng), 16000)
    return root


def run(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


def edited(source, target, name, change):
    """A copy of model folder ``source`` at ``target`` whose config ``name`` was changed by ``change(config)``."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    config = json.loads((target / name).read_text())
    change(config)
    (target / name).write_text(json.dumps(config))
    return target


def _set(section, **values):
    def change(config):
        (config[section] if section else config).update(values)
    return change


# -- defect 4 and the rest of 10: every number a model folder sets, in range, before any audio -----------

BASELINE_CASES = [
    (_set(None, sample_rate=1e9), "sample_rate is 1e+09, not a whole number from 1000 to 384000"),
    (_set("feature_config", n_fft=1_000_000_000), "feature_config.n_fft is 1000000000, not a whole number from 16"),
    (_set("feature_config", min_seconds=-1), "feature_config.min_seconds is -1, not a number from 0.001 to 60"),
    (_set(None, labels=[f"class{i}" for i in range(10_000)]), "labels: 10000 classes; a model has 2 to 100"),
    (_set(None, labels=["neutral", "ca\nlm", *EMOTIONS[2:]]), "labels: 'ca\\nlm' holds the control character"),
]


@pytest.mark.parametrize("change, message", BASELINE_CASES)
def test_a_baseline_folders_out_of_range_number_or_label_is_one_line_exit_2(capsys, folders, tmp_path, change,
                                                                              message):
    model = edited(folders / "baseline", tmp_path / "model", "config.json", change)
    # the missing file's line would show that files were being read
    status, out, err = run(capsys, "predict", folders / "sad.wav", tmp_path / "missing.wav", "--model", model)
    assert status == 2 and not out and len(err) == 1, err
    assert err[0].startswith(f"error: not a usable baseline model: {model / 'config.json'}: ") and message in err[0]
    assert len(err[0]) < 300


WHISPER_CASES = [
    (_set("head", sample_rate=1e12), "head.sample_rate is 1e+12; the encoder takes 16000 Hz"),
    (_set("head", sample_rate=0), "head.sample_rate is 0; the encoder takes 16000 Hz"),
    (_set("backbone", encoder_layers=1e30), "backbone.encoder_layers is 1e+30, not a whole number from 1 to 128"),
    (_set("backbone", d_model=0), "backbone.d_model is 0, not a whole number from 1 to 8192"),
    (_set(None, width=10**9), "width is 1000000000, not a whole number from 1 to 8192"),
    (_set("head", head_hidden=10**9), "head.head_hidden is 1000000000, not a whole number from 0 to 65536"),
    # each size in range, together far more than the file holds: refused before anything is built
    (_set("backbone", encoder_layers=100, d_model=8000, encoder_ffn_dim=30000),
     "model.safetensors does not fit ser_config.json: the backbone's sizes describe at least"),
    (_set("head", labels=[f"c{i}" for i in range(10_000)]), "head.labels: 10000 classes; a model has 2 to 100"),
    (_set("head", labels=["neu\ttral", *EMOTIONS[1:]]), "head.labels: 'neu\\ttral' holds the control character"),
]


@pytest.mark.parametrize("change, message", WHISPER_CASES)
def test_a_whisper_folders_out_of_range_number_or_label_is_one_line_exit_2(capsys, folders, tmp_path, change,
                                                                             message):
    model = edited(folders / "whisper", tmp_path / "model", "ser_config.json", change)
    status, out, err = run(capsys, "predict", folders / "sad.wav", tmp_path / "missing.wav", "--model", model)
    assert status == 2 and not out and len(err) == 1, err
    assert err[0].startswith(f"error: {model}: not a usable frozen-encoder model (ser_config.json: ") or \
        err[0].startswith(f"error: {model}: not a usable frozen-encoder model (model.safetensors")
    assert message in err[0] and len(err[0]) < 300


def test_labels_with_control_characters_are_refused_when_a_folder_is_written(folders, tmp_path):
    pipeline = make_classifier("logreg", None, probability=True).fit(np.eye(3), ["a", "b\nc", "d"])
    with pytest.raises(ValueError, match="holds the control character"):
        BaselineModel(make_extractor("egemaps"), pipeline, labels=["a", "b\nc", "d"])
    model = FrozenEncoderModel.from_pretrained(folders / "whisper", device="cpu")
    states, width = model.encoder.num_layers + 1, model.encoder.hidden_size
    odd = FrozenHead(ModelConfig(normalize=False, labels=("calm", "sad\r")), states, width,
                     torch.zeros(states, 3, width), torch.ones(states, 3, width))
    with pytest.raises(ValueError, match="holds the control character"):
        FrozenEncoderModel(model.encoder, odd, system="odd").save_pretrained(tmp_path / "odd")
    assert not (tmp_path / "odd").exists()


# -- defect 7: a config nested 100,000 deep; --model given a file ---------------------------------------

def test_a_config_nested_100000_deep_and_a_file_for_model_are_one_line_exit_2(capsys, folders, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    for source, name, start in (("whisper", "ser_config.json", "unreadable ser_config.json"),
                                ("baseline", "config.json", "config.json: nested too deeply")):
        model = tmp_path / source
        shutil.copytree(folders / source, model)
        (model / name).write_text(deep)
        status, out, err = run(capsys, "predict", folders / "sad.wav", "--model", model)
        assert status == 2 and not out and len(err) == 1 and start in err[0] and "nested too deeply" in err[0], err
    status, out, err = run(capsys, "predict", folders / "sad.wav", "--model", folders / "sad.wav")
    assert status == 2 and not out
    assert err == [f"error: {folders / 'sad.wav'}: a file, not a model directory (give the folder that holds "
                   "ser_config.json, or config.json + pipeline.skops)"]


# -- defects 6 and 9: manifest cells no file can have are bad rows like any other ------------------------

def test_a_nul_byte_or_a_huge_path_cell_is_a_bad_row_and_the_others_are_scored(capsys, folders, tmp_path):
    sad, angry = folders / "sad.wav", folders / "angry.wav"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{sad},sad\nbad\0name.wav,sad\n{'x' * 131_073},angry\n{'y' * 300}.wav,sad\n"
                        f"{angry},angry\n")
    status, out, err = run(capsys, "evaluate", "--model", folders / "baseline", "--manifest", manifest)
    assert status == 1 and "clips: 2" in out
    assert err == [f"error: {manifest} line 3: a NUL byte in the path cell (no file name holds one), row left out",
                   f"error: {manifest} line 4: path cell of 131,073 bytes, longer than any file path (4,096), "
                   "row left out",
                   f"error: {manifest} line 5: a name of 304 bytes in the path cell, longer than any file name "
                   "(255), row left out"]


# -- defect 5: compare-results on damaged results tables ------------------------------------------------

def _damaged(text):
    lines = text.splitlines(keepends=True)
    return {"wrong columns": (text.replace("status", "state", 1), "no column(s) status"),
            "text nan": (text.replace(lines[1].split(",")[6], "nan", 1), "accuracy_mean of egemaps+logreg "
                         "(actor-kfold) is 'nan', not a number"),
            "cut mid-line": (text[:len(text) // 2].rstrip("\n") + "0", "ends inside a line: the file was cut short"),
            "cut to a short row": ("".join(lines[:5]) + "egemaps+x,baseline,actor-kfold\n",
                                   "line 6: 3 cells where the header has 18"),
            "empty": ("", "empty file"),
            "binary": ("\0\1\2" * 50, "not a CSV text file"),
            "header only": (lines[0], "the header only, no results")}


def test_damaged_comparison_tables_are_one_line_naming_the_file_exit_2(capsys, tmp_path):
    if not (RESULTS / "comparison.csv").is_file():
        pytest.skip("no committed results in reports/results")
    good = tmp_path / "good"
    shutil.copytree(RESULTS, good)
    for case, (text, message) in _damaged((RESULTS / "comparison.csv").read_text()).items():
        bad = tmp_path / case.replace(" ", "-")
        shutil.copytree(RESULTS, bad)
        (bad / "comparison.csv").write_text(text)
        status, out, err = run(capsys, "compare-results", good, bad, "--metric", "accuracy")
        assert status == 2 and not out and len(err) == 1, (case, err)
        assert err[0].startswith(f"error: {bad / 'comparison.csv'}") and message in err[0], (case, err)
    assert run(capsys, "compare-results", good, good, "--metric", "accuracy")[0] == 0


# -- the rest of 10: a Ctrl-C once predict's outputs are written -----------------------------------------

def _stopped_after_output(args):
    """Start ``python -m ser_utils ARGS`` and stop it (SIGSTOP) the moment its last stdout line arrives, while it
    is still writing or exiting; ``None`` when it had already exited."""
    process = subprocess.Popen([sys.executable, "-m", "ser_utils", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    text, line = "", None
    while line not in ("]\n", ""):  # --json -: the list's closing line is the run's last output
        line = process.stdout.readline()
        text += line
    try:
        os.kill(process.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    if process.poll() is not None:
        process.communicate()
        return None
    return process, text


@pytest.mark.slow
def test_a_ctrl_c_once_predicts_outputs_are_written_lets_it_finish_with_its_status(folders, tmp_path):
    csv = tmp_path / "scores.csv"
    for _ in range(5):  # the stop can come after the exit on a fast machine: then try again
        started = _stopped_after_output(["predict", folders / "sad.wav", folders / "angry.wav", "--model",
                                         folders / "baseline", "--csv", csv, "--json"])
        if started:
            break
    else:
        pytest.skip("the process always exited before it could be stopped")
    process, text = started
    os.kill(process.pid, signal.SIGINT)
    time.sleep(0.1)
    os.kill(process.pid, signal.SIGCONT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err  # was 130 with no line, though every output was complete
    assert len(json.loads(text + out)) == 2 and not err.strip()
    assert len(pd.read_csv(csv)) == 4  # a window and an aggregate row per file
