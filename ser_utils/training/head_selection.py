"""The selected frozen head: candidates chosen by speaker-grouped inner cross-validation on a split's
training clips (:mod:`ser_utils.evaluation.inner_cv`), then refitted on all of them.

:func:`select_head` scores every :class:`HeadCandidate` setting (ridge, logistic regression and shrinkage linear
discriminant analysis on every layer's mean and std, each penalty or shrinkage its own setting, solved in the dual
with one eigendecomposition per inner fold; the project's MLPs, one seed per inner fold, refitted for the inner
folds' mean best epoch) on each inner fold; the best mean inner UAR wins. Speaker normalization inside a split
takes its prior from the training speakers only (:func:`training_prior`). :func:`selected_heads` runs it for every
split, :func:`selection_table` records every setting's inner and (post hoc) test UAR.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed

from ..core.device import release_memory, single_thread
from ..evaluation.inner_cv import INNER_FOLDS, InnerChoice, cross_validate, inner_folds
from ..evaluation.metrics import prediction_table, score
from ..evaluation.splits import Split
from ..features.normalization import Normalization, SpeakerNormalizer, normalizer_config
from ..models.heads import FrozenHead, ModelConfig
from .embeddings import stack
from .frozen_heads import PARALLEL_BYTES, _fit_sgd, _standardising_head, closed_form
from .logistic import every_class, fit_logistic

#: Ridge penalties and logistic-regression inverse penalties (scikit-learn's ``C``, per clip's loss) the
#: selected system's linear heads offer its inner cross-validation, each as a candidate of its own.
SELECTED_ALPHAS = (100.0, 300.0, 1000.0, 3000.0)
LOGISTIC_CS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1)
#: Shrinkages of the linear discriminant analysis's pooled within-class covariance toward a multiple of the
#: identity (0 would leave the sample covariance, singular with more dimensions than clips; 1: the nearest class
#: mean, up to the priors), evenly spaced, each a candidate.
LDA_SHRINKAGES = (0.2, 0.4, 0.6, 0.8)
#: The relative decrease of the objective at which the selected head's logistic regression stops (scikit-learn's
#: default tolerance; 1e-5 before: on Whisper-base's fold 1 along the five C, one thread, 2.6x the time for
#: objectives 0.1-0.4 % lower and 98.8-100 % of the same test predictions).
LOGISTIC_TOL = 1e-4
#: Relative size below which a kernel's eigenvalue is treated as zero (the data span fewer dimensions). The Gram
#: matrix of float32 features carries rounding eigenvalues up to about 1e-8 of the largest (2-6e-9 measured on
#: the tests' kernels and on Whisper-base's fold 1, whose smallest real one is above 1e-4): a direction kept by
#: mistake is harmless to ridge and logistic regression (its coordinate is about zero) but counts as a dimension
#: in the discriminant analysis's shrinkage target. 1e-9 before the discriminant analysis.
EIGEN_FLOOR = 1e-6
#: What each closed-form / convex linear fit's penalty is called (tables, model cards); with SGD, the fits.
PENALTY_NAMES = {"ridge": "alpha", "logistic": "C", "lda": "shrinkage"}
FITS = ("sgd", *PENALTY_NAMES)


@dataclass(frozen=True)
class HeadCandidate:
    """A head the selected system chooses among: ``name`` (what the tables say), the head's ``config`` and how
    it is fitted: ``"sgd"`` (AdamW; the inner folds' best epochs set the refit's epochs), ``"ridge"`` or
    ``"logistic"`` (multinomial, L2) or ``"lda"`` (linear discriminant analysis, shrunk covariance), closed form /
    convex on the head's standardised input, one candidate per ``penalties`` value (ridge ``alpha``, logistic
    ``C``, LDA shrinkage)."""

    name: str
    config: ModelConfig
    fit: str = "sgd"
    penalties: tuple[float, ...] = ()

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit={self.fit!r}; choose one of {', '.join(FITS)}")
        if (self.fit == "sgd") == bool(self.penalties) or (self.fit != "sgd" and not closed_form(self.config)):
            raise ValueError(f"{self.name}: penalties go with a linear head on fixed features (ridge, logistic, lda)")

    def settings(self) -> list[float | None]:
        return list(self.penalties) or [None]


@dataclass
class Setting:
    """One candidate of an inner cross-validation: a head, its penalty (``None`` for SGD) and the speaker
    normalization's variance (``None`` without)."""

    head: HeadCandidate
    penalty: float | None
    variance: str | None

    @property
    def key(self) -> str:
        parts = [self.head.name, "" if self.penalty is None else f"{self.penalty:g}", self.variance or ""]
        return " / ".join(parts)


