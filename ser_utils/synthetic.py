"""A generated corpus with RAVDESS file names, for the smoke profile and the tests.

Each clip is a harmonic "voice" whose pitch, loudness, syllable rate, pitch movement and spectral
tilt depend on the emotion (and on the actor's gender and the intensity), under syllable-like
amplitude envelopes, with leading and trailing silence and a little noise. Classifiers learn it far
above chance; it says nothing about real emotional speech.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from .corpus import expected_stems, parse_filename

#: Per emotion: (pitch factor, level in dBFS, syllables per second, pitch movement, tilt dB/octave)
EMOTION_CUES: dict[str, tuple[float, float, float, float, float]] = {
    "neutral": (1.00, -22, 4.0, 0.04, -12),
    "calm": (0.94, -26, 3.0, 0.02, -15),
    "happy": (1.25, -16, 5.0, 0.18, -8),
    "sad": (0.82, -28, 2.5, 0.03, -17),
    "angry": (1.18, -10, 5.5, 0.10, -4),
    "fearful": (1.38, -18, 6.5, 0.25, -10),
    "disgust": (0.90, -20, 3.5, 0.08, -6),
    "surprised": (1.50, -14, 4.5, 0.30, -7),
}


def synthesize_clip(emotion: str, actor: int, *, intensity: str = "normal", statement: int = 1,
                    seconds: float = 1.5, sample_rate: int = 16_000,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """One synthetic utterance, float32 ``(round(seconds * sample_rate),)`` in [-1, 1]."""
    rng = rng or np.random.default_rng(0)
    pitch, level_db, rate, movement, tilt = EMOTION_CUES[emotion]
    if intensity == "strong":
        pitch, level_db, movement = pitch * 1.08, level_db + 5, movement * 1.4
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    base_f0 = (115.0 if actor % 2 else 205.0) * (1 + 0.04 * ((actor * 7) % 5 - 2))
    contour = 1 + movement * np.sin(2 * np.pi * (0.7 + 0.3 * statement) * t + rng.uniform(0, 2 * np.pi))
    f0 = base_f0 * pitch * contour * (1 + 0.01 * rng.standard_normal())
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    n_harmonics = int(sample_rate / 2 / f0.max())
    gains = 2.0 ** (tilt / 6.02 * np.log2(np.arange(1, n_harmonics + 1)))
    voice = (gains[:, None] * np.sin(np.arange(1, n_harmonics + 1)[:, None] * phase)).sum(0)
    syllables = np.abs(np.sin(np.pi * rate * (t + 0.05 * statement))) ** 1.5
    edge = int(0.15 * n)  # leading and trailing silence, as in RAVDESS
    envelope = np.zeros(n)
    envelope[edge:n - edge] = syllables[edge:n - edge]
    voice *= envelope / (np.sqrt(np.mean(voice[edge:n - edge] ** 2)) + 1e-9)
    wave = 10 ** (level_db / 20) * voice + 10 ** (-60 / 20) * rng.standard_normal(n)
    return np.clip(wave, -1, 1).astype(np.float32)


def make_synthetic_corpus(root: str | Path, *, actors=range(1, 25), seconds: float = 1.5,
                          sample_rate: int = 16_000, channels: int = 1, suffix: str = ".wav",
                          seed: int = 0) -> Path:
    """Write ``Actor_XX/<RAVDESS name><suffix>`` for 60 clips per actor; deterministic given ``seed``.

    Re-running with the same arguments reuses the existing corpus (``synthetic.json`` records them).
    Returns ``root``.
    """
    root = Path(root)
    settings = {"actors": list(actors), "seconds": seconds, "sample_rate": sample_rate,
                "channels": channels, "suffix": suffix, "seed": seed}
    stamp = root / "synthetic.json"
    stems = expected_stems(settings["actors"])
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        if all((root / f"Actor_{s[-2:]}" / f"{s}{suffix}").is_file() for s in stems):
            return root
    for stem in stems:
        fields = parse_filename(stem)
        rng = np.random.default_rng([seed, *(fields[k] for k in ("actor", "emotion_code",
                                     "intensity_code", "statement", "repetition"))])
        wave = synthesize_clip(fields["emotion"], fields["actor"], intensity=fields["intensity"],
                               statement=fields["statement"], seconds=seconds,
                               sample_rate=sample_rate, rng=rng)
        if channels > 1:  # slightly different channels, so down-mixing is actually exercised
            wave = np.stack([wave * (1 - 0.1 * c) for c in range(channels)], axis=1)
        path = root / f"Actor_{fields['actor']:02d}" / f"{stem}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wave, sample_rate, subtype="PCM_16")
    stamp.write_text(json.dumps(settings))
    return root


def make_shifted_corpus(root: str | Path, *, speakers=range(31, 37), emotions=("neutral", "happy", "sad", "angry",
                        "fearful", "disgust"), clips_per_emotion: int = 4, seconds: float = 1.0,
                        sample_rate: int = 22_050, gain_db: float = -8.0, seed: int = 1) -> Path:
    """A second generated corpus under shifted conditions, with a ``manifest.csv`` (``path,label,speaker``).

    Other voices (speaker numbers the RAVDESS-named corpus does not have, hence other base pitches),
    another recording level (``gain_db``), another sample rate and fewer classes than the model's, as
    a real second corpus has: what the cross-corpus notebook evaluates on the smoke profile.
    Deterministic given the arguments; reused when present. Returns the manifest's path.
    """
    root = Path(root)
    settings = {"speakers": list(speakers), "emotions": list(emotions), "clips_per_emotion": clips_per_emotion,
                "seconds": seconds, "sample_rate": sample_rate, "gain_db": gain_db, "seed": seed}
    manifest, stamp = root / "manifest.csv", root / "synthetic.json"
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return manifest
    rows = ["path,label,speaker"]
    gain = 10 ** (gain_db / 20)
    for speaker in settings["speakers"]:
        for e, emotion in enumerate(emotions):
            for take in range(clips_per_emotion):
                rng = np.random.default_rng([seed, speaker, e, take])
                wave = gain * synthesize_clip(emotion, speaker, intensity=("normal", "strong")[take % 2],
                                              statement=1 + take % 2, seconds=seconds, sample_rate=sample_rate,
                                              rng=rng)
                path = Path(f"spk{speaker}") / f"{emotion}_{take}.wav"
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(root / path), wave.astype(np.float32), sample_rate, subtype="PCM_16")
                rows.append(f"{path.as_posix()},{emotion},spk{speaker}")
    manifest.write_text("\n".join(rows) + "\n")
    stamp.write_text(json.dumps(settings))
    return manifest

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

    from .backbones import FAMILIES

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
