"""Supervised convolutional kernel networks (Mairal 2016): anchors and classifier trained jointly.

The network is the Nyström CKN of :class:`~sklearn_convkernel.CKNFeatures`;
on top of its standardised features sits a multinomial logistic regression.
The objective is

    mean_i CE(softmax(W^T g(x_i) + b), y_i) + alpha / 2 ||W||^2

over the anchors of every layer and the head (W, b).  Training starts from
the unsupervised anchors (spherical k-means) and alternates, as a hybrid
convex / non-convex scheme: the head is refitted exactly (L-BFGS, warm
started) on the current features, then one epoch of mini-batch Adam moves
the anchors with the head fixed.  Gradients are analytic, in NumPy
(back-propagation through patch extraction, patch normalisation, the
dot-product kernel, pooling and the matrix inverse square root
``K_ZZ^{-1/2}``).  Anchors stay on the unit sphere: they are parametrised as
``Z = V / ||V||`` column-wise, V re-normalised after each step.

Why alternate: the head is convex and cheap to solve exactly, while joint
Adam steps on a head that is already at its optimum mostly add noise (the
training loss first rises); with the head refitted every epoch the
penalised training loss decreases monotonically in practice.

Gradient of the inverse square root.  With ``K + reg I = U diag(l) U^T``,
``F = (K + reg I)^{-1/2}`` and an upstream gradient G (w.r.t. F), the gradient
w.r.t. K is ``U ((U^T G U) o Gamma) U^T`` (Daleckii-Krein) with
``Gamma_ij = (l_i^{-1/2} - l_j^{-1/2}) / (l_i - l_j)
= -1 / (sqrt(l_i) sqrt(l_j) (sqrt(l_i) + sqrt(l_j)))``, a form that is also
the correct limit ``-l^{-3/2} / 2`` on the diagonal and never cancels.
"""

from __future__ import annotations

import time
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from scipy import optimize
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d
from threadpoolctl import threadpool_limits

from sklearn_convkernel._base import validate_images
from sklearn_convkernel._nystrom import (
    CKN_NETWORK_CONSTRAINTS,
    build_layers,
    ckn_model,
    extract_patches,
    fit_anchors,
    images_for_anchors,
    inv_sqrt_psd,
    kappa,
    kappa_prime,
    layer_specs,
    patches_adjoint,
    pool,
    pool_adjoint,
    transform_batches,
)

__all__ = ["SupervisedCKNClassifier"]


# ---------------------------------------------------------------------------
# differentiable network
# ---------------------------------------------------------------------------


def anchor_state(layer, Z, regularization):
    """Per-step quantities of one layer that depend on its anchors only."""
    G = Z.T @ Z
    K = kappa(G, layer.kernel, layer.sigma)
    lintrans, lam, U = inv_sqrt_psd(K, regularization)
    return {"Z": Z, "G": G, "lintrans": lintrans, "lam": lam, "U": U}


def layer_forward(layer, X, st, dtype):
    """Forward through one layer keeping what the backward pass needs."""
    N, H, W, C = X.shape
    E = extract_patches(X, layer.patch_size)
    r = np.sqrt(np.einsum("ij,ij->i", E, E))
    rinv = np.zeros_like(r)
    np.divide(1.0, r, out=rinv, where=r > 0)
    Ehat = E * rinv[:, None]
    S = Ehat @ st["Z"].astype(dtype, copy=False)
    A = kappa(S, layer.kernel, layer.sigma)
    U = A * r[:, None]
    ph = None if layer.pool_h is None else layer.pool_h.astype(dtype, copy=False)
    pw = None if layer.pool_w is None else layer.pool_w.astype(dtype, copy=False)
    V = pool(U.reshape(N, H, W, -1), ph, pw)
    out = (V.reshape(-1, V.shape[-1]) @ st["lintrans"].astype(dtype, copy=False)).reshape(V.shape)
    cache = dict(shape=X.shape, Ehat=Ehat, r=r, rinv=rinv, S=S, A=A, V=V, ph=ph, pw=pw)
    return out, cache


