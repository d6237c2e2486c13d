"""What the Whisper benchmarks run on: ``n`` RAVDESS clips spread over the corpus (every ``len // n``-th),
or, where the real data is absent, generated clips of RAVDESS's mean length (3.7 s). Not a benchmark."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ser_utils.core.config import REPO_ROOT
from ser_utils.data.audio import load_many
from ser_utils.data.corpus import discover
from ser_utils.data.synthetic import make_synthetic_corpus

#: The real corpus beside the repository (``../shared/data``), the benchmarks' default ``--data``.
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "ravdess-16k"


def sample_clips(data: Path | None, n: int) -> tuple[list[str], list[np.ndarray]]:
    """``n`` clips' paths and 16 kHz waveforms."""
    if data is None or not data.is_dir():
        data = make_synthetic_corpus(Path(tempfile.mkdtemp()) / "corpus", actors=range(1, 3), seconds=3.7)
        print(f"(real data not found: using a synthetic corpus of 3.7 s clips in {data})")
    meta = discover(data)
    paths = list(meta["path"].iloc[:: max(1, len(meta) // n)][:n])
    waves, _ = load_many(paths)
    return paths, [waves[p] for p in paths]
