"""The kervolution kernels and their parameters (no PyTorch needed)."""

__all__ = ["KERVOLUTION_KERNELS"]

#: Kernel names and the keyword parameters each accepts (with defaults).
KERVOLUTION_KERNELS = {
    "linear": {},
    "polynomial": {"c": 1.0, "degree": 2},
    "gaussian": {"gamma": 1.0},
    "sigmoid": {"alpha": 1.0, "c": 0.0},
    "manhattan": {},
}
