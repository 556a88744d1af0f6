"""ONNX's own backend node cases for LSTM, GRU and RNN, generated from the installed
onnx package (onnx.backend.test.case.node: its data folder is not in the wheel,
so the cases are collected by running their generators with the `expect` hook
replaced), loaded with fr.onnx.load and compared with their expected outputs.

Every case's W, R, B (and P) are graph inputs: they are passed with
`inputs=`; loading without them must fail with the message that says how.
Variants of the cases with what fusedrnn does not compute (listed explicitly
below) must raise a ValueError naming it, so this test fails if one of them
starts loading."""
import copy
import inspect

import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
from onnx import helper as h  # noqa: E402
from onnx.backend.test.case.node import gru as onnx_gru_cases  # noqa: E402
from onnx.backend.test.case.node import lstm as onnx_lstm_cases  # noqa: E402
from onnx.backend.test.case.node import rnn as onnx_rnn_cases  # noqa: E402

# the cases of onnx 1.14 - 1.23 (all of them load); a case a newer onnx adds must
# either load and match or raise ValueError (see test_every_case_loads_or_is_refused)
KNOWN = {"test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes",
         "test_lstm_batchwise", "test_lstm_reverse", "test_lstm_bidirectional",
         "test_simple_rnn_defaults", "test_simple_rnn_with_initial_bias", "test_rnn_seq_length",
         "test_simple_rnn_batchwise", "test_simple_rnn_reverse", "test_simple_rnn_bidirectional",
         "test_gru_defaults", "test_gru_with_initial_bias", "test_gru_seq_length",
         "test_gru_batchwise", "test_gru_reverse", "test_gru_bidirectional"}
WEIGHTS = {"LSTM": {1: "W", 2: "R", 3: "B", 7: "P"}, "RNN": {1: "W", 2: "R", 3: "B"},
           "GRU": {1: "W", 2: "R", 3: "B"}}


def _collect():
    """{name: (node, inputs, outputs)} from the export_* generators of lstm.py / gru.py /
    rnn.py."""
    cases = {}

    def expect(node, inputs, outputs, name, **kwargs):
        cases[name] = (copy.deepcopy(node), [np.asarray(a) for a in inputs],
                       [np.asarray(a) for a in outputs])

    state = np.random.get_state()
    np.random.seed(0)  # the generators draw their weights from numpy's global generator
    try:
        for mod in (onnx_lstm_cases, onnx_gru_cases, onnx_rnn_cases):
            saved = mod.expect
            mod.expect = expect
            try:
                for _, cls in inspect.getmembers(mod, inspect.isclass):
                    if cls.__module__ != mod.__name__:
                        continue
                    for attr, fn in sorted(vars(cls).items()):
                        if attr.startswith("export"):
                            getattr(cls, attr)()
            finally:
                mod.expect = saved
    finally:
        np.random.set_state(state)
    return cases


CASES = _collect()


def _info(name, a):
    return h.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)


def _model(node, inputs, outputs):
    """The model `expect` builds: the node with every present input a graph input."""
    ins = [_info(n, a) for n, a in zip([n for n in node.input if n], inputs)]
    outs = [_info(n, a) for n, a in zip([n for n in node.output if n], outputs)]
    schema = onnx.defs.get_schema(node.op_type)
    graph = h.make_graph([node], "case", ins, outs)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", schema.since_version)])


def _split(node, inputs):
    """(weights for inputs=, the runtime inputs by slot name)."""
    present = dict(zip([n for n in node.input if n], inputs))
    weights, runtime = {}, {}
    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    for i, name in enumerate(node.input):
        if not name:
            continue
        if i in WEIGHTS[node.op_type]:
            weights[name] = present[name]
        else:
            runtime[slots[i]] = present[name]
    return weights, runtime


