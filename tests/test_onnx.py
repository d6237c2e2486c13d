"""ONNX export (``export MODEL --onnx OUT``) and predict / evaluate on the exported folder without torch:
tiny random Whisper and wav2vec2 models here, the real Whisper-base weights on real RAVDESS clips once."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_utils.__main__ import main
from ser_utils.core.config import REPO_ROOT

from .conftest import RAVDESS_16K


def _frozen_folder(encoder, directory: Path, system: str, normalization: dict | None = None) -> Path:
    """A frozen-encoder folder with a random head whose scores are far from uniform (a real comparison)."""
    from ser_utils.models.frozen import FrozenEncoderModel
    from ser_utils.models.heads import FrozenHead, ModelConfig

    torch.manual_seed(1)
    layers, width = encoder.num_layers + 1, encoder.hidden_size
    head = FrozenHead(ModelConfig(layers="weighted", pooling="mean", normalize=encoder.normalize_input), layers,
                      width, 0.01 * torch.randn(layers, 3, width), 0.05 + 0.1 * torch.rand(layers, 3, width))
    return FrozenEncoderModel(encoder, head, system=system, normalization=normalization).save_pretrained(directory)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, model_dir):
    """Torch folders (tiny Whisper frozen, tiny wav2vec2 fine-tuned) and their exports, made by the command."""
    from ser_utils.backbones import build_backbone
    from ser_utils.backbones.checkpoints import tiny_whisper_config

    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    torch_folders = {"whisper": _frozen_folder(build_backbone(tiny_whisper_config()), root / "whisper", "tiny-frozen"),
                     "w2v2": model_dir}
    for name, folder in torch_folders.items():
        assert main(["export", str(folder), "--onnx", str(root / f"{name}-onnx")]) == 0
    return {name: (folder, root / f"{name}-onnx") for name, folder in torch_folders.items()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Speech-like clips of different lengths (0.5 to 9 s: the last is scored in two windows)."""
    from ser_utils.data.synthetic import synthesize_clip

    root = tmp_path_factory.mktemp("onnx-clips")
    paths = []
    for i, seconds in enumerate((0.5, 1.3, 2.1, 9.0)):
        wave = synthesize_clip("angry" if i % 2 else "sad", i + 1, seconds=seconds, sample_rate=16_000,
                               rng=np.random.default_rng(i))
        paths.append(root / f"clip{i}.wav")
        sf.write(paths[-1], 0.5 * wave / np.abs(wave).max(), 16_000, subtype="PCM_16")
    return paths


