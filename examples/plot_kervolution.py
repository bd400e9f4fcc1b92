"""
=====================================================
Kervolution: a small trainable classifier (PyTorch)
=====================================================

Kervolution (Wang et al., CVPR 2019) replaces the inner product of a
convolution by a kernel between the patch and the filter.
:class:`~sklearn_convkernel.kervolution.KernelConv2d` is a drop-in subclass
of ``torch.nn.Conv2d`` and :func:`~sklearn_convkernel.kervolution.kernelize`
converts the convolutions of an existing model while keeping their weights.

We train the same small LeNet-style network on the shipped Fashion-MNIST
subset (2000 training / 1000 test images) with an ordinary first convolution
(linear kernel, followed by a ReLU) and with polynomial, Gaussian and
Manhattan kervolutions in its place (no ReLU after them: the kernel is the
non-linearity, as in the paper).

PyTorch is an optional dependency (``pip install sklearn-convkernel[torch]``);
without it this example only prints a message.
"""

# %%
import time

import numpy as np

from sklearn_convkernel.datasets import load_fashion_mnist

try:
    import torch
    from torch import nn
except ImportError:
    torch = None


def make_net(first):
    """A LeNet-style network; ``first`` is the first layer (with its non-linearity)."""
    return nn.Sequential(
        *first,
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )


def train_and_score(net, data, epochs=10, batch_size=64, seed=0):
    Xtr, ytr, Xte, yte = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(Xtr), generator=gen)
        for s in range(0, len(Xtr), batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            loss_fn(net(Xtr[idx]), ytr[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return (net(Xte).argmax(1) == yte).float().mean().item()


def main():
    from sklearn_convkernel.kervolution import KernelConv2d, kernelize

    torch.set_num_threads(1)  # small layers: one thread is fastest, above all on busy cores
    Xtr, ytr, Xte, yte = load_fashion_mnist(dtype=np.float32)
    data = (torch.from_numpy(Xtr).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ytr),
            torch.from_numpy(Xte).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(yte))

    variants = {
        "linear + ReLU (ordinary CNN)": lambda: [nn.Conv2d(1, 8, 5, padding=2), nn.ReLU()],
        "polynomial (c=1, d=2)": lambda: [KernelConv2d(1, 8, 5, padding=2, kernel="polynomial",
                                                       c=1.0, degree=2)],
        "gaussian (gamma=0.5)": lambda: [KernelConv2d(1, 8, 5, padding=2, kernel="gaussian",
                                                      gamma=0.5)],
        "manhattan": lambda: [KernelConv2d(1, 8, 5, padding=2, kernel="manhattan")],
    }
    for name, first in variants.items():
        torch.manual_seed(0)
        net = make_net(first())
        t0 = time.perf_counter()
        acc = train_and_score(net, data)
        print(f"{name:32s} test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")

    # kernelize keeps the weights: with the linear kernel the outputs are unchanged
    torch.manual_seed(0)
    net = make_net([nn.Conv2d(1, 8, 5, padding=2), nn.ReLU()]).eval()
    with torch.no_grad():
        before = net(data[2][:8])
        after = kernelize(net, "linear")(data[2][:8])
    print("kernelize(net, 'linear') leaves outputs unchanged:", torch.equal(before, after))


if torch is None:
    print("This example needs PyTorch: pip install sklearn-convkernel[torch]")
else:
    main()
