"""Ridge classifier on many feature rows from sufficient statistics, penalty by grouped K-fold.

For training sets that are too large for :class:`~sklearn.linear_model.RidgeClassifierCV`
(e.g. 120 000 rows of 9 216 CKN features: the images and their left-right flips) and whose
rows come in groups that must stay in one fold (an image and its flip).  The model is
exactly scikit-learn's ``RidgeClassifier(alpha)``: one-vs-all regression of targets +-1
with an unpenalised intercept (features and targets centred), fitted in float64 from the
per-fold sums ``sum x``, ``sum x x^T``, ``sum x y^T``, ``sum y``, accumulated in chunks
(the feature matrix may stay float32).  Fold k's model is the total statistics minus
fold k's; each (fold, penalty) costs one Cholesky factorisation of a d x d matrix.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.model_selection import GroupKFold


def _targets(codes, n_classes):
    Y = -np.ones((len(codes), n_classes))
    Y[np.arange(len(codes)), codes] = 1.0
    return Y


class _Stats:
    """Sums of one set of rows: count, sum x, sum x x^T, sum x y^T, sum y."""

    def __init__(self, d, t):
        self.n, self.sx, self.sxx = 0, np.zeros(d), np.zeros((d, d))
        self.sxy, self.sy = np.zeros((d, t)), np.zeros(t)

    def add(self, F, Y, chunk):
        for s in range(0, len(F), chunk):
            x = np.asarray(F[s:s + chunk], dtype=np.float64)
            y = Y[s:s + chunk]
            self.n += len(x)
            self.sx += x.sum(axis=0)
            self.sxx += x.T @ x
            self.sxy += x.T @ y
            self.sy += y.sum(axis=0)
        return self

    def _combine(self, other, sign):
        out = _Stats.__new__(_Stats)
        for name in ("n", "sx", "sxx", "sxy", "sy"):
            setattr(out, name, getattr(self, name) + sign * getattr(other, name))
        return out

    def __add__(self, other):
        return self._combine(other, 1)

    def __sub__(self, other):
        return self._combine(other, -1)

    def solve(self, alpha):
        """(W (d, t), b (t,)) of the ridge regression with intercept on these rows."""
        mx, my = self.sx / self.n, self.sy / self.n
        A = self.sxx - self.n * np.outer(mx, mx)
        A[np.diag_indices_from(A)] += alpha
        W = cho_solve(cho_factor(A, lower=False, overwrite_a=True, check_finite=False),
                      self.sxy - self.n * np.outer(mx, my), check_finite=False)
        return W, my - mx @ W


def grouped_ridge_classifier(F, y, groups, alphas, n_folds=5, chunk=8192, log=print):
    """Fit a ridge classifier on rows F (n, d), penalty chosen by grouped K-fold accuracy.

    Parameters
    ----------
    F : ndarray (n, d), any float dtype (read in chunks, converted to float64)
    y : ndarray (n,) labels
    groups : ndarray (n,) rows with the same group are always in the same fold
    alphas : sequence of float, the penalties tried
    n_folds : int

    Returns
    -------
    dict with ``classes``, ``coef`` (d, n_classes), ``intercept``, ``alpha``,
    ``cv_accuracy`` ({alpha: mean accuracy over the held-out folds}).
    """
    classes, codes = np.unique(y, return_inverse=True)
    Y = _targets(codes, len(classes))
    d, t = F.shape[1], Y.shape[1]
    folds = list(GroupKFold(n_folds).split(F, codes, groups))
    per_fold = []
    for k, (_, held) in enumerate(folds):
        per_fold.append(_Stats(d, t).add(F[held], Y[held], chunk))
        log(f"  fold {k + 1}/{n_folds}: statistics of {len(held)} rows")
    total = per_fold[0]
    for st in per_fold[1:]:
        total = total + st
    cv = {}
    for alpha in alphas:
        correct = 0
        for (_, held), st in zip(folds, per_fold):
            W, b = (total - st).solve(alpha)
            scores = np.asarray(F[held], dtype=np.float64) @ W + b
            correct += int(np.sum(scores.argmax(axis=1) == codes[held]))
        cv[float(alpha)] = correct / len(codes)
        log(f"  alpha {alpha:g}: grouped {n_folds}-fold accuracy {cv[float(alpha)]:.4f}")
    best = max(cv, key=lambda a: (cv[a], a))  # ties: the larger penalty
    W, b = total.solve(best)
    return {"classes": classes, "coef": W, "intercept": b, "alpha": best, "cv_accuracy": cv}


def predict(model, F, chunk=8192):
    """Predicted labels of rows F with a model from :func:`grouped_ridge_classifier`."""
    out = []
    for s in range(0, len(F), chunk):
        scores = np.asarray(F[s:s + chunk], dtype=np.float64) @ model["coef"] + model["intercept"]
        out.append(model["classes"][scores.argmax(axis=1)])
    return np.concatenate(out)
