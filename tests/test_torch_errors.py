"""Errors of the PyTorch interop name the argument and what was expected.

from_torch with a wrong-shaped torch parameter (numpy would broadcast a
broadcastable one silently), to_torch with wrong fusedrnn params (torch's
copy_ raised a RuntimeError, or cast a wrong dtype silently), and the dtype
hint of fusedrnn.torch for an input of another dtype."""
import re

import numpy as np
import pytest

import fusedrnn as fr

torch = pytest.importorskip("torch")
frt = pytest.importorskip("fusedrnn.torch")


def _lstm_with(name, shape, **kw):
    m = torch.nn.LSTM(3, 4, **kw)
    setattr(m, name, torch.nn.Parameter(torch.randn(*shape)))
    return m


FROM_TORCH = [  # (module, torch name, expected shape, fusedrnn name)
    (lambda: _lstm_with("weight_ih_l0", (1, 3)), "weight_ih_l0", (16, 3), "W_x"),  # broadcastable
    (lambda: _lstm_with("weight_hh_l0", (16, 5)), "weight_hh_l0", (16, 4), "W_v"),
    (lambda: _lstm_with("bias_hh_l0", (1,)), "bias_hh_l0", (16,), "b"),
    (lambda: _lstm_with("weight_ih_l1_reverse", (16, 4), num_layers=2, bidirectional=True),
     "weight_ih_l1_reverse", (16, 8), "W_x_l1_reverse"),
    (lambda: _lstm_with("weight_hr_l0", (2, 5), proj_size=2), "weight_hr_l0", (2, 4), "W_qv"),
]


@pytest.mark.parametrize("make,name,shape,ours", FROM_TORCH,
                         ids=[c[1] for c in FROM_TORCH])
def test_from_torch_names_a_wrong_shaped_weight(make, name, shape, ours):
    module = make()
    msg = (rf"torch.nn.LSTM parameter {name} must have shape {re.escape(str(shape))} "
           rf"\(fusedrnn's {ours}\), got")
    with pytest.raises(ValueError, match=msg):
        fr.LSTM.from_torch(module)
    with pytest.raises(ValueError, match=msg):
        frt.LSTM.from_torch(module)


def test_rnn_from_torch_names_a_wrong_shaped_weight():
    m = torch.nn.RNN(3, 4)
    m.weight_hh_l0 = torch.nn.Parameter(torch.randn(4, 1))   # broadcastable too
    with pytest.raises(ValueError, match=r"torch.nn.RNN parameter weight_hh_l0 must have shape "
                                         r"\(4, 4\) \(fusedrnn's W_r\), got \(4, 1\)"):
        fr.RNN.from_torch(m)
    m = torch.nn.RNN(3, 4)
    m.bias_ih_l0 = torch.nn.Parameter(torch.randn(5))
    with pytest.raises(ValueError, match=r"bias_ih_l0 must have shape \(4,\)"):
        frt.RNN.from_torch(m)


def test_from_torch_still_maps_correct_weights():
    torch.manual_seed(0)
    m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    layer = fr.LSTM.from_torch(m)
    np.testing.assert_array_equal(layer.params["W_x_l1_reverse"],
                                  m.weight_ih_l1_reverse.detach().numpy())
    np.testing.assert_array_equal(layer.params["b"], (m.bias_ih_l0 + m.bias_hh_l0).detach().numpy())


@pytest.mark.parametrize("cls,opts", [(fr.LSTM, dict(peepholes=None, proj_size=2)),
                                      (fr.RNN, dict(num_layers=2))], ids=["lstm", "rnn"])
def test_to_torch_names_wrong_params(cls, opts):
    def layer():
        return cls(3, 4, seed=0, **opts)

    bad = layer()
    bad.params["W_x"] = np.zeros((bad.params["W_x"].shape[0], 2), np.float32)
    with pytest.raises(ValueError, match=r"params\['W_x'\] must have shape \((16|4), 3\), "
                                         r"got \((16|4), 2\)"):
        bad.to_torch()
    bad = layer()
    bad.params["W_x"] = bad.params["W_x"].astype(np.float64)   # torch would cast it silently
    with pytest.raises(TypeError, match=r"params\['W_x'\] must be a numpy array of dtype float32"):
        bad.to_torch()
    bad = layer()
    last = list(bad.params)[-1]
    del bad.params[last]
    with pytest.raises(ValueError, match=rf"params is missing '{last}'"):
        bad.to_torch()
    good = layer()
    module = good.to_torch()
    np.testing.assert_array_equal(module.weight_ih_l0.detach().numpy(), good.params["W_x"])


def test_module_to_torch_names_a_wrong_parameter():
    m = frt.LSTM(3, 4, peepholes=None, seed=0)
    m.W_v = torch.nn.Parameter(torch.zeros(16, 5))
    with pytest.raises(ValueError, match=r"parameter 'W_v' must have shape \(16, 4\), got \(16, 5\)"):
        m.to_torch()


@pytest.mark.parametrize("bad", [torch.int64, torch.int32, torch.bool, torch.float16,
                                 torch.bfloat16])
def test_input_dtype_hint_converts_the_input(bad):
    m = frt.LSTM(3, 4, seed=0)          # float32
    x = torch.zeros(5, 2, 3, dtype=bad)
    with pytest.raises(ValueError) as info:
        m(x)
    msg = str(info.value)
    assert f"input has dtype {bad}, but the module computes in torch.float32" in msg
    assert "input.float() (or .to(torch.float32))" in msg
    assert "the module with" not in msg and str(bad) not in msg.split(";")[1]  # no module.to(int64)


def test_input_dtype_hint_for_the_other_float_dtype():
    m = frt.RNN(3, 4, dtype=torch.float64, seed=0)
    with pytest.raises(ValueError, match=r"input has dtype torch.float32, but the module computes "
                                         r"in torch.float64; convert it with input.double\(\) "
                                         r"\(or .to\(torch.float64\)\), or the module with "
                                         r"module.float\(\)"):
        m(torch.zeros(5, 2, 3))
    with pytest.raises(ValueError, match=r"h0 has dtype torch.int64.*convert it with h0.double\(\)"):
        m(torch.zeros(5, 2, 3, dtype=torch.float64), torch.zeros(1, 2, 4, dtype=torch.int64))
    # following the hint works
    y, _ = m(torch.zeros(5, 2, 3, dtype=torch.int64).double())
    assert y.dtype == torch.float64 and y.shape == (5, 2, 4)
