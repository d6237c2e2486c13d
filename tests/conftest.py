"""Shared fixtures: real data from ../shared/data when present, generated corpora otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ser_utils.config import REPO_ROOT
from ser_utils.corpus import discover
from ser_utils.model import EmotionClassifier, ModelConfig, tiny_backbone_config
from ser_utils.synthetic import make_synthetic_corpus

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
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
