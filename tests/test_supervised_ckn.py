"""Supervised CKN: analytic gradients against finite differences, training, API."""

import numpy as np
import pytest

from sklearn_convkernel._nystrom import CKNFeatures, inv_sqrt_psd, kappa
from sklearn_convkernel._supervised import (
    SupervisedCKNClassifier,
    anchor_gradient,
    anchor_state,
)
from sklearn_convkernel.datasets import load_fashion_mnist


def _perturbed_params(clf, rng):
    """Anchors and head moved off the fitted point (so no gradient vanishes)."""
    params = [layer.anchors + 0.1 * rng.standard_normal(layer.anchors.shape)
              for layer in clf.layers_]
    params += [clf.coef_ + 0.1 * rng.standard_normal(clf.coef_.shape),
               clf.intercept_ + 0.1 * rng.standard_normal(clf.intercept_.shape)]
    return params


@pytest.mark.parametrize("kernel,pooling", [
    ("exp", "gaussian"), ("relu", "average"), ("poly2", "strided"), ("exp", "average"),
])
def test_gradients_match_finite_differences(kernel, pooling):
    rng = np.random.default_rng(0)
    X = rng.random((6, 12, 11, 2)) - 0.2
    y = np.array([0, 1, 2, 0, 1, 2])
    clf = SupervisedCKNClassifier(
        n_filters=(5, 7), patch_sizes=(3, 2), subsamplings=(2, 2), kernel=kernel,
        pooling=pooling, max_iter=0, dtype="float64", alpha=0.1, regularization=0.05,
        random_state=0).fit(X, y)
    X4 = X.reshape((-1,) + clf.image_shape_)
    params = _perturbed_params(clf, rng)
    _, grads = clf._loss_and_grads(params, X4, y)
    h = 1e-6
    for i, (p, g) in enumerate(zip(params, grads)):
        flat = rng.choice(p.size, size=min(8, p.size), replace=False)
        for f in flat:
            ix = np.unravel_index(f, p.shape)
            up = [q.copy() for q in params]
            up[i][ix] += h
            down = [q.copy() for q in params]
            down[i][ix] -= h
            num = (clf._loss_and_grads(up, X4, y)[0] - clf._loss_and_grads(down, X4, y)[0])
            num /= 2 * h
            scale = np.abs(g).max()
            assert abs(num - g[ix]) <= 1e-6 * scale, (i, ix, num, g[ix])


def test_inverse_square_root_gradient():
    # <G, (K + reg I)^{-1/2}> as a function of the anchors, through anchor_gradient
    rng = np.random.default_rng(1)
    clf = SupervisedCKNClassifier(n_filters=4, patch_sizes=1, subsamplings=1,
                                  pooling="average", max_iter=0, dtype="float64",
                                  regularization=0.01, random_state=0)
    clf.fit(rng.random((4, 3, 3, 3)), [0, 1, 0, 1])
    layer = clf.layers_[0]
    V = rng.standard_normal((3, 4))
    G = rng.standard_normal((4, 4))

    def value(V):
        Z = V / np.linalg.norm(V, axis=0)
        return np.sum(G * inv_sqrt_psd(kappa(Z.T @ Z, "exp", 0.6), 0.01)[0])

    st = anchor_state(layer, V / np.linalg.norm(V, axis=0), 0.01)
    g = anchor_gradient(layer, st, np.zeros_like(V), G, V)
    num = np.zeros_like(V)
    for ix in np.ndindex(*V.shape):
        e = np.zeros_like(V)
        e[ix] = 1e-6
        num[ix] = (value(V + e) - value(V - e)) / 2e-6
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7 * np.abs(num).max())


@pytest.fixture(scope="module")
def small_fmnist():
    Xtr, ytr, Xte, yte = load_fashion_mnist()
    return Xtr[:200], ytr[:200], Xte[:100], yte[:100]


def test_training_reduces_the_loss(small_fmnist):
    Xtr, ytr, _, _ = small_fmnist
    clf = SupervisedCKNClassifier(n_filters=(8, 16), max_iter=3, learning_rate=1e-2,
                                  batch_size=32, random_state=0).fit(Xtr, ytr)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 4
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(Xtr, ytr) > 0.7


def test_untrained_model_is_ckn_features_plus_logistic(small_fmnist):
    Xtr, ytr, Xte, _ = small_fmnist
    kw = dict(n_filters=(6, 8), subsamplings=(2, 3), random_state=0)
    clf = SupervisedCKNClassifier(max_iter=0, dtype="float64", **kw).fit(Xtr, ytr)
    assert clf.n_iter_ == 0 and len(clf.loss_curve_) == 1
    F = CKNFeatures(dtype="float64", **kw).fit(Xtr).transform(Xte)
    np.testing.assert_allclose(clf.features(Xte), F, rtol=1e-10, atol=1e-12)
    Fs = (F - clf.feature_mean_) / clf.feature_scale_
    np.testing.assert_allclose(clf.decision_function(Xte), Fs @ clf.coef_ + clf.intercept_,
                               rtol=1e-10, atol=1e-10)


def test_api_binary_and_string_labels(small_fmnist):
    Xtr, ytr, Xte, _ = small_fmnist
    y = np.where(ytr % 2 == 0, "even", "odd")
    clf = SupervisedCKNClassifier(n_filters=(4, 6), max_iter=1, batch_size=50,
                                  random_state=0).fit(Xtr, y)
    assert list(clf.classes_) == ["even", "odd"]
    d = clf.decision_function(Xte)
    P = clf.predict_proba(Xte)
    assert d.shape == (100,) and P.shape == (100, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(Xte), clf.classes_[(d > 0).astype(int)])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xte)), P)
    again = SupervisedCKNClassifier(n_filters=(4, 6), max_iter=1, batch_size=50,
                                    random_state=0).fit(Xtr, y)
    np.testing.assert_array_equal(again.decision_function(Xte), d)


def test_errors():
    X = np.random.default_rng(0).random((6, 8, 8, 1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        SupervisedCKNClassifier(n_filters=3, patch_sizes=3, subsamplings=2).fit(X, [1] * 6)
    with pytest.raises(ValueError, match="requires y"):
        SupervisedCKNClassifier().fit(X, None)