def _run(layer, node, runtime):
    """fr's outputs in the node's layouts: Y (T, D, B, H) or (B, T, D, H) with
    layout=1, Y_h / Y_c (D, B, H) or (B, D, H)."""
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    D, H = layer.num_directions, layer.hidden_size
    swap = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if layout == 1 else (lambda a: a)
    x = runtime["X"]
    B = x.shape[0] if layout == 1 else x.shape[1]
    zeros = np.zeros((D, B, H), np.float32)
    h0 = swap(runtime["initial_h"]) if "initial_h" in runtime else zeros
    c0 = swap(runtime["initial_c"]) if "initial_c" in runtime else zeros
    if isinstance(layer, fr.LSTM):
        state = fr.LSTMState(c0, h0)
    elif isinstance(layer, fr.GRU):
        state = fr.GRU.State(h0)
    else:
        state = fr.RNNState(zeros, h0)
    lens = runtime.get("sequence_lens")
    y, st = layer.forward(x, state=state, lengths=lens, training=False)
    if layout == 1:
        Y = y.reshape(B, -1, D, H)
    else:
        Y = y.reshape(y.shape[0], B, D, H).transpose(0, 2, 1, 3)
    out = {"Y": Y, "Y_h": swap(st.h if isinstance(layer, fr.GRU) else st[1])}
    if isinstance(layer, fr.LSTM):
        out["Y_c"] = swap(st[0])
    return out


