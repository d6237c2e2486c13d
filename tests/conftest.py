"""Shared fixtures: generated corpora always, and real data from ../shared/data when present.

``corpus_16k`` and ``sample_48k`` run each test that takes them twice: on generated audio of the same
shape (always, so no guarantee depends on ``../shared``) and on the real files (skipped with the reason
where they are absent). Tests of what only real speech has (a transcript, the reference copy) take
``ravdess_16k`` / ``ravdess_48k_sample`` alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ser_utils.backbones.checkpoints import tiny_backbone_config
from ser_utils.core.config import REPO_ROOT
from ser_utils.data.corpus import discover
from ser_utils.data.synthetic import make_synthetic_corpus
from ser_utils.models.classifier import EmotionClassifier
from ser_utils.models.heads import ModelConfig

#: The real data beside the repository (``../shared/data``); ``SER_SHARED_DATA`` points elsewhere (an empty
#: folder shows which tests would skip without it: none of the guarantees should).
SHARED_DATA = Path(os.environ.get("SER_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
RAVDESS_16K = SHARED_DATA / "ravdess-16k"
RAVDESS_48K_SAMPLE = SHARED_DATA / "ravdess-48k-sample"
STEREO_SAMPLES = ("03-01-02-01-01-02-01", "03-01-08-01-02-02-01", "03-01-02-01-02-02-05",
                  "03-01-03-01-02-01-20", "03-01-06-01-01-02-20")


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def ravdess_16k() -> Path:
    return _require(RAVDESS_16K)


@pytest.fixture(scope="session")
def ravdess_48k_sample() -> Path:
    return _require(RAVDESS_48K_SAMPLE)


@pytest.fixture(scope="session")
def real_meta(ravdess_16k):
    return discover(ravdess_16k)


def make_48k_sample(root: Path) -> Path:
    """Eight generated clips as a RAVDESS download delivers them: 48 kHz, 16-bit WAV, the five stems that are
    stereo in the real sample stereo with the same signal on both channels (as RAVDESS's are)."""
    import numpy as np
    import soundfile as sf

    from ser_utils.data.corpus import parse_filename
    from ser_utils.data.synthetic import synthesize_clip

    stems = (*STEREO_SAMPLES, "03-01-01-01-01-01-01", "03-01-05-02-01-01-02", "03-01-07-01-02-02-12")
    for i, stem in enumerate(stems):
        fields = parse_filename(stem)
        wave = synthesize_clip(fields["emotion"], fields["actor"], intensity=fields["intensity"],
                               statement=fields["statement"], seconds=1.2, sample_rate=48_000,
                               rng=np.random.default_rng(i))
        wave = 0.5 * wave / np.abs(wave).max()  # headroom: resampling a full-scale clip overshoots
        data = np.stack([wave, wave], axis=1) if stem in STEREO_SAMPLES else wave
        path = root / f"Actor_{fields['actor']:02d}" / f"{stem}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, 48_000, subtype="PCM_16")
    return root


@pytest.fixture(scope="session", params=["generated", "real"])
def sample_48k(request, tmp_path_factory) -> Path:
    """Eight 48 kHz clips, five of them stereo: generated, then the real sample."""
    if request.param == "real":
        return _require(RAVDESS_48K_SAMPLE)
    return make_48k_sample(tmp_path_factory.mktemp("sample-48k"))


@pytest.fixture(scope="session", params=["generated", "real"])
def corpus_16k(request, tmp_path_factory) -> Path:
    """A complete RAVDESS-shaped corpus at 16 kHz (1,440 clips): generated (0.6 s clips), then the real one."""
    if request.param == "real":
        return _require(RAVDESS_16K)
    return request.getfixturevalue("synthetic_corpus")


@pytest.fixture(scope="session")
def corpus_16k_meta(corpus_16k):
    return discover(corpus_16k)


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """24 actors x 60 clips of 0.6 s generated speech-like audio at 16 kHz."""
    return make_synthetic_corpus(tmp_path_factory.mktemp("synthetic"), seconds=0.6)


@pytest.fixture(scope="session")
def synthetic_meta(synthetic_corpus):
    return discover(synthetic_corpus)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec2 emotion model saved as a model folder (predict, evaluate)."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("model") / "w2v2"
    EmotionClassifier.from_config(tiny_backbone_config(), ModelConfig()).save_pretrained(directory)
    return directory


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder)``: from now on, flushing a file under ``folder`` to disk fails as a full disk
    does (``OSError(ENOSPC)`` from ``os.fsync``); files elsewhere are written as usual."""
    import errno
    import os

    real_fsync, full = os.fsync, []

    def fsync(fd):
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if any(where == str(f) or where.startswith(f"{f}/") for f in full):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return lambda folder: full.append(Path(folder).resolve())


@pytest.fixture(scope="module")
def frozen_study(synthetic_meta, tmp_path_factory):
    """A smoke profile in a temporary work folder, a tiny Whisper, 10 actors' embeddings (each test module
    its own: they write model folders and results)."""
    from ser_utils.backbones import load_backbone
    from ser_utils.backbones.checkpoints import make_tiny_whisper
    from ser_utils.core.config import get_profile
    from ser_utils.study.systems import StudyBackbone
    from ser_utils.training.embeddings import extract_embeddings

    root = tmp_path_factory.mktemp("frozen")
    meta = synthetic_meta[(synthetic_meta["actor"].isin([1, 2, 3, 4, 5, 6, 7, 8, 11, 20]))
                          & (synthetic_meta["repetition"] == 1)].reset_index(drop=True)
    checkpoint = str(make_tiny_whisper(root / "tiny-whisper"))
    encoder, _ = load_backbone(checkpoint)
    embeddings = extract_embeddings(encoder, meta["path"], root / "cache", "tiny", progress=False).arrays
    profile = get_profile("smoke", work_dir=root / "work", reports_dir=root / "reports")
    return profile, meta, StudyBackbone(checkpoint, "whisper", {"input": "clip"}), embeddings

