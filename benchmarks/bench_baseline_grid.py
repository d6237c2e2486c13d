"""Speed of notebook 03's baseline grid: the previous ``evaluate_systems`` against the current one, on the
real cached features, measured in the same run and checked to give identical results.

The inputs are those of notebook 03's main grid cell: RAVDESS features ("mfcc-set" and "egemaps",
``features.extract_corpus``, cached under ``SER_WORK_DIR``: the first run computes them, about 4 minutes
on 2 cores), the 10 systems (the four classifiers on mfcc-set, RF and LogReg on the original four
families, the four on egemaps), the full grids (``baselines.GRIDS``) and the 11 splits (6 actor-kfold
folds + 5 random-80-20 seeds, seed 0).

(a) reference: a copy of the code path before issue 34 (grid points chosen on the split's validation
    actors; the previous grids and classifier settings: 300 trees, MLPs without early stopping, LogReg
    ``C=0.001``; tasks handed to the workers system by system, split by split, with the imports of its
    module), kept here;
(b) ``baselines.evaluate_systems`` as the notebook calls it (inner cross-validation on the training clips,
    the current grids and settings, tasks longest first, workers without torch).

(a) and (b) choose differently by design (issue 34), so each path's runs are checked against that path's
first run, not against each other; compare their work (seconds of all tasks).

Each run starts its own joblib worker pool (``--n-jobs``, default all cores), so what the workers import
counts: the previous code's workers imported torch with ``study.baselines`` (through the deployable model),
which the current module no longer imports. With ``--repeats N`` they run N times each, interleaved
(a, b, a, b, ...), and the ratio is that of the medians. Each task's span is
logged, so each run also reports its work (seconds of all tasks) and how long workers sat idle at the
end, their tasks done, waiting for the last one: the part of the wall time that the task order decides,
and a measure that, unlike the wall time, does not follow the load of a shared machine. Every run's metric
rows, per-clip predictions and selection log must equal its path's first run exactly, or the script fails.
``--profile`` first times every fit alone (one thread, this process): seconds per classifier and per
system and grid point (selection fits on train, then the refit of the chosen setting on train + val;
the current classifier settings, timed under the previous validation selection, not the inner CV),
and how many MLP fits stopped at ``max_iter``: the numbers behind where the grid's time goes.
``--systems`` / ``--protocols`` run a stated subset (comma-separated names).

    python benchmarks/bench_baseline_grid.py [--data ../shared/data/ravdess-16k] [--n-jobs -1] [--repeats 1]
        [--profile] [--systems mfcc-set+svm,egemaps+mlp] [--protocols actor-kfold]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ser_utils.core.config import REPO_ROOT, get_profile
from ser_utils.data.corpus import discover
from ser_utils.evaluation.metrics import metric_row, prediction_table, score
from ser_utils.evaluation.splits import make_splits
from ser_utils.features import ORIGINAL_FAMILIES, EgemapsFeatures, LibrosaFeatures, extract_corpus
from ser_utils.models.classifiers import CLASSIFIERS, fit_quietly, make_classifier
from ser_utils.study import baselines
from ser_utils.study.baselines import GRIDS, SystemResult, SystemSpec

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ravdess-16k"


# -- (a) the previous code path, verbatim (study.baselines before the tasks were ordered) -----------------

#: The classifier settings and grids before issue 34 (make_classifier's defaults then).
PREVIOUS_DEFAULTS = {"rf": {"n_estimators": 300}, "mlp": {"early_stopping": False}}
PREVIOUS_GRIDS = {**GRIDS, "logreg": [{"C": c} for c in (0.001, 0.01, 0.1, 1.0)]}


def previous_classifier(classifier, params, seed):
    return make_classifier(classifier, {**PREVIOUS_DEFAULTS.get(classifier, {}), **params}, seed)


def reference_select_params(classifier, grid, X_train, y_train, X_val, y_val, seed=0):
    trials = []
    for params in grid:
        model = fit_quietly(previous_classifier(classifier, params, seed), X_train, y_train)
        val = score(y_val, model.predict(X_val))
        trials.append({"params": dict(params), "val_uar": val.uar, "val_accuracy": val.accuracy})
    best = max(range(len(trials)), key=lambda i: (trials[i]["val_uar"], -i))
    return dict(grid[best]), trials


def reference_run_split(classifier, grid, X, y, masks, seed, keep_model):
    # The previous code ran in the workers from study.baselines, which imported models.baseline and with it
    # torch (660 MB, 2-4 s) in every worker, and loky then replaced the worker (grown 300 MB past its first
    # task's size): the same import here.
    import ser_utils.models.baseline  # noqa: F401

    train, val, test = masks
    params, trials = reference_select_params(classifier, grid, X[train], y[train], X[val], y[val], seed)
    model = fit_quietly(previous_classifier(classifier, params, seed), X[train | val], y[train | val])
    return params, trials, model.predict(X[test])


def timed(log: str, func, *args):
    """``func(*args)``, its worker and wall-clock span appended to ``log`` (one line per task)."""
    start = time.time()
    outcome = func(*args)
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()} {start} {time.time()}\n")
    return outcome


CURRENT_RUN_SPLIT = baselines._run_split


def timed_current(log: str, *args):
    return timed(log, CURRENT_RUN_SPLIT, *args)


def idle_at_the_end(log: str, n_workers: int) -> tuple[float, float]:
    """``(work, idle)``: seconds of all tasks, and seconds that the workers waited, their tasks done, for the
    last task to end (the imbalance that handing out the longest tasks first removes). A worker that loky
    replaced (its memory check) is not counted: the last ``n_workers`` to finish are."""
    spans = [line.split() for line in Path(log).read_text().splitlines()]
    last: dict[str, float] = {}
    for pid, _, end in spans:
        last[pid] = max(last.get(pid, 0.0), float(end))
    ends = sorted(last.values())[-n_workers:]
    return sum(float(end) - float(start) for _, start, end in spans), sum(ends[-1] - end for end in ends)


def reference_evaluate_systems(tables, specs, splits, *, grids, seed=0, n_jobs=-1, log=None) -> list[SystemResult]:
    from joblib import Parallel, delayed

    tasks, keys = [], []
    for spec in specs:
        table = tables[spec.feature_set]
        if spec.families:
            table = table.select(spec.families)
        y = table.labels
        for protocol, protocol_splits in splits.items():
            for split in protocol_splits:
                masks = split.masks(table.meta)
                tasks.append(delayed(timed)(log, reference_run_split, spec.classifier, grids[spec.classifier], table.X,
                                            y, masks, seed, False))
                keys.append((spec, protocol, split, table, masks))
    outcomes = list(Parallel(n_jobs=n_jobs, return_as="generator")(tasks))
    results: dict[tuple, SystemResult] = {}
    for (spec, protocol, split, table, masks), (params, trials, predicted) in zip(keys, outcomes, strict=True):
        key = (spec.system, protocol)
        if key not in results:
            results[key] = SystemResult(spec.system, spec.feature_set, spec.classifier, protocol, [],
                                        pd.DataFrame(), pd.DataFrame(), families=spec.families)
        result = results[key]
        test = table.meta[masks[2]]
        missing = len(split.test) - len(test)
        note = f"{missing} test clip(s) without features" if missing else ""
        result.rows.append(metric_row(spec.system, protocol, split.fold,
                                      score(test["emotion"].astype(str), predicted), note=note))
        predictions = prediction_table(spec.system, protocol, split.fold, test, predicted)
        selections = pd.DataFrame([{"system": spec.system, "protocol": protocol, "fold": split.fold,
                                    "params": json.dumps(t["params"], sort_keys=True),
                                    "val_uar": t["val_uar"], "val_accuracy": t["val_accuracy"],
                                    "chosen": t["params"] == params} for t in trials])
        result.predictions = pd.concat([result.predictions, predictions], ignore_index=True)
        result.selections = pd.concat([result.selections, selections], ignore_index=True)
    return list(results.values())


# -- inputs, checks, profile -----------------------------------------------------------------------------

def notebook_inputs(data: Path, n_jobs: int):
    """Notebook 03's feature tables, systems and splits (full profile, seed 0, 5 random repeats)."""
    profile = get_profile("full", data_dir=data)
    meta = discover(data)
    tables = {}
    for name, extractor in {"mfcc-set": LibrosaFeatures(), "egemaps": EgemapsFeatures()}.items():
        start = time.perf_counter()
        table = tables[name] = extract_corpus(meta, extractor, profile.cache_dir, n_jobs=n_jobs, progress=False)
        print(f"{name}: {table.X.shape[0]} clips x {table.X.shape[1]} features ({table.hits} from cache, "
              f"{table.computed} computed, {time.perf_counter() - start:.0f} s)")
    specs = [SystemSpec("mfcc-set", clf) for clf in CLASSIFIERS]
    specs += [SystemSpec("mfcc-set", clf, families=ORIGINAL_FAMILIES, name=f"original-set+{clf}")
              for clf in ("rf", "logreg")]
    specs += [SystemSpec("egemaps", clf) for clf in CLASSIFIERS]
    kfold_meta = tables["mfcc-set"].meta
    splits = {"random-80-20": make_splits(kfold_meta, "random-80-20", seed=profile.seed, n_repeats=5),
              "actor-kfold": make_splits(kfold_meta, "actor-kfold", seed=profile.seed)}
    return tables, specs, splits, profile.seed


