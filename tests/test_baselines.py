import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from ser_utils.core.config import REPO_ROOT
from ser_utils.data.audio import load_audio
from ser_utils.data.corpus import EMOTIONS
from ser_utils.evaluation.inner_cv import INNER_FOLDS, inner_folds
from ser_utils.evaluation.metrics import METRICS
from ser_utils.evaluation.splits import make_splits
from ser_utils.features import FeatureConfig, FeatureTable, LibrosaFeatures, extract_corpus
from ser_utils.models.baseline import BaselineModel
from ser_utils.models.classifiers import fit_quietly, make_classifier
from ser_utils.results.store import read_metrics, read_predictions
from ser_utils.results.tables import best_system, protocol_gap, results_table
from ser_utils.study import baselines
from ser_utils.study.baselines import (
    SystemResult,
    SystemSpec,
    evaluate_systems,
    result_of,
    select_params,
    summary_table,
    write_results,
)
from ser_utils.study.importance import family_importance, fold_family_importance, refit_folds


class Spy(ClassifierMixin, BaseEstimator):
    """Predicts the most frequent training class, and records which rows every call saw.

    Column 0 of X is the clip's actor, column 1 its row number in the corpus table.
    """

    calls: list = []  # noqa: RUF012  (shared on purpose: clones must log to the same place)

    def fit(self, X, y):
        Spy.calls.append(("fit", set(X[:, 0].astype(int)), set(X[:, 1].astype(int))))
        values, counts = np.unique(y, return_counts=True)
        self.classes_, self.majority_ = values, values[counts.argmax()]
        return self

    def predict(self, X):
        Spy.calls.append(("predict", set(X[:, 0].astype(int)), set(X[:, 1].astype(int))))
        return np.full(len(X), self.majority_)


def spy_table(meta: pd.DataFrame) -> FeatureTable:
    X = np.column_stack([meta["actor"], np.arange(len(meta))]).astype(float)
    return FeatureTable(X=X, meta=meta.reset_index(drop=True), names=["actor", "row"],
                        families=["id", "id"], feature_set="spy")


@pytest.mark.parametrize("protocol", ["actor-kfold", "random-80-20"])
def test_no_test_clip_or_actor_reaches_model_selection(synthetic_meta, monkeypatch, protocol):
    """Instrument every fit/predict: per split, every grid point is fit and scored on each inner fold of the
    training clips (train + val), an inner fold's fit and score never share a clip (nor an actor under
    actor-kfold), the refit sees train + val, and the test clips appear once, in the last predict."""
    monkeypatch.setattr(baselines, "make_classifier", lambda name, params=None, seed=0, **_: Spy())
    Spy.calls = []
    table = spy_table(synthetic_meta)
    splits = make_splits(synthetic_meta, protocol, n_repeats=2)
    grid = [{"a": 1}, {"a": 2}, {"a": 3}]
    results = evaluate_systems({"spy": table}, [SystemSpec("spy", "spy")], {protocol: splits}, grids={"spy": grid},
                               n_jobs=1, progress=False)
    per_split = 2 * len(grid) * INNER_FOLDS + 2
    assert len(Spy.calls) == per_split * len(splits)
    for k, split in enumerate(splits):
        train, val, test = (set(np.flatnonzero(m)) for m in split.masks(table.meta))
        test_actors = set(table.meta.loc[list(test), "actor"])
        calls = Spy.calls[k * per_split:(k + 1) * per_split]
        selection, (refit, final) = calls[:-2], calls[-2:]
        scored = []
        for (fit, predict) in zip(selection[::2], selection[1::2], strict=True):
            assert fit[0] == "fit" and predict[0] == "predict"
            assert fit[2] <= train | val and predict[2] <= train | val and not fit[2] & predict[2]
            if protocol == "actor-kfold":  # inner folds never share an actor, and never hold a test actor
                assert not fit[1] & predict[1] and not (fit[1] | predict[1]) & test_actors
            scored.append(frozenset(predict[2]))
        assert set().union(*scored) == train | val and len(set(scored)) == INNER_FOLDS  # each row scored
        assert refit[0] == "fit" and refit[2] == train | val
        assert final[0] == "predict" and final[2] == test
        assert not set().union(*(c[2] for c in calls[:-1])) & test
        if protocol == "actor-kfold":  # no test *actor* anywhere before the final predict
            assert not set().union(*(c[1] for c in calls[:-1])) & test_actors
            assert final[1] == test_actors
    cut = {"actor-kfold": "grouped by actor", "random-80-20": "stratified by class (actors on both sides)"}[protocol]
    assert set(results[0].selections["inner_cv"]) == {cut}


