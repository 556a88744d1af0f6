"""The GRU's selectable warping functions and clip (docs/equations.md §8, §9): every
ONNX activation as f (the r and z gates, gate_activation) and as g (the candidate u,
cell_activation), and the accumulation clip, in the fused kernel forward and backward
against the NumPy oracle (float64 tight, float32) for both formulations, with
lengths, reverse and a bidirectional stack with other functions per direction; the
oracle's and the kernel's float64 backward against central finite differences;
streams, checkpoints, the torch module, to_torch's refusal and bad input."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference

from conftest import TOL, assert_close, central_differences
from test_warping_kernel import ACTIVATIONS, IDS, _cells, assert_cell_grads

PLACES = ["gate_activation", "cell_activation"]
LENGTHS = np.array([5, 3, 0, 4], np.int64)
LBR = [True, False]
LBR_IDS = ["linear-before-reset", "original"]


def _problem(layer, T, B, seed=3):
    rng = np.random.default_rng(seed)
    LD, D, H = layer.num_layers * layer.num_directions, layer.num_directions, layer.hidden_size
    dt = layer.dtype
    return dict(x=rng.standard_normal((T, B, layer.input_size)).astype(dt),
                h0=(0.5 * rng.standard_normal((LD, B, H))).astype(dt),
                dy=rng.standard_normal((T, B, D * H)).astype(dt),
                dh_T=rng.standard_normal((LD, B, H)).astype(dt))


def _check_vs_oracle(layer, options, lengths=LENGTHS, T=5, B=4):
    """Outputs, final state, dx, dh0 and every weight gradient of the layer against
    reference.gru_network_forward / backward in float64; returns the oracle's y."""
    pr = _problem(layer, T, B)
    layer.zero_grad()
    y, st = layer.forward(pr["x"], state=layer.State(pr["h0"]), lengths=lengths)
    dx, dst = layer.backward(pr["dy"], layer.State(pr["dh_T"]))
    f = lambda a: np.asarray(a, np.float64)
    y_r, h_r, cache = reference.gru_network_forward(
        f(pr["x"]), _cells(layer), f(pr["h0"]), linear_before_reset=layer.linear_before_reset,
        bidirectional=layer.bidirectional, lengths=lengths, **options)
    dx_r, dh0_r, grads_r = reference.gru_network_backward(f(pr["dy"]), f(pr["dh_T"]), cache)
    tol = TOL[layer.dtype.type]
    for a, b, what in [(y, y_r, "y"), (st.h, h_r, "h_T"), (dx, dx_r, "dx"), (dst.h, dh0_r, "dh0")]:
        assert_close(a, b, tol, what)
    assert_cell_grads(layer, grads_r, tol)
    return y_r


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_gru_warping_matches_oracle(lbr, place, act, dtype):
    layer = fr.GRU(3, 5, linear_before_reset=lbr, dtype=dtype, seed=7, **{place: act})
    y_r = _check_vs_oracle(layer, {place: act})
    if act != ("sigmoid" if place == "gate_activation" else "tanh"):  # the choice must matter
        plain = fr.GRU(3, 5, linear_before_reset=lbr, dtype=dtype, seed=7)
        assert np.abs(_check_vs_oracle(plain, {}) - y_r).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("act", ["sigmoid", ("hard_sigmoid", 0.3, 0.4), "relu"],
                         ids=["default", "hard_sigmoid", "relu"])
