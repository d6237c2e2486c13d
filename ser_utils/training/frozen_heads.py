"""Heads on frozen embeddings: fitted on the cached per-layer statistics, chosen on validation actors.

How a head is fitted (:func:`train_frozen_head`, one entry for both):

* an MLP head, or any head with learned layer weights: AdamW, the epoch with the best validation UAR
  kept (a second or two per split, on one thread);
* a linear head on fixed features (``ModelConfig(head_hidden=0)`` with ``layers`` ``"last"`` or ``"all"``):
  the ridge classifier's closed form (least squares on +-1 targets, as scikit-learn's ``RidgeClassifier``
  on standardised features), its penalty chosen on validation UAR, then refitted on training +
  validation clips with that penalty, as the handcrafted baselines are.

A study compares several heads (``candidates``: name -> :class:`ModelConfig`), each on every variance
a speaker normalization offers and, for the heads that train with SGD, with several seeds:
:func:`frozen_trials` fits them all on each split's training clips and records each one's validation
UAR and test predictions (:class:`Trial`). :func:`choose` then picks, per split and seed, the trial with
the best validation UAR among the heads allowed (the first on a tie), so no test clip plays a part in a
choice; the other trials' test scores are a post hoc comparison (:func:`trials_table`, :func:`choices_table`).
This is how the recipes' own rows are trained. The selected system's head is chosen by inner
cross-validation instead: :mod:`ser_utils.training.head_selection`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..core.device import release_memory, single_thread
from ..evaluation.metrics import prediction_table, score
from ..evaluation.splits import Split
from ..features.normalization import Normalization, SpeakerNormalizer, normalizer_config
from ..models.heads import STATS, FrozenHead, ModelConfig
from .embeddings import stack

#: Ridge penalties a linear head chooses from on validation (on standardised features, several thousand wide).
RIDGE_ALPHAS = (100.0, 300.0, 1000.0, 3000.0, 10000.0)
#: Embeddings of at least this size fit their splits' heads in parallel processes (smaller: serially).
PARALLEL_BYTES = 16 * 2**20


def closed_form(config: ModelConfig) -> bool:
    """Whether a head is fitted in closed form: linear, on fixed features (no learned layer weights)."""
    return config.head_hidden == 0 and config.layers != "weighted"


def train_frozen_head(config: ModelConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, *, epochs: int = 200, patience: int = 20, lr: float = 1e-3,
                      weight_decay: float = 1e-2, batch_size: int = 64, seed: int = 0,
                      alphas: Sequence[float] = RIDGE_ALPHAS) -> FrozenHead:
    """Fit a :class:`FrozenHead` (see the module docstring); its ``val_uar`` is the validation UAR it was
    chosen by (the best epoch's, or the chosen penalty's before the refit).

    ``x_*``: ``(N, L+1, 3, D)`` embeddings; ``y_*``: class indices ``(N,)``. Runs on one thread: the
    steps are too small for more to help, and spare cores only contend.
    """
    with single_thread():
        if closed_form(config):
            return _fit_ridge(config, x_train, y_train, x_val, y_val, alphas)
        head = _fit_sgd(config, x_train, y_train, x_val, y_val, epochs=epochs, patience=patience, lr=lr,
                        weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    return head.eval()


def _fit_sgd(config: ModelConfig, x_train, y_train, x_val, y_val, *, epochs: int, patience: int, lr: float,
             weight_decay: float, batch_size: int, seed: int) -> FrozenHead:
    """AdamW on standardised statistics. With validation rows: the epoch with the best validation UAR kept
    (``val_uar``, ``best_epoch``); without (``x_val`` ``None``): exactly ``epochs`` epochs, the last kept
    (an inner-CV refit for the inner folds' mean best epoch)."""
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x_train, dtype=torch.float32), torch.tensor(np.asarray(y_train))
    head = _standardising_head(config, xt)
    zt = head.standardise(xt)
    zv = None if x_val is None else head.standardise(torch.as_tensor(x_val, dtype=torch.float32))
    # foreach: the same updates as the per-tensor loop (Whisper-base fold 1, both recipes: the same weights), a
    # quarter less time for these small heads, whose steps are mostly per-tensor overhead.
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, bad = -1.0, None, epochs, 0
    for epoch in range(1, epochs + 1):
        head.train()
        for rows in torch.randperm(len(zt), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(head.classify(zt[rows]), yt[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if zv is None:
            continue
        head.eval()
        with torch.no_grad():
            uar = score(np.asarray(y_val), head.classify(zv).argmax(-1).numpy(), config.labels).uar
        if uar > best:
            best, best_epoch, bad = uar, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.val_uar, head.best_epoch = best, best_epoch
    return head


def _standardising_head(config: ModelConfig, x: torch.Tensor) -> FrozenHead:
    """A fresh head whose standardisation is ``x``'s statistics (per layer, statistic and dimension)."""
    return FrozenHead(config, x.shape[1], x.shape[-1], x.mean(0), x.std(0).clamp(min=1e-4))


def _fit_ridge(config: ModelConfig, x_train, y_train, x_val, y_val, alphas: Sequence[float]) -> FrozenHead:
    """The ridge classifier in closed form: the penalty with the best validation UAR (the first on a tie),
    then refitted on training + validation clips. One kernel and eigendecomposition serve every penalty."""
    if not alphas:
        raise ValueError("alphas: at least one ridge penalty")
    x_val = torch.as_tensor(x_val, dtype=torch.float32)
    solve, head = _ridge_solver(config, torch.as_tensor(x_train, dtype=torch.float32), np.asarray(y_train))
    best_uar, best_alpha = -1.0, alphas[0]
    for alpha in alphas:
        solve(alpha)
        with torch.no_grad():
            uar = score(np.asarray(y_val), head(x_val).argmax(-1).numpy(), config.labels).uar
        if uar > best_uar:
            best_uar, best_alpha = uar, alpha
    x_fit = torch.cat([torch.as_tensor(x_train, dtype=torch.float32), x_val])
    solve, head = _ridge_solver(config, x_fit, np.concatenate([np.asarray(y_train), np.asarray(y_val)]))
    solve(best_alpha)
    head.val_uar, head.alpha = best_uar, best_alpha
    return head.eval()


def _ridge_solver(config: ModelConfig, x: torch.Tensor, y: np.ndarray):
    """A linear head standardised on ``x`` and ``solve(alpha)``, which sets its weights to the ridge
    solution ``W = Z^T (Z Z^T + alpha I)^-1 (T - mean T)`` (the dual form: far fewer clips than features),
    targets ``T`` +-1 per class, in float64."""
    head = _standardising_head(config, x)
    with torch.no_grad():
        z = head.standardise(x).flatten(1).double()
    targets = -torch.ones(len(y), len(config.labels), dtype=torch.float64)
    targets[torch.arange(len(y)), torch.as_tensor(y)] = 1.0
    intercept = targets.mean(0)
    eigenvalues, vectors = torch.linalg.eigh(z @ z.T)
    projected = vectors.T @ (targets - intercept)
    linear = head.head[-1]

    def solve(alpha: float) -> None:
        weights = z.T @ (vectors @ (projected / (eigenvalues.clamp(min=0) + alpha)[:, None]))
        with torch.no_grad():
            linear.weight.copy_(weights.T.float())
            linear.bias.copy_(intercept.float())

    return solve, head


@dataclass
class Trial:
    """One head fitted on one split's training clips: which head (candidate name), the speaker
    normalization's variance (``None`` without), the seed (``None`` for a closed-form head, which has
    none), the validation UAR it is chosen by, its test clips' class indices, the fitted head and the
    normalization to record with it in an exported model folder."""

    protocol: str
    fold: int
    head: str
    variance: str | None
    seed: int | None
    val_uar: float
    predicted: np.ndarray
    model: FrozenHead
    normalization: dict | None = None


def frozen_trials(meta: pd.DataFrame, splits: Sequence[Split], variants: dict, candidates: dict[str, ModelConfig], *,
                  seeds: Sequence[int] = (0,), n_jobs: int | None = None, **train_kwargs) -> list[Trial]:
    """Every candidate head on every split and variance (``variants``: variance -> ``((N, L+1, 3, D), ...)``
    in ``meta``'s row order, :func:`normalized_variants`); heads that train
    with SGD once per seed of ``seeds``, closed-form ones once. Splits run in ``n_jobs`` processes
    (``None``: one per core for real-size embeddings, one for tiny ones); results do not depend on it."""
    if n_jobs is None:
        n_jobs = -1 if next(iter(variants.values()))[0].nbytes > PARALLEL_BYTES and len(splits) > 1 else 1
    per_split = Parallel(n_jobs=n_jobs)(delayed(_split_trials)(meta, split, variants, candidates, seeds, train_kwargs)
                                        for split in splits)
    return [trial for trials in per_split for trial in trials]


def _split_trials(meta: pd.DataFrame, split: Split, variants: dict, candidates: dict[str, ModelConfig],
                  seeds: Sequence[int], train_kwargs: dict) -> list[Trial]:
    labels = next(iter(candidates.values())).labels
    label_index = {name: i for i, name in enumerate(labels)}
    train, val, test = (meta.index.get_indexer(part.index) for part in split.frames(meta))
    y = meta["emotion"].astype(str).map(label_index).to_numpy()
    trials = []
    for name, config in candidates.items():
        for seed in [None] if closed_form(config) else seeds:
            for variance, (x, recorded) in variants.items():
                head = train_frozen_head(config, x[train], y[train], x[val], y[val], seed=seed or 0, **train_kwargs)
                with torch.no_grad():
                    predicted = head(torch.as_tensor(x[test], dtype=torch.float32)).argmax(-1).numpy()
                trials.append(Trial(split.protocol, split.fold, name, variance, seed, head.val_uar, predicted, head,
                                    recorded))
    release_memory()
    return trials


def choose(trials: Sequence[Trial], heads: Sequence[str] | None = None, seed: int | None = None) -> list[Trial]:
    """Per split (protocol and fold), the trial with the best validation UAR among ``heads`` (``None``: all)
    at ``seed`` (``None``: the first seed of the trials; closed-form heads, which have none, at every seed);
    the first in ``trials``' order on a tie."""
    seeds = sorted({t.seed for t in trials if t.seed is not None})
    seed = seeds[0] if seed is None and seeds else seed
    chosen: dict[tuple[str, int], Trial] = {}
    for trial in trials:
        if (heads is not None and trial.head not in heads) or trial.seed not in (None, seed):
            continue
        key = (trial.protocol, trial.fold)
        if key not in chosen or trial.val_uar > chosen[key].val_uar:
            chosen[key] = trial
    return list(chosen.values())


def trial_predictions(meta: pd.DataFrame, splits: Sequence[Split], trials: Sequence[Trial], system: str,
                      labels: Sequence[str]) -> pd.DataFrame:
    """The predictions table (``system, protocol, fold, stem, actor, emotion, predicted``) of one trial per
    split (:func:`choose`)."""
    by_split = {(t.protocol, t.fold): t for t in trials}
    return pd.concat([prediction_table(system, split.protocol, split.fold, split.frames(meta)[2],
                                       np.asarray(labels)[by_split[(split.protocol, split.fold)].predicted])
                      for split in splits], ignore_index=True)


def trials_table(meta: pd.DataFrame, splits: Sequence[Split], trials: Sequence[Trial],
                 labels: Sequence[str]) -> pd.DataFrame:
    """Every trial's validation and test UAR: ``protocol, fold, head, variance, seed, val_uar, test_uar``
    (``seed`` -1 for a closed-form head). The test column is a post hoc comparison: no choice reads it."""
    tests = {(s.protocol, s.fold): s.frames(meta)[2]["emotion"].astype(str).to_numpy() for s in splits}
    return pd.DataFrame([{"protocol": t.protocol, "fold": t.fold, "head": t.head, "variance": t.variance or "",
                          "seed": -1 if t.seed is None else t.seed, "val_uar": t.val_uar,
                          "test_uar": score(tests[(t.protocol, t.fold)], np.asarray(labels)[t.predicted], labels).uar}
                         for t in trials])


def choices_table(meta: pd.DataFrame, splits: Sequence[Split], picks: dict[int, Sequence[Trial]],
                  labels: Sequence[str]) -> pd.DataFrame:
    """The validation choice of each seed (``picks``: seed -> :func:`choose`'s trials): ``seed`` and the
    chosen trial's row of :func:`trials_table` (its ``seed`` column: the choosing seed)."""
    return pd.concat([trials_table(meta, splits, chosen, labels).assign(seed=seed) for seed, chosen in picks.items()],
                     ignore_index=True)


def normalized_variants(meta: pd.DataFrame, embeddings: dict[str, np.ndarray], normalization: Normalization, *,
                        seed: int = 0) -> dict[str | None, tuple[np.ndarray, dict | None]]:
    """The embeddings of ``meta``'s clips, in its row order, as each candidate of ``normalization`` gives
    them: variance -> (``(N, L+1, 3, D)`` float32, normalization to record); without normalization
    the embeddings themselves under ``None``. Statistics per actor, from all of an actor's clips or
    ``normalization.clips`` random ones; labels play no part."""
    x = stack(embeddings, meta["path"])
    if normalization.kind == "none":
        return {None: (x, None)}
    flat = x.reshape(len(x), -1)
    variants = {}
    for variance in normalization.variances:
        normalizer = SpeakerNormalizer(variance, normalization.clips, seed=seed)
        normed = normalizer.fit_transform(flat, meta["actor"]).astype(np.float32).reshape(x.shape)
        variants[variance] = (normed, normalizer_config(variance, normalizer.prior_var_, normalization.clips))
    return variants


def frozen_predictions(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                       config: ModelConfig, system: str, normalization: Normalization | None = None, *,
                       seed: int = 0, n_jobs: int | None = None, **train_kwargs) -> pd.DataFrame:
    """One head per split (:func:`frozen_trials` with one candidate; the variance, if any, chosen on its
    validation clips) and its test clips' predictions, on the embeddings as they are or
    speaker-normalized (the system's name gets the normalization's suffix). Clips without an embedding
    (files that failed) are left out. Returns the predictions table
    (``system, protocol, fold, stem, actor, emotion, predicted``)."""
    normalization = normalization or Normalization()
    meta = meta[meta["path"].isin(embeddings.keys())].reset_index(drop=True)
    variants = normalized_variants(meta, embeddings, normalization, seed=seed)
    trials = frozen_trials(meta, splits, variants, {"head": config}, seeds=(seed,), n_jobs=n_jobs, **train_kwargs)
    return trial_predictions(meta, splits, choose(trials), system + normalization.suffix, config.labels)


def layer_probe(meta: pd.DataFrame, splits: Sequence[Split], embeddings: dict[str, np.ndarray],
                stat: str = "mean") -> pd.DataFrame:
    """Which layer carries emotion: a linear probe (standardised features, ridge classifier: closed form,
    30x faster than a logistic regression and within a point of it) on each layer's pooled embedding.

    Trained on train+validation clips of each split, scored on its test clips. Returns one row per
    (layer, fold) with ``accuracy`` and ``uar``.
    """
    meta = meta[meta["path"].isin(embeddings.keys())]
    column = STATS.index(stat)
    rows = []
    for split in splits:
        train, val, test = split.frames(meta)
        fit = pd.concat([train, val])
        x_fit, x_test = stack(embeddings, fit["path"]), stack(embeddings, test["path"])
        for layer in range(x_fit.shape[1]):
            probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=100.0))
            probe.fit(x_fit[:, layer, column], fit["emotion"].astype(str))
            scores = score(test["emotion"].astype(str), probe.predict(x_test[:, layer, column]))
            rows.append({"layer": layer, "fold": split.fold, "protocol": split.protocol,
                         "accuracy": scores.accuracy, "uar": scores.uar})
    return pd.DataFrame(rows)


# --- the selected system: a head chosen by inner cross-validation on the training clips -------------------