@dataclass
class SplitSelection:
    """What inner cross-validation chose on one split's training clips, and every candidate refitted on them:
    ``choice`` (:class:`~ser_utils.evaluation.inner_cv.InnerChoice`, keys :attr:`Setting.key`), ``settings``
    (key -> :class:`Setting`), ``epochs`` (key -> refit epochs of an SGD head), ``predicted`` (key -> the
    refitted candidate's test clips' class indices: post hoc for all but the chosen), the chosen refitted
    ``model`` and its ``normalization`` (to record in a model folder)."""

    protocol: str
    fold: int
    choice: InnerChoice
    settings: dict[str, Setting]
    epochs: dict[str, int]
    predicted: dict[str, np.ndarray]
    model: FrozenHead
    normalization: dict | None

    @property
    def chosen(self) -> Setting:
        return self.settings[self.choice.chosen]


class _Kernel:
    """A linear head's closed-form fits on one (fit rows, score rows) pair: the fit rows standardised as the
    head does, their Gram matrix's eigendecomposition shared by every penalty (far fewer clips than features:
    the dual form). Logistic regression runs on the kernel's coordinates ``V sqrt(S)`` (the same L2 problem as
    on the standardised features, in at most as many dimensions as fit rows); so does the discriminant analysis
    (its covariance estimated in the span of the fit rows, where every direction a linear head can use lies)."""

    def __init__(self, config: ModelConfig, x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, *,
                 tol: float = LOGISTIC_TOL):
        self.config, self.y, self.tol = config, np.asarray(y_fit), tol
        xf = torch.as_tensor(x_fit, dtype=torch.float32)
        self.head = _standardising_head(config, xf)
        with torch.no_grad():
            self.z = self.head.standardise(xf).flatten(1)
            zs = self.head.standardise(torch.as_tensor(x_score, dtype=torch.float32)).flatten(1)
        eigenvalues, vectors = torch.linalg.eigh((self.z @ self.z.T).double())
        keep = eigenvalues > EIGEN_FLOOR * eigenvalues.max()
        self.s, self.v = eigenvalues[keep], vectors[:, keep]
        self.k_score = (zs @ self.z.T).double()
        self.targets = -torch.ones(len(self.y), len(config.labels), dtype=torch.float64)
        self.targets[torch.arange(len(self.y)), torch.as_tensor(self.y)] = 1.0
        self.logistic: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # C -> (W, b): a path's warm starts

    @functools.cached_property
    def coordinates(self) -> np.ndarray:
        """``V sqrt(S)`` ``(fit rows, R)``: what logistic regression fits on, the same for every ``C``."""
        return (self.v * self.s.sqrt()).numpy()

    @functools.cached_property
    def discriminant(self) -> ShrinkageLDA:
        """The discriminant analysis on the coordinates, decomposed once for every shrinkage."""
        return ShrinkageLDA(self.coordinates, self.y, self.targets.shape[1])

    def fit(self, fit: str, penalty: float) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The score rows' predicted classes, the dual coefficients ``(fit rows, classes)`` and the bias."""
        if fit == "ridge":
            intercept = self.targets.mean(0)
            dual = self.v @ ((self.v.T @ (self.targets - intercept)) / (self.s + penalty)[:, None])
        else:  # fitted on the coordinates: their weights W map to the dual as V S^-1/2 W
            weights, bias = self._on_coordinates(fit, penalty)
            intercept = torch.as_tensor(bias, dtype=torch.float64)
            dual = self.v @ (torch.as_tensor(weights) / self.s.sqrt()[:, None])
        logits = self.k_score @ dual + intercept
        return logits.argmax(-1).numpy(), dual, intercept

    def _on_coordinates(self, fit: str, penalty: float) -> tuple[np.ndarray, np.ndarray]:
        if fit == "lda":
            return self.discriminant.solve(penalty)
        nearest = min(self.logistic, key=lambda c: abs(np.log(c / penalty)), default=None)
        self.logistic[penalty] = fit_logistic(self.coordinates, self.y, penalty, self.targets.shape[1],
                                              init=self.logistic.get(nearest), tol=self.tol)
        return self.logistic[penalty]

    def model(self, fit: str, penalty: float) -> tuple[np.ndarray, FrozenHead]:
        """The score rows' predicted classes and the fitted :class:`FrozenHead`."""
        predicted, dual, bias = self.fit(fit, penalty)
        head = copy.deepcopy(self.head)
        with torch.no_grad():
            head.head[-1].weight.copy_((self.z.T @ dual.float()).T)
            head.head[-1].bias.copy_(bias.float())
        return predicted, head.eval()


