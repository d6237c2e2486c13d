"""The results aggregation on hand-made result files with known answers."""

import numpy as np
import pandas as pd
import pytest

from ser_utils.data.corpus import EMOTIONS
from ser_utils.evaluation.metrics import metrics_from_confusion, metrics_from_predictions, not_run_rows, score
from ser_utils.results.analysis import finetuned_vs_frozen
from ser_utils.results.store import read_metrics, read_predictions, write_metrics, write_predictions
from ser_utils.results.tables import (
    bootstrap_ci,
    claims_vs_measured,
    comparison_table,
    headline_table,
    leakage_gap,
    mcnemar,
    pair_confusions,
    per_group_accuracy,
    replace_marked,
)


def rows(system, protocol, fold, truth, predicted):
    return pd.DataFrame({"system": system, "protocol": protocol, "fold": fold,
                         "stem": [f"clip{fold}-{i:03d}" for i in range(len(truth))],
                         "actor": fold, "emotion": truth, "predicted": predicted})


@pytest.fixture
def results_dir(tmp_path):
    truth = ["angry", "sad", "calm", "happy"]
    a = pd.concat([rows("svm", "actor-kfold", 1, truth, truth),  # fold 1: all right
                   rows("svm", "actor-kfold", 2, truth, ["angry", "sad", "neutral", "neutral"]),  # 2 of 4
                   rows("svm", "random-80-20", 1, truth, truth)], ignore_index=True)
    write_predictions(a, tmp_path, "svm")
    write_metrics(metrics_from_predictions(a), tmp_path, "svm")
    write_metrics(not_run_rows("w2v2-project-ft", ["actor-kfold", "random-80-20"], "no weights"), tmp_path, "w2v2")
    return tmp_path


def test_comparison_table_from_hand_made_files(results_dir):
    table = comparison_table(read_metrics(results_dir), read_predictions(results_dir), n_boot=2000)
    svm = table[(table["system"] == "svm") & (table["protocol"] == "actor-kfold")].iloc[0]
    assert svm["accuracy_mean"] == pytest.approx(0.75)
    assert svm["accuracy_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    # Fold 1 is always right; fold 2's bootstrap accuracy spans 0..1 (each extreme has p = 1/16),
    # so the mean over the two folds has a 95 % interval of [0.5, 1.0].
    assert (svm["accuracy_ci_low"], svm["accuracy_ci_high"]) == (pytest.approx(0.5), pytest.approx(1.0))
    perfect = table[(table["system"] == "svm") & (table["protocol"] == "random-80-20")].iloc[0]
    assert perfect["accuracy_ci_low"] == perfect["accuracy_ci_high"] == 1.0
    missing = table[table["system"] == "w2v2-project-ft"]
    assert set(missing["status"]) == {"not run"} and missing["accuracy_ci_low"].isna().all()
    assert set(table["kind"]) == {"baseline", "wav2vec2"}

    headline = headline_table(table).set_index("system")
    assert headline.loc["svm", "actor-kfold accuracy"] == "75.0 ± 35.4 [50.0, 100.0]"
    assert headline.loc["w2v2-project-ft", "actor-kfold UAR"] == "not run"
    assert headline.loc["w2v2-project-ft", "note"] == "no weights"


def test_bootstrap_interval_holds_the_estimate_and_is_a_point_for_a_perfect_system(results_dir):
    predictions = read_predictions(results_dir)
    # actor-kfold: fold 1 all right, fold 2 right on angry and sad only, so UAR and accuracy are
    # (1 + 0.5) / 2 = 0.75 and macro-F1 (1 + 0.5) / 2 = 0.75 too (fold 2: F1 1, 1, 0, 0).
    ci = bootstrap_ci(predictions[predictions["protocol"] == "actor-kfold"], n_boot=500)
    for metric, (low, high) in ci.items():
        assert low < 0.75 < high, metric
    wider = bootstrap_ci(predictions[predictions["protocol"] == "actor-kfold"], n_boot=500, level=0.99)
    assert all(wider[m][0] <= ci[m][0] and ci[m][1] <= wider[m][1] for m in ci)
    perfect = bootstrap_ci(predictions[predictions["protocol"] == "random-80-20"], n_boot=50)
    assert all(interval == (1.0, 1.0) for interval in perfect.values())


@pytest.mark.parametrize("seed", range(5))
def test_the_bootstraps_fast_scorer_agrees_with_evaluate_score(seed):
    """The bootstrap scores confusion-matrix counts directly (thousands of resamples at once); on any
    predictions, including classes absent from the truth and never predicted, it must give exactly
    what evaluate.score gives."""
    rng = np.random.default_rng(seed)
    present = rng.choice(EMOTIONS, size=rng.integers(2, 8), replace=False)
    truth = rng.choice(present, size=60)
    predicted = np.where(rng.random(60) < 0.5, truth, rng.choice(EMOTIONS, size=60))
    expected = score(truth, predicted)
    fast = metrics_from_confusion(expected.confusion[None])
    for metric in ("accuracy", "uar", "macro_f1"):
        assert fast[metric][0] == pytest.approx(getattr(expected, metric), abs=1e-12), metric


def test_leakage_gap_is_random_minus_actor(results_dir):
    table = comparison_table(read_metrics(results_dir), read_predictions(results_dir), n_boot=10)
    gap = leakage_gap(table)
    assert gap.loc["svm", "gap"] == pytest.approx(1.0 - 0.75)
    assert "w2v2-project-ft" not in gap.index


def test_mcnemar_counts_discordant_clips():
    truth = ["angry"] * 12
    a = rows("a", "actor-kfold", 1, truth, truth)
    b = rows("b", "actor-kfold", 1, truth, ["sad"] * 10 + ["angry"] * 2)
    b["stem"] = a["stem"]
    result = mcnemar(pd.concat([a, b]), "a", "b")
    assert (result["clips"], result["a_only"], result["b_only"]) == (12, 10, 0)
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 10)


