"""Generated corpora for the smoke profile and the tests: one with RAVDESS file names, and a second one
under shifted conditions for the cross-corpus notebook (:mod:`ser_utils.study.sources` decides when; the
tiny backbone is in :mod:`ser_utils.backbones.checkpoints`).

Each clip is a harmonic "voice" whose pitch, loudness, syllable rate, pitch movement and spectral
tilt depend on the emotion (and on the actor's gender and the intensity), under syllable-like
amplitude envelopes, with leading and trailing silence and a little noise. Classifiers learn it far
above chance; it says nothing about real emotional speech.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from ..core.atomic import atomic_write_bytes, atomic_write_text
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


def harmonic_sum(phase: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``sum(gains[k - 1] * sin(k * phase) for k = 1 .. len(gains))``, shape of ``phase``.

    By the recurrence ``sin((k + 1) x) = 2 cos(x) sin(k x) - sin((k - 1) x)``: one multiply-add per
    harmonic instead of a sine, several times faster for the ~50 harmonics of a voice (the corpus is
    generated for every test run).
    """
    two_cos = 2 * np.cos(phase)
    previous, current = np.zeros_like(phase), np.sin(phase)
    total = gains[0] * current
    for gain in gains[1:]:
        previous, current = current, two_cos * current - previous
        total += gain * current
    return total


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
    voice = harmonic_sum(phase, gains)
    syllables = np.abs(np.sin(np.pi * rate * (t + 0.05 * statement))) ** 1.5
    edge = int(0.15 * n)  # leading and trailing silence, as in RAVDESS
    envelope = np.zeros(n)
    envelope[edge:n - edge] = syllables[edge:n - edge]
    voice *= envelope / (np.sqrt(np.mean(voice[edge:n - edge] ** 2)) + 1e-9)
    wave = 10 ** (level_db / 20) * voice + 10 ** (-60 / 20) * rng.standard_normal(n)
    return np.clip(wave, -1, 1).astype(np.float32)


def write_clip(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """Write a 16-bit WAV or FLAC (by ``path``'s suffix) whole or not at all (``core.atomic``).

    Encoded in memory first: on a full disk libsndfile left a cut file and said only "error 2", while
    Python's own write raises ``WriteError``, naming the file and "No space left on device". A clip is
    tens of kilobytes.
    """
    encoded = io.BytesIO()
    sf.write(encoded, wave, sample_rate, subtype="PCM_16", format=path.suffix.lstrip(".").upper())
    atomic_write_bytes(path, encoded.getvalue())


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
        write_clip(path, wave, sample_rate)
    atomic_write_text(stamp, json.dumps(settings))  # last: it says the corpus is complete
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
                write_clip(root / path, wave.astype(np.float32), sample_rate)
                rows.append(f"{path.as_posix()},{emotion},spk{speaker}")
    atomic_write_text(manifest, "\n".join(rows) + "\n")
    atomic_write_text(stamp, json.dumps(settings))
    return manifest
