"""Tiny randomly initialised checkpoints laid out as hub repositories are, for the tests and the smoke
profile's backbones (made on first use by :func:`ser_utils.study.sources.prepare_backbones`): they load and
train through the same code as a downloaded facebook/wav2vec2-base or openai/whisper-base."""

from __future__ import annotations

import json
from pathlib import Path

#: Flags of facebook/wav2vec2-base's config.json as published on the hub (a copy is in
#: ../shared/fixtures/hub-configs): tiny checkpoints carry them, so they load and train as the real one.
HUB_FLAGS = {"gradient_checkpointing": True, "layerdrop": 0.05, "mask_time_prob": 0.05,
             "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False,
             "apply_spec_augment": True, "hidden_dropout": 0.1, "attention_dropout": 0.1,
             "feat_proj_dropout": 0.1, "activation_dropout": 0.0, "final_dropout": 0.0,
             "feat_extract_activation": "gelu", "hidden_act": "gelu", "layer_norm_eps": 1e-5,
             "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]}
#: Tiny sizes (the receptive field and stride stay the real ones: 400 samples, 20 ms frames). Time masks
#: are 2 frames, not the hub's 10: at least two masks per clip would hide most of a 0.5 s test clip.
TINY_SIZES = {"mask_time_length": 2, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16,
              "num_conv_pos_embedding_groups": 4, "codevector_dim": 16, "proj_codevector_dim": 16,
              "num_codevectors_per_group": 8, "vocab_size": 12}
#: Checkpoint layouts met on the hub: (model_type, transformers class that saved it, config changes).
CHECKPOINT_LAYOUTS = {
    "wav2vec2-pretraining": ("wav2vec2", "Wav2Vec2ForPreTraining", {}),  # facebook/wav2vec2-base
    "wav2vec2-layernorm-ctc": ("wav2vec2", "Wav2Vec2ForCTC",  # large-lv60, XLS-R fine-tuned
                               {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}),
    "hubert-ctc": ("hubert", "HubertForCTC", {}),  # facebook/hubert-large-ls960-ft style
    "wavlm": ("wavlm", "WavLMModel", {}),  # a bare backbone, no task prefix
    "data2vec-audio-ctc": ("data2vec-audio", "Data2VecAudioForCTC", {}),
}


def tiny_backbone_config(**overrides):
    """A tiny wav2vec2 (group-norm feature encoder, like wav2vec2-base; :data:`TINY_SIZES`) for tests, benchmarks
    and saved tiny models. Receptive field and stride are the real model's (400 samples, 320 = 20 ms), so
    frame counts match."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**{"feat_extract_norm": "group", "do_stable_layer_norm": False, "mask_time_prob": 0.05,
                             **TINY_SIZES, **overrides})


def make_tiny_checkpoint(directory: str | Path, layout: str = "wav2vec2-pretraining", *,
                         formats: tuple[str, ...] = ("safetensors", "bin"), seed: int = 0) -> Path:
    """Write a tiny randomly initialised checkpoint laid out as hub repositories are.

    ``wav2vec2-pretraining`` is facebook/wav2vec2-base's layout: a ``Wav2Vec2ForPreTraining`` state
    (``wav2vec2.*`` plus ``quantizer.*``, ``project_q.*``, ``project_hid.*``), legacy weight-norm names
    (``weight_g``/``weight_v``), the hub's config flags, as ``model.safetensors`` and/or
    ``pytorch_model.bin`` (``formats``). Other layouts are written by transformers' own
    ``save_pretrained`` of the named task class. A ``preprocessor_config.json`` goes with each.
    """
    import torch
    import transformers
    from safetensors.torch import save_file

    from . import FAMILIES

    if layout not in CHECKPOINT_LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose one of {tuple(CHECKPOINT_LAYOUTS)}")
    model_type, class_name, changes = CHECKPOINT_LAYOUTS[layout]
    config_class, _ = FAMILIES[model_type].classes()
    settings = {**HUB_FLAGS, **TINY_SIZES, **changes}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config_class(**settings))
    if layout == "wav2vec2-pretraining":
        legacy = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
        state = {}
        for key, value in model.state_dict().items():
            for new, old in legacy.items():
                key = key.replace(new, old)
            state[key] = value.detach().clone().contiguous()
        if "safetensors" in formats:
            save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        if "bin" in formats:
            torch.save(state, directory / "pytorch_model.bin")
        config = {**model.config.to_dict(), **settings, "architectures": [class_name]}
        (directory / "config.json").write_text(json.dumps(config, indent=2))
    else:
        model.save_pretrained(directory)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0,
                                          do_normalize=True, return_attention_mask=False
                                          ).save_pretrained(directory)
    return directory


def make_tiny_wav2vec2(directory: str | Path, seed: int = 0) -> Path:
    """The smoke profile's backbone: a tiny random wav2vec2 saved as facebook/wav2vec2-base is on the
    hub (``pytorch_model.bin`` of a ``Wav2Vec2ForPreTraining``, the hub's config flags), loadable
    offline like a downloaded checkpoint. Reused if present."""
    import shutil

    directory = Path(directory)
    if (directory / "pytorch_model.bin").is_file() and (directory / "preprocessor_config.json").is_file():
        return directory
    shutil.rmtree(directory, ignore_errors=True)  # an older layout: weights from two files would conflict
    return make_tiny_checkpoint(directory, "wav2vec2-pretraining", formats=("bin",), seed=seed)


#: A tiny Whisper: real front end (80 mel bins, 30 s of positions), tiny widths.
TINY_WHISPER = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64, "vocab_size": 64,
                "max_target_positions": 16, "num_mel_bins": 80, "max_source_positions": 1500,
                "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3, "decoder_start_token_id": 2}


def tiny_whisper_config(**overrides):
    """The ``transformers.WhisperConfig`` of :data:`TINY_WHISPER` (tests, benchmarks, the smoke run)."""
    from transformers import WhisperConfig

    return WhisperConfig(**{**TINY_WHISPER, **overrides})


def make_tiny_whisper(directory: str | Path, seed: int = 0, **overrides) -> Path:
    """A tiny random ``WhisperForConditionalGeneration`` saved as openai/whisper-* is on the hub
    (``model.safetensors`` with ``model.encoder.*``, ``model.decoder.*``, ``proj_out``, and a
    ``preprocessor_config.json``). Reused if present."""
    import torch
    import transformers

    directory = Path(directory)
    if (directory / "model.safetensors").is_file() and (directory / "config.json").is_file():
        return directory
    torch.manual_seed(seed)
    model = transformers.WhisperForConditionalGeneration(tiny_whisper_config(**overrides))
    model.save_pretrained(directory)
    transformers.WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(directory)
    return directory


def make_tiny_ctranslate2_whisper(directory: str | Path, quantization: str = "float32", seed: int = 0) -> Path:
    """A tiny random Whisper in CTranslate2 (faster-whisper) format, written by CTranslate2's own converter
    (``ctranslate2.converters.TransformersConverter``, which needs the ``ctranslate2`` package) from
    :func:`make_tiny_whisper`'s transformers folder (kept beside it as ``<directory>-transformers``, with a
    small word-level tokenizer the converter reads). ``quantization``: CTranslate2's (``float32``,
    ``float16``, ``bfloat16``, ``int8``, ``int16``, ``int8_float16``, ...)."""
    import ctranslate2
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory = Path(directory)
    source = make_tiny_whisper(directory.with_name(directory.name + "-transformers"), seed=seed)
    if not (source / "tokenizer.json").is_file():
        words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(TINY_WHISPER["vocab_size"] - 4)}, unk_token="w0"))
        words.pre_tokenizer = pre_tokenizers.Whitespace()
        transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0").save_pretrained(source)
    ctranslate2.converters.TransformersConverter(str(source)).convert(str(directory), quantization=quantization,
                                                                       force=True)
    return directory