def test_the_progress_bar_follows_the_headless_switch(synthetic_meta, monkeypatch, capsys):
    # make all sets SER_PROGRESS=0 so that rendered reports carry no progress widgets.
    monkeypatch.setattr(baselines, "make_classifier", lambda name, params=None, seed=0, **_: Spy())
    splits = {"actor-kfold": make_splits(synthetic_meta, "actor-kfold")[:1]}
    for setting, shown in (("0", False), ("1", True)):
        monkeypatch.setenv("SER_PROGRESS", setting)
        evaluate_systems({"spy": spy_table(synthetic_meta)}, [SystemSpec("spy", "spy")], splits,
                         grids={"spy": [{}]}, n_jobs=1)
        assert ("baseline folds" in capsys.readouterr().err) == shown


def test_selection_picks_the_best_inner_uar_and_the_first_of_ties():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = np.where(X[:, 0] > 0, "happy", "sad")
    grid = [{"C": 1e-6}, {"C": 1.0}, {"C": 10.0}]
    params, trials = select_params("logreg", grid, X, y)
    assert [t["params"] for t in trials] == grid
    uars = [t["inner_uar"] for t in trials]
    assert uars[0] < uars[1] <= uars[2]  # the settings really differ here, so the choice is meaningful
    assert params == grid[int(np.argmax(uars))] and all(t["inner_folds"] == INNER_FOLDS for t in trials)
    # Two settings that fit the same model (lbfgs converges long before either limit): the earlier grid point
    # wins, either way round.
    for tie in ([{"C": 10.0}, {"C": 10.0, "max_iter": 5000}], [{"C": 10.0, "max_iter": 5000}, {"C": 10.0}]):
        params, trials = select_params("logreg", tie, X, y)
        assert trials[0]["inner_uar"] == trials[1]["inner_uar"]
        assert params == tie[0]


@pytest.fixture(scope="module")
def synthetic_table(synthetic_meta, tmp_path_factory):
    """Real mfcc-set features of a quarter of the synthetic corpus (6 actors' worth of clips)."""
    meta = synthetic_meta[(synthetic_meta["statement"] == 1) & (synthetic_meta["repetition"] == 1)]
    return extract_corpus(meta, LibrosaFeatures(), tmp_path_factory.mktemp("cache"), n_jobs=1,
                          progress=False)


