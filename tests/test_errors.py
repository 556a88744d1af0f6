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
        layer.forward(x_ok(), state=(np.zeros((1, 3, 5)), np.zeros((1, 2, 5))))
    with pytest.raises(ValueError, match=rf"state.{o} must have shape \(1, 2, 5\)"):
        layer.forward(x_ok(), state=(np.zeros((1, 2, 5)), np.zeros((2, 5))))
    with pytest.raises(TypeError, match="state must be"):
        layer.forward(x_ok(), state=np.zeros((1, 2, 5)))
    with pytest.raises(TypeError, match=rf"state.{s} must hold real numbers"):
        layer.forward(x_ok(), state=(np.zeros((1, 2, 5), complex), np.zeros((1, 2, 5))))


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
        _kernel.lstm_forward(_kernel.LSTMConfig(T, B, I, H), z(T * B * H - 1), z(B * H),
                             z(B * H), None, z(10**4), z(T * B * I), z(B * H), z(B * H),
                             z(4 * H * I), z(4 * H * H), z(4 * H), None, None)


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
        lstm.forward(np.zeros((5, 3, 4)), state=(np.zeros((4, 3, 6)), np.zeros((4, 3, 6))))
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
