"""Seeded random ONNX GRU nodes against ONNX Runtime (the sibling of
test_onnx_random_nodes.py for the GRU, reusing its model builder and runner).

Every attribute and optional input is drawn: direction, layout, linear_before_reset
(absent, 0 or 1), hidden sizes 1-33, clip, bias, sequence_lens, initial state,
activations with alpha/beta (per direction), weights as initializers or as graph
inputs. A node that `supported` accepts must load and match ONNX Runtime's Y and
Y_h; any other must be refused with a ValueError naming the attribute."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper as h  # noqa: E402
from test_onnx_random_nodes import (ACTIVATIONS, _attr, _draw_activations, _model,  # noqa: E402
                                    _ort_outputs, supported)

N_NODES = 120
SEED = 20261204
DEFAULTS = ["sigmoid", "tanh"]


def _draw(rng, k):
    direction = ["forward", "reverse", "bidirectional"][rng.integers(3)]
    D = 2 if direction == "bidirectional" else 1
    layout = int(rng.integers(2))
    H = int(rng.integers(1, 34))
    I = int(rng.integers(1, 7))
    T = int(rng.integers(1, 5))
    B = int(rng.integers(1, 4))
    scale = 1.5 / np.sqrt(H + I)
    f32 = lambda *shape: (rng.uniform(-1, 1, shape) * scale * 2).astype(np.float32)
    values = {"X": rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(np.float32),
              "W": f32(D, 3 * H, I), "R": f32(D, 3 * H, H)}
    attrs = dict(hidden_size=H, direction=direction)
    if layout or rng.random() < 0.2:
        attrs["layout"] = layout
    r = rng.random()
    if r < 0.7:
        attrs["linear_before_reset"] = int(r < 0.45)
    if rng.random() < 0.6:
        values["B"] = f32(D, 6 * H)
    if rng.random() < 0.4:
        values["sequence_lens"] = rng.integers(1, T + 1, B).astype(np.int32)
    if rng.random() < 0.5:
        values["initial_h"] = (rng.standard_normal((B, D, H) if layout else (D, B, H))
                               .astype(np.float32) * 0.5)
    if rng.random() < 0.2:
        attrs["clip"] = float(rng.uniform(0.3, 3.0))
    r = rng.random()
    if r < 0.35:  # other activations, with their alpha / beta in order
        attrs.update(_draw_activations(rng, 2 * D))
    elif r < 0.45:  # the defaults written out
        attrs["activations"] = [n.capitalize() for n in DEFAULTS * D]
    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    names = [s if s in values else "" for s in slots]
    while names[-1] == "":
        names.pop()
    node = h.make_node("GRU", names, ["Y", "Y_h"], name=f"gru{k}", **attrs)
    as_inputs = bool(rng.random() < 0.3)
    weights = [n for n in ("W", "R", "B") if n in values]
    return node, values, weights, as_inputs, (T, B, D, H, layout)


def _fr_outputs(layer, values, sizes):
    T, B, D, H, layout = sizes
    swap = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if layout else (lambda a: a)
    h0 = swap(values["initial_h"]) if "initial_h" in values else np.zeros((D, B, H), np.float32)
    y, st = layer.forward(values["X"], state=fr.GRU.State(h0),
                          lengths=values.get("sequence_lens"), training=False)
    Y = y.reshape(B, T, D, H) if layout else y.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    return [Y, swap(st.h)]


CASES = [_draw(np.random.default_rng([SEED, k]), k) for k in range(N_NODES)]


def test_the_draw_covers_every_attribute():
    attrs = [{a.name: h.get_attribute_value(a) for a in c[0].attribute} for c in CASES]
    count = lambda pred: sum(bool(pred(a, c)) for a, c in zip(attrs, CASES))
    for d in (b"forward", b"reverse", b"bidirectional"):
        assert count(lambda a, c: a["direction"] == d) >= 25
    assert count(lambda a, c: a.get("linear_before_reset") == 1) >= 35
    assert count(lambda a, c: a.get("linear_before_reset", 0) == 0) >= 35
    assert count(lambda a, c: a.get("layout") == 1) >= 40
    assert count(lambda a, c: "clip" in a and supported(c[0]) is None) >= 15
    assert count(lambda a, c: "activations" in a and supported(c[0]) is None) >= 30
    assert count(lambda a, c: "activations" in a and supported(c[0]) == "activations") >= 3
    used = {x.decode() for a in attrs for x in a.get("activations", [])}
    assert set(ACTIVATIONS) <= used
    assert count(lambda a, c: "sequence_lens" in c[1]) >= 30
    assert count(lambda a, c: "initial_h" in c[1]) >= 40
    assert count(lambda a, c: c[3]) >= 20
    assert count(lambda a, c: supported(c[0]) is None) >= 80


@pytest.mark.parametrize("k", range(N_NODES))
def test_random_gru_node_matches_onnxruntime(k):
    node, values, weights, as_inputs, sizes = CASES[k]
    T, B, D, H, layout = sizes
    runtime = [n for n in node.input if n and n not in weights]
    graph_inputs = runtime + (weights if as_inputs else [])
    inits = [] if as_inputs else weights
    out_shapes = [[B, T, D, H] if layout else [T, D, B, H], [B, D, H] if layout else [D, B, H]]
    model = _model(node, values, graph_inputs, inits, list(zip(node.output, out_shapes)))
    onnx.checker.check_model(model)
    kwargs = {"inputs": {n: values[n] for n in weights}} if as_inputs else {}
    refused = supported(node)
    if refused is not None:
        with pytest.raises(ValueError, match=rf"gru{k}'.*{refused}"):
            fr.onnx.load(model, **kwargs)
        return
    layer = fr.onnx.load(model, **kwargs)
    want = _ort_outputs(node, values, (T, B, D, H), layout)
    got = _fr_outputs(layer, values, sizes)
    for name, g, w in zip(node.output, got, want):
        # ONNX Runtime's Softplus overflows to inf (see test_onnx_random_nodes.py)
        over = np.isinf(w) & (b"Softplus" in _attr(node, "activations"))
        assert np.all(np.isfinite(g[over])), f"node {k} {name}"
        np.testing.assert_allclose(g[~over], w[~over], rtol=1e-4, atol=2e-6,
                                   err_msg=f"node {k} {name}")