def test_evaluate_and_write_results(synthetic_table, tmp_path):
    meta = synthetic_table.meta
    splits = {"actor-kfold": make_splits(meta, "actor-kfold"),
              "random-80-20": make_splits(meta, "random-80-20", n_repeats=2)}
    # The SVM on all 428 columns, LogReg on the energy families only (keeps the test fast).
    specs = [SystemSpec("mfcc-set", "svm"), SystemSpec("mfcc-set", "logreg", families=("rms", "zcr"),
                                                       name="energy+logreg")]
    grids = {"svm": [{"C": 1.0}, {"C": 10.0}], "logreg": [{"C": 1.0}]}
    results = evaluate_systems({"mfcc-set": synthetic_table}, specs, splits, grids=grids, n_jobs=1,
                               progress=False)
    assert [(r.system, r.protocol) for r in results] == [
        ("mfcc-set+svm", "actor-kfold"), ("mfcc-set+svm", "random-80-20"),
        ("energy+logreg", "actor-kfold"), ("energy+logreg", "random-80-20")]
    kfold = results[0]
    assert [row["fold"] for row in kfold.rows] == [1, 2, 3, 4, 5, 6]
    assert len(kfold.predictions) == len(meta)  # every clip is tested exactly once over the folds
    assert kfold.confusion.shape == (8, 8) and kfold.confusion.sum() == len(meta)
    assert len(kfold.selections) == 6 * 2 and kfold.selections["chosen"].sum() == 6
    assert kfold.chosen_params() in grids["svm"]
    summary = summary_table(results).set_index(["system", "protocol"])
    assert summary.loc[("mfcc-set+svm", "actor-kfold"), "uar_mean"] > 1 / 8  # learns something

    write_results(results, tmp_path)
    metrics = read_metrics(tmp_path)
    assert set(metrics["system"]) == {"mfcc-set+svm", "energy+logreg"} and len(metrics) == 2 * (6 + 2)
    predictions = read_predictions(tmp_path, ["mfcc-set+svm"])
    assert set(predictions["protocol"]) == {"actor-kfold", "random-80-20"}
    assert (tmp_path / "baselines_selection.csv").is_file()
    kfold_uar = summary.xs("actor-kfold", level="protocol")["uar_mean"]
    best = best_system(summary_table(results))
    assert kfold_uar[best] == kfold_uar.max() and result_of(results, best).protocol == "actor-kfold"

    # The analysis refits each fold's chosen setting and checks it reproduces the recorded predictions.
    assert sorted(refit_folds(kfold, synthetic_table, splits["actor-kfold"], n_jobs=1)) == [1, 2, 3, 4, 5, 6]
    importance = fold_family_importance(kfold, synthetic_table, splits["actor-kfold"], n_repeats=1, n_jobs=1)
    assert set(importance["family"]) == set(synthetic_table.families)


def test_family_importance_finds_the_informative_family():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6))
    y = np.where(X[:, 0] + X[:, 1] > 0, "angry", "calm")
    model = make_classifier("logreg").fit(X, y)
    importance = family_importance(model, X, y, ["a", "a", "b", "b", "c", "c"], n_repeats=3)
    assert importance["family"].iloc[0] == "a"
    assert importance.set_index("family").loc["a", "uar_drop_mean"] > 0.2
    assert abs(importance.set_index("family").loc["c", "uar_drop_mean"]) < 0.05


@pytest.mark.parametrize("classifier", ["svm", "rf"])
def test_model_round_trip(synthetic_table, tmp_path, classifier):
    model = BaselineModel.fit(synthetic_table, classifier, baselines.GRIDS[classifier][0])
    waves = [load_audio(p) for p in synthetic_table.meta["path"].iloc[:5]]
    proba = model.predict_proba(waves)
    assert proba.shape == (5, 8) and np.allclose(proba.sum(axis=1), 1)
    model.save_pretrained(tmp_path / "baseline")
    config = json.loads((tmp_path / "baseline" / "config.json").read_text())
    assert config["labels"] == list(EMOTIONS) and config["sample_rate"] == 16000
    assert config["system"] == f"mfcc-set+{classifier}" and config["feature_set"] == "mfcc-set"
    loaded = BaselineModel.from_pretrained(tmp_path / "baseline")
    assert loaded.extractor.config == model.extractor.config
    np.testing.assert_array_equal(loaded.predict_proba(waves), proba)
    assert loaded.predict(waves) == [EMOTIONS[i] for i in proba.argmax(axis=1)]


def test_model_on_a_family_subset_round_trips(synthetic_table, tmp_path):
    subset = synthetic_table.select(("mfcc", "rms"))
    model = BaselineModel.fit(subset, "logreg", system="mfcc-rms+logreg")
    model.save_pretrained(tmp_path)
    loaded = BaselineModel.from_pretrained(tmp_path)
    assert loaded.system == "mfcc-rms+logreg" and loaded.families == ("mfcc", "rms")
    waves = [load_audio(p) for p in subset.meta["path"].iloc[:3]]
    # Same numbers as the pipeline on the table's columns, reordered from sklearn's sorted classes.
    order = [list(model.pipeline.classes_).index(e) for e in EMOTIONS]
    expected = model.pipeline.predict_proba(subset.X[:3])[:, order]
    np.testing.assert_array_equal(loaded.predict_proba(waves), expected)
    with pytest.raises(ValueError, match="feature columns"):
        BaselineModel.fit(subset, "logreg", extractor=LibrosaFeatures(FeatureConfig(n_mfcc=13)))