def _check(name):
    node, inputs, expected = CASES[name]
    model = _model(node, inputs, expected)
    onnx.checker.check_model(model)
    weights, runtime = _split(node, inputs)
    with pytest.raises(ValueError, match=r"is a graph input, pass its value as "
                                         r"fusedrnn\.onnx\.load\(model, inputs="):
        fr.onnx.load(model)
    layer = fr.onnx.load(model, inputs=weights)
    out = _run(layer, node, runtime)
    names = [n for n in node.output if n]
    assert len(names) == len(expected)
    for out_name, want in zip(names, expected):
        np.testing.assert_allclose(out[out_name], want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: {out_name}")
    return layer


def test_the_known_cases_were_generated():
    assert KNOWN <= set(CASES), sorted(KNOWN - set(CASES))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_backend_case_loads_and_matches(name):
    layer = _check(name)
    node = CASES[name][0]
    attrs = {a.name: h.get_attribute_value(a) for a in node.attribute}
    assert layer.reverse == (attrs.get("direction") == b"reverse")
    assert layer.bidirectional == (attrs.get("direction") == b"bidirectional")
    assert layer.batch_first == (attrs.get("layout") == 1)


def test_every_case_loads_or_is_refused():
    """Cases beyond the known ones (a newer onnx): each matches, or is refused with
    a ValueError; never loaded into something that computes another function."""
    for name in sorted(set(CASES) - KNOWN):
        try:
            _check(name)
        except ValueError:
            pass


def _variant(name, **attrs):
    """A known case's node with attributes set, and its inputs."""
    node, inputs, outputs = CASES[name]
    node = copy.deepcopy(node)
    kept = [a for a in node.attribute if a.name not in attrs]
    del node.attribute[:]
    node.attribute.extend(kept + [h.make_attribute(k, v) for k, v in attrs.items()])
    return _model(node, inputs, outputs), _split(node, inputs)[0]


# variants of backend cases with activations (and alpha / beta) and the RNN's
# clip: they load, and match ONNX Runtime on the case's inputs
SUPPORTED = {
    "rnn-relu": ("test_simple_rnn_defaults", dict(activations=["Relu"])),
    "rnn-clip": ("test_simple_rnn_defaults", dict(clip=0.5)),
    "lstm-hardsigmoid": ("test_lstm_defaults", dict(activations=["HardSigmoid", "Tanh", "Tanh"])),
    "lstm-scaledtanh": ("test_lstm_reverse", dict(activations=["Sigmoid", "ScaledTanh", "Tanh"],
                                                  activation_alpha=[2.0],
                                                  activation_beta=[0.5])),
    "lstm-f-g-h": ("test_lstm_with_peepholes", dict(activations=["HardSigmoid", "Softsign", "Elu"],
                                                   activation_alpha=[0.3, 0.8],
                                                   activation_beta=[0.4])),
    "bidirectional-rnn-leakyrelu": ("test_simple_rnn_bidirectional",
                                    dict(activations=["Tanh", "LeakyRelu"], clip=1.5)),
    "gru-clip": ("test_gru_defaults", dict(clip=0.3)),
    "gru-hardsigmoid": ("test_gru_reverse", dict(activations=["HardSigmoid", "Tanh"])),
    "gru-f-g": ("test_gru_with_initial_bias", dict(activations=["Softsign", "ScaledTanh"],
                                                   activation_alpha=[1.5],
                                                   activation_beta=[0.7], clip=0.4)),
    "bidirectional-gru": ("test_gru_bidirectional",
                          dict(activations=["Sigmoid", "Relu", "LeakyRelu", "Elu"],
                               activation_alpha=[0.2, 0.9])),
}


@pytest.mark.parametrize("variant", sorted(SUPPORTED))
def test_activation_and_clip_variants_match_onnxruntime(variant):
    ort = pytest.importorskip("onnxruntime")
    name, attrs = SUPPORTED[variant]
    model, weights = _variant(name, **attrs)
    onnx.checker.check_model(model)
    layer = fr.onnx.load(model, inputs=weights)
    node = model.graph.node[0]
    _, inputs, _ = CASES[name]
    present = dict(zip([n for n in node.input if n], inputs))
    runtime = _split(node, inputs)[1]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {i.name: present[i.name] for i in model.graph.input})
    got = _run(layer, node, runtime)
    for out_name, w in zip([n for n in node.output if n], want):
        np.testing.assert_allclose(got[out_name], w, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{variant}: {out_name}")
    if "clip" in attrs:  # the clip must act on these inputs
        unclipped, _ = _variant(name, **{k: v for k, v in attrs.items() if k != "clip"})
        other = _run(fr.onnx.load(unclipped, inputs=weights), node, runtime)
        assert np.abs(other["Y"] - got["Y"]).max() > 1e-3


# what fusedrnn does not compute, each as a variant of a backend case and the
# ValueError it must raise
UNSUPPORTED = {
    "lstm-affine-no-alpha": (("test_lstm_defaults", dict(activations=["Sigmoid", "Affine", "Tanh"])),
                             "Affine has no activation_alpha value left"),
    "lstm-three-functions-short": (("test_lstm_defaults", dict(activations=["Sigmoid", "Tanh"])),
                                   "activations lists 2 functions, the LSTM takes 3"),
    # one alpha / beta per function: ONNX Runtime reads them for the functions that take them
    "lstm-alpha-per-function": (("test_lstm_reverse",
                                 dict(activations=["Sigmoid", "ScaledTanh", "Tanh"],
                                      activation_alpha=[1.0, 2.0, 1.0],
                                      activation_beta=[1.0, 0.5, 1.0])),
                                "activation_alpha / activation_beta hold more values"),
    "rnn-unknown": (("test_simple_rnn_defaults", dict(activations=["Gelu"])),
                    "unknown activation 'Gelu'"),
    "gru-functions-short": (("test_gru_defaults", dict(activations=["Sigmoid"])),
                            "activations lists 1 functions, the GRU takes 2"),
    "gru-unknown": (("test_gru_reverse", dict(activations=["Sigmoid", "Gelu"])),
                    "unknown activation 'Gelu'"),
    "gru-thresholdedrelu-no-alpha": (("test_gru_defaults",
                                      dict(activations=["Sigmoid", "ThresholdedRelu"])),
                                     "ThresholdedRelu has no activation_alpha value left"),
    "gru-linear_before_reset-2": (("test_gru_defaults", dict(linear_before_reset=2)),
                                  "linear_before_reset must be 0 or 1, got 2"),
}


@pytest.mark.parametrize("variant", sorted(UNSUPPORTED))
def test_unsupported_variants_are_refused_by_name(variant):
    (name, attrs), message = UNSUPPORTED[variant]
    model, weights = _variant(name, **attrs)
    onnx.checker.check_model(model)
    with pytest.raises(ValueError, match=message):
        fr.onnx.load(model, inputs=weights)


def test_default_activations_spelled_out_load():
    """activations written out as the defaults are the defaults."""
    model, weights = _variant("test_lstm_bidirectional",
                              activations=["Sigmoid", "Tanh", "Tanh"] * 2)
    plain = fr.onnx.load(_model(*CASES["test_lstm_bidirectional"]), inputs=weights)
    spelled = fr.onnx.load(model, inputs=weights)
    for k in plain.params:
        np.testing.assert_array_equal(spelled.params[k], plain.params[k])


# ONNX's GRU cases without sequence_lens (which ONNX's GRUHelper ignores)
LBR_CASES = sorted(n for n in KNOWN if n.startswith("test_gru") and n != "test_gru_seq_length")


def _helper_params(node, inputs):
    present = dict(zip([n for n in node.input if n], inputs))
    attrs = {a.name: h.get_attribute_value(a) for a in node.attribute}
    params = {k: present[k] for k in ("X", "W", "R", "B", "initial_h") if k in present}
    if "direction" in attrs:
        params["direction"] = attrs["direction"].decode()
    if "layout" in attrs:
        params["layout"] = attrs["layout"]
    return params


def test_the_linear_before_reset_variants_include_other_functions():
    """With the random weights, the cases with more than one step compute another
    function with linear_before_reset=1 (one step from h0 = 0 cannot differ), so
    the test below tells the formulations apart."""
    def steps(name):
        params = _helper_params(*CASES[name][:2])
        return params["X"].shape[1 if params.get("layout") == 1 else 0]

    longer = [n for n in LBR_CASES if steps(n) > 1]
    assert len(longer) >= 2, longer
    for name in longer:
        node, inputs, _ = CASES[name]
        params = _helper_params(node, _random_weights(node, inputs, seed=len(name)))
        Y0, _ = onnx_gru_cases.GRUHelper(**params, linear_before_reset=0).step()
        Y1, _ = onnx_gru_cases.GRUHelper(**params, linear_before_reset=1).step()
        assert not np.allclose(Y0, Y1, rtol=1e-5, atol=1e-6), name


def _random_weights(node, inputs, seed):
    """The case's inputs with W, R, B redrawn at random (the cases' constant weights
    make every unit alike, and then the two formulations agree)."""
    rng = np.random.default_rng(seed)
    names = [n for n in node.input if n]
    return [rng.uniform(-0.6, 0.6, a.shape).astype(a.dtype) if n in ("W", "R", "B") else a
            for n, a in zip(names, inputs)]


@pytest.mark.parametrize("name", LBR_CASES)
def test_gru_case_with_linear_before_reset_matches_onnx_helper(name):
    """The GRU cases with linear_before_reset=1 (none of ONNX's cases sets it) and
    random weights: the expected outputs from ONNX's own GRUHelper with the
    attribute."""
    node, inputs, _ = CASES[name]
    inputs = _random_weights(node, inputs, seed=len(name))
    present = dict(zip([n for n in node.input if n], inputs))
    params = _helper_params(node, inputs)
    Y, Y_h = onnx_gru_cases.GRUHelper(**params, linear_before_reset=1).step()  # node's layout
    node = copy.deepcopy(node)
    node.attribute.extend([h.make_attribute("linear_before_reset", 1)])
    model = _model(node, inputs, [Y, Y_h])
    onnx.checker.check_model(model)
    weights, runtime = _split(node, inputs)
    layer = fr.onnx.load(model, inputs=weights)
    assert layer.linear_before_reset
    out = _run(layer, node, runtime)
    np.testing.assert_allclose(out["Y"], Y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["Y_h"], Y_h, rtol=1e-5, atol=1e-6)
    B = present.get("B")
    if B is not None:  # R_bh, the h rows of B's second half, is b_hn
        Hs = layer.hidden_size
        np.testing.assert_array_equal(layer.params["b_hn"], B[0, 5 * Hs:])
