"""What a reader sees: notebook 05's comparisons (the systems it analyses, McNemar tests, published rows beside
measured ones), tables with human column names in %, and figures whose titles, ticks and legends do not
overlap. Hand-made result files with known answers, through the real table and figure code."""

import numpy as np
import pandas as pd
import pytest

from ser_utils.evaluation.metrics import metrics_from_predictions, not_run_rows
from ser_utils.results import plots
from ser_utils.results.analysis import analysed_systems, significance_tests
from ser_utils.results.store import read_metrics, read_predictions, write_metrics, write_predictions
from ser_utils.results.tables import (
    comparison_table,
    for_display,
    format_p,
    pair_confusion_table,
    pair_confusions,
    published_vs_measured,
)
from ser_utils.study.baselines import choice_counts

TRUTH = ["angry", "sad", "calm", "happy", "neutral", "fearful", "disgust", "surprised"] * 5  # 40 clips


def _predictions(system: str, right: int, fold: int = 1) -> pd.DataFrame:
    """``system`` right on the first ``right`` of the 40 clips of one actor-kfold fold, wrong on the rest."""
    predicted = TRUTH[:right] + ["sad" if t != "sad" else "angry" for t in TRUTH[right:]]
    return pd.DataFrame({"system": system, "protocol": "actor-kfold", "fold": fold,
                         "stem": [f"clip-{i:02d}" for i in range(len(TRUTH))], "actor": fold,
                         "emotion": TRUTH, "predicted": predicted})


@pytest.fixture
def study(tmp_path):
    """A results folder like the study's: pretrained (fine-tuned, frozen, speaker-normalized) and handcrafted
    systems, the best of all transductive, and a system that did not run."""
    right = {"whisper-project-ft-top1": 30, "whisper-project-frozen": 28, "whisper-project-frozen+spknorm": 38,
             "whisper-project-frozen+spknorm-k10": 34, "egemaps+logreg": 20, "egemaps+logreg+spknorm": 26}
    for system, n in right.items():
        table = _predictions(system, n)
        write_predictions(table, tmp_path, system)
        write_metrics(metrics_from_predictions(table), tmp_path, system)
    write_metrics(not_run_rows("w2v2-original-frozen", ["actor-kfold"], "no weights (offline)"), tmp_path, "w2v2")
    return comparison_table(read_metrics(tmp_path), read_predictions(tmp_path), n_boot=10), read_predictions(tmp_path)


def test_the_analysed_systems_are_the_best_inductive_ones_then_the_transductive_best(study):
    table, _ = study
    chosen = analysed_systems(table)
    assert list(chosen.values()) == ["whisper-project-ft-top1", "egemaps+logreg", "whisper-project-frozen+spknorm"]
    assert "transductive" in list(chosen)[2] and "no test-speaker audio" in next(iter(chosen))


def test_mcnemar_tests_for_the_studys_questions_with_readable_p_values(study):
    table, predictions = study
    tests = significance_tests(table, predictions)
    pairs = list(zip(tests["comparison"], tests["system A"], tests["system B"], strict=True))
    assert pairs[:2] == [("pretrained vs handcrafted", "whisper-project-ft-top1", "egemaps+logreg"),
                         ("fine-tuned vs frozen", "whisper-project-ft-top1", "whisper-project-frozen")]
    normalized = {(a, b) for q, a, b in pairs[2:] if q.startswith("speaker-normalized")}
    assert normalized == {("whisper-project-frozen+spknorm", "whisper-project-frozen"),
                          ("whisper-project-frozen+spknorm-k10", "whisper-project-frozen"),
                          ("egemaps+logreg+spknorm", "egemaps+logreg")}
    first = tests.iloc[0]
    # Clips 20-29 only the fine-tuned system got right: 10 discordant pairs, all one way.
    assert (first["clips"], first["only A right"], first["only B right"]) == (40, 10, 0)
    assert (first["UAR % A"], first["UAR % B"]) == (75.0, 50.0)
    assert first["McNemar p"] == "p = 0.002"  # 2 * 0.5 ** 10
    assert tests.iloc[1]["McNemar p"] == "p = 0.5"  # 2 vs 0 discordant clips


def test_p_values_read_as_a_reader_writes_them():
    assert [format_p(p) for p in (0.309934, 0.5764, 0.0123, 0.00099, 1e-30, 1.0, 0.999)] == [
        "p = 0.31", "p = 0.58", "p = 0.012", "p < 0.001", "p < 0.001", "p = 1.0", "p = 1.0"]


def test_published_rows_are_followed_by_the_measured_rows_that_match_them(study):
    table, _ = study
    rows = published_vs_measured(table)
    whisper = rows.index[rows["system"].str.startswith("Whisper large v3")][0]
    after = rows.iloc[whisper + 1:whisper + 3]  # the Whisper systems that ran here, then the next reference
    assert rows.loc[whisper, "row"] == "published" and rows.loc[whisper, "UAR %"] == "75.3"
    assert list(after["row"]) == ["measured here", "published"]
    assert after.iloc[0]["system"] == "whisper-project-frozen" and after.iloc[0]["UAR %"] == "70.0"
    assert "Whisper-base here" in after.iloc[0]["source or note"]
    wav2vec2 = rows[rows["system"] == "w2v2-original-frozen"].iloc[0]
    assert wav2vec2["UAR %"] == "not run" and wav2vec2["source or note"] == "no weights"


