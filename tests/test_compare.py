"""compare-results on the study's committed results: identical runs agree, a small move stays inside
the bootstrap intervals, a large one does not, and a folder without comparison.csv is recomputed."""

import shutil

import pandas as pd
import pytest

from ser_utils.__main__ import main
from ser_utils.core.config import REPO_ROOT
from ser_utils.results.compare import IDENTICAL, OUTSIDE, WITHIN, compare_results

RESULTS = REPO_ROOT / "reports" / "results"


@pytest.fixture
def two_runs(tmp_path):
    if not (RESULTS / "comparison.csv").is_file():
        pytest.skip("no committed results in reports/results")
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        shutil.copytree(RESULTS, folder)
    return a, b


def _nudge(folder, system, protocol, points):
    path = folder / "comparison.csv"
    table = pd.read_csv(path)
    row = (table["system"] == system) & (table["protocol"] == protocol)
    assert row.sum() == 1
    table.loc[row, "uar_mean"] += points / 100
    table.to_csv(path, index=False)


def test_identical_runs_agree(two_runs, capsys):
    a, b = two_runs
    assert main(["compare-results", str(a), str(b)]) == 0
    n = len(compare_results(a, b))
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"{n} system(s) x protocol: {n} identical; largest difference 0.00 points")


def test_a_move_outside_the_interval_is_a_disagreement(two_runs, capsys):
    a, b = two_runs
    _nudge(b, "mfcc-set+rf", "actor-kfold", 0.3)  # a few tenths: what another CPU's last bits can do
    _nudge(b, "egemaps+svm", "random-80-20", 4.0)  # more than the interval's half-width (about 2.5)
    table = compare_results(a, b).set_index(["system", "protocol"])
    assert table.loc[("mfcc-set+rf", "actor-kfold"), "verdict"] == WITHIN
    assert table.loc[("mfcc-set+rf", "actor-kfold"), "difference"] == pytest.approx(0.3, abs=1e-6)
    assert table.loc[("egemaps+svm", "random-80-20"), "verdict"] == OUTSIDE
    assert main(["compare-results", str(a), str(b)]) == 1
    assert "1 OUTSIDE intervals" in capsys.readouterr().out


def test_without_comparison_csv_the_intervals_are_recomputed_from_predictions(two_runs):
    a, b = two_runs
    (b / "comparison.csv").unlink()
    table = compare_results(a, b)
    assert len(table) and table["verdict"].isin([IDENTICAL, WITHIN]).all()
    assert table["difference"].abs().max() < 1e-3  # the written table is rounded to 6 digits
    assert (table["b_high"] - table["a_high"]).abs().max() < 1e-3


def test_a_folder_without_results_is_one_line_exit_2(tmp_path, capsys):
    assert main(["compare-results", str(tmp_path), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path}: no results (expected comparison.csv or metrics/*.csv)"]
