"""Per-clip statistics for the exploratory analysis (silence share, loudness, peak level)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from ..data.audio import frame_rms_db, load_audio

#: A frame quieter than the clip's loudest frame by more than this counts as silence (dB).
SILENCE_BELOW_PEAK_DB = 40.0


def clip_level_stats(wave: np.ndarray, silence_below_peak_db: float = SILENCE_BELOW_PEAK_DB) -> dict:
    """Loudness figures of one 16 kHz clip.

    Returns ``peak_dbfs`` (sample peak), ``active_rms_dbfs`` (RMS level of the non-silent 25 ms frames)
    and ``silence_share`` (fraction of frames more than ``silence_below_peak_db`` below the loudest).
    """
    levels = frame_rms_db(wave)
    active = levels >= levels.max() - silence_below_peak_db
    active_power = np.mean(10 ** (levels[active] / 10))
    return {
        "peak_dbfs": float(20 * np.log10(max(np.abs(wave).max(), 1e-10))),
        "active_rms_dbfs": float(10 * np.log10(active_power)),
        "silence_share": float(1 - active.mean()),
    }


def corpus_level_stats(meta: pd.DataFrame, n_jobs: int = -1) -> pd.DataFrame:
    """:func:`clip_level_stats` for every clip of a corpus table, joined to its metadata columns."""
    stats = Parallel(n_jobs=n_jobs, batch_size=32)(
        delayed(_stats_of)(path) for path in meta["path"]
    )
    return pd.concat([meta.reset_index(drop=True), pd.DataFrame(stats)], axis=1)


def _stats_of(path: str) -> dict:
    return clip_level_stats(load_audio(path, allow_silent=True))


#: The loudness columns as a reader sees them (silence in % of frames).
LEVEL_NAMES = {"active_rms_dbfs": "active level (dBFS)", "silence_share": "silence (% of frames)"}


def in_percent(stats: pd.DataFrame) -> pd.DataFrame:
    """:func:`corpus_level_stats` with the silence share in % (figures and tables show % everywhere)."""
    return stats.assign(silence_share=100 * stats["silence_share"])


def level_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Mean active level (dBFS) and silence (% of frames) per emotion and intensity; "-" where the corpus
    has no clip (RAVDESS has no strong neutral)."""
    table = (in_percent(stats).groupby(["emotion", "intensity"], observed=True)[list(LEVEL_NAMES)]
             .mean().unstack("intensity").round(1))
    return table.rename(columns=LEVEL_NAMES).astype(object).where(table.notna().to_numpy(), "-")
