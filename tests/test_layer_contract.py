"""The layer objects' contract: states are the State NamedTuple (a plain tuple,
ambiguous against torch's (h, c), is refused), the lengths a forward used are
the ones its backward uses, the configuration is read-only after construction
(copies, pickles and checkpoints keep working), and layers are callable like
torch modules."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference

from conftest import assert_close, random_problem, run_kernel, run_reference

T, B, I, H = 6, 3, 4, 5


# ---- the state is a State, never a plain tuple ------------------------------------------------

@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
@pytest.mark.parametrize("container", [tuple, list])
def test_plain_tuple_state_is_refused(cls, container):
    """torch's (h0, c0) passed as a plain pair would be read as (s, v) = (c, h):
    refused, with the field order and the mapping of torch's order in the message."""
    layer = cls(I, H, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.uniform(-0.5, 0.5, (2, 1, B, H))
    hint = r"fr\.LSTM\.State\(s=c0, v=h0\)" if cls is fr.LSTM else r"fr\.RNN\.State\(s="
    with pytest.raises(TypeError, match=rf"state must be None or an {cls.State.__name__} "
                                        rf"\(s, .*plain {container.__name__}.*{hint}"):
        layer.forward(x, state=container((h0, c0)))
    layer.forward(x)
    with pytest.raises(TypeError, match=rf"dstate must be None or an {cls.State.__name__}"):
        layer.backward(None, container((h0, c0)))
    other = fr.RNNState if cls is fr.LSTM else fr.LSTMState  # the other layer's State
    with pytest.raises(TypeError, match=f"state must be None or an {cls.State.__name__}"):
        layer.forward(x, state=other(c0, h0))


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_state_namedtuple_equals_the_oracle(kind):
    """The State built from torch's (h0, c0) as the message says gives the oracle's
    numbers for the initial state s[-1] = c0, v[-1] = h0; so does the layer called
    with keywords and through Sequential."""
    layer = (fr.LSTM(I, H, peepholes=True, dtype=np.float64, seed=2) if kind == "lstm"
             else fr.RNN(I, H, state_feedback=True, dtype=np.float64, seed=2))
    prob = random_problem(layer, T, B, seed=3)
    out, grads = run_kernel(layer, prob)       # forward(state=layer.State(s0, o0))
    out_r, grads_r = run_reference(layer, prob)
    for k in out_r:
        assert_close(out[k], out_r[k], 1e-10, k)
    for k in grads_r:
        assert_close(grads[k], grads_r[k], 1e-10, k)
    c0, h0 = prob["s0"], prob["o0"]  # torch's names: c is the paper's s, h its v (r)
    st = (fr.LSTM.State(s=c0, v=h0) if kind == "lstm" else fr.RNN.State(s=c0, r=h0))
    y_seq, _ = fr.Sequential(layer).forward(prob["x"], state=[st], training=False)
    assert_close(y_seq, out_r["y"], 1e-10, "Sequential y")


def test_torch_order_tuple_would_have_been_misread():
    """Why the plain tuple is refused: read as (s, v), torch's (h0, c0) gives other
    numbers than the State that means it (so refusing is not a formality)."""
    lstm = fr.LSTM(I, H, peepholes=None, dtype=np.float64, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.uniform(-0.9, 0.9, (2, 1, B, H))
    y_right, _ = lstm.forward(x, state=fr.LSTMState(s=c0, v=h0), training=False)
    y_swapped, _ = lstm.forward(x, state=fr.LSTMState(s=h0, v=c0), training=False)
    p = {k: v.astype(np.float64) for k, v in lstm.params.items()}
    y_ref = reference.lstm_forward(x, p, c0[0], h0[0])[0]
    assert_close(y_right, y_ref, 1e-10, "y")
    assert np.max(np.abs(y_swapped - y_ref)) > 1e-3


# ---- lengths are the forward's own copy ------------------------------------------------------

@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_buffer_reused_before_backward(cls, bidirectional):
    """The caller's lengths buffer changed between forward and backward does not
    change the backward: dx, dstate and grads equal a run without the change."""
    layer = cls(I, H, bidirectional=bidirectional, dtype=np.float64, seed=4)
    twin = copy.deepcopy(layer)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, layer.num_directions * H))
    lens = np.array([T, 2, 4], dtype=np.int64)   # int64 contiguous: no conversion copy
    twin.forward(x, lengths=lens.copy())
    dx_want, ds_want = twin.backward(dy)
    layer.forward(x, lengths=lens)
    lens[:] = [1, T, 0]                          # the caller reuses its buffer
    dx, ds = layer.backward(dy)
    np.testing.assert_array_equal(dx, dx_want)
    for a, b in zip(ds[:2], ds_want[:2]):
        np.testing.assert_array_equal(a, b)
    for k in layer.grads:
        np.testing.assert_array_equal(layer.grads[k], twin.grads[k])
    assert np.max(np.abs(dx_want[2:, 1])) == 0 and np.max(np.abs(dx_want[:2, 1])) > 0


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_torch_module_lengths_buffer_reused_before_backward(kind):
    torch = pytest.importorskip("torch")
    import fusedrnn.torch as frt

    torch.manual_seed(0)
    module = getattr(frt, kind)(I, H, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    dy = torch.randn(T, B, H, dtype=torch.float64)

    def grads(lengths, mutate):
        xr = x.clone().requires_grad_(True)
        y = module(xr, lengths=lengths)[0]
        if mutate:
            lengths[:] = torch.tensor([1, T, 0])
        y.backward(dy)
        return xr.grad.clone()

    want = grads(torch.tensor([T, 2, 4]), False)
    got = grads(torch.tensor([T, 2, 4]), True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert float(want[2:, 1].abs().max()) == 0


# ---- configuration is read-only ----------------------------------------------------------------

CONFIGS = {
    fr.LSTM: dict(input_size=8, hidden_size=6, num_layers=0, bidirectional=True, dropout=0.5,
                  dtype=np.float64, batch_first=True, reverse=True, context=(1, 1),
                  peepholes="bogus",
                  proj_size=2, coupled_gates=True, cell_clip=1.0, accumulation_clip=1.0,
                  output_size=3, num_directions=2),
    fr.RNN: dict(input_size=8, hidden_size=6, num_layers=2, bidirectional=True, dropout=0.5,
                 dtype=np.float64, batch_first=True, reverse=True, context=(1, 0),
                 state_feedback=True),
    fr.GRU: dict(input_size=8, hidden_size=6, num_layers=2, bidirectional=True, dropout=0.5,
                 dtype=np.float64, batch_first=True, reverse=True, linear_before_reset=False,
                 State=fr.LSTMState),
    fr.Linear: dict(in_features=8, out_features=6, bias=False, dtype=np.float64),
}
CASES = [(cls, name, value) for cls, attrs in CONFIGS.items() for name, value in attrs.items()]


def build(cls):
    return cls(I, H, seed=0) if cls is not fr.Linear else fr.Linear(I, H, seed=0)


def check_forward(layer, x):
    """forward/backward still work and match a fresh layer with the same parameters."""
    y = layer.forward(x)
    y = y[0] if isinstance(y, tuple) else y
    fresh = build(type(layer))
    for k, v in layer.params.items():
        fresh.params[k][...] = v
    y2 = fresh.forward(x, training=False)
    np.testing.assert_array_equal(y, y2[0] if isinstance(y2, tuple) else y2)


@pytest.mark.parametrize("cls,name,value", CASES, ids=[f"{c.__name__}.{n}" for c, n, _ in CASES])
def test_configuration_is_read_only(cls, name, value):
    layer = build(cls)
    before = getattr(layer, name)
    with pytest.raises(AttributeError, match=rf"{cls.__name__}\.{name} is read-only.*build a new"):
        setattr(layer, name, value)
    with pytest.raises(AttributeError, match=rf"{cls.__name__}\.{name} is read-only"):
        delattr(layer, name)
    assert getattr(layer, name) == before
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    check_forward(layer, x)


@pytest.mark.parametrize("cls", list(CONFIGS))
def test_copies_pickles_and_checkpoints_keep_the_configuration(cls, tmp_path):
    layer = build(cls)
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    fr.save(tmp_path / "m.npz", layer)
    copies = [copy.copy(layer), copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)),
              fr.load(tmp_path / "m.npz")]
    name = next(iter(CONFIGS[cls]))
    y = layer.forward(x, training=False)
    y = y[0] if isinstance(y, tuple) else y
    for c in copies:
        assert repr(c) == repr(layer)
        with pytest.raises(AttributeError, match="read-only"):
            setattr(c, name, 1)
        yc = c.forward(x, training=False)
        np.testing.assert_array_equal(yc[0] if isinstance(yc, tuple) else yc, y)
    # the parameters and gradient buffers stay replaceable (optimisers, wrappers)
    layer.params = {k: v.copy() for k, v in layer.params.items()}
    layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    layer.user_note = "other attributes are free"


