import numpy as np
import pandas as pd
import pytest

from ser_utils.evaluation.metrics import METRIC_COLUMNS, metric_row, not_run_rows, score, summarise
from ser_utils.results.store import read_metrics, read_predictions, write_metrics, write_predictions

LABELS = ("a", "b", "c")


def test_score_matches_hand_computed_values():
    y_true = ["a", "a", "a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "a", "a", "b", "b", "c", "c", "c"]
    s = score(y_true, y_pred, LABELS)
    assert s.accuracy == pytest.approx(6 / 8)
    assert s.uar == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    # F1 per class: a = 2*1*.75/1.75, b = 2*.5*.5/1, c = 2*(2/3)*1/(5/3)
    assert s.macro_f1 == pytest.approx((6 / 7 + 0.5 + 0.8) / 3)
    assert s.confusion.tolist() == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert s.n == 8


def test_integer_and_name_labels_score_the_same():
    names = score(["a", "b", "c", "c"], ["a", "c", "c", "b"], LABELS)
    codes = score([0, 1, 2, 2], [0, 2, 2, 1], LABELS)
    assert names.as_dict() == codes.as_dict()


def test_absent_classes_do_not_dilute_uar_but_wrong_guesses_count():
    # Only a and b are in the test set; predicting c is an error for them.
    s = score(["a", "a", "b", "b"], ["a", "c", "b", "b"], LABELS)
    assert s.uar == pytest.approx((0.5 + 1.0) / 2)
    assert s.accuracy == pytest.approx(0.75)


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match="must be 1-D and match"):
        score(["a"], ["a", "b"], LABELS)
    with pytest.raises(ValueError, match="not among"):
        score(["z"], ["a"], LABELS)
    with pytest.raises(ValueError, match="empty"):
        score([], [], LABELS)


def test_metrics_round_trip_and_summary(tmp_path):
    rows = [metric_row("svm", "actor-kfold", fold, score(["a", "b"], pred, LABELS))
            for fold, pred in enumerate([["a", "b"], ["a", "a"]], start=1)]
    rows += not_run_rows("w2v", ["actor-kfold"], "no pretrained weights")
    write_metrics(rows, tmp_path, "group")
    metrics = read_metrics(tmp_path)
    assert list(metrics.columns) == METRIC_COLUMNS
    summary = summarise(metrics).set_index("system")
    assert summary.loc["svm", "accuracy_mean"] == pytest.approx(0.75)
    assert summary.loc["svm", "accuracy_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert summary.loc["svm", "folds"] == 2
    assert summary.loc["w2v", "status"] == "not run"
    assert np.isnan(summary.loc["w2v", "accuracy_mean"])
    assert summary.loc["w2v", "note"] == "no pretrained weights"


def test_predictions_need_their_columns(tmp_path):
    good = pd.DataFrame({"system": ["s"], "protocol": ["p"], "fold": [1], "stem": ["03-01-01-01-01-01-01"],
                         "actor": [1], "emotion": ["neutral"], "predicted": ["calm"]})
    write_predictions(good, tmp_path, "s")
    assert read_predictions(tmp_path).equals(good)
    with pytest.raises(ValueError, match="predicted"):
        write_predictions(good.drop(columns="predicted"), tmp_path, "s")
