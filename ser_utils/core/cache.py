"""On-disk cache of per-file arrays, keyed by the file's *content* and the parameters that made them.

Used for handcrafted features and frozen wav2vec2 embeddings: a second run reads the cache, a changed
file or a changed parameter recomputes only what changed, and an interrupted run resumes where it
stopped (each file's result is written as soon as it exists).

Layout: ``root / namespace / <params digest> / <content digest>.npy`` plus ``params.json`` in each
parameter folder, so a reader can tell what a folder holds.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from .atomic import WriteError, atomic_open, atomic_write_text
from .config import recompute_before
from .progress import progress as progress_bar


def file_digest(path: str | Path) -> str:
    """BLAKE2b digest (32 hex chars) of a file's bytes: the same audio under any name or folder
    shares one cache entry, and an edited file gets a new one."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def params_digest(params: dict) -> str:
    """Stable digest of a JSON-serialisable parameter dict (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class ArrayCache:
    """Arrays keyed by file content, in a folder dedicated to one parameter set.

    >>> cache = ArrayCache(tmp_dir, "mfcc", {"n_mfcc": 40})       # doctest: +SKIP
    >>> cache.get(digest) is None; cache.put(digest, features)     # doctest: +SKIP
    """

    def __init__(self, root: str | Path, namespace: str, params: dict):
        self.params = params
        self.dir = Path(root) / namespace / params_digest(params)
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "params.json"
        if not manifest.exists():
            atomic_write_text(manifest, json.dumps(params, indent=1, sort_keys=True, default=str))

    def _path(self, digest: str) -> Path:
        return self.dir / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        path = self._path(digest)
        if not path.is_file():
            return None
        forced = recompute_before()
        if forced is not None and path.stat().st_mtime < forced:
            return None  # FORCE=1: made before this run, recomputed (and overwritten by put)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # an empty or half-written file (full disk, cut copy): recompute
            path.unlink(missing_ok=True)
            return None

    def put(self, digest: str, array: np.ndarray) -> None:
        # Written beside it, then renamed: a killed run or a full disk never leaves a truncated entry.
        with atomic_open(self._path(digest), "wb") as handle:
            np.save(handle, np.asarray(array), allow_pickle=False)

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*.npy"))

    def lookup(self, paths: Iterable[str | Path]) -> tuple[MapResult, list[tuple[str, str]]]:
        """Split files into those already cached (in the returned :class:`MapResult`, counted as hits)
        and the ``(path, content digest)`` pairs still to compute. Unreadable files are failures."""
        result, todo = MapResult(), []
        for path in map(str, paths):
            try:
                digest = file_digest(path)
            except OSError as err:
                result.failures[path] = f"{path}: cannot read file ({err})"
                continue
            cached = self.get(digest)
            if cached is None:
                todo.append((path, digest))
            else:
                result.arrays[path] = cached
                result.hits += 1
        return result, todo


@dataclass
class MapResult:
    """What :func:`cached_map` produced: arrays for the files that worked, reasons for those that
    did not, and how many came from the cache."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    computed: int = 0


#: Below this many files to compute, :func:`cached_map` stays in this process: starting worker processes
#: (about 2 s: each imports librosa, numba, ...) costs more than they save. Measured on 2 cores
#: (``benchmarks/bench_features.py``): 10.5 ms/file in-process against about 5 ms/file with 2 workers.
MIN_PARALLEL = 400


def cached_map(func: Callable[[str], np.ndarray], paths: Iterable[str | Path], cache: ArrayCache, *,
               n_jobs: int = -1, min_parallel: int = MIN_PARALLEL, desc: str = "files",
               progress: bool = True) -> MapResult:
    """Apply ``func(path) -> array`` to every file, reading and filling ``cache``.

    Missing entries are computed in parallel (``n_jobs`` joblib processes) when there are at least
    ``min_parallel`` of them, else in this process. A file whose ``func`` raises is reported by name
    in a warning and skipped; the run goes on. Returns arrays keyed by the path strings given.
    """
    result, todo = cache.lookup(paths)
    unsaved = None
    if todo:
        workers = n_jobs if len(todo) >= min_parallel else 1
        jobs = Parallel(n_jobs=workers, return_as="generator", batch_size="auto")(
            delayed(_safe_call)(func, path) for path, _ in todo
        )
        for (path, digest), (array, error) in progress_bar(zip(todo, jobs, strict=True), total=len(todo),
                                                   desc=desc, disable=not progress):
            if error is not None:
                result.failures[path] = error
                continue
            if unsaved is None:
                try:
                    cache.put(digest, array)
                except WriteError as err:  # a full disk: the values are still good, only the cache is lost
                    unsaved = err
            result.arrays[path] = array
            result.computed += 1
    if unsaved is not None:
        warnings.warn(f"{desc}: cache not written from here on ({unsaved}); these values are recomputed next "
                      "time", stacklevel=2)
    if result.failures:
        listed = "\n".join(f"  {p}: {why}" for p, why in list(result.failures.items())[:20])
        warnings.warn(f"{desc}: {len(result.failures)} file(s) failed and were skipped:\n{listed}",
                      stacklevel=2)
    return result


def _safe_call(func: Callable[[str], np.ndarray], path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        return np.asarray(func(path)), None
    except Exception as err:  # any failure of one file is reported, never fatal for the run
        return None, f"{type(err).__name__}: {err}"
