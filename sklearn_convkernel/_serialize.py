"""Architectures as text: JSON descriptions and preset specifications.

* :func:`architecture_to_json` / :func:`architecture_from_json` -- a JSON
  description of any architecture of :mod:`sklearn_convkernel.arch` that
  round-trips exactly (``from_json(to_json(a)) == a``): each layer is an
  object ``{"layer": "Conv", "size": [3, 3], ...}`` holding its parameters;
  :class:`~.arch.Sequential` has ``"layers"`` (and ``"input_norm"``),
  :class:`~.arch.Sum` ``"branches"``, :class:`~.arch.Tap` ``"layers"``.
* :func:`parse_architecture` -- what the command line accepts: a preset name
  with parameters, ``"cntk:depth=5,gap=false"``, a JSON description, or the
  path of a ``.json`` file holding one.
"""

from __future__ import annotations

import ast
import inspect
import json
import os

from sklearn_convkernel import _estimators as E
from sklearn_convkernel import arch as A
from sklearn_convkernel import presets as P

__all__ = ["architecture_to_json", "architecture_from_json", "parse_architecture", "PRESETS"]

_LAYER_CLASSES = {
    name: getattr(A, name)
    for name in A.__all__
    if isinstance(getattr(A, name), type) and issubclass(getattr(A, name), A.Layer)
    and getattr(A, name) is not A.Layer
}


def architecture_to_dict(layer):
    """A JSON-ready dict describing ``layer`` (see :func:`architecture_to_json`).

    ``{"layer": <class name>}`` plus what the layer class's ``_describe``
    gives (its parameters, or its nested layers for a combinator).
    """
    name = type(layer).__name__
    if _LAYER_CLASSES.get(name) is not type(layer):
        raise A.ArchitectureError(f"cannot describe {layer!r} as JSON: not a layer of "
                                  "sklearn_convkernel.arch.")
    return {"layer": name, **layer._describe(architecture_to_dict)}


def architecture_from_dict(d, where="architecture"):
    """The architecture described by ``d`` (the inverse of :func:`architecture_to_dict`)."""
    if not isinstance(d, dict) or not isinstance(d.get("layer"), str):
        raise A.ArchitectureError(
            f"{where}: expected an object with a \"layer\" name, e.g. "
            f"{{\"layer\": \"ReLU\"}}, got {d!r}."
        )
    name = d["layer"]
    cls = _LAYER_CLASSES.get(name)
    if cls is None:
        raise A.ArchitectureError(
            f"{where}: unknown layer {name!r}; known layers: {', '.join(sorted(_LAYER_CLASSES))}."
        )
    params = {k: v for k, v in d.items() if k != "layer"}

    def build(key):
        items = params.pop(key, [])
        if not isinstance(items, list):
            raise A.ArchitectureError(f"{where}: \"{key}\" of {name} must be a list.")
        return [architecture_from_dict(x, f"{where}.{key}[{i}]") for i, x in enumerate(items)]

    try:
        return cls._from_description(params, build)
    except A.ArchitectureError as exc:
        if str(exc).startswith(where):
            raise
        raise A.ArchitectureError(f"{where}: {exc}") from None


def architecture_to_json(architecture, indent=None):
    """A JSON description of ``architecture`` that :func:`architecture_from_json` reads back.

    Parameters
    ----------
    architecture : Layer
        Any architecture built from :mod:`sklearn_convkernel.arch`.
    indent : int, default=None
        Passed to :func:`json.dumps`.

    Returns
    -------
    text : str

    Examples
    --------
    >>> from sklearn_convkernel import architecture_from_json, architecture_to_json
    >>> from sklearn_convkernel.arch import Sequential, Conv, ReLU, GlobalAvgPool, Dense
    >>> a = Sequential(Conv(3, weight_var=2.0), ReLU(), GlobalAvgPool(), Dense())
    >>> architecture_to_json(a)[:60]
    '{"layer": "Sequential", "layers": [{"layer": "Conv", "size":'
    >>> architecture_from_json(architecture_to_json(a)) == a
    True
    """
    return json.dumps(architecture_to_dict(architecture), indent=indent)


def architecture_from_json(text):
    """The architecture described by a JSON text from :func:`architecture_to_json`.

    Parameters
    ----------
    text : str

    Returns
    -------
    architecture : Layer
    """
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise A.ArchitectureError(f"architecture JSON is not valid JSON: {exc}.") from None
    return architecture_from_dict(d)


#: preset names accepted by :func:`parse_architecture` and the command line
PRESETS = {
    "cntk": E.cntk_architecture,
    "cnngp": E.cnngp_architecture,
    "ckn": E.ckn_architecture,
    "arora_cntk": P.arora_cntk,
    "cnn_gp_convnet": P.cnn_gp_convnet,
    "cnn_gp_residual": P.cnn_gp_residual,
    "cnn_gp_resnet32": P.cnn_gp_resnet32,
    "myrtle": P.myrtle,
    "li_lap": P.li_lap,
}


def _split_top(text):
    """Split ``text`` on commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _value(text):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string such as gaussian or exp


def preset_usage():
    """One line per preset: its name and parameters."""
    lines = []
    for name, fn in PRESETS.items():
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.name != "input_shape"]
        lines.append(f"{name}:" + ",".join(
            p.name + ("=REQUIRED" if p.default is p.empty else f"={p.default!r}")
            for p in params))
    return lines


def parse_architecture(spec, image_shape=None):
    """An architecture from a preset specification, a JSON description or a JSON file.

    Parameters
    ----------
    spec : str
        ``"NAME"`` or ``"NAME:key=value,key=value"`` with ``NAME`` one of
        :data:`PRESETS` and the keys the parameters of the preset function
        (values are Python literals; ``true``/``false``/``none`` and bare words
        are accepted, e.g. ``"cntk:depth=5,gap=false"`` or
        ``"ckn:depth=2,pooling=average,subsampling=(2,2)"``); or a JSON
        description from :func:`architecture_to_json` (starting with ``{``);
        or the path of a file holding one.
    image_shape : tuple, optional
        (H, W[, C]) of the images, passed as ``input_shape`` to presets that
        take one when the spec does not set it.

    Returns
    -------
    architecture : Layer
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"architecture must be a non-empty string, got {spec!r}.")
    spec = spec.strip()
    if spec.startswith("{"):
        return architecture_from_json(spec)
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            return architecture_from_json(f.read())
    name, _, rest = spec.partition(":")
    fn = PRESETS.get(name.strip())
    if fn is None:
        raise ValueError(
            f"architecture {spec!r} is neither a preset ({', '.join(PRESETS)}), a JSON "
            "description (starting with '{') nor an existing .json file; e.g. "
            "'cntk:depth=5,gap=false'."
        )
    kwargs = {}
    for part in _split_top(rest):
        key, eq, val = part.partition("=")
        if not eq:
            raise ValueError(f"architecture {spec!r}: expected key=value, got {part!r}.")
        kwargs[key.strip()] = _value(val.strip())
    sig = inspect.signature(fn)
    unknown = set(kwargs) - set(sig.parameters)
    if unknown:
        raise ValueError(
            f"architecture {spec!r}: {name} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"its parameters: {', '.join(sig.parameters)}."
        )
    if "input_shape" in sig.parameters and "input_shape" not in kwargs and image_shape:
        kwargs["input_shape"] = tuple(image_shape)[:2]
    try:
        result = fn(**kwargs)
    except TypeError as exc:
        raise ValueError(f"architecture {spec!r}: {exc}") from None
    # the estimator families return (architecture, index of the main read-out)
    return result[0] if isinstance(result, tuple) else result
