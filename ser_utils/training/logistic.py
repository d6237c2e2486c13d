"""Multinomial L2 logistic regression on a kernel's coordinates, preconditioned.

The selected frozen head fits logistic regression on ``X = V sqrt(S)``, the coordinates of the training
clips in the eigenbasis of their Gram matrix (:class:`~ser_utils.training.head_selection._Kernel`): the
same L2 problem as on the standardised features, in at most as many dimensions as clips. In these
coordinates ``X^T X = diag(S)`` exactly, so the Hessian of the objective is close to the diagonal
``1 + C h S`` (``h`` bounds the softmax's curvature). Scaling the unknowns by its square root makes
L-BFGS converge in tens of iterations where scikit-learn's unscaled problem (condition number about
``C S_max / 4``, tens of thousands for Whisper's 7,168 pooled features) took hundreds: the same problem,
4.0x faster over the study's five ``C`` on Whisper-base's fold-1 coordinates (7.8x at ``C=0.001``; at ``C=0.1``
1.3x, where scikit-learn stopped at a worse objective), ``benchmarks/bench_heads.py``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

#: The softmax curvature the preconditioner assumes (at most 1/2 per class; a fitted head is confident on
#: most training clips, and 0.01 converged fastest over C = 0.001-1 on Whisper-base's kernel coordinates).
CURVATURE = 0.01


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, n_classes: int, *, tol: float = 1e-5,
                 max_iter: int = 500, init: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``c * sum_i CE(softmax(x_i W + b), y_i) + |W|^2 / 2`` (scikit-learn's ``LogisticRegression(C=c)``
    objective, multinomial; the intercept ``b`` unpenalised).

    ``x``: ``(N, R)`` float, columns orthogonal (``x.T @ x`` diagonal, as kernel coordinates are; other inputs
    converge too, more slowly); ``y``: ``(N,)`` class indices in ``[0, n_classes)``. Returns ``W`` ``(R, n_classes)``
    and ``b`` ``(n_classes,)``. A class without a clip gets a bias no logit reaches (``-1e9``), as a model that
    never saw it should. ``tol``: the relative decrease of the objective at which L-BFGS stops. ``init``: a
    starting ``(W, b)``, e.g. the solution at a neighbouring ``c`` on the same rows (a regularisation path:
    the same optimum, the problem being convex, in fewer iterations); ``None`` starts from zero.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y) or not len(y):
        raise ValueError(f"x must be (N, R) with one label per row; got {x.shape} and {y.shape}")
    if c <= 0:
        raise ValueError(f"c={c}: the inverse penalty must be positive")
    present = np.unique(y)
    index = np.searchsorted(present, y)
    k = len(present)
    onehot = np.zeros((len(y), k))
    onehot[np.arange(len(y)), index] = 1.0
    # Preconditioner: sqrt of the Hessian's approximate diagonal, per column (and for the intercept).
    scale = np.sqrt(1.0 + c * CURVATURE * (x * x).sum(0))[:, None]
    scale_b = np.sqrt(1.0 + c * CURVATURE * len(y))

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        u, ub = theta[:-k].reshape(-1, k), theta[-k:]
        w, b = u / scale, ub / scale_b
        logits = x @ w + b
        loss = -(log_softmax(logits, axis=1) * onehot).sum()
        residual = c * (softmax(logits, axis=1) - onehot)
        grad_w = x.T @ residual + w
        value = c * loss + 0.5 * (w * w).sum()
        return value, np.concatenate([(grad_w / scale).ravel(), residual.sum(0) / scale_b])

    start = np.zeros(x.shape[1] * k + k)
    if init is not None:
        w0, b0 = init
        start = np.concatenate([(np.asarray(w0)[:, present] * scale).ravel(), np.asarray(b0)[present] * scale_b])
    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-8})
    u, ub = result.x[:-k].reshape(-1, k), result.x[-k:]
    return every_class(u / scale, ub / scale_b, present, n_classes)


def every_class(weights: np.ndarray, bias: np.ndarray, present: np.ndarray, n_classes: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """A linear head fitted on the ``present`` classes only (``weights`` ``(R, K)``, ``bias`` ``(K,)``) as one over
    all ``n_classes``: an absent class gets zero weights and a bias no logit reaches (``-1e9``)."""
    full_weights = np.zeros((len(weights), n_classes))
    full_bias = np.full(n_classes, -1e9)
    full_weights[:, present], full_bias[present] = weights, bias
    return full_weights, full_bias