def test_sequential_batch_first_is_read_only():
    model = fr.Sequential(fr.LSTM(I, H, seed=0), fr.Linear(H, 2, seed=1))
    with pytest.raises(AttributeError, match=r"Sequential\.batch_first is read-only"):
        model.batch_first = True


# ---- callable like torch modules -----------------------------------------------------------------

def test_layers_are_callable():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I))
    lens = np.array([T, 3, 1])
    for layer in (fr.LSTM(I, H, dtype=np.float64, seed=0), fr.RNN(I, H, dtype=np.float64, seed=0),
                  fr.GRU(I, H, dtype=np.float64, seed=0)):
        st = layer.initial_state(B)
        st = layer.State(*(a + 0.1 * (i + 1) for i, a in enumerate(st[:2])))
        y, s = layer(x, st, training=False, lengths=lens)
        y2, s2 = layer.forward(x, st, training=False, lengths=lens)
        np.testing.assert_array_equal(y, y2)
        for a, b in zip(s[:2], s2[:2]):
            np.testing.assert_array_equal(a, b)
        y3, _ = layer(x, state=st)                # a training call: backward pairs with it
        dx, _ = layer.backward(np.ones_like(y3))
        layer.forward(x, state=st)
        dx2, _ = layer.backward(np.ones_like(y3))
        np.testing.assert_array_equal(dx, dx2)
    lin = fr.Linear(I, 2, dtype=np.float64, seed=1)
    np.testing.assert_array_equal(lin(x), x @ lin.params["W"].T + lin.params["b"])
    model = fr.Sequential(fr.LSTM(I, H, dtype=np.float64, seed=0), fr.Linear(H, 2, seed=1))
    np.testing.assert_array_equal(model(x, training=False)[0], model.forward(x, training=False)[0])
    lstm = fr.LSTM(I, H, context=(1, 1), dtype=np.float64, seed=0)
    xf = rng.standard_normal((1, B, I))
    st = lstm.initial_state(B)
    np.testing.assert_array_equal(lstm(x, st, x_future=xf, training=False)[0],
                                  lstm.forward(x, st, x_future=xf, training=False)[0])