def test_tables_show_human_names_percent_whole_folds_and_no_row_numbers():
    raw = pd.DataFrame({"candidate": ["a", "b"], "fold": [1.0, 2.0], "best_epoch": [3.0, 1.0],
                        "val_uar": [0.8203125, 0.5], "uar_drop_std_over_folds": [0.0123, 0.02],
                        "p_value": [0.309934, 0.0001], "chosen": [True, False], "duration": [3.0, 4.0]})
    shown = for_display(raw)
    assert shown.index.name == "candidate" and list(shown.index) == ["a", "b"]  # no stray 0, 1
    assert list(shown.columns) == ["fold", "best epoch", "validation UAR %", "std over folds (points)", "McNemar p",
                                   "chosen", "duration (s)"]
    assert shown["duration (s)"].dtype == float  # a measurement that happens to be whole stays one
    assert list(shown["fold"]) == [1, 2] and str(shown["fold"].dtype) == "Int64"
    assert list(shown["validation UAR %"]) == [82.0, 50.0]
    assert list(shown["McNemar p"]) == ["p = 0.31", "p < 0.001"] and list(shown["chosen"]) == ["yes", "no"]
    grouped = for_display(pd.concat({"egemaps+logreg": raw[["candidate", "val_uar"]]}, names=["system"]))
    assert grouped.index.names == ["system"] and list(grouped.columns) == ["candidate", "validation UAR %"]
    wide = pd.DataFrame({("actor-kfold", "uar"): ["72.5 ± 5.2"]}, index=["s"])
    assert list(for_display(wide).columns) == [("actor-kfold", "UAR %")]
    assert list(for_display(wide)[("actor-kfold", "UAR %")]) == ["72.5 ± 5.2"]  # already %: left alone


def test_confusion_pairs_and_chosen_settings_read_in_words():
    truth, predicted = ["calm", "calm", "neutral", "sad", "fearful"], ["neutral", "calm", "neutral", "fearful", "sad"]
    predictions = pd.DataFrame({"system": "s", "emotion": truth, "predicted": predicted})
    table = pair_confusion_table(pair_confusions(predictions))
    assert list(table.columns) == ["calm → neutral %", "neutral → calm %", "sad → fearful %", "fearful → sad %"]
    assert list(table.loc["s"]) == [50.0, 0.0, 100.0, 100.0]
    selections = pd.DataFrame({"system": "egemaps+logreg", "protocol": "actor-kfold", "chosen": True,
                               "params": ['{"C": 0.1}'] * 3 + ['{"C": 1.0, "penalty": "l2"}']})
    assert choice_counts(selections).loc["egemaps+logreg", "actor-kfold"] == "C=0.1 ×3, C=1.0; penalty=l2 ×1"


def _boxes(fig, artists):
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists if a.get_text()]


def _disjoint(boxes) -> bool:
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_count_panels_titles_and_ticks_do_not_overlap():
    meta = pd.DataFrame({"emotion": np.repeat(["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                                               "surprised"], 30),
                         "actor": np.tile(np.arange(1, 25), 10), "gender": np.tile(["male", "female"], 120),
                         "intensity": np.tile(["normal", "strong", "strong"], 80)})
    fig = plots.count_bars(meta)
    fig.canvas.draw()
    axes = fig.axes
    assert _disjoint(_boxes(fig, [ax.title for ax in axes]))
    for ax in axes:  # labels side by side never touch (long ones are turned, their boxes then overlap)
        assert _disjoint(_boxes(fig, [t for t in ax.get_xticklabels() if t.get_rotation() == 0]))
    assert _disjoint([ax.get_tightbbox() for ax in axes])


def test_training_curves_whole_epochs_folds_as_integers_and_the_legend_off_the_lines():
    log = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.8, 0.7],
                        "val_uar": [0.5, 0.6, 0.7]})
    fig = plots.training_curves({("whisper-project-ft-top1", "actor-kfold", 1.0): log,
                                 ("whisper-project-ft-top1", "actor-kfold", 2.0): log})
    fig.canvas.draw()
    legend = fig.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["actor-kfold, fold 1", "actor-kfold, fold 2"]
    renderer = fig.canvas.get_renderer()
    assert not any(legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert fig.axes[-1].get_lines()[0].get_ydata().max() == pytest.approx(70.0)  # validation UAR in %


def test_per_actor_bars_in_percent_with_a_labelled_axis_and_the_legend_off_the_bars():
    frame = pd.DataFrame(np.linspace(0.3, 0.9, 48).reshape(2, 24), index=["whisper-project-ft-top1", "egemaps+logreg"],
                         columns=np.arange(1, 25))
    fig = plots.grouped_bars(frame, "accuracy %", "accuracy per actor", "actor")
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    assert ax.get_xlabel() == "actor" and ax.get_ylim() == (0, 100)
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert max(p.get_height() for p in ax.patches) == pytest.approx(90.0)