class ShrinkageLDA:
    """Linear discriminant analysis with the pooled within-class covariance ``Sw`` shrunk toward a multiple of
    the identity: ``(1 - s) Sw + s (trace(Sw) / R) I`` (scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr",
    shrinkage=s)``, class priors from the clips: the same decision function, tested), on coordinates whose columns
    are orthogonal, as a kernel's are (``x.T @ x`` diagonal; checked with a random probe). There ``Sw`` is a
    diagonal minus a rank-``K`` term (``K`` classes), so each shrinkage is solved by the Woodbury identity in
    ``O(N R K)`` instead of an ``R x R`` solve (scikit-learn: 0.44 s per shrinkage on Whisper-base's fold-1 kernel
    coordinates, 1,200 x 1,198, one thread).

    ``x``: ``(N, R)`` float; ``y``: ``(N,)`` class indices in ``[0, n_classes)``, two classes or more present.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
        self.present, index = np.unique(y, return_inverse=True)
        if len(self.present) < 2:
            raise ValueError(f"discriminant analysis needs clips of two classes or more; got {self.present.tolist()}")
        self.squares = (x * x).sum(0)  # the diagonal of x.T @ x
        probe = np.random.default_rng(0).normal(size=x.shape[1])
        if not np.allclose(x.T @ (x @ probe), self.squares * probe, rtol=1e-6, atol=1e-9 * self.squares.max()):
            raise ValueError("ShrinkageLDA needs coordinates with orthogonal columns (x.T @ x diagonal), as a "
                             "kernel's V sqrt(S) are")
        self.n_classes, self.rows = n_classes, len(y)
        self.counts = np.bincount(index).astype(np.float64)
        self.means = np.stack([x[index == k].mean(0) for k in range(len(self.present))])  # (K, R)
        # N Sw = x.T x - sum_k n_k m_k m_k^T: its trace over R is the shrinkage target's scale
        between = (self.counts[:, None] * self.means**2).sum(0)
        self.scale = (self.squares - between).sum() / self.rows / x.shape[1]

    def solve(self, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
        """The decision function's ``W`` ``(R, n_classes)`` and ``b`` ``(n_classes,)`` at ``shrinkage`` in
        ``(0, 1]``; a class without a clip gets a bias no score reaches (``-1e9``), as
        :func:`~ser_utils.training.logistic.fit_logistic` gives it."""
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"shrinkage={shrinkage}: it must lie in (0, 1] (0 leaves a singular covariance)")
        # (1 - s) Sw + s scale I = diag(d) - U C U^T with U = means.T, C = (1 - s) / N diag(counts); Woodbury:
        # its inverse times U is A + A (I - C B)^-1 C B, with A = diag(d)^-1 U and B = U^T A.
        d = (1.0 - shrinkage) * self.squares / self.rows + shrinkage * self.scale
        a = self.means.T / d[:, None]  # (R, K)
        b = self.means @ a
        c = np.diag((1.0 - shrinkage) * self.counts / self.rows)
        coef = a + a @ np.linalg.solve(np.eye(len(c)) - c @ b, c @ b)  # (R, K)
        bias = -0.5 * (self.means * coef.T).sum(1) + np.log(self.counts / self.rows)
        return every_class(coef, bias, self.present, self.n_classes)


def split_variants(x: np.ndarray, groups: np.ndarray, train: np.ndarray, normalization: Normalization, *,
                   seed: int = 0) -> dict[str | None, tuple[np.ndarray, dict | None]]:
    """:func:`normalized_variants` for one split: each speaker standardised with its own unlabelled clips (all,
    or ``normalization.clips`` random ones, the same draw as the whole corpus's), the prior variance pooled
    over the training rows' speakers only, so no test clip changes a training clip's features."""
    if normalization.kind == "none":
        return {None: (x, None)}
    flat, groups = x.reshape(len(x), -1), np.asarray(groups).astype(str)
    in_train = np.zeros(len(x), dtype=bool)
    in_train[train] = True
    prior = training_prior(flat, groups, in_train, normalization.clips, seed)
    variants = {}
    for variance in normalization.variances:
        normalizer = SpeakerNormalizer(variance, normalization.clips, prior_var=prior, seed=seed)
        normed = normalizer.fit_transform(flat, groups).astype(np.float32).reshape(x.shape)
        variants[variance] = (normed, normalizer_config(variance, prior, normalization.clips))
    return variants


def training_prior(flat: np.ndarray, groups: np.ndarray, in_train: np.ndarray, clips: int | None,
                   seed: int) -> np.ndarray:
    """The pooled within-speaker variance of :class:`SpeakerNormalizer`'s enrolment rows (drawn as it draws
    them: speakers in sorted order, one generator) that are training rows."""
    rng = np.random.default_rng(seed)
    total, rows, speakers = np.zeros(flat.shape[1]), 0, 0
    for group in sorted(set(groups.tolist()), key=str):
        index = np.flatnonzero(groups == group)
        if clips is not None and len(index) > clips:
            index = np.sort(rng.choice(index, clips, replace=False))
        index = index[in_train[index]]
        if len(index):
            part = flat[index].astype(np.float64)
            total += ((part - part.mean(0)) ** 2).sum(0)
            rows, speakers = rows + len(index), speakers + 1
    return total / max(rows - speakers, 1)


def select_head(x: np.ndarray, y: np.ndarray, actors: np.ndarray, train: np.ndarray, test: np.ndarray,
                candidates: Sequence[HeadCandidate], normalization: Normalization | None = None, *,
                grouped: bool = True, seed: int = 0, protocol: str = "", fold: int = 0, n_folds: int = INNER_FOLDS,
                **sgd_kwargs) -> SplitSelection:
    """Choose a head by inner cross-validation on the ``train`` rows (train + validation clips) and refit it.

    ``x``: ``(N, L+1, 3, D)`` embeddings of every clip (raw: ``normalization`` is applied per split,
    :func:`split_variants`); ``y``: class indices; ``actors``: actor of each row (the speaker normalization's
    groups; with ``grouped`` the inner folds' too, else they are stratified by class: ``random-80-20``).
    Every candidate's every setting (penalty, variance) is scored on every inner fold; an SGD head's inner
    fold ``i`` uses seed ``seed + i`` (seeds averaged inside the inner CV, not multiplied) and its refit the
    inner folds' mean best epoch. The ``test`` rows are only predicted, after the choice, by every refitted candidate.
    """
    with single_thread():
        variants = split_variants(x, actors, train, normalization or Normalization(), seed=seed)
        folds = [(train[a], train[b]) for a, b in
                 inner_folds(y[train], np.asarray(actors)[train] if grouped else None, n_folds, seed)]
        settings = {s.key: s for head in candidates for s in
                    (Setting(head, p, v) for p in head.settings() for v in variants)}
        kernels: dict = {}

        def kernel(setting: Setting, fit_rows: np.ndarray, score_rows: np.ndarray) -> _Kernel:
            key = (setting.head.config, setting.variance, fit_rows.tobytes(), score_rows.tobytes())
            if key not in kernels:
                xv = variants[setting.variance][0]
                kernels[key] = _Kernel(setting.head.config, xv[fit_rows], y[fit_rows], xv[score_rows])
            return kernels[key]

        def fit_score(setting: Setting):
            def run(fit_rows, score_rows):
                if setting.head.fit != "sgd":
                    return kernel(setting, fit_rows, score_rows).fit(setting.head.fit, setting.penalty)[0], None
                xv, i = variants[setting.variance][0], [f[0].tobytes() for f in folds].index(fit_rows.tobytes())
                head = _fit_sgd(setting.head.config, xv[fit_rows], y[fit_rows], xv[score_rows], y[score_rows],
                                seed=seed + i, **_sgd_settings(sgd_kwargs))
                with torch.no_grad():
                    predicted = head(torch.as_tensor(xv[score_rows])).argmax(-1).numpy()
                return predicted, head.best_epoch
            return run

        choice = cross_validate({k: fit_score(s) for k, s in settings.items()}, y, folds,
                                grouped=grouped)
        predicted, epochs, models = {}, {}, {}
        for key, setting in settings.items():
            xv = variants[setting.variance][0]
            if setting.head.fit == "sgd":
                epochs[key] = max(1, round(float(np.mean(choice.extras[key]))))
                head = _fit_sgd(setting.head.config, xv[train], y[train], None, None, seed=seed,
                                **{**_sgd_settings(sgd_kwargs), "epochs": epochs[key]}).eval()
                with torch.no_grad():
                    predicted[key] = head(torch.as_tensor(xv[test])).argmax(-1).numpy()
            else:
                predicted[key], head = kernel(setting, train, test).model(setting.head.fit, setting.penalty)
            if key == choice.chosen:
                models[key] = head
        kernels.clear()
        recorded = variants[settings[choice.chosen].variance][1]
        variants.clear()  # the normalized copies of x: freed before the worker's memory is trimmed
        release_memory()
    return SplitSelection(protocol, fold, choice, settings, epochs, predicted, models[choice.chosen],
                          recorded)


def _sgd_settings(kwargs: dict) -> dict:
    return {"epochs": 200, "patience": 20, "lr": 1e-3, "weight_decay": 1e-2, "batch_size": 64, **kwargs}


def selected_heads(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                   candidates: Sequence[HeadCandidate], normalization: Normalization | None = None, *,
                   seed: int = 0, n_jobs: int | None = None, **sgd_kwargs) -> list[SplitSelection]:
    """:func:`select_head` on every split of ``splits`` (inner folds grouped by actor under ``actor-kfold``,
    stratified by class otherwise), in ``n_jobs`` processes (``None``: one per core for real-size embeddings);
    results do not depend on it. Clips without an embedding are left out (``meta`` must be filtered alike)."""
    x = stack(embeddings, meta["path"])
    labels = candidates[0].config.labels
    y = meta["emotion"].astype(str).map({name: i for i, name in enumerate(labels)}).to_numpy()
    actors = meta["actor"].astype(str).to_numpy()
    if n_jobs is None:
        n_jobs = -1 if x.nbytes > PARALLEL_BYTES and len(splits) > 1 else 1
    jobs = []
    for split in splits:
        train, val, test = (meta.index.get_indexer(part.index) for part in split.frames(meta))
        jobs.append(delayed(select_head)(x, y, actors, np.sort(np.concatenate([train, val])), test, candidates,
                                         normalization, grouped=split.protocol == "actor-kfold", seed=seed,
                                         protocol=split.protocol, fold=split.fold, **sgd_kwargs))
    return Parallel(n_jobs=n_jobs)(jobs)


def selection_table(meta: pd.DataFrame, splits: Sequence[Split], selections: Sequence[SplitSelection],
                    labels: Sequence[str]) -> pd.DataFrame:
    """Every candidate setting of every split: ``protocol, fold, head, penalty, variance, inner_uar,
    inner_uar_std, inner_folds, inner_grouped, epochs, chosen, test_uar``. ``test_uar`` (each setting refitted
    on the training clips, scored on the test clips) is post hoc for every row but the chosen one: no choice
    reads it."""
    tests = {(s.protocol, s.fold): s.frames(meta)[2]["emotion"].astype(str).to_numpy() for s in splits}
    rows = []
    for sel in selections:
        truth = tests[(sel.protocol, sel.fold)]
        for key, setting in sel.settings.items():
            rows.append({"protocol": sel.protocol, "fold": sel.fold, "head": setting.head.name,
                         "penalty": np.nan if setting.penalty is None else setting.penalty,
                         "variance": setting.variance or "", "inner_uar": sel.choice.mean(key),
                         "inner_uar_std": sel.choice.std(key), "inner_folds": len(sel.choice.scores[key]),
                         "inner_grouped": sel.choice.grouped, "epochs": sel.epochs.get(key, np.nan),
                         "chosen": key == sel.choice.chosen,
                         "test_uar": score(truth, np.asarray(labels)[sel.predicted[key]], labels).uar})
    return pd.DataFrame(rows)


def selection_predictions(meta: pd.DataFrame, splits: Sequence[Split], selections: Sequence[SplitSelection],
                          system: str, labels: Sequence[str]) -> pd.DataFrame:
    """The predictions table (``system, protocol, fold, stem, actor, emotion, predicted``) of each split's
    chosen head."""
    by_split = {(s.protocol, s.fold): s for s in selections}
    return pd.concat([prediction_table(system, split.protocol, split.fold, split.frames(meta)[2],
                                       np.asarray(labels)[by_split[(split.protocol, split.fold)]
                                                          .predicted[by_split[(split.protocol, split.fold)]
                                                                     .choice.chosen]])
                      for split in splits], ignore_index=True)
