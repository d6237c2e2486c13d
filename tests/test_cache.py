import numpy as np
import pytest
import soundfile as sf

from ser_utils.core.cache import ArrayCache, cached_map, file_digest
from ser_utils.data.audio import load_audio


def level(path):
    wave = load_audio(path)
    return np.array([wave.mean(), wave.std()])


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"clip{i}.wav"
        sf.write(str(path), 0.1 * (i + 1) * np.sin(np.arange(1600) / 5), 16000)
        paths.append(path)
    return paths


def test_second_run_reads_the_cache(tmp_path, files):
    cache = ArrayCache(tmp_path / "cache", "level", {"v": 1})
    first = cached_map(level, files, cache, n_jobs=1)
    second = cached_map(level, files, cache, n_jobs=1)
    assert (first.computed, first.hits) == (4, 0)
    assert (second.computed, second.hits) == (0, 4)
    for path in map(str, files):
        assert np.array_equal(first.arrays[path], second.arrays[path])


def test_a_changed_file_or_parameter_recomputes_only_what_changed(tmp_path, files):
    cache = ArrayCache(tmp_path / "cache", "level", {"v": 1})
    cached_map(level, files, cache, n_jobs=1)
    sf.write(str(files[0]), 0.9 * np.sin(np.arange(1600) / 3), 16000)
    again = cached_map(level, files, cache, n_jobs=1)
    assert (again.computed, again.hits) == (1, 3)
    other = cached_map(level, files, ArrayCache(tmp_path / "cache", "level", {"v": 2}), n_jobs=1)
    assert (other.computed, other.hits) == (4, 0)


def test_content_not_name_is_the_key(tmp_path, files):
    copy = tmp_path / "renamed.wav"
    copy.write_bytes(files[1].read_bytes())
    assert file_digest(copy) == file_digest(files[1])
    cache = ArrayCache(tmp_path / "cache", "level", {})
    cached_map(level, files, cache, n_jobs=1)
    assert cached_map(level, [copy], cache, n_jobs=1).hits == 1


def test_failures_are_reported_and_skipped_in_parallel(tmp_path, files):
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    cache = ArrayCache(tmp_path / "cache", "level", {})
    with pytest.warns(UserWarning, match=r"1 file\(s\) failed"):
        result = cached_map(level, [*files, broken], cache, n_jobs=2, min_parallel=0)
    assert len(result.arrays) == 4
    assert "broken.wav" in result.failures[str(broken)]


def test_a_truncated_entry_is_recomputed(tmp_path, files):
    cache = ArrayCache(tmp_path / "cache", "level", {})
    cached_map(level, files[:1], cache, n_jobs=1)
    entry = next(cache.dir.glob("*.npy"))
    entry.write_bytes(entry.read_bytes()[:20])
    assert cached_map(level, files[:1], cache, n_jobs=1).computed == 1
    assert len(cache) == 1
