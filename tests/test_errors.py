"""Group 6: every bad input raises the documented error, naming the argument."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _kernel

LAYERS = [lambda **kw: fr.LSTM(4, 5, **kw), lambda **kw: fr.RNN(4, 5, **kw)]


@pytest.fixture(params=LAYERS, ids=["lstm", "rnn"])
def layer(request):
    return request.param(dtype=np.float64, seed=0)


def x_ok(T=3, B=2, I=4):
    return np.zeros((T, B, I))


def test_constructor_errors():
    with pytest.raises(ValueError, match="input_size"):
        fr.LSTM(0, 5)
    with pytest.raises(TypeError, match="hidden_size"):
        fr.LSTM(4, 5.0)
    with pytest.raises(TypeError, match="hidden_size"):
        fr.RNN(4, True)
    with pytest.raises(TypeError, match="dtype"):
        fr.LSTM(4, 5, dtype=np.int32)
    with pytest.raises(TypeError, match="dtype"):
        fr.RNN(4, 5, dtype=np.float16)
    with pytest.raises(ValueError, match="peepholes"):
        fr.LSTM(4, 5, peepholes="sideways")
    with pytest.raises(TypeError, match="state_feedback"):
        fr.RNN(4, 5, state_feedback="yes")


@pytest.mark.parametrize("bad,match", [
    (np.zeros((3, 4)), r"x must have shape \(T, B, 4\)"),
    (np.zeros((3, 2, 4, 1)), r"x must have shape"),
    (np.zeros((3, 2, 5)), r"feature size 4"),
    (np.zeros((0, 2, 4)), r"at least one time step"),
    (np.zeros((3, 0, 4)), r"at least one time step and one batch row"),
])
def test_bad_x_shape(layer, bad, match):
    with pytest.raises(ValueError, match=match):
        layer.forward(bad)


@pytest.mark.parametrize("bad", [np.zeros((3, 2, 4), complex), np.array([[["a"] * 4] * 2] * 3),
                                 np.empty((3, 2, 4), object)])
def test_bad_x_dtype(layer, bad):
    with pytest.raises(TypeError, match="x must hold real numbers"):
        layer.forward(bad)


def test_backward_without_training_forward(layer):
    with pytest.raises(ValueError, match="training=True"):
        layer.backward(np.zeros((3, 2, 5)))
    layer.forward(x_ok())
    layer.forward(x_ok(), training=False)  # an inference call drops the stored forward
    with pytest.raises(ValueError, match="training=True"):
        layer.backward(np.zeros((3, 2, 5)))


@pytest.mark.parametrize("shape,match", [((3, 2, 6), "feature size 5"), ((4, 2, 5), "3 time steps"),
                                         ((3, 1, 5), "batch size 2"), ((3, 5), "dy must have shape")])
def test_bad_dy(layer, shape, match):
    layer.forward(x_ok())
    with pytest.raises(ValueError, match=match):
        layer.backward(np.zeros(shape))


def test_bad_dstate(layer):
    layer.forward(x_ok())
    name = layer.State._fields[0]
    with pytest.raises(ValueError, match=rf"dstate.{name} must have shape \(1, 2, 5\)"):
        layer.backward(None, layer.State(np.zeros((2, 5)), None))
    with pytest.raises(ValueError, match="dstate must be"):
        layer.backward(None, (np.zeros((1, 2, 5)),))


def test_bad_state(layer):
    s, o = layer.State._fields[:2]
    with pytest.raises(ValueError, match=rf"state.{s} must have shape \(1, 2, 5\)"):
        layer.forward(x_ok(), state=layer.State(np.zeros((1, 3, 5)), np.zeros((1, 2, 5))))
    with pytest.raises(ValueError, match=rf"state.{o} must have shape \(1, 2, 5\)"):
        layer.forward(x_ok(), state=layer.State(np.zeros((1, 2, 5)), np.zeros((2, 5))))
    with pytest.raises(TypeError, match="state must be"):
        layer.forward(x_ok(), state=np.zeros((1, 2, 5)))
    with pytest.raises(TypeError, match=rf"state.{s} must hold real numbers"):
        layer.forward(x_ok(), state=layer.State(np.zeros((1, 2, 5), complex), np.zeros((1, 2, 5))))


def test_replaced_params_are_checked(layer):
    key = "W_x"
    layer.params[key] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"params\['W_x'\] must have shape"):
        layer.forward(x_ok())
    layer.params[key] = np.zeros(layer.grads[key].shape, np.float32)
    with pytest.raises(TypeError, match=r"params\['W_x'\] must be a numpy array of dtype float64"):
        layer.forward(x_ok())


def test_non_contiguous_grads_refused(layer):
    layer.forward(x_ok())
    g = layer.grads["W_x"]
    layer.grads["W_x"] = np.zeros((g.shape[1], g.shape[0])).T
    with pytest.raises(ValueError, match=r"grads\['W_x'\] must be a writeable C-contiguous"):
        layer.backward(np.zeros((3, 2, 5)))


@pytest.mark.parametrize("sizes", [_kernel.lstm_sizes, _kernel.rnn_sizes])
def test_overflowing_sizes(sizes):
    with pytest.raises(ValueError, match="too large"):
        sizes(2**40, 2**40, 4, 4, 0)
    with pytest.raises(ValueError, match="too large"):
        sizes(2**20, 2**12, 4, 4, 0)  # T*B = 2**32 rows exceeds a BLAS int
    with pytest.raises(ValueError, match="too large"):
        sizes(1, 1, 4, 2**62, 0)
    with pytest.raises(ValueError, match="invalid"):
        sizes(0, 1, 4, 4, 0)


def test_internal_buffer_too_small_is_refused():
    """The bindings check buffer lengths, so even a wrong internal call cannot
    make the kernel write out of bounds."""
    T, B, I, H = 2, 1, 3, 4
    z = lambda n: np.zeros(n)
    with pytest.raises(ValueError, match="buffer y_seq"):
        _kernel.lstm_forward(_kernel.LSTMConfig(T, B, I, H), y_seq=z(T * B * H - 1),
                             s_T=z(B * H), y_T=z(B * H), acts=None, work=z(10**4),
                             x=z(T * B * I), s0=z(B * H), y0=z(B * H), W_x=z(4 * H * I),
                             W_v=z(4 * H * H), b=z(4 * H), W_s=None, W_qv=None)


# ---- augmented options (issue 3) --------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(proj_size=5), ValueError, r"proj_size must satisfy 0 <= proj_size < hidden_size = 5"),
    (dict(proj_size=-1), ValueError, "proj_size"),
    (dict(proj_size=2.0), TypeError, "proj_size must be an int"),
    (dict(context=(1,)), TypeError, r"context must be a pair"),
    (dict(context=(-1, 0)), ValueError, r"L_past\) must be an int >= 0"),
    (dict(context=(0, 1.5)), ValueError, r"L_future\) must be an int >= 0"),
    (dict(peepholes="sideways"), ValueError, "peepholes must be 'diagonal'"),
    (dict(cell_clip=0), ValueError, "cell_clip must be a finite number > 0"),
    (dict(accumulation_clip=float("inf")), ValueError, "accumulation_clip must be a finite"),
    (dict(cell_clip="1"), TypeError, "cell_clip must be a positive number"),
    (dict(coupled_gates=1), TypeError, "coupled_gates must be a bool"),
    (dict(num_layers=0), ValueError, "num_layers must be >= 1"),
    (dict(dropout=1.0, num_layers=2), ValueError, r"dropout must be in \[0, 1\)"),
    (dict(bidirectional="yes"), TypeError, "bidirectional must be a bool"),
])
def test_bad_lstm_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fr.LSTM(4, 5, **kwargs)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="no effect"):
        fr.LSTM(4, 5, dropout=0.2)


@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
@pytest.mark.parametrize("lengths,exc,match", [
    ([3, 4], ValueError, r"lengths must lie in \[0, T\] = \[0, 3\]"),
    ([-1, 2], ValueError, r"lengths must lie in \[0, T\]"),
    ([1, 2, 3], ValueError, r"lengths must have shape \(B,\) = \(2,\)"),
    ([[1, 2]], ValueError, r"lengths must have shape"),
    ([1.0, 2.0], TypeError, "lengths must be integers"),
])
def test_bad_lengths(cls, lengths, exc, match):
    with pytest.raises(exc, match=match):
        cls(4, 5).forward(np.zeros((3, 2, 4)), lengths=lengths)


def test_context_errors():
    lstm = fr.LSTM(4, 5, context=(3, 1), dtype=np.float64)
    with pytest.raises(ValueError, match=r"wider than the sequence \(T = 3\)"):
        lstm.forward(np.zeros((3, 2, 4)))
    lstm.forward(np.zeros((3, 2, 4)), state=lstm.initial_state(2))  # a stream may start short
    with pytest.raises(ValueError, match=r"x_future must have 1 time steps"):
        lstm.forward(np.zeros((4, 2, 4)), x_future=np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match=r"state.x_past must have shape \(3, 2, 4\)"):
        lstm.forward(np.zeros((4, 2, 4)), state=fr.LSTMState(np.zeros((1, 2, 5)),
                                                             np.zeros((1, 2, 5)), np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match="x_future is only for LSTMs with a look-ahead"):
        fr.LSTM(4, 5, context=(1, 0)).forward(np.zeros((4, 2, 4)), x_future=np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="state.x_past is only for LSTMs"):
        fr.LSTM(4, 5).forward(np.zeros((4, 2, 4)), state=fr.LSTMState(
            np.zeros((1, 2, 5)), np.zeros((1, 2, 5)), np.zeros((1, 2, 4))))
    with pytest.raises(ValueError, match="needs a unidirectional LSTM"):
        fr.LSTM(4, 5, context=(0, 1), bidirectional=True).forward(
            np.zeros((4, 2, 4)), x_future=np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="x_future is only for"):
        fr.RNN(4, 5).forward(np.zeros((4, 2, 4)), x_future=np.zeros((1, 2, 4)))


def test_state_shape_for_stacks():
    lstm = fr.LSTM(4, 6, proj_size=2, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"state.v must have shape \(4, 3, 2\)"):
        lstm.forward(np.zeros((5, 3, 4)), state=fr.LSTMState(np.zeros((4, 3, 6)), np.zeros((4, 3, 6))))
    y, st = lstm.forward(np.zeros((5, 3, 4)))
    assert y.shape == (5, 3, 4) and st.s.shape == (4, 3, 6) and st.v.shape == (4, 3, 2)
    with pytest.raises(ValueError, match=r"dy must have shape \(T, B, 4\)"):
        lstm.backward(np.zeros((5, 3, 2)))


def test_size_bounds():
    with pytest.raises(ValueError, match=r"hidden_size must be <= 2147483647"):
        fr.LSTM(1, 2**64)
    with pytest.raises(ValueError, match=r"input_size must be <= 2147483647"):
        fr.RNN(2**40, 2)
    with pytest.raises(ValueError, match=r"num_layers must be <= 1024"):
        fr.LSTM(2, 2, num_layers=2**40)


# ---- conversions NumPy cannot do, seeds, deleted entries, Linear's parameters ------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(cell_clip=2**1024), ValueError, r"cell_clip must be a finite number > 0 or None, got an int"),
    (dict(accumulation_clip=-2**2000), ValueError, "accumulation_clip must be a finite number"),
    (dict(seed=-1), ValueError, r"seed must be None or an int >= 0, got -1"),
    (dict(seed=1.5), TypeError, r"seed must be None or an int >= 0, got 1.5"),
    (dict(seed="0"), TypeError, r"seed must be None or an int >= 0"),
])
def test_bad_numbers_are_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fr.LSTM(4, 5, **kwargs)
    if "seed" in kwargs:
        with pytest.raises(exc, match=match):
            fr.RNN(4, 5, **kwargs)
        with pytest.raises(exc, match=match):
            fr.Linear(4, 5, **kwargs)


def test_numpy_seed_objects_still_work():
    a = fr.LSTM(4, 5, seed=np.random.SeedSequence(3))
    b = fr.LSTM(4, 5, seed=np.random.default_rng(np.random.SeedSequence(3)))
    np.testing.assert_array_equal(a.params["W_x"], b.params["W_x"])


RAGGED = [[[0.0] * 4, [0.0] * 4], [[0.0] * 4]]  # two steps of 2 and 1 rows


def test_ragged_inputs_are_named(layer):
    with pytest.raises(ValueError, match=r"x must be a rectangular array .* ragged list"):
        layer.forward(RAGGED)
    with pytest.raises(ValueError, match=r"lengths must be a rectangular array"):
        layer.forward(x_ok(), lengths=[[1, 2], [3]])
    s, o = layer.State._fields[:2]
    with pytest.raises(ValueError, match=rf"state.{s} must be a rectangular array"):
        layer.forward(x_ok(), state=layer.State([[[0.0] * 5] * 2, [[0.0] * 5]], np.zeros((1, 2, 5))))
    layer.forward(x_ok())
    with pytest.raises(ValueError, match=r"dy must be a rectangular array"):
        layer.backward([[[0.0] * 5] * 2, [[0.0] * 5]] * 2)
    with pytest.raises(ValueError, match=r"x must be a rectangular array"):
        fr.Linear(4, 2).forward(RAGGED)


def test_torch_tensor_that_requires_grad_is_named(layer):
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, 2, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match=r"x is a torch tensor that requires grad.*x\.detach\(\)"
                                        r"\.numpy\(\).*fusedrnn\.torch"):
        layer.forward(x)
    with pytest.raises(TypeError, match=r"x is a torch tensor that requires grad"):
        fr.Linear(4, 2).forward(x)
    y, _ = layer.forward(x.detach())  # a plain CPU tensor converts
    layer.backward(None)
    np.testing.assert_array_equal(y, layer.forward(np.zeros((3, 2, 4)))[0])
    with pytest.raises(TypeError, match=r"dy is a torch tensor that requires grad"):
        layer.backward(torch.zeros(3, 2, 5, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("store", ["params", "grads"])
def test_deleted_entry_is_named(layer, store):
    """A deleted entry: a ValueError (also a KeyError) naming the dict it is missing from."""
    layer.forward(x_ok())
    del getattr(layer, store)["W_x"]
    call = layer.forward if store == "params" else lambda x: layer.backward(np.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match=rf"^{store} is missing 'W_x': it must hold a numpy array "
                                         r"of shape \(\d+, 4\) and dtype float64"):
        call(x_ok())
    with pytest.raises(KeyError):
        call(x_ok())


def test_replaced_grads_are_named(layer):
    layer.forward(x_ok())
    layer.grads["W_x"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"grads\['W_x'\] must have shape"):
        layer.backward(np.zeros((3, 2, 5)))
    layer.grads["W_x"] = np.zeros(layer.params["W_x"].shape, np.float32)
    with pytest.raises(TypeError, match=r"grads\['W_x'\] must be a numpy array of dtype float64"):
        layer.backward(np.zeros((3, 2, 5)))
    layer.grads = None
    with pytest.raises(TypeError, match=r"grads must be a dict of numpy arrays"):
        layer.backward(np.zeros((3, 2, 5)))


@pytest.mark.parametrize("store,key,value,exc,match", [
    ("params", "W", np.zeros((4, 3)), ValueError, r"params\['W'\] must have shape \(3, 4\), got \(4, 3\)"),
    ("params", "W", np.zeros((3, 4), np.float32), TypeError, r"params\['W'\] must be a numpy array of dtype float64"),
    ("params", "W", [[0.0] * 4] * 3, TypeError, r"params\['W'\] must be a numpy array"),
    ("params", "b", np.zeros(4), ValueError, r"params\['b'\] must have shape \(3,\)"),
    ("params", "b", None, TypeError, r"params\['b'\] must be a numpy array"),
    ("grads", "W", np.zeros((3, 5)), ValueError, r"grads\['W'\] must have shape \(3, 4\)"),
    ("grads", "b", np.zeros(3, np.float32), TypeError, r"grads\['b'\] must be a numpy array of dtype float64"),
])
def test_linear_with_wrong_parameters(store, key, value, exc, match):
    lin = fr.Linear(4, 3, dtype=np.float64, seed=0)
    x = np.zeros((2, 4))
    if store == "params":
        getattr(lin, store)[key] = value
        with pytest.raises(exc, match=match):
            lin.forward(x)
    else:
        lin.forward(x)
        getattr(lin, store)[key] = value
        with pytest.raises(exc, match=match):
            lin.backward(np.zeros((2, 3)))


@pytest.mark.parametrize("store", ["params", "grads"])
def test_linear_deleted_entry(store):
    lin = fr.Linear(4, 3, dtype=np.float64, seed=0)
    lin.forward(np.zeros((2, 4)))
    del getattr(lin, store)["W"]
    call = (lambda: lin.forward(np.zeros((2, 4)))) if store == "params" else \
        (lambda: lin.backward(np.zeros((2, 3))))
    with pytest.raises(ValueError, match=rf"{store} is missing 'W'"):
        call()


def test_read_only_grads_of_linear_are_named():
    lin = fr.Linear(4, 3, dtype=np.float64, seed=0)
    lin.forward(np.zeros((2, 4)))
    lin.grads["W"].flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\['W'\] must be a writeable array"):
        lin.backward(np.zeros((2, 3)))


# ---- optimisers, clipping, truncated BPTT, checkpoints and ONNX files ---------------------
# One table: (id, call, exception, message). Each call gets fresh objects.

def _lstm():
    return fr.LSTM(3, 4, dtype=np.float64, seed=0)


def _seq():
    return fr.Sequential(fr.LSTM(3, 4, dtype=np.float64, seed=0),
                         fr.Linear(4, 2, dtype=np.float64, seed=1))


def _set_lr(value):
    opt = fr.optim.Adam(_lstm())
    opt.lr = value


def _tbptt(x, **kw):
    kw.setdefault("window", 3)
    return fr.train.tbptt(_seq(), x, np.zeros((10, 1, 2)), fr.mse_loss, progress=False, **kw)


def _clip_int_grads():
    return fr.clip_grad_norm({"g": np.array([3, 4])}, 1.0)


IO_ERRORS = [
    ("sgd-lr-str", lambda: fr.optim.SGD(_lstm(), lr="0.1"), TypeError, "lr must be a real number"),
    ("sgd-lr-none", lambda: fr.optim.SGD(_lstm(), lr=None), TypeError, "lr must be a real number"),
    ("sgd-lr-bool", lambda: fr.optim.SGD(_lstm(), lr=True), TypeError, "lr must be a real number"),
    ("sgd-lr-nan", lambda: fr.optim.SGD(_lstm(), lr=float("nan")), ValueError, "lr must be a finite"),
    ("sgd-lr-hugeint", lambda: fr.optim.SGD(_lstm(), lr=10**400), ValueError, "lr must be a finite"),
    ("sgd-lr-negative", lambda: fr.optim.SGD(_lstm(), lr=-1), ValueError, "lr must be a finite number >= 0"),
    ("sgd-momentum-str", lambda: fr.optim.SGD(_lstm(), momentum="a"), TypeError, "momentum must be a real"),
    ("sgd-momentum-inf", lambda: fr.optim.SGD(_lstm(), momentum=float("inf")), ValueError, "momentum must be a finite"),
    ("sgd-wd-none", lambda: fr.optim.SGD(_lstm(), weight_decay=None), TypeError, "weight_decay must be a real"),
    ("sgd-wd-negative", lambda: fr.optim.SGD(_lstm(), weight_decay=-0.1), ValueError, "weight_decay must be"),
    ("sgd-nesterov-str", lambda: fr.optim.SGD(_lstm(), momentum=0.9, nesterov="yes"), TypeError, "nesterov must be a bool"),
    ("adam-lr-complex", lambda: fr.optim.Adam(_lstm(), lr=1j), TypeError, "lr must be a real number"),
    ("adam-betas-scalar", lambda: fr.optim.Adam(_lstm(), betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\)"),
    ("adam-betas-str", lambda: fr.optim.Adam(_lstm(), betas="ab"), TypeError, "betas must be a pair"),
    ("adam-betas-one", lambda: fr.optim.Adam(_lstm(), betas=(0.9,)), ValueError, "betas must be a pair"),
    ("adam-betas-none", lambda: fr.optim.Adam(_lstm(), betas=(0.9, None)), TypeError, r"betas\[1\] must be a real"),
    ("adam-betas-nan", lambda: fr.optim.Adam(_lstm(), betas=(float("nan"), 0.9)), ValueError, r"betas\[0\] must be a finite"),
    ("adam-betas-one-value", lambda: fr.optim.Adam(_lstm(), betas=(1.0, 0.9)), ValueError, r"betas must be two numbers in \[0, 1\)"),
    ("adam-eps-str", lambda: fr.optim.Adam(_lstm(), eps="x"), TypeError, "eps must be a real number"),
    ("adam-eps-nan", lambda: fr.optim.Adam(_lstm(), eps=float("nan")), ValueError, "eps must be a finite"),
    ("adam-wd-list", lambda: fr.optim.Adam(_lstm(), weight_decay=[0.1]), TypeError, "weight_decay must be a real"),
    ("set-lr-str", lambda: _set_lr("x"), TypeError, "lr must be a real number"),
    ("set-lr-none", lambda: _set_lr(None), TypeError, "lr must be a real number"),
    ("set-lr-inf", lambda: _set_lr(float("inf")), ValueError, "lr must be a finite"),
    ("set-lr-nan", lambda: _set_lr(float("nan")), ValueError, "lr must be a finite"),
    ("set-lr-bool", lambda: _set_lr(True), TypeError, "lr must be a real number"),
    ("set-lr-negative", lambda: _set_lr(-0.5), ValueError, "lr must be a finite number >= 0"),
    ("optim-int-grad", lambda: fr.optim.SGD(({"w": np.zeros(2)}, {"w": np.zeros(2, int)})), TypeError, "gradient 'w' must be floating point"),
    ("clip-str", lambda: fr.clip_grad_norm(_lstm(), "1"), TypeError, "max_norm must be a real number"),
    ("clip-none", lambda: fr.clip_grad_norm(_lstm(), None), TypeError, "max_norm must be a real number"),
    ("clip-bool", lambda: fr.clip_grad_norm(_lstm(), True), TypeError, "max_norm must be a real number"),
    ("clip-list", lambda: fr.clip_grad_norm(_lstm(), [1.0]), TypeError, "max_norm must be a real number"),
    ("clip-nan", lambda: fr.clip_grad_norm(_lstm(), float("nan")), ValueError, "max_norm must be a finite"),
    ("clip-inf", lambda: fr.clip_grad_norm(_lstm(), float("inf")), ValueError, "max_norm must be a finite"),
    ("clip-zero", lambda: fr.clip_grad_norm(_lstm(), 0), ValueError, "max_norm must be a finite number > 0"),
    ("clip-int-grads", _clip_int_grads, TypeError, "gradients must be floating-point"),
    ("tbptt-x-1d", lambda: _tbptt(np.zeros(10)), ValueError, r"x must have a time and a batch axis.*shape \(10,\)"),
    ("tbptt-x-0d", lambda: _tbptt(np.float64(1.0)), ValueError, r"x must have a time and a batch axis"),
    ("windowed-x-1d", lambda: fr.train.windowed_forward(_seq(), np.zeros(10), window=3), ValueError, "x must have a time and a batch axis"),
    ("evaluate-x-1d", lambda: fr.train.evaluate(_seq(), np.zeros(10), np.zeros(10), fr.mse_loss, window=3), ValueError, "x must have a time and a batch axis"),
    ("tbptt-window-str", lambda: _tbptt(np.zeros((10, 1, 3)), window="3"), TypeError, "window must be a positive int"),
    ("tbptt-window-zero", lambda: _tbptt(np.zeros((10, 1, 3)), window=0), ValueError, "window must be >= 1"),
    ("tbptt-epochs-float", lambda: _tbptt(np.zeros((10, 1, 3)), epochs=1.5), TypeError, "epochs must be a positive int"),
    ("tbptt-clip-str", lambda: _tbptt(np.zeros((10, 1, 3)), clip_norm="1"), TypeError, "clip_norm must be a positive number"),
    ("tbptt-clip-negative", lambda: _tbptt(np.zeros((10, 1, 3)), clip_norm=-1.0), ValueError, "clip_norm must be a finite number > 0"),
    ("tbptt-loss-not-callable", lambda: fr.train.tbptt(_seq(), np.zeros((10, 1, 3)), np.zeros((10, 1, 2)), "mse", window=3, progress=False), TypeError, "loss must be callable"),
    ("tbptt-loss-bad-return", lambda: fr.train.tbptt(_seq(), np.zeros((10, 1, 3)), np.zeros((10, 1, 2)), lambda y, t: 1.0, window=3, progress=False), TypeError, r"loss must return a pair \(E, dE/dy\)"),
    ("tbptt-model", lambda: fr.train.tbptt(object(), np.zeros((10, 1, 3)), np.zeros((10, 1, 2)), fr.mse_loss, window=3, progress=False), TypeError, "model must be a fusedrnn layer"),
    ("tbptt-history", lambda: _tbptt(np.zeros((10, 1, 3)), history=[]), TypeError, "history must be a fusedrnn.train.History"),
    ("tbptt-callback", lambda: _tbptt(np.zeros((10, 1, 3)), callback=1), TypeError, "callback must be callable"),
    ("tbptt-target-0d", lambda: fr.train.tbptt(_seq(), np.zeros((10, 1, 3)), np.float64(0), fr.mse_loss, window=3, progress=False), ValueError, "target 0 must have a time axis 0"),
    ("tbptt-optimizer", lambda: _tbptt(np.zeros((10, 1, 3)), optimizer=object()), TypeError, r"optimizer must have a step\(\) method"),
    ("tbptt-reset-str", lambda: _tbptt(np.zeros((10, 1, 3)), reset_state="no"), TypeError, "reset_state must be a bool"),
    ("windowed-reset-str", lambda: fr.train.windowed_forward(_seq(), np.zeros((10, 1, 3)), window=3, reset_state=1), TypeError, "reset_state must be a bool"),
    ("ce-ignore-index-str", lambda: fr.cross_entropy(np.zeros((3, 4)), np.zeros(3, int), ignore_index="a"), TypeError, "ignore_index must be an int"),
    ("ce-ignore-index-float", lambda: fr.cross_entropy(np.zeros((3, 4)), np.zeros(3, int), ignore_index=1.5), TypeError, "ignore_index must be an int"),
    ("log-softmax-axis", lambda: fr.losses.log_softmax(np.zeros((3, 4)), axis=5), ValueError, "z must have at least one class along axis 5"),
    ("log-softmax-axis-str", lambda: fr.losses.log_softmax(np.zeros((3, 4)), axis="a"), TypeError, "axis must be an int"),
    ("log-softmax-empty", lambda: fr.losses.log_softmax(np.zeros((3, 0))), ValueError, "at least one class"),
]


@pytest.mark.parametrize("call,exc,match", [row[1:] for row in IO_ERRORS],
                         ids=[row[0] for row in IO_ERRORS])
def test_io_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _resigned(tmp, edit):
    """A checkpoint of an LSTM + Adam whose header is changed by edit(header) and the
    file checksum written again: the checks behind the checksum must catch it."""
    import hashlib
    import io
    import json
    import zipfile
    model = _lstm()
    src, dst = tmp / "good.npz", tmp / "edited.npz"
    fr.save(src, model, fr.optim.Adam(model), metadata={"a": 1})
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w") as zout:
        zout.comment = b"0" * 64
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "__fusedrnn__.npy":
                h = json.loads(np.load(io.BytesIO(data)).tobytes())
                edit(h)
                out = io.BytesIO()
                np.save(out, np.frombuffer(json.dumps(h).encode(), np.uint8))
                data = out.getvalue()
            zout.writestr(info.filename, data)
    data = bytearray(buf.getvalue())
    data[-64:] = hashlib.sha256(bytes(data[:-64])).hexdigest().encode()
    dst.write_bytes(bytes(data))
    return fr.load_checkpoint(dst)


def _config(**kw):
    return lambda h: h["model"]["config"].update(kw)


def _save_bad_param(tmp):
    model = _lstm()
    model.params["W_x"] = np.zeros((5, 5))
    fr.save(tmp / "m.npz", model)


def _onnx_bytes(tmp, data):
    (tmp / "m.onnx").write_bytes(data)
    return fr.onnx.load(tmp / "m.onnx")


def _with_param(**arrays):
    model = _lstm()
    model.params.update(arrays)
    return model


def _onnx_external(tmp, location):
    """An exported LSTM in tmp/model/ whose W tensor keeps its data in `location`."""
    import os
    onnx = pytest.importorskip("onnx")
    folder = tmp / "model"
    folder.mkdir()
    m = fr.onnx.to_model(fr.LSTM(3, 4, seed=0))
    t = next(t for t in m.graph.initializer if t.name.startswith("W_"))
    raw = onnx.numpy_helper.to_array(t).tobytes()       # (1, 16, 3) float32: 192 bytes
    (tmp / "secret.bin").write_bytes(raw)
    (folder / "short.bin").write_bytes(raw[:100])
    os.symlink(tmp / "secret.bin", folder / "link.bin")
    t.ClearField("raw_data")
    t.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    t.data_location = onnx.TensorProto.EXTERNAL
    (folder / "m.onnx").write_bytes(m.SerializeToString())
    return fr.onnx.load(folder / "m.onnx")


IO_FILE_ERRORS = [
    ("save-model-object", lambda tmp: fr.save(tmp / "m.npz", object()), TypeError, "model must be a fusedrnn layer or Sequential"),
    ("save-model-none", lambda tmp: fr.save(tmp / "m.npz", None), TypeError, "model must be a fusedrnn layer"),
    ("save-metadata-list", lambda tmp: fr.save(tmp / "m.npz", _lstm(), metadata=[1, 2]), TypeError, "metadata must be a dict"),
    ("save-metadata-str", lambda tmp: fr.save(tmp / "m.npz", _lstm(), metadata="notes"), TypeError, "metadata must be a dict"),
    ("save-metadata-int-key", lambda tmp: fr.save(tmp / "m.npz", _lstm(), metadata={1: "a"}), TypeError, "metadata: its keys must be str"),
    ("save-metadata-object", lambda tmp: fr.save(tmp / "m.npz", _lstm(), metadata={"a": object()}), TypeError, "cannot store metadata"),
    ("save-param-shape", _save_bad_param, ValueError, r"params\['W_x'\] is float64\(5, 5\), the model's configuration needs float64\(16, 3\)"),
    ("ckpt-model-not-dict", lambda tmp: _resigned(tmp, lambda h: h.update(model="LSTM")), ValueError, "model must be a dict with a str 'type'"),
    ("ckpt-type-not-str", lambda tmp: _resigned(tmp, lambda h: h["model"].update(type=5)), ValueError, "model must be a dict with a str 'type'"),
    ("ckpt-config-list", lambda tmp: _resigned(tmp, lambda h: h["model"].update(config=[3, 4])), ValueError, r"model\['config'\] must be a dict"),
    ("ckpt-layers-int", lambda tmp: _resigned(tmp, lambda h: h.update(model={"type": "Sequential", "layers": 5})), ValueError, r"model\['layers'\] must be a non-empty list"),
    ("ckpt-hidden-str", lambda tmp: _resigned(tmp, _config(hidden_size="4")), ValueError, "cannot rebuild LSTM.*hidden_size must be a positive int"),
    ("ckpt-hidden-float", lambda tmp: _resigned(tmp, _config(hidden_size=4.0)), ValueError, "hidden_size must be a positive int"),
    ("ckpt-peepholes-int", lambda tmp: _resigned(tmp, _config(peepholes=7)), ValueError, "cannot rebuild LSTM.*peepholes"),
    ("ckpt-dtype-bogus", lambda tmp: _resigned(tmp, _config(dtype="complex128")), ValueError, "cannot rebuild LSTM.*dtype must be float32 or float64"),
    ("ckpt-unknown-arg", lambda tmp: _resigned(tmp, _config(colour="red")), ValueError, "cannot rebuild LSTM.*colour"),
    ("ckpt-hidden-other", lambda tmp: _resigned(tmp, _config(hidden_size=5)), ValueError, r"parameter 'W_x' is float64\(16, 3\), the model built from the configuration expects float64\(20, 3\)"),
    ("ckpt-layers-claim", lambda tmp: _resigned(tmp, _config(num_layers=1000)), ValueError, r"do not match the 4000 the configuration builds: missing \['W_v_l1', .*\(3996 in all\)\]"),
    ("ckpt-dtype-other", lambda tmp: _resigned(tmp, _config(dtype="float32")), ValueError, "expects float32"),
    ("ckpt-rng-state-huge", lambda tmp: _resigned(tmp, lambda h: h["model"]["rng_state"]["state"].update(state=2**200)), ValueError, "bad dropout generator state for LSTM"),
    ("ckpt-optimizer-str", lambda tmp: _resigned(tmp, lambda h: h.update(optimizer="Adam")), ValueError, "optimizer must be a dict or null"),
    ("ckpt-step-str", lambda tmp: _resigned(tmp, lambda h: h["optimizer"].update(step="3")), ValueError, r"optimizer\['step'\] must be an int >= 0"),
    ("ckpt-step-negative", lambda tmp: _resigned(tmp, lambda h: h["optimizer"].update(step=-2)), ValueError, r"optimizer\['step'\] must be an int >= 0"),
    ("ckpt-hyper-list", lambda tmp: _resigned(tmp, lambda h: h["optimizer"].update(hyper=[0.1])), ValueError, r"optimizer\['hyper'\] must be a dict"),
    ("ckpt-lr-str", lambda tmp: _resigned(tmp, lambda h: h["optimizer"]["hyper"].update(lr="0.1")), ValueError, "optimiser state: lr must be a real number"),
    ("ckpt-buffers-bad", lambda tmp: _resigned(tmp, lambda h: h["optimizer"].update(buffers={"m": 3})), ValueError, r"optimizer\['buffers'\] must map"),
    ("ckpt-metadata-list", lambda tmp: _resigned(tmp, lambda h: h.update(metadata=[1])), ValueError, "metadata must be a dict"),
    ("ckpt-arrays-entry", lambda tmp: _resigned(tmp, lambda h: h["arrays"].update({"param/b": "x"})), ValueError, r"arrays\['param/b'\] must be"),
    ("ckpt-array-shape-str", lambda tmp: _resigned(tmp, lambda h: h["arrays"]["param/b"].update(shape="16")), ValueError, r"arrays\['param/b'\] must be"),
    ("ckpt-version-bool", lambda tmp: _resigned(tmp, lambda h: h.update(format_version=True)), ValueError, "bad format version True"),
    ("onnx-garbage", lambda tmp: _onnx_bytes(tmp, b"\x08\x07garbage\xff\xff\xff"), ValueError, r"m.onnx: not a valid ONNX model"),
    ("onnx-random", lambda tmp: _onnx_bytes(tmp, np.random.default_rng(0).bytes(1000)), ValueError, "not a valid ONNX model"),
    ("onnx-empty", lambda tmp: _onnx_bytes(tmp, b""), ValueError, "has no LSTM, GRU or RNN node"),
    ("onnx-path-type", lambda tmp: fr.onnx.load(3.5), TypeError, "path must be a file path or an onnx.ModelProto"),
    ("onnx-external-outside", lambda tmp: _onnx_external(tmp, "../secret.bin"), ValueError, r"keeps its data in '../secret.bin', outside the model's folder"),
    ("onnx-external-absolute", lambda tmp: _onnx_external(tmp, str(tmp / "secret.bin")), ValueError, "outside the model's folder"),
    ("onnx-external-symlink", lambda tmp: _onnx_external(tmp, "link.bin"), ValueError, r"keeps its data in 'link.bin', outside the model's folder"),
    ("onnx-external-missing", lambda tmp: _onnx_external(tmp, "nowhere.bin"), ValueError, "external data file 'nowhere.bin' does not exist"),
    ("onnx-external-short", lambda tmp: _onnx_external(tmp, "short.bin"), ValueError, "needs 192 bytes of 'short.bin'"),
    ("onnx-export-opset-huge", lambda tmp: fr.onnx.export(_lstm(), tmp / "m.onnx", opset=10**6), ValueError, r"opset must be <= \d+"),
    ("onnx-export-opset-str", lambda tmp: fr.onnx.export(_lstm(), tmp / "m.onnx", opset="17"), TypeError, "opset must be an int"),
    ("onnx-export-param-shape", lambda tmp: fr.onnx.export(_with_param(W_x=np.zeros((5, 5))), tmp / "m.onnx"), ValueError, r"params\['W_x'\] must have shape \(16, 3\)"),
    ("onnx-export-param-dtype", lambda tmp: fr.onnx.export(_with_param(b=np.zeros(16, np.float32)), tmp / "m.onnx"), TypeError, r"params\['b'\] must be a numpy array of dtype float64"),
    ("onnx-export-flag", lambda tmp: fr.onnx.export(_lstm(), tmp / "m.onnx", sequence_lens="yes"), TypeError, "sequence_lens must be a bool"),
    ("onnx-export-dtype", lambda tmp: fr.onnx.export(_lstm(), tmp / "m.onnx", dtype=np.int8), TypeError, "dtype must be float32 or float64"),
    ("onnx-export-path", lambda tmp: fr.onnx.export(_lstm(), 3), TypeError, "path must be a file path"),
    ("onnx-load-dtype", lambda tmp: fr.onnx.load(fr.onnx.to_model(_lstm()), dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    ("onnx-load-batch_first", lambda tmp: fr.onnx.load(fr.onnx.to_model(_lstm()), batch_first="no"), TypeError, "batch_first must be a bool"),
]


@pytest.mark.parametrize("call,exc,match", [row[1:] for row in IO_FILE_ERRORS],
                         ids=[row[0] for row in IO_FILE_ERRORS])
def test_io_file_errors(tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        call(tmp_path)
