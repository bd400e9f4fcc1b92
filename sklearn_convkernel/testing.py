"""Test oracles: finite random networks whose empirical kernel converges to the exact one.

A network of finite width drawn from an architecture (:func:`sample_network`)
is an independent Monte-Carlo check of the exact kernels: as the width grows,
the empirical kernel ``(1/C_out) sum_c f_c(x) f_c(y)`` of such networks
(:func:`empirical_kernel`) converges to the NNGP / CKN kernel that
:func:`~sklearn_convkernel.conv_kernel` computes.  These are tools for testing
kernels (the package's own tests use them), not for learning.
"""

from sklearn_convkernel._finite import FiniteNetwork, empirical_kernel, sample_network

__all__ = ["sample_network", "empirical_kernel", "FiniteNetwork"]
