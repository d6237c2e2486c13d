"""Where a profile's corpus and backbone come from: a local folder, a download, or - for the smoke
profile - generated on first use (a RAVDESS-named synthetic corpus, tiny random backbones saved as
the hub's are).

The data modules (``corpus``, ``synthetic``) know nothing of profiles or models, and ``checkpoints``
nothing of profiles; this is the one place that decides, per profile, what to fetch or make.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.config import Profile
from ..data.corpus import corpus_dir, discover
from ..data.synthetic import make_synthetic_corpus


def locate_corpus(profile: Profile) -> Path:
    """The corpus directory of ``profile``: a local folder, a download, or the generated smoke corpus."""
    if profile.is_smoke:
        seconds = profile.run.synthetic_seconds
        return make_synthetic_corpus(profile.data_dir, **({"seconds": seconds} if seconds else {}))
    return corpus_dir(profile.data_dir)


def load_corpus(profile: Profile) -> pd.DataFrame:
    """Locate (or download, or generate) the profile's corpus and return its ``corpus.discover`` table."""
    return discover(locate_corpus(profile))


def prepare_backbones(profile: Profile) -> tuple[str, ...]:
    """The profile's backbone names or folders; the smoke profile's tiny random models (a wav2vec2, a
    Whisper) are made on first use."""
    if profile.is_smoke:
        from ..backbones.checkpoints import make_tiny_wav2vec2, make_tiny_whisper  # torch: only when a model is wanted

        make_tiny_wav2vec2(profile.backbones[0])
        make_tiny_whisper(profile.backbones[1])
    return profile.backbones


def prepare_backbone(profile: Profile) -> str:
    """The profile's first backbone (the self-supervised one), made on first use in the smoke profile."""
    return prepare_backbones(profile)[0]
