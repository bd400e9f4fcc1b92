"""Supervised CKN: analytic gradients against finite differences, training, API."""

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.linear_model import RidgeClassifierCV

from sklearn_convkernel._nystrom import CKNFeatures, inv_sqrt_psd, kappa
from sklearn_convkernel._supervised import (
    SupervisedCKNClassifier,
    anchor_gradient,
    anchor_state,
    ridge_targets,
)
from sklearn_convkernel.datasets import load_fashion_mnist


def _perturbed_params(clf, rng):
    """Anchors and head moved off the fitted point (so no gradient vanishes)."""
    params = [layer.anchors + 0.1 * rng.standard_normal(layer.anchors.shape)
              for layer in clf.layers_]
    params += [clf.coef_.T + 0.1 * rng.standard_normal(clf.coef_.T.shape),
               clf.intercept_ + 0.1 * rng.standard_normal(clf.intercept_.shape)]
    return params


@pytest.mark.parametrize("kernel,pooling,loss", [
    ("exp", "gaussian", "squared"), ("relu", "average", "squared_hinge"),
    ("poly2", "strided", "squared"), ("exp", "average", "squared_hinge"),
])
def test_gradients_match_finite_differences(kernel, pooling, loss):
    rng = np.random.default_rng(0)
    X = rng.random((6, 12, 11, 2)) - 0.2
    y = np.array([0, 1, 2, 0, 1, 2])
    clf = SupervisedCKNClassifier(
        n_filters=(5, 7), patch_sizes=(3, 2), subsamplings=(2, 2), kernel=kernel,
        pooling=pooling, max_iter=0, dtype="float64", regularization=0.05, loss=loss,
        random_state=0).fit(X, y)
    X4 = X.reshape((-1,) + clf.image_shape_)
    Y = ridge_targets(y, 3)
    params = _perturbed_params(clf, rng)
    _, grads = clf._loss_and_grads(params, X4, Y)
    h = 1e-6
    for i, (p, g) in enumerate(zip(params, grads)):
        flat = rng.choice(p.size, size=min(8, p.size), replace=False)
        for f in flat:
            ix = np.unravel_index(f, p.shape)
            up = [q.copy() for q in params]
            up[i][ix] += h
            down = [q.copy() for q in params]
            down[i][ix] -= h
            num = (clf._loss_and_grads(up, X4, Y)[0] - clf._loss_and_grads(down, X4, Y)[0])
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


@pytest.mark.parametrize("loss", ["squared", "squared_hinge"])
def test_loss_matches_its_definition(loss):
    # the objective, by its definition, for the features of a fitted model
    rng = np.random.default_rng(2)
    X = rng.random((8, 10, 10, 1))
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    clf = SupervisedCKNClassifier(n_filters=(3, 4), subsamplings=(2, 2), max_iter=0,
                                  dtype="float64", loss=loss, random_state=0).fit(X, y)
    F = clf.features(X)
    W, b = clf.coef_.T, clf.intercept_
    targets = np.where(y == 1, 1.0, -1.0)[:, None]
    scores = F @ W + b
    if loss == "squared":
        expected = np.mean(np.sum((scores - targets) ** 2, axis=1))
    else:
        expected = np.mean(np.sum(np.maximum(0, 1 - targets * scores) ** 2, axis=1))
    params = [layer.anchors for layer in clf.layers_] + [W, b]
    loss, _ = clf._loss_and_grads(params, X, ridge_targets(y, 2))
    assert loss == pytest.approx(expected, rel=1e-12)


