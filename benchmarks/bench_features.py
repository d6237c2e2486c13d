"""Speed of handcrafted feature extraction: the naive recipe against the project's extractor.

Measured on the same real files in one run:

(a) naive: what popular SER notebooks do - one process, every librosa feature called on the raw
    signal, each with its own STFT (tonnetz with its own constant-Q chroma), summarised by mean and
    std. Same families, same n_fft / hop / n_mfcc / n_mels and the same 428 values as (b). Timed
    after a warm-up clip, so librosa's lazy imports and numba compilation are not counted against it;
    run with the process's default BLAS threads and with one BLAS thread, and the *faster* of the two
    is the baseline of the ratios.
(b) the project's extractor (``features.extract_corpus``), cold cache, one STFT per clip, called as
    the notebooks call it: with ``n_jobs`` worker processes from ``cache.MIN_PARALLEL`` files on,
    in this process below that (a fresh pool costs about 2 s of imports per worker). For comparison,
    the same forced into a fresh worker pool, into the pool already started, and into this process.
(c) the same call again: warm cache (content digests + reads).

    python benchmarks/bench_features.py [--n 96] [--data ../shared/data/ravdess-16k] [--n-jobs -1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ser_utils.core.cache import MIN_PARALLEL
from ser_utils.core.config import REPO_ROOT
from ser_utils.data.corpus import discover
from ser_utils.features import FeatureConfig, LibrosaFeatures, extract_corpus

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ravdess-16k"


def naive_features(path: str, c: FeatureConfig) -> np.ndarray:
    """The popular-notebook recipe: every feature from the raw signal, one STFT (or CQT) each."""
    import librosa

    y, sr = librosa.load(path, sr=c.sample_rate)
    kw = {"y": y, "sr": sr, "n_fft": c.n_fft, "hop_length": c.hop_length}
    mfcc = librosa.feature.mfcc(**kw, n_mfcc=c.n_mfcc, n_mels=c.n_mels)
    frames = [
        mfcc, librosa.feature.delta(mfcc, width=c.delta_width),
        librosa.feature.delta(mfcc, width=c.delta_width, order=2),
        librosa.power_to_db(librosa.feature.melspectrogram(**kw, n_mels=c.n_mels)),
        librosa.feature.chroma_stft(**kw),
        librosa.feature.tonnetz(y=y, sr=sr, hop_length=c.hop_length),
        librosa.feature.spectral_contrast(**kw),
        librosa.feature.zero_crossing_rate(y, frame_length=c.n_fft, hop_length=c.hop_length),
        librosa.feature.rms(y=y, frame_length=c.n_fft, hop_length=c.hop_length),
        librosa.feature.spectral_centroid(**kw),
        librosa.feature.spectral_bandwidth(**kw),
        librosa.feature.spectral_rolloff(**kw),
    ]
    return np.concatenate([np.stack([f.mean(axis=1), f.std(axis=1)], axis=1).ravel() for f in frames])


def timed(func):
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="RAVDESS folder (default: %(default)s)")
    parser.add_argument("--n", type=int, default=96, help="number of files (default: %(default)s)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="joblib processes for (b) (default: all)")
    args = parser.parse_args()

    from joblib.externals.loky import get_reusable_executor
    from threadpoolctl import threadpool_limits

    meta = discover(args.data)
    if len(meta) < args.n:
        raise SystemExit(f"{args.data}: {len(meta)} files, fewer than --n {args.n}")
    # A fixed subset spread over all actors and emotions: every k-th clip of the sorted corpus.
    meta = meta.iloc[np.linspace(0, len(meta) - 1, args.n).round().astype(int)].reset_index(drop=True)
    paths = list(meta["path"])
    extractor = LibrosaFeatures()
    config = extractor.config
    print(f"{args.n} files from {args.data.name} ({meta['duration'].sum():.0f} s of audio), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"features: {extractor.n_features} values per clip (n_fft={config.n_fft}, hop={config.hop_length}, "
          f"n_mfcc={config.n_mfcc}, n_mels={config.n_mels}, stats={config.stats})")

    naive_features(paths[0], config)  # warm-up: lazy imports, numba compilation
    t_naive_default, naive = timed(lambda: np.stack([naive_features(p, config) for p in paths]))
    with threadpool_limits(1, user_api="blas"):
        t_naive_single, _ = timed(lambda: np.stack([naive_features(p, config) for p in paths]))
    t_naive = min(t_naive_default, t_naive_single)

    cache_root = Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        get_reusable_executor().shutdown(wait=True)  # no worker pool left from the naive runs
        t_cold, cold = timed(lambda: extract_corpus(meta, extractor, cache_root / "a", n_jobs=args.n_jobs,
                                                    progress=False))
        get_reusable_executor().shutdown(wait=True)
        t_cold_fresh, _ = timed(lambda: extract_corpus(meta, extractor, cache_root / "b", n_jobs=args.n_jobs,
                                                       min_parallel=0, progress=False))
        t_cold_pool, _ = timed(lambda: extract_corpus(meta, extractor, cache_root / "c", n_jobs=args.n_jobs,
                                                      min_parallel=0, progress=False))
        t_cold_serial, _ = timed(lambda: extract_corpus(meta, extractor, cache_root / "d", n_jobs=1,
                                                        progress=False))
        t_warm, warm = timed(lambda: extract_corpus(meta, extractor, cache_root / "a", n_jobs=args.n_jobs,
                                                    progress=False))
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    assert cold.computed == args.n and warm.hits == args.n and np.array_equal(cold.X, warm.X)
    assert naive.shape == cold.X.shape

    families = np.asarray(extractor.feature_families())
    same = ~np.isin(families, ["chroma", "tonnetz"])
    diff = np.abs(naive[:, same] - cold.X[:, same]).max() / np.abs(naive[:, same]).max()

    def line(label, seconds, ratio=True):
        extra = f"   {t_naive / seconds:7.1f}x faster than (a)" if ratio else ""
        print(f"{label:<64s} {seconds:8.2f} s  {1000 * seconds / args.n:8.2f} ms/file{extra}")

    print()
    line("(a) naive, default BLAS threads", t_naive_default, ratio=False)
    line("(a) naive, 1 BLAS thread", t_naive_single, ratio=False)
    mode = "in this process" if args.n < MIN_PARALLEL else f"n_jobs={args.n_jobs} workers"
    line(f"(b) project extractor, cold cache, as called ({mode})", t_cold)
    line("    same, forced into a fresh worker pool", t_cold_fresh)
    line("    same, forced into the pool already started", t_cold_pool)
    line("    same, cold cache, n_jobs=1 (in this process)", t_cold_serial)
    line("(c) project extractor, warm cache", t_warm)
    print(f"\nbaseline (a) = {t_naive:.2f} s (the faster naive run). Values: same shape {naive.shape}; "
          f"max |diff| / max |value| outside chroma/tonnetz = {diff:.1e} (chroma: fixed tuning, "
          "tonnetz: STFT chroma instead of CQT chroma, by design)")
    print(f"goals: cold >= 4x: {'met' if t_naive / t_cold >= 4 else 'MISSED'} ({t_naive / t_cold:.1f}x); "
          f"warm >= 100x: {'met' if t_naive / t_warm >= 100 else 'MISSED'} ({t_naive / t_warm:.0f}x)")


if __name__ == "__main__":
    main()
