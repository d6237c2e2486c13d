"""Backbone checkpoints as the hub lays them out, each family through its own class, loaded strictly."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ser_utils.__main__ import main
from ser_utils.backbones import (
    FAMILIES,
    GROUP_NORM_PADDING,
    LAYER_NORM_PADDING,
    BackboneError,
    hub_reachable,
    load_backbone,
    modern_name,
)
from ser_utils.backbones.checkpoints import CHECKPOINT_LAYOUTS, HUB_FLAGS, TINY_SIZES, make_tiny_checkpoint
from ser_utils.core.config import REPO_ROOT
from ser_utils.data.audio import collate
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import ORIGINAL_RECIPE, ModelConfig

HUB_CONFIG = REPO_ROOT.parent / "shared" / "fixtures" / "hub-configs" / "facebook-wav2vec2-base" / "config.json"
#: layout -> (transformers class of the backbone, padding strategy, key prefix in the saved file)
EXPECTED = {
    "wav2vec2-pretraining": ("Wav2Vec2Model", GROUP_NORM_PADDING, "wav2vec2."),
    "wav2vec2-layernorm-ctc": ("Wav2Vec2Model", LAYER_NORM_PADDING, "wav2vec2."),
    "hubert-ctc": ("HubertModel", GROUP_NORM_PADDING, "hubert."),
    "wavlm": ("WavLMModel", GROUP_NORM_PADDING, ""),
    "data2vec-audio-ctc": ("Data2VecAudioModel", LAYER_NORM_PADDING, "data2vec_audio."),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Every layout, tiny and random, written once for the module."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {layout: make_tiny_checkpoint(root / layout, layout, seed=i)
            for i, layout in enumerate(CHECKPOINT_LAYOUTS)}


def saved_backbone(directory, filename, prefix):
    """The backbone tensors of a checkpoint file, read directly (not through the project's loader)."""
    path = directory / filename
    state = load_file(str(path)) if filename.endswith(".safetensors") else torch.load(path, weights_only=True)
    return {modern_name(k[len(prefix):]): v for k, v in state.items() if k.startswith(prefix)}, state


def clips(*lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for n in lengths]


def test_tiny_checkpoints_carry_the_hub_configs_flags():
    if not HUB_CONFIG.is_file():
        pytest.skip(f"{HUB_CONFIG} not found")
    real = json.loads(HUB_CONFIG.read_text())
    assert {k: real[k] for k in HUB_FLAGS} == {k: list(v) if isinstance(v, list) else v
                                                for k, v in HUB_FLAGS.items()}
    assert set(TINY_SIZES) <= set(real)  # only sizes differ


@pytest.mark.parametrize("formats", [("safetensors",), ("bin",), ("safetensors", "bin")])
def test_a_hub_layout_checkpoint_loads_tensor_by_tensor(tmp_path, formats, capfd):
    directory = make_tiny_checkpoint(tmp_path / "w2v2", "wav2vec2-pretraining", formats=formats)
    filename = "model.safetensors" if "safetensors" in formats else "pytorch_model.bin"
    saved, raw = saved_backbone(directory, filename, "wav2vec2.")
    # The fixture is laid out as facebook/wav2vec2-base is on the hub.
    assert {"quantizer.codevectors", "project_q.weight", "project_hid.weight"} <= set(raw)
    legacy = {"wav2vec2.encoder.pos_conv_embed.conv.weight_g", "wav2vec2.encoder.pos_conv_embed.conv.weight_v"}
    assert legacy <= set(raw)
    assert json.loads((directory / "config.json").read_text())["gradient_checkpointing"] is True
    capfd.readouterr()

    model = EmotionClassifier.from_backbone(str(directory), ORIGINAL_RECIPE)
    loaded = model.backbone.model.state_dict()
    assert set(loaded) == set(saved)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    assert "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in saved  # weight_g, renamed
    out, err = capfd.readouterr()
    assert "quantizer" not in out + err and "project_q" not in out + err  # no load-report table


def test_a_missing_or_misshapen_backbone_tensor_is_a_one_line_error(tmp_path):
    directory = make_tiny_checkpoint(tmp_path / "w2v2", "wav2vec2-pretraining", formats=("safetensors",))
    state = load_file(str(directory / "model.safetensors"))
    missing = dict(state)
    del missing["wav2vec2.encoder.layers.1.attention.k_proj.weight"]
    save_file(missing, str(directory / "model.safetensors"))
    with pytest.raises(BackboneError, match=r"only 50 of 51 .* encoder\.layers\.1\.attention\.k_proj\.weight") as err:
        EmotionClassifier.from_backbone(str(directory))
    assert "\n" not in str(err.value)

    misshapen = dict(state)
    misshapen["wav2vec2.feature_projection.projection.weight"] = torch.zeros(16, 32)
    save_file(misshapen, str(directory / "model.safetensors"))
    with pytest.raises(BackboneError, match=r"wrong shape: feature_projection\.projection\.weight \(16, 32\)"):
        load_backbone(str(directory))


@pytest.mark.parametrize("layout", list(CHECKPOINT_LAYOUTS))
def test_each_family_loads_through_its_own_class_with_every_tensor(checkpoints, layout):
    class_name, padding, prefix = EXPECTED[layout]
    directory = checkpoints[layout]
    backbone, report = load_backbone(str(directory))
    assert type(backbone.model).__name__ == class_name
    assert report.padding == padding and report.complete
    assert report.tensors_loaded == report.tensors_expected == len(backbone.model.state_dict())
    saved, _ = saved_backbone(directory, "model.safetensors", prefix)
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    if layout == "wavlm":  # the relative position bias, WavLM's own
        assert "encoder.layers.0.attention.rel_attn_embed.weight" in saved


@pytest.mark.parametrize("layout", list(CHECKPOINT_LAYOUTS))
def test_each_family_is_padding_invariant_and_round_trips(checkpoints, layout, tmp_path):
    model = EmotionClassifier.from_backbone(str(checkpoints[layout]), ModelConfig(pooling="mean")).eval()
    short, long_ = clips(3000, 7000)
    with torch.no_grad():
        alone = model(*collate([short]))
        padded = model(*collate([short, long_]))
    assert torch.isfinite(padded).all()
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    model.save_pretrained(tmp_path / "ser")
    again = EmotionClassifier.from_pretrained(tmp_path / "ser")
    assert type(again.backbone) is type(model.backbone)
    waves = clips(3000, 5000)
    assert np.array_equal(model.predict_proba(waves, precision=None), again.predict_proba(waves, precision=None))


def test_last_is_the_final_hidden_state_after_the_layer_norm_variants_final_norm(checkpoints):
    model = EmotionClassifier.from_backbone(str(checkpoints["wav2vec2-layernorm-ctc"]), ORIGINAL_RECIPE).eval()
    waves, lengths = collate(clips(6000))
    with torch.no_grad():
        out = model.backbone.model(waves, output_hidden_states=True)
        states, _ = model.hidden_states(waves, lengths)
    assert not torch.allclose(out.hidden_states[-1], out.last_hidden_state, atol=1e-3)  # before the norm
    assert torch.allclose(states[:, -1], out.last_hidden_state, atol=1e-6)
    assert torch.allclose(model(waves, lengths), model.head(out.last_hidden_state[:, 0]), atol=1e-5)


def test_an_unsupported_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(BackboneError, match="'bert' is not a supported backbone; supported: " + ", ".join(FAMILIES)):
        load_backbone(str(tmp_path))


def test_gradient_checkpointing_from_a_hub_config_gives_the_same_gradients(checkpoints):
    # The hub's flags (gradient_checkpointing, layerdrop 0.05, mask_time_prob 0.05), a padded batch and
    # everything trained: the masked group norm must not break (or change) the recomputation.
    directory = str(checkpoints["wav2vec2-pretraining"])
    waves, lengths = collate(clips(4000, 6500, 5200, seed=3))
    labels = torch.tensor([1, 4, 6])
    gradients = []
    for checkpointing in (True, False):
        torch.manual_seed(0)
        model = EmotionClassifier.from_backbone(directory, ORIGINAL_RECIPE).train()
        assert model.backbone.model.encoder.layers[0].gradient_checkpointing  # from the hub's config
        if not checkpointing:
            model.backbone.model.activation_checkpointing_disable()
        assert model.backbone.model.encoder.layers[0].gradient_checkpointing is checkpointing
        torch.manual_seed(1)
        np.random.seed(1)  # noqa: NPY002 - transformers draws SpecAugment's time masks from it
        loss = torch.nn.functional.cross_entropy(model(waves, lengths), labels)
        loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    with_checkpoints, without = gradients
    assert set(with_checkpoints) == set(without)
    assert "backbone.model.feature_extractor.conv_layers.0.conv.weight" in without  # the feature encoder trains
    for name, grad in without.items():
        assert torch.allclose(with_checkpoints[name], grad, atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("layout", ["wav2vec2-pretraining", "hubert-ctc", "wavlm", "wav2vec2-layernorm-ctc"])
def test_the_backbone_command_reports_every_tensor_loaded(checkpoints, layout, capsys):
    assert main(["backbone", str(checkpoints[layout]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == FAMILIES[layout.split("-")[0]].model_type
    assert report["padding"] == EXPECTED[layout][1]
    assert (report["layers"], report["hidden_size"]) == (2, 32) and report["parameters"] > 0
    assert report["tensors_loaded"] == report["tensors_expected"] > 0
    assert main(["backbone", str(checkpoints[layout])]) == 0
    assert f"{report['tensors_loaded']}/{report['tensors_expected']} backbone tensors loaded" in capsys.readouterr().out


def test_the_backbone_command_fails_with_one_line(tmp_path, checkpoints, capsys):
    directory = make_tiny_checkpoint(tmp_path / "w2v2", "hubert-ctc")
    state = load_file(str(directory / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "encoder.layers.0." not in k}, str(directory / "model.safetensors"))
    capsys.readouterr()
    for target in (directory, tmp_path / "nothing-here", tmp_path):
        assert main(["backbone", str(target)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    for weights in ("model.safetensors", "pytorch_model.bin"):  # not weights at all
        (tmp_path / "garbage").mkdir(exist_ok=True)
        shutil.copy(directory / "config.json", tmp_path / "garbage")
        (tmp_path / "garbage" / weights).write_bytes(b"garbage")
        assert main(["backbone", str(tmp_path / "garbage")]) == 2
        assert "unreadable weights" in capsys.readouterr().err
        (tmp_path / "garbage" / weights).unlink()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "speech_to_text"}))
    assert main(["backbone", str(tmp_path), "--json"]) == 2
    assert "supported: wav2vec2, hubert, wavlm, data2vec-audio, whisper" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("[1, 2, 3]", "a config is a JSON object with model_type, not an array"),
    ("null", "a config is a JSON object with model_type, not null"),
    ('{"model_type": 5}', "model_type 5 is not a supported backbone"),
    ("{broken", "unreadable config"),
])
def test_a_config_that_is_not_a_backbones_is_one_line_exit_2(tmp_path, capsys, content, message):
    (tmp_path / "config.json").write_text(content)
    assert main(["backbone", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: {tmp_path / 'config.json'}: ") and message in captured.err


def test_finetune_runs_the_same_check_first_and_stops(tmp_path, capsys):
    directory = make_tiny_checkpoint(tmp_path / "hubert", "hubert-ctc")
    state = load_file(str(directory / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "feature_projection" not in k}, str(directory / "model.safetensors"))
    capsys.readouterr()
    assert main(["finetune", "--profile", "full", "--backbone", str(directory),
                 "--data", str(tmp_path / "no-corpus-needed")]) == 2
    assert main(["backbone", str(directory)]) == 2
    finetune_err, check_err = capsys.readouterr().err.splitlines()
    assert finetune_err == check_err and "feature_projection.layer_norm.bias" in check_err


def test_an_unreachable_hub_is_noticed_at_once(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert not hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    assert not hub_reachable()


def test_offline_a_hub_name_loads_from_the_local_hub_cache(tmp_path, monkeypatch, capsys):
    # The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<revision>/...}.
    repo = tmp_path / "hub" / "models--someone--tiny-w2v2"
    revision = "0" * 40
    make_tiny_checkpoint(repo / "snapshots" / revision, "wav2vec2-pretraining", formats=("safetensors",))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    assert main(["backbone", "someone/tiny-w2v2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensors_loaded"] == report["tensors_expected"] > 0