@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_gru_clip_matches_oracle(lbr, act, dtype):
    """The clip of a_r, a_z, a_n before f and g (ONNX's clip); it must act here."""
    opts = dict(gate_activation=act, cell_activation="softsign" if act == "relu" else "tanh")
    layer = fr.GRU(3, 5, linear_before_reset=lbr, dtype=dtype, seed=11, accumulation_clip=0.6,
                   **opts)
    for v in layer.params.values():  # larger weights, so that the clip acts
        v *= 2.0
    y_r = _check_vs_oracle(layer, dict(opts, accumulation_clip=0.6))
    unclipped = fr.GRU(3, 5, linear_before_reset=lbr, dtype=dtype, seed=11, **opts)
    for k, v in layer.params.items():
        unclipped.params[k][...] = v
    assert np.abs(_check_vs_oracle(unclipped, opts) - y_r).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_bidirectional_stack_with_functions_per_direction(lbr, dtype):
    """Two bidirectional layers, f and g different in each direction, the clip, lengths."""
    opts = dict(gate_activation=[("hard_sigmoid", 0.25, 0.5), "softsign"],
                cell_activation=[("scaled_tanh", 1.2, 0.8), ("elu", 0.7)], accumulation_clip=1.2)
    layer = fr.GRU(3, 5, linear_before_reset=lbr, num_layers=2, bidirectional=True,
                   dtype=dtype, seed=5, **opts)
    for v in layer.params.values():
        v *= 2.0
    _check_vs_oracle(layer, opts)
    # the two directions compute different functions: swapping them changes y
    swapped = {k: v[::-1] for k, v in opts.items() if k != "accumulation_clip"}
    other = fr.GRU(3, 5, linear_before_reset=lbr, num_layers=2, bidirectional=True,
                   dtype=dtype, seed=5, accumulation_clip=1.2, **swapped)
    for k, v in layer.params.items():
        other.params[k][...] = v
    x = np.random.default_rng(0).standard_normal((5, 4, 3)).astype(dtype)
    y, y_other = layer.forward(x, training=False)[0], other.forward(x, training=False)[0]
    assert np.abs(y - y_other).max() > 1e-3


@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_reverse_layer_with_warping(lbr):
    """A reverse=True stack (every layer one reversed direction) with f, g and the clip,
    against reference.gru_forward / gru_backward(reverse=True) layer by layer."""
    opts = dict(gate_activation=("leaky_relu", 0.2), cell_activation="softplus",
                accumulation_clip=0.9)
    layer = fr.GRU(3, 4, linear_before_reset=lbr, num_layers=2, reverse=True,
                   dtype=np.float64, seed=9, **opts)
    pr = _problem(layer, 5, 4)
    layer.zero_grad()
    y, st = layer.forward(pr["x"], state=layer.State(pr["h0"]), lengths=LENGTHS)
    dx, dst = layer.backward(pr["dy"], layer.State(pr["dh_T"]))
    cells, inp, caches = _cells(layer), pr["x"], []
    for l, p in enumerate(cells):
        inp, h_l, c = reference.gru_forward(inp, p, pr["h0"][l], linear_before_reset=lbr,
                                            lengths=LENGTHS, reverse=True, **opts)
        caches.append(c)
        assert_close(st.h[l], h_l, 1e-10, f"h_T[{l}]")
    assert_close(y, inp, 1e-10, "y")
    d_out = pr["dy"]
    for l in range(len(cells) - 1, -1, -1):
        d_out, dh0, grads = reference.gru_backward(d_out, pr["dh_T"][l], caches[l])
        assert_close(dst.h[l], dh0, 1e-10, f"dh0[{l}]")
        sfx = "" if l == 0 else f"_l{l}"
        for k, g in grads.items():
            assert_close(layer.grads[k + sfx], g, 1e-10, f"grad {k}{sfx}")
    assert_close(dx, d_out, 1e-10, "dx")


# -- finite differences in float64 ----------------------------------------------------

FD_CASES = ([(place, act) for place in PLACES for act in ACTIVATIONS]
            + [("clip", "sigmoid"), ("clip", ("elu", 0.6))])
FD_IDS = [f"{p}-{a if isinstance(a, str) else a[0]}" for p, a in FD_CASES]


def _fd_problem(lbr, place, act):
    opts = ({"accumulation_clip": 0.7, "gate_activation": act} if place == "clip"
            else {place: act})
    rng = np.random.default_rng(5)
    T, B, I, H = 4, 2, 3, 3
    p = {"W_x": rng.uniform(-1, 1, (3 * H, I)), "W_h": rng.uniform(-1, 1, (3 * H, H)),
         "b": rng.uniform(-0.5, 0.5, 3 * H)}
    if lbr:
        p["b_hn"] = rng.uniform(-0.5, 0.5, H)
    x, h0 = rng.standard_normal((T, B, I)), 0.5 * rng.standard_normal((B, H))
    dy, dh_T = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    return opts, p, x, h0, dy, dh_T