def test_fine_tuned_against_frozen_on_the_same_folds_and_clips():
    truth = ["angry", "sad", "calm", "happy"]
    tuned = pd.concat([rows("whisper-project-ft-top1", "actor-kfold", 1, truth, truth),
                       rows("whisper-project-ft-top1", "actor-kfold", 2, truth, ["angry", "sad", "calm", "sad"])])
    frozen = pd.concat([rows("whisper-project-frozen", "actor-kfold", 1, truth, ["angry", "sad", "sad", "sad"]),
                        rows("whisper-project-frozen", "actor-kfold", 2, truth, truth),
                        rows("whisper-project-frozen", "actor-kfold", 3, truth, truth)])  # a fold the other lacks
    spknorm = rows("whisper-project-ft-top1+spknorm", "actor-kfold", 1, truth, truth)  # not compared
    predictions = pd.concat([tuned, frozen, spknorm], ignore_index=True)
    def metrics(table):
        return pd.DataFrame(metrics_from_predictions(table)).assign(status="ok")

    versus = finetuned_vs_frozen(metrics(predictions), predictions).set_index("fine-tuned")
    row = versus.loc["whisper-project-ft-top1"]
    assert list(versus.index) == ["whisper-project-ft-top1"] and row["frozen"] == "whisper-project-frozen"
    assert (row["fold 1"], row["fold 2"]) == ("100.0 vs 50.0", "75.0 vs 100.0") and "fold 3" not in row
    assert (row["mean fine-tuned"], row["mean frozen"], row["folds better"]) == (87.5, 75.0, 1)
    assert (row["clips"], row["only fine-tuned right"], row["only frozen right"]) == (8, 2, 1)
    assert finetuned_vs_frozen(metrics(frozen), frozen).empty


def test_the_claims_table_takes_every_partially_fine_tuned_row():
    table = pd.DataFrame({"system": ["whisper-project-ft-top1", "whisper-project-ft-top2", "egemaps+svm"],
                          "protocol": "random-80-20", "status": "ok", "accuracy_mean": [0.8, 0.7, 0.6],
                          "accuracy_std": 0.01, "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.9})
    claims = claims_vs_measured(table).set_index("system")
    assert claims.loc["whisper-project-ft-top1", "random-80-20 accuracy"].startswith("80.0 ± 1.0")
    assert claims.loc["whisper-project-ft-top2", "actor-kfold accuracy"] == "not run"
    assert "egemaps+svm" not in claims.index and claims.loc["w2v2-project-ft", "random-80-20 accuracy"] == "-"


def test_error_analysis_tables():
    truth = ["calm", "calm", "neutral", "sad", "fearful", "sad"]
    predicted = ["neutral", "calm", "neutral", "fearful", "sad", "sad"]
    table = rows("s", "actor-kfold", 1, truth, predicted)
    pairs = pair_confusions(table).set_index("pair")
    assert pairs.loc["calm/neutral", "a_as_b"] == 0.5 and pairs.loc["calm/neutral", "b_as_a"] == 0.0
    assert pairs.loc["sad/fearful", "a_as_b"] == 0.5 and pairs.loc["sad/fearful", "b_as_a"] == 1.0
    corpus = pd.DataFrame({"stem": table["stem"], "gender": ["male", "female"] * 3})
    by_gender = per_group_accuracy(table, corpus, "gender")
    assert by_gender.loc["s", "male"] == pytest.approx(1 / 3) and by_gender.loc["s", "female"] == pytest.approx(2 / 3)


def test_run_table_shows_what_ran_best_first_and_why_the_rest_did_not():
    from ser_utils.evaluation.metrics import metric_row, not_run_rows, score
    from ser_utils.results.tables import run_table

    good, poor = score(["sad", "happy"], ["sad", "happy"]), score(["sad", "happy"], ["sad", "sad"])
    metrics = pd.DataFrame([metric_row("weak", "actor-kfold", 1, poor), metric_row("strong", "actor-kfold", 1, good),
                            metric_row("strong", "actor-kfold", 2, poor),
                            *not_run_rows("absent", ["actor-kfold"], "no weights here")])
    table = run_table(metrics, protocols=("actor-kfold",))
    assert list(table.index) == ["strong", "weak", "absent"]
    assert table.loc["strong", "actor-kfold UAR"] == "75.0 ± 35.4" and table.loc["weak", "actor-kfold UAR"] == "50.0"
    assert table.loc["absent", "actor-kfold UAR"] == "" and table.loc["absent", "note"] == "no weights here"


def test_replace_marked(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results -->\nold\n<!-- /results -->\nend\n")
    assert replace_marked(readme, "results", "| new |")
    assert readme.read_text() == "intro\n<!-- results -->\n| new |\n<!-- /results -->\nend\n"
    assert not replace_marked(readme, "results", "| new |")
    with pytest.raises(ValueError, match="markers"):
        replace_marked(readme, "missing", "x")
