"""fusedrnn.torch.GRU: the fused GRU kernel as a torch.nn.Module through the fusedrnn
operators. gradcheck in float64 (both formulations, layers, directions, lengths),
agreement with torch.nn.GRU (values and gradients, packed and padded, batch_first,
unbatched), chunked calls equal one call, the numpy layer it wraps, independent
tapes, and the refusals."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
frt = pytest.importorskip("fusedrnn.torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fusedrnn as fr  # noqa: E402

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _inputs(m, T, B, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    LD = m.num_layers * (2 if m.bidirectional else 1)
    shape = (B, T, m.input_size) if m.batch_first else (T, B, m.input_size)
    x = torch.randn(*shape, generator=g, dtype=F64, requires_grad=requires_grad)
    h0 = (0.5 * torch.randn(LD, B, m.hidden_size, generator=g, dtype=F64))
    return x, h0.requires_grad_(requires_grad)


CASES = {
    "linear_before_reset": dict(),
    "original": dict(linear_before_reset=False),
    "2layers-bidir-original": dict(linear_before_reset=False, num_layers=2, bidirectional=True),
    "2layers-bidir-lengths": dict(num_layers=2, bidirectional=True, lengths=[5, 2, 4]),
    "batch_first-reverse-lengths": dict(linear_before_reset=False, batch_first=True,
                                        reverse=True, lengths=[3, 5, 0]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gru_gradcheck(case):
    opts = dict(CASES[case])
    lengths = opts.pop("lengths", None)
    m = frt.GRU(2, 3, dtype=F64, seed=1, **opts)
    x, h0 = _inputs(m, T=5, B=3, seed=2)

    def f(x, h0, *_):
        return m(x, h0, lengths=lengths)

    assert torch.autograd.gradcheck(f, (x, h0, *m.parameters()), eps=1e-6, atol=1e-7, rtol=1e-5)
    if m.num_layers == 1:  # no h0: zeros
        assert torch.autograd.gradcheck(lambda x, *_: m(x, lengths=lengths)[0],
                                        (x, *m.parameters()), eps=1e-6, atol=1e-7, rtol=1e-5)


def _torch_grads(ref, m, L, bidir):
    """(fusedrnn grad, torch grad) pairs of every parameter: W_x = weight_ih, W_h =
    weight_hh, b = bias_ih + bias_hh in the r, z rows, b_hn = bias_hh's n rows."""
    H = m.hidden_size
    pairs = []
    for l in range(L):
        for d in range(2 if bidir else 1):
            t = f"_l{l}" + ("_reverse" if d else "")
            s = ("" if l == 0 else f"_l{l}") + ("_reverse" if d else "")
            tg = {n: getattr(ref, n + t).grad for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            pairs += [(getattr(m, "W_x" + s).grad, tg["weight_ih"]),
                      (getattr(m, "W_h" + s).grad, tg["weight_hh"]),
                      (getattr(m, "b" + s).grad, tg["bias_ih"]),
                      (getattr(m, "b" + s).grad[:2 * H], tg["bias_hh"][:2 * H]),
                      (getattr(m, "b_hn" + s).grad, tg["bias_hh"][2 * H:])]
    return pairs


@pytest.mark.parametrize("L,bidir", [(1, False), (2, True), (3, False)])
def test_matches_torch_gru_packed_and_padded(L, bidir):
    torch.manual_seed(0)
    ref = torch.nn.GRU(3, 4, num_layers=L, bidirectional=bidir, dtype=F64)
    m = frt.GRU.from_torch(ref)
    assert m.linear_before_reset and m.num_layers == L and m.bidirectional == bidir
    x, h0 = _inputs(m, T=6, B=3, seed=7)
    lens = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lens, enforce_sorted=False)
    out_ref, h_ref = ref(packed, h0)
    out, h = m(packed, h0)
    assert torch.equal(out.batch_sizes, out_ref.batch_sizes)
    assert torch.equal(out.sorted_indices, out_ref.sorted_indices)
    torch.testing.assert_close(out.data, out_ref.data, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    y_ref, _ = pad_packed_sequence(out_ref)
    (y_ref.pow(2).sum() + h_ref.sin().sum()).backward()
    dx_ref, dh0_ref = x.grad.clone(), h0.grad.clone()
    x.grad = h0.grad = None
    # the same through the padded interface with lengths=
    y, h = m(x, h0, lengths=lens)
    torch.testing.assert_close(y, y_ref, **TOL)
    (y.pow(2).sum() + h.sin().sum()).backward()
    torch.testing.assert_close(x.grad, dx_ref, **TOL)
    torch.testing.assert_close(h0.grad, dh0_ref, **TOL)
    for ours, theirs in _torch_grads(ref, m, L, bidir):
        torch.testing.assert_close(ours, theirs, **TOL)


def test_matches_torch_gru_batch_first_and_unbatched():
    torch.manual_seed(1)
    ref = torch.nn.GRU(3, 5, num_layers=2, dtype=F64, batch_first=True)
    m = frt.GRU.from_torch(ref)
    assert m.batch_first
    x = torch.randn(2, 6, 3, dtype=F64)
    h0 = torch.randn(2, 2, 5, dtype=F64)
    y_ref, h_ref = ref(x, h0)
    y, h = m(x, h0)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    y1, h1 = m(x[1], h0[:, 1])                      # unbatched (T, I), h0 (L, H)
    torch.testing.assert_close(y1, y_ref[1], **TOL)
    torch.testing.assert_close(h1, h_ref[:, 1], **TOL)
    back = m.to_torch()
    assert isinstance(back, torch.nn.GRU) and back.batch_first
    torch.testing.assert_close(back(x, h0)[0], y_ref, **TOL)


@pytest.mark.parametrize("lbr", [True, False])
def test_matches_numpy_layer_zero_copy_and_chunks(lbr):
    m = frt.GRU(3, 4, linear_before_reset=lbr, num_layers=2, bidirectional=True, dtype=F64, seed=9)
    layer = m.fr_layer
    assert [n for n, _ in m.named_parameters()] == list(layer.params)
    for n, p in m.named_parameters():
        assert np.shares_memory(layer.params[n], p.detach().numpy()), n
    x, h0 = _inputs(m, T=5, B=2, seed=3)
    y, h = m(x, h0)
    dy, dh = torch.randn_like(y), torch.randn_like(h)
    ((y * dy).sum() + (h * dh).sum()).backward()
    y_np, st = layer.forward(x.detach().numpy(), fr.GRU.State(h0.detach().numpy()))
    dx_np, dst = layer.backward(dy.numpy(), fr.GRU.State(dh.numpy()))
    np.testing.assert_array_equal(y.detach().numpy(), y_np)
    np.testing.assert_array_equal(h.detach().numpy(), st.h)
    np.testing.assert_array_equal(x.grad.numpy(), dx_np)
    np.testing.assert_array_equal(h0.grad.numpy(), dst.h)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.grad.numpy(), layer.grads[n], err_msg=n)
    # unidirectional: chunks carrying h equal one call
    u = frt.GRU(3, 4, linear_before_reset=lbr, num_layers=2, dtype=F64, seed=2)
    x, h0 = _inputs(u, T=7, B=2, seed=4, requires_grad=False)
    y_all, h_all = u(x, h0)
    ya, ha = u(x[:3], h0)
    yb, hb = u(x[3:], ha)
    torch.testing.assert_close(torch.cat([ya, yb]), y_all, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(hb, h_all, rtol=1e-12, atol=1e-14)


def test_two_forwards_before_backward_and_training_loop():
    m = frt.GRU(3, 4, linear_before_reset=False, num_layers=2, dtype=F64, seed=2)
    x1, h1 = _inputs(m, T=5, B=2, seed=10)
    x2, h2 = _inputs(m, T=7, B=3, seed=11)
    m.zero_grad()
    m(x1, h1)[0].pow(2).sum().backward()
    dx1 = x1.grad.clone()
    m.zero_grad()
    m(x2, h2)[0].sin().sum().backward()
    dx2 = x2.grad.clone()
    x1.grad = x2.grad = None
    out1 = m(x1, h1)[0].pow(2).sum()
    out2 = m(x2, h2)[0].sin().sum()
    out2.backward()
    out1.backward()
    torch.testing.assert_close(x1.grad, dx1, rtol=0, atol=0)
    torch.testing.assert_close(x2.grad, dx2, rtol=0, atol=0)
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"rnn": frt.GRU(2, 12, dtype=torch.float32, seed=0),
                                 "head": torch.nn.Linear(12, 1)})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x = torch.randn(12, 16, 2)
    target = torch.cumsum(x[..., :1] - x[..., 1:], dim=0) / 3
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model["head"](model["rnn"](x)[0]), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_refusals():
    m = frt.GRU(3, 4, dtype=torch.float32, seed=0)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 4\)"):
        m(x, torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"h0 has dtype torch.float64"):
        m(x, torch.zeros(1, 2, 4, dtype=F64))
    with pytest.raises(TypeError, match="hx must be None or a tensor h0"):
        m(x, (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match=r"input is on device 'meta'"):
        m(x.to("meta"))
    with pytest.raises(ValueError, match="lengths must not be given with a PackedSequence"):
        m(pack_padded_sequence(x, torch.tensor([5, 3])), lengths=[5, 3])
    with pytest.raises(TypeError, match="state must be None or a tensor h0"):
        m.stream(2, (torch.zeros(1, 2, 4),))
    with pytest.raises(TypeError, match="linear_before_reset must be a bool"):
        frt.GRU(3, 4, linear_before_reset="yes")
    with pytest.raises(ValueError, match="linear_before_reset"):
        frt.GRU(3, 4, linear_before_reset=False).to_torch()
    assert "linear_before_reset=False" in repr(frt.GRU(3, 4, linear_before_reset=False))


@pytest.mark.parametrize("lbr", [True, False])
def test_stream_frames_equal_one_call(lbr):
    m = frt.GRU(3, 4, linear_before_reset=lbr, num_layers=2, dtype=F64, seed=5)
    x, h0 = _inputs(m, T=7, B=2, seed=6, requires_grad=False)
    with torch.no_grad():
        y_all, h_all = m(x, h0)
    stream = m.stream(2, h0)
    ys = torch.stack([stream.step(x[t].contiguous()) for t in range(7)])
    torch.testing.assert_close(ys, y_all, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(stream.state, h_all, rtol=1e-12, atol=1e-14)
    with torch.no_grad():   # the stream reads the Parameters in place
        m.b.add_(0.25)
        y_new, _ = m(x[:1], h_all)
    torch.testing.assert_close(stream.step(x[0].contiguous()), y_new[0], rtol=1e-12, atol=1e-14)