@pytest.mark.parametrize("place,act", FD_CASES, ids=FD_IDS)
@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_oracle_backward_finite_differences(lbr, place, act):
    """reference.gru_backward against central differences of reference.gru_forward of
    E = <dy, y> + <dh_T, h_T> (lengths included), every parameter, x and h0."""
    opts, p, x, h0, dy, dh_T = _fd_problem(lbr, place, act)
    lens = np.array([4, 2])

    def loss():
        y, h_T, _ = reference.gru_forward(x, p, h0, linear_before_reset=lbr, lengths=lens, **opts)
        return float(np.sum(y * dy) + np.sum(h_T * dh_T))

    _, _, cache = reference.gru_forward(x, p, h0, linear_before_reset=lbr, lengths=lens, **opts)
    dx, dh0, grads = reference.gru_backward(dy, dh_T, cache)
    for name, arr in p.items():
        assert_close(grads[name], central_differences(loss, arr), 1e-6, f"d{name}")
    assert_close(dx, central_differences(loss, x), 1e-6, "dx")
    assert_close(dh0, central_differences(loss, h0), 1e-6, "dh0")


@pytest.mark.parametrize("place,act", FD_CASES, ids=FD_IDS)
@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_kernel_backward_finite_differences(lbr, place, act):
    """The kernel's float64 gradients against central differences of its own forward."""
    opts, p, x, h0, dy, dh_T = _fd_problem(lbr, place, act)
    layer = fr.GRU(3, 3, linear_before_reset=lbr, dtype=np.float64, seed=0, **opts)
    for k, v in p.items():
        layer.params[k][...] = v
    st0 = layer.State(h0[None])

    def loss():
        y, st = layer.forward(x, state=st0, training=False)
        return float(np.sum(y * dy) + np.sum(st.h[0] * dh_T))

    layer.zero_grad()
    layer.forward(x, state=st0)
    dx, dst = layer.backward(dy, layer.State(dh_T[None]))
    for name, arr in layer.params.items():
        assert_close(layer.grads[name], central_differences(loss, arr), 1e-6, f"d{name}")
    assert_close(dx, central_differences(loss, x), 1e-6, "dx")


# -- the layer's options ---------------------------------------------------------------

def test_options_are_read_only_plain_and_checked():
    g = fr.GRU(2, 3, bidirectional=True, gate_activation=("HardSigmoid", 0.2),
               cell_activation=["tanh", "relu"], accumulation_clip=2)
    assert g.gate_activation == ("hardsigmoid", 0.2, 0.5)
    assert g.cell_activation == ("tanh", "relu")
    assert g.accumulation_clip == 2.0
    assert "cell_activation=('tanh', 'relu')" in repr(g) and "accumulation_clip=2.0" in repr(g)
    assert "activation" not in repr(fr.GRU(2, 3))
    for name in ("gate_activation", "cell_activation", "accumulation_clip"):
        with pytest.raises(AttributeError, match="read-only"):
            setattr(g, name, "tanh")
    with pytest.raises(ValueError, match="gate_activation: unknown activation 'gelu'"):
        fr.GRU(2, 3, gate_activation="gelu")
    with pytest.raises(ValueError, match="cell_activation: Tanh takes no parameters"):
        fr.GRU(2, 3, cell_activation=("tanh", 0.5))
    with pytest.raises(ValueError, match=r"gate_activation\[1\]: LeakyRelu takes alpha"):
        fr.GRU(2, 3, bidirectional=True, gate_activation=["sigmoid", ("leaky_relu", 0.1, 0.2)])
    with pytest.raises(ValueError, match="cell_activation must be one activation or a list of 1"):
        fr.GRU(2, 3, cell_activation=["tanh", "relu"])
    with pytest.raises(TypeError, match="gate_activation must be an activation name"):
        fr.GRU(2, 3, gate_activation=1.0)
    with pytest.raises(ValueError, match="alpha of Elu must be a finite number"):
        fr.GRU(2, 3, cell_activation=("elu", float("inf")))
    with pytest.raises(ValueError, match="accumulation_clip must be a finite number > 0"):
        fr.GRU(2, 3, accumulation_clip=0.0)


