"""Every file the package writes appears whole or not at all: a full disk (an injected ENOSPC) or an
error while writing leaves the old file as it was, no temporary file behind, and one line naming the
path and the cause."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from ser_utils.core.atomic import WriteError, atomic_open, atomic_to_csv, atomic_write_text
from ser_utils.core.cache import ArrayCache, cached_map
from ser_utils.evaluation.splits import Split, save_splits
from ser_utils.results.store import write_metrics
from ser_utils.results.tables import replace_marked


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_file_keeping_its_mode_and_a_symlink(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert (target.stat().st_mode & 0o777) == 0o640 and not _leftovers(tmp_path)
    fresh = atomic_write_text(tmp_path / "fresh.txt", "x")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_full_disk_keeps_the_old_file_and_says_which_path_and_why(tmp_path, full_disk):
    target = tmp_path / "full" / "scores.csv"
    target.parent.mkdir()
    target.write_text("the old, complete table\n")
    full_disk(target.parent)
    with pytest.raises(WriteError) as caught:
        atomic_write_text(target, "a,b\n" * 10_000)
    message = str(caught.value)
    assert message == f"{target}: not written (No space left on device); any earlier file there is left as it was"
    assert target.read_text() == "the old, complete table\n" and not _leftovers(target.parent)
    healthy = atomic_write_text(tmp_path / "other.csv", "a,b\n")  # another disk is not affected
    assert healthy.read_text() == "a,b\n"


def test_an_error_while_writing_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("{}")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as handle:
        handle.write('{"half": ')
        raise KeyboardInterrupt  # Ctrl-C half-way
    assert target.read_text() == "{}" and not _leftovers(tmp_path)
    with pytest.raises(WriteError, match="No such file or directory"):
        atomic_write_text(tmp_path / "gone" / "x.txt", "x")


def test_the_study_writers_keep_their_old_files_on_a_full_disk(tmp_path, full_disk):
    results = tmp_path / "results"
    write_metrics([], results, "baselines")
    metrics = results / "metrics" / "baselines.csv"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results -->\nold table\n<!-- /results -->\n")
    splits = save_splits([Split("random-80-20", 1, 0, ("a",), ("b",), ("c",))], tmp_path / "splits.json")
    before = {p: p.read_bytes() for p in (metrics, readme, splits)}
    full_disk(tmp_path)
    row = {"system": "s", "protocol": "actor-kfold", "fold": 1, "accuracy": 0.5, "uar": 0.5, "macro_f1": 0.5,
           "n_test": 2, "status": "ok", "note": ""}
    for write in (lambda: write_metrics([row], results, "baselines"),
                  lambda: replace_marked(readme, "results", "new table"),
                  lambda: save_splits([], splits)):
        with pytest.raises(WriteError, match="No space left on device"):
            write()
    assert {p: p.read_bytes() for p in before} == before
    assert not _leftovers(tmp_path) and not _leftovers(results / "metrics")


def test_a_cache_on_a_full_disk_warns_and_the_values_are_still_used(tmp_path, full_disk):
    source = tmp_path / "clip.bin"
    source.write_bytes(b"audio")
    cache = ArrayCache(tmp_path / "cache", "test", {"k": 1})
    full_disk(cache.dir)
    with pytest.warns(UserWarning, match="cache not written from here on .*No space left on device"):
        result = cached_map(lambda p: np.arange(4.0), [source], cache, progress=False)
    assert np.array_equal(result.arrays[str(source)], np.arange(4.0)) and len(cache) == 0
    assert not _leftovers(cache.dir)
    assert json.loads((cache.dir / "params.json").read_text()) == {"k": 1}


def test_csv_written_through_the_helper_has_the_bytes_pandas_writes(tmp_path):
    frame = pd.DataFrame({"a": [1.5, 2.0], "b": ["x,y", 'q"uote\nline']})
    atomic_to_csv(frame, tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "plain.csv", index=False)
    assert (tmp_path / "t.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