def test_probability_columns_follow_emotions_even_for_missing_classes(synthetic_table):
    keep = synthetic_table.meta["emotion"].isin(["sad", "angry"]).to_numpy()
    table = FeatureTable(X=synthetic_table.X[keep], meta=synthetic_table.meta[keep].reset_index(drop=True),
                         names=synthetic_table.names, families=synthetic_table.families,
                         feature_set="mfcc-set")
    model = BaselineModel.fit(table, "logreg")
    proba = model.predict_proba([load_audio(table.meta["path"].iloc[0])])
    present = [EMOTIONS.index("sad"), EMOTIONS.index("angry")]
    assert proba[0, present].sum() == pytest.approx(1)
    assert set(model.predict([load_audio(p) for p in table.meta["path"]])) <= {"sad", "angry"}


def test_from_pretrained_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a baseline model directory"):
        BaselineModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown classifier"):
        make_classifier("xgboost")


def test_tables_for_the_notebook(synthetic_table):
    meta = synthetic_table.meta
    splits = {"actor-kfold": make_splits(meta, "actor-kfold"),
              "random-80-20": make_splits(meta, "random-80-20", n_repeats=2)}
    results = evaluate_systems({"mfcc-set": synthetic_table}, [SystemSpec("mfcc-set", "svm")], splits,
                               grids={"svm": [{"C": 1.0}]}, n_jobs=1, progress=False)
    table = results_table(summary_table(results))
    assert list(table.columns) == [(p, m) for p in ("random-80-20", "actor-kfold") for m in METRICS]
    assert " ± " in table.loc["mfcc-set+svm", ("actor-kfold", "uar")]
    gap = protocol_gap(summary_table(results)).loc["mfcc-set+svm"]
    assert gap["uar gap (pp)"] == pytest.approx(gap["uar random-80-20"] - gap["uar actor-kfold"], abs=0.11)


def _result_on(families):
    """A SystemResult as evaluate_normalized leaves one: a chosen setting and variance per fold."""
    selections = pd.DataFrame({"params": ['{"C": 0.1}'] * 2, "inner_uar": [0.5, 0.5], "chosen": [True, True],
                               "variance": ["shrunk", "shrunk"]})
    return SystemResult(system="mfcc-rms+logreg+spknorm", feature_set="mfcc-set", classifier="logreg",
                        protocol="actor-kfold", rows=[], predictions=pd.DataFrame(), selections=selections,
                        families=families)


def test_refits_use_the_systems_own_families(synthetic_table):
    from ser_utils.study.baselines import refit_model
    from ser_utils.study.normalized_systems import refit_speaker_model

    tables = {"mfcc-set": synthetic_table}
    result = _result_on(("mfcc", "rms"))
    plain = refit_model(result, tables)
    speaker = refit_speaker_model(result, tables, 3)
    width = synthetic_table.select(("mfcc", "rms")).X.shape[1]
    for model in (plain, speaker):
        assert model.families == ("mfcc", "rms") and model.pipeline.n_features_in_ == width
    assert speaker.normalization["kind"] != "none"
    waves = [load_audio(p) for p in synthetic_table.meta["path"].iloc[:2]]
    assert plain.predict_proba(waves).shape == (2, 8)


def test_the_run_record_stores_the_settings_fields(tmp_path):
    from ser_utils.core.config import BaselineRun, get_profile
    from ser_utils.results.report import write_run_info

    run = BaselineRun()
    path = write_run_info(tmp_path / "baselines_run.json", get_profile("smoke"), {"run": run})
    assert json.loads(path.read_text())["config"]["run"] == json.loads(json.dumps(run.to_dict()))