def assert_identical(reference: Sequence[SystemResult], results: Sequence[SystemResult]) -> None:
    """Metric rows, predictions and selections equal exactly, system by system, in the same order."""
    assert [(r.system, r.protocol) for r in reference] == [(r.system, r.protocol) for r in results]
    for a, b in zip(reference, results, strict=True):
        pd.testing.assert_frame_equal(pd.DataFrame(a.rows), pd.DataFrame(b.rows), check_exact=True)
        pd.testing.assert_frame_equal(a.predictions, b.predictions, check_exact=True)
        pd.testing.assert_frame_equal(a.selections, b.selections, check_exact=True)


def profile_fits(tables, specs, splits, seed: int) -> None:
    """Every fit alone, one thread: the selection fits per grid point, then the refit of the chosen one."""
    from threadpoolctl import threadpool_limits

    rows = []

    def timed_fit(spec, table, params, mask, label, protocol):
        start = time.perf_counter()
        model = fit_quietly(make_classifier(spec.classifier, params, seed), table.X[mask], table.labels[mask])
        seconds, clf = time.perf_counter() - start, model[-1]
        n_iter = float(np.max(clf.n_iter_)) if hasattr(clf, "n_iter_") else np.nan
        rows.append({"system": spec.system, "classifier": spec.classifier, "protocol": protocol, "params": label,
                     "seconds": seconds, "n_iter": n_iter,
                     "at_max_iter": spec.classifier == "mlp" and n_iter == clf.max_iter})
        return model

    with threadpool_limits(1):
        for spec in specs:
            table = tables[spec.feature_set].select(spec.families) if spec.families else tables[spec.feature_set]
            grid = GRIDS[spec.classifier]
            for protocol, protocol_splits in splits.items():
                for split in protocol_splits:
                    train, val, _ = split.masks(table.meta)
                    uars = [score(table.labels[val], timed_fit(spec, table, params, train, json.dumps(params),
                                                               protocol).predict(table.X[val])).uar
                            for params in grid]
                    chosen = grid[max(range(len(grid)), key=lambda i: (uars[i], -i))]
                    timed_fit(spec, table, chosen, train | val, "refit (chosen)", protocol)
    table = pd.DataFrame(rows)
    total = table["seconds"].sum()
    print(f"\nprofile: {len(table)} fits, {total:.0f} s in one thread "
          f"(two workers: at best {total / 2:.0f} s of wall time)")
    by_classifier = table.groupby("classifier")["seconds"].agg(["sum", "mean", "count"])
    by_classifier["share"] = by_classifier["sum"] / total
    print(by_classifier.sort_values("sum", ascending=False).round(2).to_string())
    print()
    by_point = table.groupby(["system", "params"], sort=False).agg(
        seconds=("seconds", "sum"), mean=("seconds", "mean"), n_iter_median=("n_iter", "median"),
        mlp_at_max_iter=("at_max_iter", "sum"))
    print(by_point.round(2).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAVDESS folder (default: %(default)s)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="joblib worker processes (default: all cores)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each path, interleaved (default: 1; 0 with --profile: the profile only)")
    parser.add_argument("--profile", action="store_true", help="first time every fit alone (one thread)")
    parser.add_argument("--systems", help="comma-separated system names (default: all 10)")
    parser.add_argument("--protocols", help="comma-separated protocols (default: both)")
    args = parser.parse_args()

    from joblib import cpu_count, effective_n_jobs
    from joblib.externals.loky import get_reusable_executor

    tables, specs, splits, seed = notebook_inputs(args.data, args.n_jobs)
    if args.systems:
        specs = [s for s in specs if s.system in args.systems.split(",")]
    if args.protocols:
        splits = {p: s for p, s in splits.items() if p in args.protocols.split(",")}
    n_tasks = len(specs) * sum(len(s) for s in splits.values())
    print(f"{len(specs)} systems x {sum(len(s) for s in splits.values())} splits = {n_tasks} tasks; "
          f"{cpu_count()} cores, n_jobs={args.n_jobs}, load average {os.getloadavg()[0]:.2f}")
    if args.profile:
        profile_fits(tables, specs, splits, seed)

    n_workers = effective_n_jobs(args.n_jobs)
    times = {"reference": [], "current": []}
    first: dict[str, list[SystemResult]] = {}
    idle = {"reference": [], "current": []}
    for repeat in range(args.repeats):
        for label in ("reference", "current"):
            log = tempfile.mktemp(prefix="bench-grid-", suffix=".log")
            get_reusable_executor().shutdown(wait=True)  # each run starts its own workers: what they import counts
            start = time.perf_counter()
            if label == "reference":
                results = reference_evaluate_systems(tables, specs, splits, grids=PREVIOUS_GRIDS, seed=seed,
                                                     n_jobs=args.n_jobs, log=log)
            else:
                baselines._run_split = functools.partial(timed_current, log)  # the same span log as (a)
                try:
                    results = baselines.evaluate_systems(tables, specs, splits, grids=GRIDS, seed=seed,
                                                         n_jobs=args.n_jobs, progress=False)
                finally:
                    baselines._run_split = CURRENT_RUN_SPLIT
            times[label].append(time.perf_counter() - start)
            work, waited = idle_at_the_end(log, n_workers)
            idle[label].append(waited)
            os.unlink(log)
            assert_identical(first.setdefault(label, results), results)
            print(f"run {repeat + 1} {label:<10s} {times[label][-1]:8.1f} s  (tasks {work:6.0f} s of work, workers "
                  f"idle at the end {waited:5.1f} s; load average {os.getloadavg()[0]:.2f}; results identical to "
                  "this path's first run)", flush=True)
    if not args.repeats:  # --repeats 0: the profile only
        return
    a, b = statistics.median(times["reference"]), statistics.median(times["current"])
    print(f"\n(a) reference (previous code path)   {a:8.1f} s")
    print(f"(b) evaluate_systems (current)       {b:8.1f} s   {a / b:.2f}x faster than (a)")
    print(f"workers idle at the end (medians): (a) {statistics.median(idle['reference']):.1f} s, "
          f"(b) {statistics.median(idle['current']):.1f} s (wall-clock ratios on a shared machine follow its load; "
          "the idle tail is what the task order changes)")
    print("each path's metric rows, predictions and selection records identical in every run")


if __name__ == "__main__":
    main()