def test_warm_start_is_ckn_features_plus_ridge(small_fmnist):
    Xtr, ytr, Xte, _ = small_fmnist
    kw = dict(n_filters=(6, 8), subsamplings=(2, 3), random_state=0, dtype="float64")
    alphas = (0.01, 1.0, 100.0)
    clf = SupervisedCKNClassifier(max_iter=0, alphas=alphas, **kw).fit(Xtr, ytr)
    assert clf.n_iter_ == 0 and clf.best_iteration_ == 0 and len(clf.loss_curve_) == 1
    ckn = CKNFeatures(**kw).fit(Xtr)
    F = ckn.transform(Xte)
    np.testing.assert_allclose(clf.features(Xte), F, rtol=1e-10, atol=1e-12)
    ridge = RidgeClassifierCV(alphas=alphas).fit(ckn.transform(Xtr), ytr)
    assert clf.alpha_ == ridge.alpha_
    np.testing.assert_allclose(clf.coef_, ridge.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(clf.decision_function(Xte), ridge.decision_function(F),
                               rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(clf.predict(Xte), ridge.predict(F))


def test_early_stop_keeps_the_best_validation_iterate(small_fmnist):
    Xtr, ytr, _, _ = small_fmnist
    kw = dict(n_filters=(6, 8), random_state=0, dtype="float64", batch_size=40)
    clf = SupervisedCKNClassifier(max_iter=6, learning_rate=0.05, n_iter_no_change=2,
                                  **kw).fit(Xtr, ytr)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ + 1 == len(clf.loss_curve_)
    assert scores[clf.best_iteration_] == max(scores)
    # stopped after n_iter_no_change epochs without improvement, or ran out of epochs
    assert clf.n_iter_ == 6 or clf.n_iter_ == clf.best_iteration_ + 2
    assert max(scores[clf.best_iteration_ + 1:], default=-1) <= scores[clf.best_iteration_]


def test_no_better_epoch_returns_the_warm_start(small_fmnist):
    # a huge step ruins the anchors: the warm start is kept, exactly (the ridge grid is
    # pinned: with penalties down to 1e-3 the warm start overfits these 80 images)
    Xtr, ytr, Xte, _ = small_fmnist
    kw = dict(n_filters=(6, 8), random_state=0, dtype="float64", alphas=(0.1, 1.0, 10.0))
    wrecked = SupervisedCKNClassifier(max_iter=2, learning_rate=5.0, n_iter_no_change=2,
                                      **kw).fit(Xtr, ytr)
    assert wrecked.n_iter_ == 2
    assert wrecked.validation_scores_[0] > max(wrecked.validation_scores_[1:])
    assert wrecked.best_iteration_ == 0
    warm = SupervisedCKNClassifier(max_iter=0, **kw).fit(Xtr, ytr)
    np.testing.assert_allclose(wrecked.features(Xte), warm.features(Xte), rtol=1e-12)
    np.testing.assert_allclose(wrecked.decision_function(Xte), warm.decision_function(Xte),
                               rtol=1e-10, atol=1e-10)


def test_training_reduces_the_loss(small_fmnist):
    Xtr, ytr, _, _ = small_fmnist
    clf = SupervisedCKNClassifier(n_filters=(8, 16), max_iter=3, learning_rate=0.05,
                                  batch_size=32, validation_fraction=None,
                                  alphas=(1.0,), random_state=0).fit(Xtr, ytr)
    assert clf.n_iter_ == 3 == clf.best_iteration_ and len(clf.loss_curve_) == 4
    assert clf.validation_scores_ == []
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(Xtr, ytr) > 0.7


def test_zero_learning_rate_freezes_a_layer(small_fmnist):
    Xtr, ytr, _, _ = small_fmnist
    kw = dict(n_filters=(4, 6), random_state=0, dtype="float64", validation_fraction=None)
    warm = SupervisedCKNClassifier(max_iter=0, **kw).fit(Xtr, ytr)
    clf = SupervisedCKNClassifier(max_iter=1, learning_rate=(0.0, 0.05), **kw).fit(Xtr, ytr)
    np.testing.assert_array_equal(clf.layers_[0].anchors, warm.layers_[0].anchors)
    assert not np.allclose(clf.layers_[1].anchors, warm.layers_[1].anchors)


def test_parallel_config_is_honoured(small_fmnist):
    Xtr, ytr, _, _ = small_fmnist
    clf = SupervisedCKNClassifier(n_filters=(4, 6), dtype="float64", max_iter=0,
                                  random_state=0).fit(Xtr[:40], ytr[:40])
    X4 = Xtr[:40].reshape(-1, 28, 28, 1)
    Y = ridge_targets(ytr[:40], 10)
    params = [layer.anchors for layer in clf.layers_] + [clf.coef_.T, clf.intercept_]
    ref = clf._loss_and_grads(params, X4, Y)
    for backend in ("threading", "sequential"):
        with parallel_config(backend=backend, n_jobs=2):
            loss, grads = clf._loss_and_grads(params, X4, Y)
        assert loss == pytest.approx(ref[0], rel=1e-12)
        for g, r in zip(grads, ref[1]):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)


def test_api_binary_and_string_labels(small_fmnist):
    Xtr, ytr, Xte, _ = small_fmnist
    y = np.where(ytr % 2 == 0, "even", "odd")
    clf = SupervisedCKNClassifier(n_filters=(4, 6), max_iter=1, batch_size=50,
                                  random_state=0).fit(Xtr, y)
    assert list(clf.classes_) == ["even", "odd"]
    d = clf.decision_function(Xte)
    assert d.shape == (100,) and clf.coef_.shape == (1, 54)
    np.testing.assert_array_equal(clf.predict(Xte), clf.classes_[(d > 0).astype(int)])
    again = SupervisedCKNClassifier(n_filters=(4, 6), max_iter=1, batch_size=50,
                                    random_state=0).fit(Xtr, y)
    np.testing.assert_array_equal(again.decision_function(Xte), d)


def test_errors():
    X = np.random.default_rng(0).random((6, 8, 8, 1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        SupervisedCKNClassifier(n_filters=3, patch_sizes=3, subsamplings=2).fit(X, [1] * 6)
    with pytest.raises(ValueError, match="requires y"):
        SupervisedCKNClassifier().fit(X, None)
    with pytest.raises(ValueError, match="alphas must be"):
        SupervisedCKNClassifier(n_filters=3, patch_sizes=3, subsamplings=2, alphas=[0.0]).fit(X, [0, 1] * 3)
    with pytest.raises(ValueError, match="validation_fraction"):
        SupervisedCKNClassifier(n_filters=3, patch_sizes=3, subsamplings=2,
                                validation_fraction=0.1,
                                max_iter=1).fit(X[:2], [0, 1])
    Xb, yb = np.random.default_rng(1).random((20, 8, 8, 1)), [0, 1] * 10
    with pytest.raises(ValueError, match="learning_rate has 3 entries"):
        SupervisedCKNClassifier(n_filters=3, patch_sizes=3, subsamplings=2, max_iter=1,
                                learning_rate=[0.1, 0.1, 0.1]).fit(Xb, yb)


def _augmentations_matching(x, o, max_shift, flips):
    """The (flip, dy, dx) whose zero-filled translation of x (flipped or not) is o."""
    H, W = x.shape[:2]
    matches = []
    for f in flips:
        xs = x[:, ::-1] if f else x
        for a in range(-max_shift, max_shift + 1):
            for c in range(-max_shift, max_shift + 1):
                ref = np.zeros_like(x)
                ref[max(a, 0):H + min(a, 0), max(c, 0):W + min(c, 0)] = \
                    xs[max(-a, 0):H + min(-a, 0), max(-c, 0):W + min(-c, 0)]
                if np.array_equal(ref, o):
                    matches.append((f, a, c))
    return matches


def test_augment_images_shifts_and_flips():
    from sklearn_convkernel._supervised import augment_images
    rng = np.random.default_rng(3)
    X = rng.random((200, 7, 9, 2)).astype(np.float32) + 1.0  # no zero pixel
    out = augment_images(X, 2, True, np.random.RandomState(0))
    assert out.shape == X.shape and out.dtype == X.dtype
    seen = set()
    for x, o in zip(X, out):
        # o is x itself (same row, hence same label), flipped or not, translated by
        # exactly one offset of at most 2 pixels, zero fill
        matches = _augmentations_matching(x, o, 2, (False, True))
        assert len(matches) == 1, matches
        seen.add(matches[0])
    assert len(seen) > 30  # offsets and flips are drawn, not fixed
    # no augmentation: a copy, nothing drawn from the generator
    r = np.random.RandomState(5)
    np.testing.assert_array_equal(augment_images(X, 0, False, r), X)
    assert r.randint(1000) == np.random.RandomState(5).randint(1000)
    # shift only: never flipped; flip only: never translated
    for x, o in zip(X[:50], augment_images(X[:50], 1, False, np.random.RandomState(1))):
        assert len(_augmentations_matching(x, o, 1, (False,))) == 1
    flipped = augment_images(X[:50], 0, True, np.random.RandomState(2))
    for x, o in zip(X[:50], flipped):
        assert np.array_equal(o, x) or np.array_equal(o, x[:, ::-1])
    assert 0 < sum(not np.array_equal(o, x) for x, o in zip(X[:50], flipped)) < 50


def test_augmented_training_is_seeded_and_changes_the_steps(small_fmnist):
    Xtr, ytr, Xte, _ = small_fmnist
    kw = dict(n_filters=(4, 6), max_iter=2, batch_size=50, augment_shift=1,
              augment_flip=True, dtype="float64", random_state=0)
    a = SupervisedCKNClassifier(**kw).fit(Xtr, ytr)
    b = SupervisedCKNClassifier(**kw).fit(Xtr, ytr)
    np.testing.assert_array_equal(a.decision_function(Xte), b.decision_function(Xte))
    plain = SupervisedCKNClassifier(**{**kw, "augment_shift": 0, "augment_flip": False,
                                       "validation_fraction": None}).fit(Xtr, ytr)
    moved = SupervisedCKNClassifier(**{**kw, "validation_fraction": None}).fit(Xtr, ytr)
    # the augmented anchor steps differ from the plain ones
    assert not np.allclose(plain.layers_[0].anchors, moved.layers_[0].anchors)
