"""wav2vec2 classifier tests on a tiny randomly initialised backbone (and one full-size architecture)."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from ser_utils.backbones import MaskedGroupNorm
from ser_utils.backbones.checkpoints import make_tiny_wav2vec2, tiny_backbone_config
from ser_utils.data.audio import collate
from ser_utils.models.classifier import FORMAT, EmotionClassifier
from ser_utils.models.heads import LAYER_MODES, ORIGINAL_RECIPE, POOLINGS, ModelConfig


def tiny(config: ModelConfig | None = None, seed: int = 0) -> EmotionClassifier:
    torch.manual_seed(seed)
    model = EmotionClassifier.from_config(tiny_backbone_config(), config or ModelConfig()).eval()
    if model.layer_weights is not None:  # zeros would hide a wrong layer weighting
        nn.init.normal_(model.layer_weights)
    return model


def clips(*lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("layers", [mode for mode in LAYER_MODES if mode != "all"])  # "all" is frozen-only
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_does_not_change_a_clips_output(pooling, layers):
    model = tiny(ModelConfig(pooling=pooling, layers=layers))
    short, long_ = clips(3000, 7000)
    with torch.no_grad():
        alone_states, alone_mask = model.hidden_states(*collate([short]))
        alone = model(*collate([short]))
        batch, lengths = collate([short, long_])
        states, mask = model.hidden_states(batch, lengths)
        padded = model(batch, lengths)
        pooled_alone = model.pool(model.combine_layers(alone_states), alone_mask)
        pooled_padded = model.pool(model.combine_layers(states), mask)
    assert torch.allclose(pooled_alone[0], pooled_padded[0], atol=1e-5)
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_without_masking_padding_would_change_the_output():
    # The plain Hugging Face call (zero padding, no mask) is what the masking above protects against.
    torch.manual_seed(0)
    backbone = Wav2Vec2Model(tiny_backbone_config()).eval()
    short, long_ = clips(3000, 7000)
    with torch.no_grad():
        alone = backbone(torch.from_numpy(short)[None]).last_hidden_state[0].mean(0)
        batch, _ = collate([short, long_])
        padded = backbone(batch).last_hidden_state[0, :alone.shape[0]].mean(0)
    assert not torch.allclose(alone, padded, atol=1e-3)


def test_masked_group_norm_equals_group_norm_without_padding():
    norm = nn.GroupNorm(6, 6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 50)
    masked = MaskedGroupNorm(norm)
    assert torch.allclose(masked(x), norm(x), atol=1e-5)
    masked.lengths = torch.tensor([50, 30])
    assert torch.allclose(masked(x)[1, :, :30], norm(x[1:, :, :30])[0], atol=1e-5)


def test_original_recipe_is_first_frame_of_last_layer_and_a_two_layer_head():
    model = tiny(ORIGINAL_RECIPE)
    assert (model.config.pooling, model.config.layers) == ("first", "last")
    assert model.layer_weights is None
    kinds = [type(m) for m in model.head]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model.head[0].in_features == 32 and model.head[0].out_features == 256
    assert model.head[2].p == 0.3 and model.head[3].out_features == 8
    (wave,) = clips(4000)
    with torch.no_grad():
        direct = model.backbone.model(torch.from_numpy(wave)[None]).last_hidden_state[:, 0]
        assert torch.allclose(model(*collate([wave])), model.head(direct), atol=1e-5)
    assert all(p.requires_grad for p in model.backbone.parameters())  # the original trains everything


def test_freeze_modes_choose_what_trains():
    encoder = tiny(ModelConfig(freeze="feature-encoder"))
    assert not any(p.requires_grad for p in encoder.backbone.model.feature_extractor.parameters())
    assert all(p.requires_grad for p in encoder.backbone.model.encoder.parameters())
    frozen = tiny(ModelConfig(freeze="backbone"))
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters()) and frozen.layer_weights.requires_grad


def test_statistics_pooling_doubles_the_head_input():
    model = tiny(ModelConfig(pooling="mean+std"))
    assert model.head[0].in_features == 64
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="max")


def test_a_few_steps_drive_the_loss_down():
    model = tiny(ModelConfig(dropout=0.0)).train()
    batch, lengths = collate(clips(4000, 5000, 6000, 4500, seed=1))
    labels = torch.tensor([0, 3, 5, 7])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(batch, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny(ModelConfig(pooling="mean+std", layers="weighted"))
    model.save_pretrained(tmp_path / "model")
    loaded = EmotionClassifier.from_pretrained(tmp_path / "model")
    assert loaded.config == model.config
    waves = clips(3000, 5000, 4200)
    assert np.array_equal(model.predict_proba(waves), loaded.predict_proba(waves))


def test_layer_embeddings_are_the_masked_statistics_of_every_layer():
    model = tiny(ModelConfig(pooling="mean+std", layers="last"))
    batch, lengths = collate(clips(3000, 7000))
    with torch.no_grad():
        states, mask = model.hidden_states(batch, lengths)
        layers = model.layer_embeddings(batch, lengths)
        pooled = model.pool(states[:, -1], mask)
    assert layers.shape == (2, 3, 3, 32)  # (clips, layers + 1, first/mean/std, hidden size)
    assert torch.allclose(layers[:, -1, 1], pooled[:, :32], atol=1e-5)
    assert torch.allclose(layers[:, -1, 2], pooled[:, 32:], atol=1e-5)
    valid = states[0, :, : int(mask[0].sum())]  # the short clip's own frames, no padding
    assert mask[0].sum() < mask[1].sum()
    assert torch.allclose(layers[0, :, 1], valid.mean(1), atol=1e-5)
    assert torch.allclose(layers[0, :, 2], valid.std(1, unbiased=False), atol=1e-5)


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    tiny().save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "ser_config.json"
    config = json.loads(config_path.read_text())
    assert config["format"] == FORMAT
    config_path.write_text(json.dumps({**config, "format": "ser_utils.EmotionClassifier/99"}))
    with pytest.raises(ValueError, match=r"model: not a usable .* format 'ser_utils.EmotionClassifier/99'"):
        EmotionClassifier.from_pretrained(tmp_path / "model")


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    tiny().save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a usable emotion-classifier checkpoint"):
        EmotionClassifier.from_pretrained(tmp_path / "model")


def test_predict_proba_keeps_input_order_and_sums_to_one():
    model = tiny()
    waves = clips(5000, 3000, 8000, 4000)
    probs = model.predict_proba(waves, batch_size=3, precision=None)
    assert probs.shape == (4, 8) and np.allclose(probs.sum(1), 1, atol=1e-5)
    one_by_one = np.concatenate([model.predict_proba([w], precision=None) for w in waves])
    assert np.allclose(probs, one_by_one, atol=1e-5)


def test_hardware_precision_stays_close_to_float32(monkeypatch):
    # bf16 autocast where the CPU/GPU runs it natively; SER_PRECISION=fp32 turns it off.
    model = tiny()
    waves = clips(5000, 3000)
    auto = model.predict_proba(waves)
    assert np.allclose(auto.sum(1), 1, atol=1e-4)
    assert np.abs(auto - model.predict_proba(waves, precision=None)).max() < 0.05
    monkeypatch.setenv("SER_PRECISION", "fp32")
    assert np.array_equal(model.predict_proba(waves), model.predict_proba(waves, precision=None))


def test_too_short_clips_are_refused():
    with pytest.raises(ValueError, match="shorter than one frame"):
        tiny()(*collate(clips(300)))


def test_from_backbone_loads_a_local_checkpoint_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    directory = make_tiny_wav2vec2(tmp_path / "tiny")
    model = EmotionClassifier.from_backbone(str(directory))
    assert model.config.normalize is True
    assert model.predict_proba(clips(4000)).shape == (1, 8)


def test_full_size_architecture_loads_offline_with_from_pretrained(tmp_path, monkeypatch):
    # The real wav2vec2-base architecture (random weights: the pretrained ones are not reachable here).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(tmp_path / "base")
    model = EmotionClassifier.from_backbone(str(tmp_path / "base"), ORIGINAL_RECIPE)
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    assert 94e6 < backbone_params < 95e6
    assert model.head[0].in_features == 768 and len(model.backbone.model.encoder.layers) == 12
    assert model.frame_lengths(torch.tensor([16000])).item() == 49  # 20 ms frames
    with torch.no_grad():
        assert model(*collate(clips(16000))).shape == (1, 8)