def _generated_table(meta: pd.DataFrame, n_features: int = 12, seed: int = 0) -> FeatureTable:
    """Features that carry the emotion (a class centre each) and the actor (an offset each), plus noise."""
    rng = np.random.default_rng(seed)
    classes = meta["emotion"].astype(str).map({e: i for i, e in enumerate(EMOTIONS)}).to_numpy()
    X = (rng.normal(size=(8, n_features))[classes] + 0.5 * rng.normal(size=(25, n_features))[meta["actor"]]
         + 1.5 * rng.normal(size=(len(meta), n_features)))
    families = ["a"] * (n_features // 2) + ["b"] * (n_features - n_features // 2)
    return FeatureTable(X=X, meta=meta.reset_index(drop=True), names=[f"f{i}" for i in range(n_features)],
                        families=families, feature_set="gen")


def _reference_results(table, specs, splits, grids, seed=0):
    """The grid without joblib or ordering: per system, protocol and split, every setting fit and scored on
    each inner fold of train + val (grouped by actor under actor-kfold), the best mean (first of ties) refit
    on train + val, the test clips predicted."""
    expected = {}
    for spec in specs:
        part = table.select(spec.families) if spec.families else table
        for protocol, protocol_splits in splits.items():
            for split in protocol_splits:
                train, val, test = split.masks(part.meta)
                X, y = part.X[train | val], part.labels[train | val]
                groups = part.meta["actor"].to_numpy()[train | val] if protocol == "actor-kfold" else None
                folds = inner_folds(y, groups, seed=seed)
                trials = []
                for params in grids[spec.classifier]:
                    uars = [baselines.score(y[sc], fit_quietly(make_classifier(spec.classifier, params, seed),
                                                               X[fit], y[fit]).predict(X[sc])).uar
                            for fit, sc in folds]
                    trials.append(float(np.mean(uars)))
                best = grids[spec.classifier][int(np.argmax(trials))]  # argmax: the first of ties
                model = fit_quietly(make_classifier(spec.classifier, best, seed), X, y)
                expected[(spec.system, protocol, split.fold)] = (best, trials, model.predict(part.X[test]))
    return expected


def test_the_task_order_and_the_workers_change_no_result(synthetic_meta, monkeypatch):
    """The speed changes (tasks longest first, two workers) leave every prediction, inner-CV score and
    choice as a plain serial loop computes them."""
    table = _generated_table(synthetic_meta[synthetic_meta["repetition"] == 1])  # half the corpus: fast enough
    splits = {"actor-kfold": make_splits(table.meta, "actor-kfold")[:2],
              "random-80-20": make_splits(table.meta, "random-80-20", n_repeats=1)}
    grids = {"rf": [{"max_features": "sqrt", "n_estimators": 20}, {"max_features": 0.5, "n_estimators": 20}],
             "logreg": [{"C": 0.01}, {"C": 1.0}], "svm": [{"C": 1.0}, {"C": 10.0}],
             "mlp": [{"alpha": 0.1, "max_iter": 30, "hidden_layer_sizes": [16]},
                     {"alpha": 1.0, "max_iter": 30, "hidden_layer_sizes": [16]}]}
    specs = [SystemSpec("gen", "svm"), SystemSpec("gen", "rf"), SystemSpec("gen", "logreg", families=("a",),
                                                                         name="a+logreg"), SystemSpec("gen", "mlp")]
    expected = _reference_results(table, specs, splits, grids)

    handed = []
    run_split = baselines._run_split
    monkeypatch.setattr(baselines, "_run_split", lambda clf, *args: handed.append(clf) or run_split(clf, *args))
    serial = evaluate_systems({"gen": table}, specs, splits, grids=grids, n_jobs=1, progress=False)
    assert handed == ["mlp"] * 3 + ["rf"] * 3 + ["svm"] * 3 + ["logreg"] * 3  # longest first
    monkeypatch.undo()
    parallel = evaluate_systems({"gen": table}, specs, splits, grids=grids, n_jobs=2, progress=False)

    for results in (serial, parallel):
        assert [(r.system, r.protocol) for r in results] == [(s.system, p) for s in specs for p in splits]
        for result in results:
            for fold, predicted in result.predictions.groupby("fold", sort=False):
                best, trials, reference = expected[(result.system, result.protocol, fold)]
                assert np.array_equal(predicted["predicted"].to_numpy(), reference)
                selections = result.selections[result.selections["fold"] == fold]
                assert selections["inner_uar"].tolist() == pytest.approx(trials, abs=1e-12)
                assert json.loads(selections.loc[selections["chosen"], "params"].item()) == best
            assert [row["fold"] for row in result.rows] == [s.fold for s in splits[result.protocol]]
    for a, b in zip(serial, parallel, strict=True):
        pd.testing.assert_frame_equal(a.predictions, b.predictions, check_exact=True)
        pd.testing.assert_frame_equal(a.selections, b.selections, check_exact=True)
        assert a.rows == b.rows


def test_the_grid_workers_do_not_import_torch():
    """Each joblib worker of evaluate_systems imports study.baselines to run its fits: without torch (660 MB
    and seconds per worker, after which loky replaced the worker for having grown 300 MB past its first task)."""
    code = ("import sys; import ser_utils.study.baselines as b; b.refit_model; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("protocol", ["actor-kfold", "random-80-20"])
def test_wild_test_clips_change_no_choice_nor_inner_score(synthetic_meta, protocol):
    """The test clips' features replaced by wild values: every choice and inner-CV score of a plain and of the
    speaker-normalized systems stays exactly as it was (speaker statistics, their prior variance included,
    come from the training clips only), so no test clip reaches a choice."""
    from ser_utils.features.normalization import Normalization
    from ser_utils.study.normalized_systems import evaluate_normalized

    meta = synthetic_meta[synthetic_meta["repetition"] == 1]  # half the corpus keeps the test fast
    table = _generated_table(meta)
    split = make_splits(table.meta, protocol, n_repeats=1)[0]
    test = split.masks(table.meta)[2]
    X = table.X.copy()
    X[test] = 1e6 * np.random.default_rng(1).normal(size=(int(test.sum()), X.shape[1]))
    wild = FeatureTable(X=X, meta=table.meta, names=table.names, families=table.families, feature_set="gen")
    spec, grids = SystemSpec("gen", "logreg"), {"logreg": [{"C": 0.01}, {"C": 1.0}]}
    jobs = [(spec, Normalization("speaker")), (spec, Normalization("speaker-k", 10))]

    def run(features):
        kwargs = {"grids": grids, "n_jobs": 1, "progress": False}
        return (evaluate_systems({"gen": features}, [spec], {protocol: [split]}, **kwargs)
                + evaluate_normalized({"gen": features}, jobs, {protocol: [split]}, **kwargs))

    clean, dirty = run(table), run(wild)
    assert [r.system for r in clean] == ["gen+logreg", "gen+logreg+spknorm", "gen+logreg+spknorm-k10"]
    for a, b in zip(clean, dirty, strict=True):
        pd.testing.assert_frame_equal(a.selections, b.selections, check_exact=True)
        assert a.selections["inner_uar"].between(0, 1).all() and a.selections["chosen"].sum() == 1


def test_a_one_setting_grid_makes_no_choice_and_fits_once_per_split(synthetic_meta, monkeypatch):
    """The Random Forest and the MLP have one setting: no inner fold is fitted for them, the table says so."""
    monkeypatch.setattr(baselines, "make_classifier", lambda name, params=None, seed=0, **_: Spy())
    Spy.calls = []
    table = spy_table(synthetic_meta)
    splits = make_splits(synthetic_meta, "actor-kfold")
    results = evaluate_systems({"spy": table}, [SystemSpec("spy", "spy")], {"actor-kfold": splits},
                               grids={"spy": [{"a": 1}]}, n_jobs=1, progress=False)
    assert [c[0] for c in Spy.calls] == ["fit", "predict"] * len(splits)
    for k, split in enumerate(splits):
        train, val, test = (set(np.flatnonzero(m)) for m in split.masks(table.meta))
        assert Spy.calls[2 * k][2] == train | val and Spy.calls[2 * k + 1][2] == test
    assert set(results[0].selections["inner_cv"]) == {baselines.NO_CHOICE}
    assert set(baselines.fold_choices(results[0].selections).iloc[0]) == {"a=1 (one setting)"}
    assert [len(baselines.GRIDS[c]) for c in ("rf", "mlp")] == [1, 1]
