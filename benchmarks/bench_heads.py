"""The selected frozen head's logistic regression: the preconditioned L-BFGS of
:mod:`ser_utils.training.logistic` against scikit-learn's ``LogisticRegression`` (lbfgs, as the study used it
before: ``max_iter=1000, tol=1e-4``) on the same kernel coordinates, measured in the same run.

The coordinates are those the study fits on: Whisper-base's per-layer mean+std embeddings of actor-kfold fold
1's training clips (1,200 clips, 7,168 features), standardised, in the eigenbasis of their Gram matrix. The
embeddings come from the study's cache (``make all`` puts them there); a cold cache computes them (about 2
minutes with bf16). Prints, per ``C``: both times, the ratio, both objective values (lower is better: the
same problem) and how often their test predictions agree; and the preconditioned fit warm-started from the
previous C's solution, as the study's inner cross-validation runs the C in ascending order on each kernel.

    python benchmarks/bench_heads.py [--data ../shared/data/ravdess-16k] [--cs 0.001 0.01 0.1]

Then the shrinkage discriminant analysis (:class:`~ser_utils.training.head_selection.ShrinkageLDA`: on kernel
coordinates the within-class covariance is a diagonal minus a rank-8 term, solved by the Woodbury identity)
against scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr")`` fitted once per shrinkage, on the same
coordinates: both times, the ratio, the largest difference of their decision functions on the test rows.

Say which CPU ran it (``lscpu``) with the numbers.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.special import log_softmax

from ser_utils.core.config import REPO_ROOT

REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "ravdess-16k"


def coordinates(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold 1's training coordinates ``(N, R)``, their classes, and the test rows' coordinates."""
    os.environ.setdefault("RAVDESS_DIR", data)
    from ser_utils.core import config
    from ser_utils.evaluation.splits import make_splits
    from ser_utils.study import sources, systems
    from ser_utils.training.embeddings import stack
    from ser_utils.training.head_selection import _Kernel

    profile = config.get_profile("full")
    meta = sources.load_corpus(profile)
    backbone = next(b for b in (systems.StudyBackbone.check(c, {"whisper": {"input": "clip"}})
                                for c in sources.prepare_backbones(profile)) if b.family == "whisper" and not b.reason)
    embeddings = systems.backbone_embeddings(profile, meta, backbone)
    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)
    project = systems.study_recipes(profile.run.encoders)["project"]
    candidate = next(c for c in systems.selected_candidates(project) if c.fit == "logistic")
    labels = list(project.model.labels)
    y = meta["emotion"].astype(str).map({name: i for i, name in enumerate(labels)}).to_numpy()
    split = next(s for s in make_splits(meta, "actor-kfold", seed=profile.seed) if s.fold == 1)
    train, val, test = (meta.index.get_indexer(part.index) for part in split.frames(meta))
    train = np.sort(np.concatenate([train, val]))
    x = stack(embeddings, meta["path"])
    kernel = _Kernel(candidate.config, x[train], y[train], x[test])
    return kernel.coordinates, y[train], (kernel.k_score @ kernel.v / kernel.s.sqrt()).numpy()


def objective(x: np.ndarray, y: np.ndarray, weights: np.ndarray, bias: np.ndarray, c: float) -> float:
    logits = x @ weights + bias
    return float(c * -log_softmax(logits, axis=1)[np.arange(len(y)), y].sum() + 0.5 * (weights ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REAL_DATA))
    parser.add_argument("--cs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2, 0.1])
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    from ser_utils.training.logistic import fit_logistic

    x, y, x_test = coordinates(args.data)
    n_classes = int(y.max()) + 1
    print(f"kernel coordinates: {x.shape[0]} clips x {x.shape[1]} dimensions, {n_classes} classes")
    totals = [0.0, 0.0, 0.0]
    previous = None
    for c in args.cs:
        start = time.perf_counter()
        reference = LogisticRegression(C=c, max_iter=1000, tol=1e-4).fit(x, y)
        seconds_sklearn = time.perf_counter() - start
        start = time.perf_counter()
        weights, bias = fit_logistic(x, y, c, n_classes)
        seconds_ours = time.perf_counter() - start
        start = time.perf_counter()
        previous = fit_logistic(x, y, c, n_classes, init=previous)  # the path: each C from the one before
        seconds_path = time.perf_counter() - start
        totals[0] += seconds_sklearn
        totals[1] += seconds_ours
        totals[2] += seconds_path
        agree = np.mean(reference.predict(x_test) == (x_test @ weights + bias).argmax(1))
        agree_path = np.mean((x_test @ previous[0] + previous[1]).argmax(1) == (x_test @ weights + bias).argmax(1))
        print(f"C={c:<6g} scikit-learn {seconds_sklearn:6.2f} s (objective "
              f"{objective(x, y, reference.coef_.T, reference.intercept_, c):.4f})  preconditioned "
              f"{seconds_ours:6.2f} s (objective {objective(x, y, weights, bias, c):.4f})  "
              f"{seconds_sklearn / seconds_ours:5.1f}x  test predictions agree {agree:.1%}; warm-started "
              f"{seconds_path:6.2f} s (objective {objective(x, y, *previous, c):.4f}, agree {agree_path:.1%})")
    print(f"all C: scikit-learn {totals[0]:.1f} s, preconditioned {totals[1]:.1f} s: {totals[0] / totals[1]:.1f}x; "
          f"along the path, each C warm-started from the one before: {totals[2]:.1f} s "
          f"({totals[1] / totals[2]:.1f}x the preconditioned from zero)")
    discriminant_analysis(x, y, x_test, n_classes)


def discriminant_analysis(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, n_classes: int) -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from ser_utils.training.head_selection import LDA_SHRINKAGES, ShrinkageLDA

    start = time.perf_counter()
    references = [LinearDiscriminantAnalysis(solver="lsqr", shrinkage=s).fit(x, y) for s in LDA_SHRINKAGES]
    seconds_sklearn = time.perf_counter() - start
    start = time.perf_counter()
    lda = ShrinkageLDA(x, y, n_classes)
    solutions = [lda.solve(s) for s in LDA_SHRINKAGES]
    seconds_ours = time.perf_counter() - start
    gap = max(np.abs(r.decision_function(x_test) - (x_test @ w + b)).max()
              for r, (w, b) in zip(references, solutions, strict=True))
    print(f"discriminant analysis, shrinkages {', '.join(map(str, LDA_SHRINKAGES))}: scikit-learn "
          f"{seconds_sklearn:.2f} s, Woodbury {seconds_ours:.4f} s: {seconds_sklearn / seconds_ours:.0f}x; "
          f"largest difference of the test decision functions {gap:.1e}")


if __name__ == "__main__":
    main()
