"""Compare our kernels with neural-tangents' ``stax`` (a private cross-check).

neural-tangents is *not* a dependency.  Install it in a separate virtual
environment, e.g.::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install neural-tangents==0.6.5 jax==0.4.25 jaxlib==0.4.25 \\
        numpy==1.26.4 scipy==1.12.0

then run, with the interpreter that has sklearn_convkernel installed::

    python3 benchmarks/compare_neural_tangents.py [--nt-python /tmp/ntvenv/bin/python]

The script draws images, computes our NNGP and NTK Gram matrices (float64),
runs itself under the neural-tangents interpreter (``--nt-worker``, float64
through ``jax_enable_x64``) on the same images, and prints the largest
relative deviation (max |ours - nt| / max |nt|) per network and kind.

Each case pairs our architecture with its stax twin, layer for layer:
``Conv(W_std, b_std)`` <-> ``Conv(weight_var=W_std**2, bias_var=b_std**2)``,
``Dense`` <-> ``Dense``, ``Relu`` <-> ``ReLU``, ``Erf`` <-> ``Erf``,
``AvgPool`` <-> ``AvgPool``, ``GlobalAvgPool``, ``Flatten``,
``FanOut(2) >> parallel(a, b) >> FanInSum()`` <-> ``Sum(a, b)``.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np


def cases():
    """name -> (image shape (H, W, C), ours(arch module), nt(stax module))."""
    import math

    r = math.sqrt

    def ours_basic(A):
        return A.Sequential(
            A.Conv(3, weight_var=1.5 ** 2, bias_var=0.3 ** 2), A.ReLU(),
            A.Conv(3, stride=2, weight_var=1.2 ** 2, bias_var=0.1 ** 2), A.ReLU(),
            A.Flatten(), A.Dense(weight_var=0.9 ** 2, bias_var=0.2 ** 2))

    def nt_basic(stax):
        return stax.serial(
            stax.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.3), stax.Relu(),
            stax.Conv(8, (3, 3), (2, 2), padding="SAME", W_std=1.2, b_std=0.1), stax.Relu(),
            stax.Flatten(), stax.Dense(1, W_std=0.9, b_std=0.2))

    def ours_pool(A):
        return A.Sequential(
            A.Conv((2, 3), stride=(1, 2), padding="valid", weight_var=2.0, bias_var=0.05),
            A.ReLU(), A.AvgPool(2), A.Conv(4, padding="same", weight_var=2.0), A.ReLU(),
            A.AvgPool(3, stride=2, padding="same"),
            A.GlobalAvgPool(), A.Dense(weight_var=1.0, bias_var=0.1))

    def nt_pool(stax):
        return stax.serial(
            stax.Conv(8, (2, 3), (1, 2), padding="VALID", W_std=r(2.0), b_std=r(0.05)),
            stax.Relu(), stax.AvgPool((2, 2)),
            stax.Conv(8, (4, 4), padding="SAME", W_std=r(2.0)), stax.Relu(),
            stax.AvgPool((3, 3), (2, 2), padding="SAME"),
            stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0, b_std=r(0.1)))

    def ours_circ_erf(A):
        return A.Sequential(
            A.Conv(3, padding="circular", weight_var=1.3, bias_var=0.2), A.Erf(),
            A.Conv(3, stride=2, padding="circular", weight_var=1.7), A.Erf(),
            A.Flatten(), A.Dense(weight_var=1.1))

    def nt_circ_erf(stax):
        return stax.serial(
            stax.Conv(8, (3, 3), padding="CIRCULAR", W_std=r(1.3), b_std=r(0.2)), stax.Erf(),
            stax.Conv(8, (3, 3), (2, 2), padding="CIRCULAR", W_std=r(1.7)), stax.Erf(),
            stax.Flatten(), stax.Dense(1, W_std=r(1.1)))

    def ours_resnet(A):
        block = A.Sum(A.Sequential(),
                      A.Sequential(A.ReLU(), A.Conv(3, weight_var=2.0, bias_var=0.1), A.ReLU(),
                                   A.Conv(3, weight_var=1.0)))
        return A.Sequential(A.Conv(3, weight_var=1.0), block, block, A.ReLU(),
                            A.GlobalAvgPool(), A.Dense(weight_var=1.0))

    def nt_resnet(stax):
        main = stax.serial(stax.Relu(), stax.Conv(8, (3, 3), padding="SAME", W_std=r(2.0),
                                                  b_std=r(0.1)),
                           stax.Relu(), stax.Conv(8, (3, 3), padding="SAME", W_std=1.0))
        block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), main),
                            stax.FanInSum())
        return stax.serial(stax.Conv(8, (3, 3), padding="SAME", W_std=1.0), block, block,
                           stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0))

    def ours_arora_nt(A):  # Arora's CNTK / C = this, for gap
        return A.Sequential(*[A.Conv(3, weight_var=2.0), A.ReLU()] * 3, A.GlobalAvgPool(),
                            A.Dense())

    def nt_arora_nt(stax):
        layers = []
        for _ in range(3):
            layers += [stax.Conv(8, (3, 3), padding="SAME", W_std=r(2.0)), stax.Relu()]
        return stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0))

    def ours_myrtle(A):
        from sklearn_convkernel.presets import myrtle

        return myrtle(5)

    def nt_myrtle(stax):
        def conv():
            return stax.Conv(8, (3, 3), padding="SAME", W_std=r(2.0), b_std=0.0)

        layers = [conv(), stax.Relu()] * 2 + [stax.AvgPool((2, 2), (2, 2))]
        layers += [conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2))]
        layers += [conv(), stax.Relu()] + [stax.AvgPool((2, 2), (2, 2))] * 3
        return stax.serial(*layers, stax.Flatten(), stax.Dense(1, W_std=r(2.0), b_std=0.0))

    return {
        "conv_same_relu_flatten": ((7, 6, 3), ours_basic, nt_basic),
        "valid_strided_avgpool_gap": ((9, 11, 2), ours_pool, nt_pool),
        "circular_erf": ((6, 7, 2), ours_circ_erf, nt_circ_erf),
        "fanout_faninsum_resnet": ((6, 5, 3), ours_resnet, nt_resnet),
        "arora_as_nt": ((6, 6, 3), ours_arora_nt, nt_arora_nt),
        "myrtle5_32x32": ((32, 32, 3), ours_myrtle, nt_myrtle),
    }


def nt_worker(path):
    import jax

    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax

    data = dict(np.load(path))
    out = {}
    for name, (_, _, nt_builder) in cases().items():
        X = data[f"{name}/X"]
        _, _, kernel_fn = nt_builder(stax)
        k = kernel_fn(X, X, ("nngp", "ntk"))
        out[f"{name}/nngp"] = np.asarray(k.nngp, dtype=np.float64).reshape(len(X), len(X))
        out[f"{name}/ntk"] = np.asarray(k.ntk, dtype=np.float64).reshape(len(X), len(X))
    np.savez(path.replace(".npz", "_nt.npz"), **out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON",
                                                              "/tmp/ntvenv/bin/python"))
    parser.add_argument("--n", type=int, default=3, help="images per case")
    parser.add_argument("--nt-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nt_worker:
        nt_worker(args.nt_worker)
        return

    from sklearn_convkernel import arch as A
    from sklearn_convkernel import conv_kernel

    rng = np.random.default_rng(0)
    data, ours = {}, {}
    for name, (shape, our_builder, _) in cases().items():
        X = rng.normal(size=(args.n, *shape))
        data[f"{name}/X"] = X
        a = our_builder(A)
        for kind in ("nngp", "ntk"):
            ours[f"{name}/{kind}"] = conv_kernel(X, architecture=a, kind=kind, dtype=np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **data)
        subprocess.run([args.nt_python, os.path.abspath(__file__), "--nt-worker", path],
                       check=True, stderr=subprocess.DEVNULL)
        nt = dict(np.load(path.replace(".npz", "_nt.npz")))
    # off the diagonal and on it separately: on self pairs neural-tangents
    # evaluates arccos(~1) at coincident positions (we use the exact limit),
    # which costs it about half the digits of the NTK there.
    worst = 0.0
    print(f"{'case':28s} {'kind':5s} {'off-diagonal':>14s} {'diagonal':>10s}")
    for key in sorted(ours):
        name, kind = key.split("/")
        err = np.abs(ours[key] - nt[key]) / np.max(np.abs(nt[key]))
        off = float(np.max(err[~np.eye(len(err), dtype=bool)], initial=0.0))
        diag = float(np.max(np.diag(err)))
        worst = max(worst, off)
        print(f"{name:28s} {kind:5s} {off:14.3e} {diag:10.3e}")
    print(f"worst off-diagonal relative deviation: {worst:.3e}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