def test_checkpoint_and_stream_keep_the_warping(tmp_path):
    g = fr.GRU(3, 4, linear_before_reset=False, gate_activation=("hard_sigmoid", 0.3, 0.4),
               cell_activation="softsign", accumulation_clip=0.8, seed=2)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    whole, _ = g.forward(x, training=False)
    fr.checkpoint.save(tmp_path / "g.npz", g)
    back = fr.checkpoint.load(tmp_path / "g.npz")
    assert (back.gate_activation, back.cell_activation, back.accumulation_clip) == (
        g.gate_activation, g.cell_activation, g.accumulation_clip)
    np.testing.assert_array_equal(back.forward(x, training=False)[0], whole)
    st = g.stream(2)
    np.testing.assert_allclose(np.stack([st.step(f) for f in x]), whole, rtol=1e-5, atol=1e-6)
    assert np.abs(whole - fr.GRU(3, 4, linear_before_reset=False, seed=2).forward(
        x, training=False)[0]).max() > 1e-3


def test_inference_equals_training_forward():
    """The inference forward (warped in place, no store) equals the training forward
    (the accumulations kept in the store)."""
    g = fr.GRU(4, 6, gate_activation="softsign", cell_activation=("leaky_relu", 0.1),
               accumulation_clip=1.0, dtype=np.float64, seed=4)
    x = np.random.default_rng(1).standard_normal((7, 3, 4))
    y_inf, st_inf = g.forward(x, training=False, lengths=np.array([7, 0, 3]))
    y, st = g.forward(x, lengths=np.array([7, 0, 3]))
    np.testing.assert_array_equal(y_inf, y)
    np.testing.assert_array_equal(st_inf.h, st.h)


# -- torch --------------------------------------------------------------------------------

def test_torch_module_and_to_torch():
    torch = pytest.importorskip("torch")
    import fusedrnn.torch as frt
    mod = frt.GRU(3, 4, gate_activation=("hard_sigmoid", 0.25, 0.5), cell_activation="softsign",
                  accumulation_clip=1.5, dtype=np.float64, seed=3)
    assert "gate_activation=('hardsigmoid', 0.25, 0.5)" in mod.extra_repr()
    layer = mod.to_fusedrnn()
    assert (layer.gate_activation, layer.cell_activation, layer.accumulation_clip) == (
        ("hardsigmoid", 0.25, 0.5), "softsign", 1.5)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    y, h = mod(x)
    (y.square().sum() + h.sum()).backward()
    y_fr, st = layer.forward(x.detach().numpy())
    dx_fr, _ = layer.backward(2 * y_fr, layer.State(np.ones_like(st.h)))
    np.testing.assert_allclose(y.detach().numpy(), y_fr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), dx_fr, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: mod(t)[0], (x.detach().clone().requires_grad_(),))
    with pytest.raises(ValueError, match="torch.nn.GRU has no warping functions other than "
                                         "sigmoid and tanh"):
        fr.GRU(3, 4, cell_activation="relu").to_torch()
    with pytest.raises(ValueError, match="torch.nn.GRU has no accumulation_clip"):
        mod.to_torch()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("lbr", LBR, ids=LBR_IDS)
def test_quantized_gru_keeps_the_warping(lbr, precision):
    """A quantized GRU computes its float layer's f, g and clip: against the reduced
    oracle (reference.gru_network_forward with precision and the same functions)."""
    opts = dict(gate_activation=("hard_sigmoid", 0.25, 0.5), cell_activation="softsign",
                accumulation_clip=1.0)
    layer = fr.GRU(3, 5, linear_before_reset=lbr, seed=4, **opts)
    q = layer.quantize(precision)
    assert (q.gate_activation, q.cell_activation, q.accumulation_clip) == (
        layer.gate_activation, layer.cell_activation, layer.accumulation_clip)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    y_q, _ = q.forward(x)
    cells = [{k: q.params[k] for k in q.params}]
    y_r, _, _ = reference.gru_network_forward(x, cells, linear_before_reset=lbr,
                                              precision=precision, **opts)
    np.testing.assert_allclose(y_q, y_r, rtol=1e-5, atol=1e-5)
    y_d, _ = fr.GRU(3, 5, linear_before_reset=lbr, seed=4).quantize(precision).forward(x)
    assert np.abs(y_q - y_d).max() > 0.05          # not the default functions