def layer_backward(layer, cache, st, dout, need_input_grad):
    """Gradients of one layer: (dZ (D, F) before the Fréchet term, dlintrans, dX or None)."""
    dtype = dout.dtype
    F = dout.shape[-1]
    lintrans = st["lintrans"].astype(dtype, copy=False)
    dflat = dout.reshape(-1, F)
    dlintrans = cache["V"].reshape(-1, F).T.astype(np.float64) @ dflat.astype(np.float64)
    dV = (dflat @ lintrans).reshape(cache["V"].shape)
    dU = pool_adjoint(dV, cache["ph"], cache["pw"]).reshape(-1, F)
    A, r, S, Ehat = cache["A"], cache["r"], cache["S"], cache["Ehat"]
    dS = (dU * r[:, None]) * kappa_prime(S, layer.kernel, layer.sigma)
    dZ = Ehat.T.astype(np.float64) @ dS.astype(np.float64)
    dX = None
    if need_input_grad:
        dr = np.einsum("ij,ij->i", dU, A)
        dEhat = dS @ st["Z"].T.astype(dtype, copy=False)
        radial = np.einsum("ij,ij->i", Ehat, dEhat)
        dE = (dEhat - Ehat * radial[:, None]) * cache["rinv"][:, None] + Ehat * dr[:, None]
        dX = patches_adjoint(dE, cache["shape"], layer.patch_size)
    return dZ, dlintrans, dX


def anchor_gradient(layer, st, dZ, dlintrans, V):
    """Total gradient w.r.t. the unnormalised anchor parameters V (Z = V / ||V||)."""
    lam, U = st["lam"], st["U"]
    s = np.sqrt(lam)
    gamma = -1.0 / (s[:, None] * s[None, :] * (s[:, None] + s[None, :]))
    Gs = 0.5 * (dlintrans + dlintrans.T)
    dK = U @ ((U.T @ Gs @ U) * gamma) @ U.T
    kp = kappa_prime(st["G"], layer.kernel, layer.sigma)
    Z = st["Z"]
    dZ = dZ + Z @ ((dK + dK.T) * kp)
    norms = np.linalg.norm(V, axis=0)
    return (dZ - Z * np.einsum("ij,ij->j", Z, dZ)) / norms


def network_forward(layers, states, X, dtype):
    caches = []
    for layer, st in zip(layers, states):
        X, cache = layer_forward(layer, X, st, dtype)
        caches.append(cache)
    return X, caches


def network_backward(layers, states, caches, dout):
    """Per-layer (dZ, dlintrans) for the output gradient dout."""
    grads = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        dZ, dL, dout = layer_backward(layers[i], caches[i], states[i], dout, need_input_grad=i > 0)
        grads[i] = (dZ, dL)
    return grads


# ---------------------------------------------------------------------------
# multinomial logistic head
# ---------------------------------------------------------------------------


def softmax_loss(logits, codes):
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    P = np.exp(shifted)
    s = P.sum(axis=1)
    P /= s[:, None]
    loss = float(np.mean(np.log(s) - shifted[np.arange(n), codes]))
    P[np.arange(n), codes] -= 1.0
    return loss, P / n


def fit_head(Fs, codes, n_classes, alpha, W0=None, b0=None, max_iter=500):
    """L-BFGS for the logistic head on fixed standardised features Fs."""
    d = Fs.shape[1]

    def fun(theta):
        W = theta[: d * n_classes].reshape(d, n_classes)
        b = theta[d * n_classes:]
        loss, dlog = softmax_loss(Fs @ W + b, codes)
        loss += 0.5 * alpha * float(np.sum(W * W))
        gW = Fs.T @ dlog + alpha * W
        return loss, np.concatenate([gW.ravel(), dlog.sum(axis=0)])

    theta0 = np.zeros(d * n_classes + n_classes)
    if W0 is not None:
        theta0[: d * n_classes] = W0.ravel()
        theta0[d * n_classes:] = b0
    res = optimize.minimize(fun, theta0, jac=True, method="L-BFGS-B",
                            options={"maxiter": max_iter, "gtol": 1e-6})
    return res.x[: d * n_classes].reshape(d, n_classes), res.x[d * n_classes:].copy()


class _Adam:
    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads, lrs):
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for p, g, m, v, lr in zip(params, grads, self.m, self.v, lrs):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


