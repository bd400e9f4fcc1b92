"""Input validation shared by every entry point: one rule for images and dtypes.

:func:`conv_kernel`, the test oracle (``_reference.reference_gram``), the
kernel estimators and transformers, and the CKN feature maps all validate
their images here, on top of :func:`sklearn.utils.validation.check_array`
(``allow_nd=True``), so that they accept and refuse the same inputs:

* array-likes whose values convert to numbers (lists, integer, boolean and
  object arrays of numbers, memory maps, any memory layout) are accepted;
  strings, complex values and sparse matrices are refused;
* the working dtype is float64 or float32: an explicit ``dtype`` parameter
  wins, ``dtype=None`` keeps float32 input in float32 and computes everything
  else in float64 (:func:`resolve_dtype`);
* every value must be finite *after* the conversion to the working dtype
  (1e200 is finite in float64 but infinite in float32: refused, with a hint);
* a batch holds at least one image of at least one pixel and one channel.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["resolve_dtype", "check_images", "check_finite", "check_image_dims"]

_DTYPE_NAMES = {"float64": np.float64, "float32": np.float32}


def resolve_dtype(dtype, X=None):
    """The working float type for a ``dtype`` parameter (the one dtype rule).

    ``"float64"``/``"float32"`` or the matching numpy types give that type;
    ``None`` gives float32 when ``X`` is float32 and float64 otherwise.
    """
    if dtype is None:
        return np.float32 if getattr(X, "dtype", None) == np.float32 else np.float64
    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt == np.float64:
        return np.float64
    if dt == np.float32:
        return np.float32
    raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}.")


def check_finite(X, name="X"):
    """Raise a ValueError naming the cause when ``X`` holds NaN or infinity.

    Values that only became infinite by the conversion to float32 get their own
    message (use float64 or rescale the images).
    """
    if np.isfinite(X).all():
        return X
    if X.dtype == np.float32 and not np.isnan(X).any():
        raise ValueError(
            f"{name} has values beyond the float32 range (|x| > 3.4e38) that become "
            "infinite in float32; use dtype='float64' or rescale the images."
        )
    raise ValueError(f"{name} contains NaN or infinity; clean or impute the images first.")


def check_image_dims(shape, name="X"):
    """Refuse a batch of (n, H, W, C) images with no image, pixel or channel."""
    n, H, W, C = shape
    if n < 1:
        raise ValueError(f"{name} contains no images (shape {tuple(shape)}); pass at least one.")
    if min(H, W, C) < 1:
        raise ValueError(
            f"{name} has images of shape (height, width, channels) = {(H, W, C)}; every "
            "image needs at least one pixel and one channel."
        )


def check_images(X, name="X", dtype=np.float64):
    """Images as a C-contiguous (n, H, W, C) array of the working dtype.

    Parameters
    ----------
    X : array-like of shape (n, H, W, C) or (n, H, W)
        Images, channels last; (n, H, W) means one channel.
    name : str
        Name of the parameter in error messages.
    dtype : {"float64", "float32"}, numpy float type or None
        Working dtype (see :func:`resolve_dtype`).
    """
    dt = resolve_dtype(dtype, X)
    ndim = np.ndim(X) if not hasattr(X, "toarray") else 2
    if ndim not in (3, 4):
        raise ValueError(
            f"{name} must be images of shape (n_samples, height, width, channels), or "
            f"(n_samples, height, width) for one channel; got an array with {ndim} "
            "dimension(s). Reshape flat rows first, e.g. "
            f"{name}.reshape(-1, height, width, channels)."
        )
    with np.errstate(over="ignore"):  # overflow in a float32 cast: check_finite says it
        X = check_array(X, dtype=dt, allow_nd=True, ensure_all_finite=False,
                        accept_sparse=False, ensure_min_samples=0, input_name=name)
        if X.ndim == 3:
            X = X[..., np.newaxis]
        check_image_dims(X.shape, name)
        X = np.ascontiguousarray(X, dtype=dt)
    return check_finite(X, name)
