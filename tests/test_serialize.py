"""Architectures as JSON text and preset specifications (the command line's --architecture)."""

import json

import numpy as np
import pytest

from sklearn_convkernel import (
    architecture_from_json,
    architecture_to_json,
    cntk_architecture,
    conv_kernel,
    presets,
)
from sklearn_convkernel import arch as A
from sklearn_convkernel._serialize import PRESETS, parse_architecture

EVERY_LAYER = A.Sequential(
    A.Conv((3, 2), stride=(2, 1), dilation=2, padding=((1, 0), (2, 1)), weight_var=2.5,
           bias_var=0.1, trainable=False),
    A.Conv(5, padding="circular"),
    A.Conv(1, padding=2),
    A.ReLU(), A.Erf(), A.ExpKernel(sigma=0.7), A.ArcCosKernel(order=0), A.ArcCosKernel(),
    A.PolyKernel(degree=3), A.LinearKernel(),
    A.AvgPool((2, 3), stride=2, padding="same"),
    A.GaussianPool(subsampling=3, poolfactor=2), A.GaussianPool(),
    A.BoxPool(subsampling=2, poolfactor=3), A.StridedPool(subsampling=2),
    A.Sum(A.Identity(), A.Sequential(A.Conv(3), A.ReLU())),
    A.Tap(A.GlobalAvgPool(), A.Dense(weight_var=3.0)),
    A.Tap(A.Trace()),
    A.Tap(A.ShiftAverage((1, 2), one_sided=True, circular=True)),
    A.Flatten(),
    A.Dense(bias_var=0.5, trainable=False),
    input_norm="sum",
)


def _layer_types(layer, found):
    found.add(type(layer))
    for child in getattr(layer, "layers", ()) or ():
        _layer_types(child, found)
    for child in getattr(layer, "branches", ()):
        _layer_types(child, found)
    if isinstance(layer, A.Tap):
        _layer_types(layer.readout, found)
    return found


def test_every_layer_type_round_trips():
    classes = {getattr(A, n) for n in A.__all__
               if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.Layer)
               and getattr(A, n) is not A.Layer}
    assert classes <= _layer_types(EVERY_LAYER, set()), "add new layer types to EVERY_LAYER"
    text = architecture_to_json(EVERY_LAYER)
    back = architecture_from_json(text)
    assert back == EVERY_LAYER and repr(back) == repr(EVERY_LAYER)
    # plain JSON: readable by any JSON parser, stable when written again
    assert architecture_to_json(architecture_from_json(json.dumps(json.loads(text)))) == text


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_and_give_the_same_kernel(name):
    spec = {"arora_cntk": "arora_cntk:depth=2", "cnn_gp_convnet": "cnn_gp_convnet:n_layers=2",
            "cnn_gp_residual": "cnn_gp_residual:n_blocks=1"}.get(name, name)
    a = parse_architecture(spec, (12, 12, 1))
    b = architecture_from_json(architecture_to_json(a, indent=1))
    assert a == b
    if name in ("cntk", "cnn_gp_convnet", "cnn_gp_residual"):
        X = np.random.default_rng(0).random((3, 12, 12, 1))
        np.testing.assert_array_equal(conv_kernel(X, architecture=a),
                                      conv_kernel(X, architecture=b))


def test_preset_specifications():
    assert parse_architecture("cntk:depth=5,gap=false") == cntk_architecture(5, gap=False)[0]
    assert parse_architecture(" arora_cntk : depth=4, gap=False ") == \
        presets.arora_cntk(4, gap=False)
    from sklearn_convkernel import ckn_architecture

    assert parse_architecture("ckn:pooling=average,subsampling=(2, 2),kernel=relu") == \
        ckn_architecture(pooling="average", subsampling=(2, 2), kernel="relu")[0]
    assert parse_architecture("li_lap:depth=3,max_shift=2,one_sided=true") == \
        presets.li_lap(3, 2, one_sided=True)
    # presets that need the image size get it from the images
    assert parse_architecture("cnn_gp_convnet", (20, 16, 1)) == \
        presets.cnn_gp_convnet((20, 16))


def test_json_file_and_inline_json(tmp_path):
    a = cntk_architecture(2)[0]
    path = tmp_path / "arch.json"
    path.write_text(architecture_to_json(a))
    assert parse_architecture(str(path)) == a
    assert parse_architecture(architecture_to_json(a)) == a


@pytest.mark.parametrize(
    "spec, match",
    [
        ("resnet", "neither a preset"),
        ("cntk:depth", "key=value"),
        ("cntk:width=3", "no parameter"),
        ('{"layer": "Conv", "size": 3, "colour": 1}', "no parameter"),
        ('{"layer": "Bogus"}', "unknown layer"),
        ('{"layer": "Conv"', "not valid JSON"),
        ('{"layer": "Sequential", "layers": {"layer": "ReLU"}}', "must be a list"),
        ('{"layers": []}', "layer"),
        ("", "non-empty"),
    ],
)
def test_bad_specifications_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_architecture(spec)