# ---------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------


class SupervisedCKNClassifier(ClassifierMixin, BaseEstimator):
    """Supervised convolutional kernel network: anchors and logistic head trained end to end.

    The network is that of :class:`~sklearn_convkernel.CKNFeatures` (same
    parameters and conventions); its features are standardised and fed to a
    multinomial logistic regression.  ``fit`` (1) learns unsupervised anchors
    by spherical k-means, (2) fits the logistic regression on the
    unsupervised features by L-BFGS, then (3) for ``max_iter`` epochs runs one
    epoch of mini-batch Adam on the anchors of every layer (analytic
    gradients of the regularised cross-entropy, cosine-decayed step size)
    followed by an exact refit of the head (and of the standardisation) on
    the new features.  With ``max_iter=0`` the model is the unsupervised CKN
    plus the same classifier: the natural baseline.

    Parameters
    ----------
    n_filters : int or sequence of int, default=(32, 128)
        Anchors per layer (the depth is the length).
    patch_sizes : int or sequence of int, default=(3, 3)
        Patch side per layer.
    subsamplings : int or sequence of int, default=(2, 3)
        Pooling subsampling per layer (output sizes as in
        :class:`~sklearn_convkernel.CKNFeatures`).
    kernel : {"exp", "relu", "poly2", "poly3", "poly4"} or sequence, default="exp"
        Dot-product kernel on normalised patches, per layer (as in
        :class:`~sklearn_convkernel.CKNFeatures`).
    sigma : float or sequence of float, default=0.6
        Bandwidth of the "exp" kernel.
    pooling : {"gaussian", "average", "strided"} or sequence, default="gaussian"
        ckn_kernel's pooling, per layer.
    n_patches : int, default=50000
        Patches per layer for the unsupervised initialisation.
    kmeans_iter : int, default=10
        Spherical k-means iterations of the initialisation (0: random
        patches as anchors).
    regularization : float, default=1e-3
        Added to the eigenvalues of ``K_ZZ`` before the inverse square root.
    alpha : float, default=1e-3
        L2 penalty ``alpha / 2 ||W||^2`` on the classifier weights.
    max_iter : int, default=10
        Epochs of anchor training (0: unsupervised anchors only).
    batch_size : int, default=64
        Images per mini-batch (also the batch size of ``predict``).
    learning_rate : float, default=1e-2
        Adam step size of the anchors (unit vectors), cosine-decayed to 0 over
        ``max_iter`` epochs.
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).
    dtype : {"float32", "float64"}, default="float32"
        Precision of the network computations (the classifier, the gradients
        of the anchors and ``K_ZZ^{-1/2}`` are always float64).
    n_jobs : int, default=None
        Threads (each mini-batch is split between them).
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the mini-batch order.
    verbose : int, default=0
        Print the loss and time of every epoch when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    layers_ : list of CKNLayer
        The trained layers (``anchors``, ``lintrans``, ...).
    coef_ : ndarray of shape (n_features_out, n_classes)
        Weights on the standardised features.
    intercept_ : ndarray of shape (n_classes,)
    feature_mean_, feature_scale_ : ndarray of shape (n_features_out,)
        The standardisation of the network's features (training mean and
        standard deviation of the final features).
    loss_curve_ : list of float
        Penalised training loss after each head refit: entry 0 at the
        unsupervised initialisation, entry k after epoch k.
    n_iter_ : int
        Epochs run.
    ckn_model_ : list of dict
        The network in ckn_kernel's format.
    image_shape_ : tuple (H, W, C)
    n_features_in_ : int

    See Also
    --------
    CKNFeatures : the unsupervised feature map.

    References
    ----------
    J. Mairal, "End-to-End Kernel Learning with Supervised Convolutional
    Kernel Networks", NeurIPS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import SupervisedCKNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((40, 12, 12, 1)), np.arange(40) % 2
    >>> clf = SupervisedCKNClassifier(n_filters=(8, 16), subsamplings=(2, 2), max_iter=2,
    ...                               random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **CKN_NETWORK_CONSTRAINTS,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
        "verbose": ["verbose"],
    }

    def __init__(self, n_filters=(32, 128), *, patch_sizes=(3, 3), subsamplings=(2, 3),
                 kernel="exp", sigma=0.6, pooling="gaussian", n_patches=50000, kmeans_iter=10,
                 regularization=1e-3, alpha=1e-3, max_iter=10, batch_size=64,
                 learning_rate=1e-2, image_shape=None,
                 dtype="float32", n_jobs=None, random_state=None, verbose=0):
        self.n_filters = n_filters
        self.patch_sizes = patch_sizes
        self.subsamplings = subsamplings
        self.kernel = kernel
        self.sigma = sigma
        self.pooling = pooling
        self.n_patches = n_patches
        self.kmeans_iter = kmeans_iter
        self.regularization = regularization
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.image_shape = image_shape
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # -- helpers ---------------------------------------------------------

    def _dtype(self):
        return {"float32": np.float32, "float64": np.float64}[self.dtype]

    def _features(self, X4):
        """Standardised features of images X4 (N, H, W, C), float64."""
        F = transform_batches(self.layers_, X4, self._dtype(), self.batch_size, self.n_jobs)
        return (F.astype(np.float64) - self.feature_mean_) / self.feature_scale_

    def _batch_grad(self, states, X4, codes, W, b):
        """Loss (without the penalty, summed) and gradients for one chunk of images."""
        dtype = self._dtype()
        out, caches = network_forward(self.layers_, states, X4.astype(dtype, copy=False), dtype)
        n = out.shape[0]
        feats = (out.reshape(n, -1).astype(np.float64) - self.feature_mean_) / self.feature_scale_
        loss, dlog = softmax_loss(feats @ W + b, codes)
        dlog *= n  # gradients of the summed (not mean) loss
        dfeat = (dlog @ W.T) / self.feature_scale_
        grads = network_backward(self.layers_, states, caches,
                                 dfeat.reshape(out.shape).astype(dtype))
        return loss * n, feats.T @ dlog, dlog.sum(axis=0), grads

    def _loss_and_grads(self, params, X4, codes):
        """Mean penalised loss and gradients w.r.t. (anchor parameters..., W, b).

        ``params`` = [V_1, ..., V_L, W, b] with anchors ``Z_l = V_l / ||V_l||``.
        """
        L = len(self.layers_)
        Vs, W, b = params[:L], params[L], params[L + 1]
        states = [anchor_state(layer, V / np.linalg.norm(V, axis=0), self.regularization)
                  for layer, V in zip(self.layers_, Vs)]
        n = X4.shape[0]
        jobs = min(effective_n_jobs(self.n_jobs), n)
        chunks = np.array_split(np.arange(n), jobs)
        if jobs == 1:
            parts = [self._batch_grad(states, X4, codes, W, b)]
        else:
            parts = Parallel(n_jobs=jobs, backend="threading")(
                delayed(self._batch_grad)(states, X4[c], codes[c], W, b) for c in chunks)
        loss = sum(p[0] for p in parts) / n + 0.5 * self.alpha * float(np.sum(W * W))
        dW = sum(p[1] for p in parts) / n + self.alpha * W
        db = sum(p[2] for p in parts) / n
        dVs = []
        for i, (layer, st, V) in enumerate(zip(self.layers_, states, Vs)):
            dZ = sum(p[3][i][0] for p in parts) / n
            dL = sum(p[3][i][1] for p in parts) / n
            dVs.append(anchor_gradient(layer, st, dZ, dL, V))
        return loss, dVs + [dW, db]

    # -- scikit-learn API -------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the network and the classifier.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        owner = type(self).__name__
        if y is None:
            raise ValueError(f"{owner} requires y to be passed, but the target y is None.")
        X = validate_images(self, X, reset=True, dtype=self.dtype)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{owner} needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {self.classes_[0]!r}."
            )
        k = len(self.classes_)
        specs = layer_specs(self)
        layers = build_layers(specs, self.image_shape_)
        rng = check_random_state(self.random_state)
        dtype = self._dtype()
        n = X.shape[0]
        X4 = X.reshape((-1,) + self.image_shape_)
        t0 = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            m = images_for_anchors(layers, n, self.n_patches)
            idx = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
            fit_anchors(layers, X4[idx].astype(dtype, copy=False), self.n_patches,
                        self.kmeans_iter, self.regularization, rng, self.batch_size)
            self.layers_ = layers
            self._train(X4, codes, rng, t0)
        self.ckn_model_ = ckn_model(specs)
        return self

    def _fit_head(self, X4, codes, W=None, b=None, max_iter=500):
        """Standardise the current features and refit the head; returns (W, b, penalised loss)."""
        F = transform_batches(self.layers_, X4, self._dtype(), self.batch_size, self.n_jobs)
        F = F.astype(np.float64)
        self.feature_mean_ = F.mean(axis=0)
        scale = F.std(axis=0)
        scale[scale <= 1e-12 * max(float(scale.max(initial=0.0)), 1e-300)] = 1.0
        self.feature_scale_ = scale
        Fs = F - self.feature_mean_
        Fs /= scale
        W, b = fit_head(Fs, codes, len(self.classes_), self.alpha, W, b, max_iter)
        loss, _ = softmax_loss(Fs @ W + b, codes)
        return W, b, loss + 0.5 * self.alpha * float(np.sum(W * W))

    def _train(self, X4, codes, rng, t0):
        """Alternate: head refit by L-BFGS, then one epoch of Adam on the anchors."""
        owner = type(self).__name__
        L = len(self.layers_)
        n = X4.shape[0]
        W, b, loss = self._fit_head(X4, codes)
        self.loss_curve_ = [loss]
        if self.verbose:
            print(f"[{owner}] unsupervised init: loss {loss:.4f} "
                  f"({time.perf_counter() - t0:.1f} s)")
        Vs = [layer.anchors.copy() for layer in self.layers_]
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        total = self.max_iter * steps_per_epoch
        opt = _Adam(Vs, self.learning_rate)
        step = 0
        self.n_iter_ = 0
        for epoch in range(self.max_iter):
            order = rng.permutation(n)
            for s in range(steps_per_epoch):
                batch = order[s * bs:(s + 1) * bs]
                _, grads = self._loss_and_grads(Vs + [W, b], X4[batch], codes[batch])
                lr = self.learning_rate * 0.5 * (1.0 + np.cos(np.pi * step / total))
                opt.step(Vs, grads[:L], [lr] * L)
                for V in Vs:  # keep the anchor parameters on the sphere
                    V /= np.linalg.norm(V, axis=0)
                step += 1
            for layer, V in zip(self.layers_, Vs):
                layer.set_anchors(V, self.regularization)
            W, b, loss = self._fit_head(X4, codes, W, b, max_iter=100)  # warm start
            self.loss_curve_.append(loss)
            self.n_iter_ = epoch + 1
            if self.verbose:
                print(f"[{owner}] epoch {epoch + 1}/{self.max_iter}: loss {loss:.4f} "
                      f"({time.perf_counter() - t0:.1f} s)")
        self.coef_, self.intercept_ = W, b

    def decision_function(self, X):
        """Class scores (logits); for two classes the difference of the two logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        check_is_fitted(self)
        X = validate_images(self, X, reset=False, dtype=self.dtype)
        with threadpool_limits(limits=1, user_api="blas"):
            logits = self._features(X.reshape((-1,) + self.image_shape_)) @ self.coef_
        logits += self.intercept_
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            scores = np.column_stack([np.zeros_like(scores), scores])
        return np.exp(scores - logsumexp(scores, axis=1)[:, None])

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            scores = np.column_stack([np.zeros_like(scores), scores])
        return scores - logsumexp(scores, axis=1)[:, None]

    def predict(self, X):
        """Predicted class labels.

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def features(self, X):
        """The trained network's features of X (unstandardised, as :class:`CKNFeatures`).

        Returns
        -------
        psi : ndarray of shape (n_samples, n_features_out)
        """
        check_is_fitted(self)
        X = validate_images(self, X, reset=False, dtype=self.dtype)
        with threadpool_limits(limits=1, user_api="blas"):
            return transform_batches(self.layers_, X.reshape((-1,) + self.image_shape_),
                                     self._dtype(), self.batch_size, self.n_jobs)
