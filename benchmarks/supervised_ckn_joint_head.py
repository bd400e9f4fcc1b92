"""One-off experiment: the supervised CKN's head trained jointly with the anchors by Adam.

Objective: squared hinge + (alpha / n) ||W||^2, alpha the warm start's ridge
penalty (chosen by leave-one-out); Adam on anchors (step as
``learning_rate``) and head (step ``HEAD_LR`` per coordinate, first argument,
default 1e-3), both cosine-decayed over 10 epochs; every epoch is scored on
the internal validation split with the joint head and with a ridge refit;
the epoch with the best ridge-refit validation accuracy is kept and its head
refitted by ridge on all training images.  Data as ``supervised_ckn.py
--data full --n-train 5000 --val-pool 2000``; network (16, 64).  Not part of
the package (a private subclass overriding ``_train``); result in
``results/preprocessing_supervised.md``.

    python3 benchmarks/supervised_ckn_joint_head.py 1e-3
"""
import sys, time
import numpy as np
from sklearn_convkernel import CKNFeatures, SupervisedCKNClassifier
from sklearn_convkernel._supervised import (ANCHOR_LOSSES, _Adam, accuracy, fit_head,
                                            ridge_targets)
from sklearn_convkernel._parallel import blas_limit
from sklearn_convkernel.datasets import load_fashion_mnist

HEAD_LR = float(sys.argv[1]) if len(sys.argv) > 1 else 1e-3


class Joint(SupervisedCKNClassifier):
    def _train(self, X4, codes, alphas, rng, t0):
        L = len(self.layers_)
        tr, va = self._split(codes, rng)
        Y = ridge_targets(codes, len(self.classes_))
        F = self._all_features(X4)
        W, b, alpha = fit_head(F[tr], Y[tr], alphas)
        lam = alpha / len(tr)
        obj = ANCHOR_LOSSES[self.loss]
        acc0 = accuracy(F[va] @ W + b, codes[va])
        self.validation_scores_ = [acc0]
        best = (acc0, 0, [l.anchors.copy() for l in self.layers_])
        print(f"warm: val {acc0:.4f} alpha {alpha} |W| rms {np.sqrt((W**2).mean()):.3g}", flush=True)
        Vs = [l.anchors.copy() for l in self.layers_]
        params = Vs + [W.copy(), b.copy()]
        bs = self.batch_size
        spe = len(tr) // bs
        total = self.max_iter * spe
        opt = _Adam(params)
        scales = [self.learning_rate / np.sqrt(V.shape[0]) for V in Vs] + [HEAD_LR, HEAD_LR]
        step = 0
        for epoch in range(self.max_iter):
            order = tr[rng.permutation(len(tr))]
            with blas_limit():
                for s in range(spe):
                    batch = np.sort(order[s * bs:(s + 1) * bs])
                    _, g = self._loss_and_grads(params, X4[batch], Y[batch])
                    g[L] = g[L] + 2 * lam * params[L]
                    lr = 0.5 * (1 + np.cos(np.pi * step / total))
                    opt.step(params, g, [lr * c for c in scales])
                    for V in params[:L]:
                        V /= np.linalg.norm(V, axis=0)
                    step += 1
            for l, V in zip(self.layers_, params[:L]):
                l.set_anchors(V, self.regularization)
            F = self._all_features(X4)
            Wc, bc = params[L], params[L + 1]
            tl = obj(F[tr] @ Wc + bc, Y[tr])[0] + lam * (Wc ** 2).sum()
            acc = accuracy(F[va] @ Wc + bc, codes[va])
            Wr, br, _ = fit_head(F[tr], Y[tr], alphas)
            accr = accuracy(F[va] @ Wr + br, codes[va])
            self.validation_scores_.append(max(acc, accr))
            print(f"epoch {epoch+1}: train obj {tl:.4f} val(joint head) {acc:.4f} "
                  f"val(ridge refit) {accr:.4f} ({time.perf_counter()-t0:.0f} s)", flush=True)
            if accr > best[0]:
                best = (accr, epoch + 1, [V.copy() for V in params[:L]])
        _, self.best_iteration_, anchors = best
        for l, Z in zip(self.layers_, anchors):
            l.set_anchors(Z, self.regularization)
        F = self._all_features(X4)
        W, b, alpha = fit_head(F, Y, alphas)
        self.coef_, self.intercept_, self.alpha_ = W.T.copy(), b.copy(), alpha
        self.loss_curve_, self.n_iter_ = [], self.max_iter


X, y, Xte, yte = load_fashion_mnist(subset=False, dtype=np.float32)
Xtr, ytr = X[:5000], y[:5000]
Xva, yva = X[50000:52000], y[50000:52000]
t0 = time.perf_counter()
clf = Joint((16, 64), n_jobs=2, random_state=0, max_iter=10).fit(Xtr, ytr)
print(f"head lr {HEAD_LR}: kept {clf.best_iteration_}; pool {clf.score(Xva, yva):.4f} "
      f"test {clf.score(Xte, yte):.4f} ({time.perf_counter()-t0:.0f} s)", flush=True)
