"""The machine a benchmark ran on, printed next to its figures."""


def cpu_name():
    """The CPU model (the package's reader of /proc/cpuinfo, also behind its engine choice)."""
    from sklearn_convkernel._simd import cpu_model_and_flags

    return cpu_model_and_flags()[0]