def _predict(capsys, model, paths, *extra):
    assert main(["predict", *map(str, paths), "--model", str(model), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _probabilities(results):
    return np.array([[*r["probabilities"].values()] for r in results])


def test_the_folder_holds_one_checked_graph_labels_rates_and_digests(folders):
    import hashlib

    import onnx

    _, exported = folders["whisper"]
    meta = json.loads((exported / "ser_config.json").read_text())
    assert meta["format"] == "ser_utils.OnnxModel/1" and meta["labels"][0] == "neutral" and len(meta["labels"]) == 8
    assert meta["sample_rate"] == 16_000 and meta["min_seconds"] == pytest.approx(0.025) and meta["max_seconds"] == 30
    assert meta["weights_sha256"] == hashlib.sha256((exported / "model.onnx").read_bytes()).hexdigest()
    graph = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert inputs == {"audio": ["batch", 80, "time"], "lengths": ["batch"]}  # dynamic batch and length


@pytest.mark.parametrize("name", ["whisper", "w2v2"])
def test_an_onnx_folder_scores_as_its_torch_folder_and_padding_changes_nothing(folders, clips, name, capsys,
                                                                                monkeypatch):
    monkeypatch.setenv("SER_PRECISION", "fp32")  # the graph is float32: compare with the float32 model
    torch_folder, exported = folders[name]
    expected, together = _predict(capsys, torch_folder, clips), _predict(capsys, exported, clips)
    assert [r["file"] for r in together] == [r["file"] for r in expected]
    assert np.abs(_probabilities(together) - _probabilities(expected)).max() < 1e-3
    assert np.ptp(_probabilities(expected), axis=1).max() > 0.01  # scores that a difference would show in
    assert len(together[-1]["windows"]) == 2
    alone = [_predict(capsys, exported, [path])[0] for path in clips]  # each clip in a batch of its own
    assert np.abs(_probabilities(alone) - _probabilities(together)).max() < 1e-5


def test_scoring_an_onnx_folder_imports_no_torch(folders, clips, tmp_path):
    _, exported = folders["whisper"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},angry\n" for p in clips))
    script = ("import sys\nfrom ser_utils.__main__ import main\n"
              f"assert main(['predict', {str(clips[0])!r}, '--windows', '--model', {str(exported)!r}]) == 0\n"
              f"assert main(['evaluate', '--manifest', {str(manifest)!r}, '--adapt', 'corpus', "
              f"'--model', {str(exported)!r}]) == 0\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'transformers')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    assert "accuracy:" in done.stdout and f"{clips[0]}\t0.000-0.500\t" in done.stdout


def test_adaptation_on_an_onnx_folder_is_the_torch_folders(folders, clips, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SER_PRECISION", "fp32")
    torch_folder, exported = folders["whisper"]
    expected = _predict(capsys, torch_folder, clips, "--adapt", "corpus")
    got = _predict(capsys, exported, clips, "--adapt", "corpus")
    assert np.abs(_probabilities(got) - _probabilities(expected)).max() < 1e-3
    assert np.abs(_probabilities(got) - _probabilities(_predict(capsys, exported, clips))).max() > 1e-3
    # a fine-tuned network has nothing to adapt, exported or not: the same one line, status 2
    assert main(["predict", str(clips[0]), "--model", str(folders["w2v2"][1]), "--adapt", "corpus"]) == 2
    assert "has none to standardise" in capsys.readouterr().err


def test_a_damaged_onnx_folder_or_a_baseline_is_one_line_and_status_2(folders, clips, tmp_path, capsys):
    import shutil

    _, exported = folders["w2v2"]
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    data = bytearray((damaged / "model.onnx").read_bytes())
    data[-100] ^= 1
    (damaged / "model.onnx").write_bytes(bytes(data))
    assert main(["predict", str(clips[0]), "--model", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {damaged}: not a usable ONNX model folder (model.onnx does not match the "
                                "SHA-256 that ser_config.json records: the file changed or was damaged after it "
                                "was written)"]
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "config.json").write_text("{}")
    (baseline / "pipeline.skops").write_bytes(b"")
    assert main(["export", str(baseline), "--onnx", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "nothing to export" in err[0] and not (tmp_path / "out").exists()
    assert main(["export", str(folders["w2v2"][0]), "--onnx", str(folders["w2v2"][0])]) == 2
    assert "choose a new folder name" in capsys.readouterr().err


def test_the_real_whisper_base_export_scores_real_clips_as_the_torch_folder(tmp_path, capsys, monkeypatch):
    """The one export of real weights (about half a minute): Whisper-base, frozen, on real RAVDESS clips."""
    if not RAVDESS_16K.is_dir():
        pytest.skip(f"real data not found at {RAVDESS_16K}")
    from ser_utils.backbones import load_backbone

    monkeypatch.setenv("SER_PRECISION", "fp32")
    encoder, _ = load_backbone("whisper-base")
    folder = _frozen_folder(encoder, tmp_path / "whisper-base", "whisper-base-frozen")
    del encoder
    assert main(["export", str(folder), "--onnx", str(tmp_path / "onnx")]) == 0
    capsys.readouterr()
    real = sorted(RAVDESS_16K.glob("Actor_01/*.flac"))[:2] + sorted(RAVDESS_16K.glob("Actor_24/*.flac"))[-1:]
    expected, got = _predict(capsys, folder, real), _predict(capsys, tmp_path / "onnx", real)
    assert np.abs(_probabilities(got) - _probabilities(expected)).max() < 1e-3
    assert np.ptp(_probabilities(expected), axis=1).max() > 0.01
