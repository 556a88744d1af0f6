"""fusedrnn.torch: the fused kernels as torch.nn.Modules through the fusedrnn operators.

gradcheck in float64 over option combinations, agreement with torch.nn.LSTM/RNN,
zero-copy parameters, independent tapes (two forwards before one backward,
forward and backward on different threads), a torch training loop, and the
refusal of other devices and dtypes."""
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
frt = pytest.importorskip("fusedrnn.torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fusedrnn as fr  # noqa: E402

F64 = torch.float64


def _inputs(m, T, B, seed=0, state=True, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    LD = m.num_layers * (2 if m.bidirectional else 1)
    R = getattr(m, "proj_size", 0) or m.hidden_size
    shape = (B, T, m.input_size) if m.batch_first else (T, B, m.input_size)
    x = torch.randn(*shape, generator=g, dtype=F64, requires_grad=requires_grad)
    if not state:
        return x, None, None
    h0 = (0.5 * torch.randn(LD, B, R, generator=g, dtype=F64)).requires_grad_(requires_grad)
    c0 = (0.5 * torch.randn(LD, B, m.hidden_size, generator=g, dtype=F64)).requires_grad_(requires_grad)
    return x, h0, c0


LSTM_CASES = {
    "diagonal": dict(peepholes="diagonal"),
    "plain": dict(peepholes=None),
    "full-proj": dict(peepholes="full", proj_size=2),
    "context-coupled": dict(peepholes="diagonal", context=(1, 2), coupled_gates=True),
    "clips": dict(peepholes="diagonal", cell_clip=0.2, accumulation_clip=0.5),  # both active
    "2layers-bidir-proj-context": dict(peepholes="diagonal", proj_size=2, context=(1, 1),
                                       num_layers=2, bidirectional=True),
    "2layers-bidir-lengths": dict(peepholes="full", num_layers=2, bidirectional=True,
                                  lengths=[5, 2, 4]),
    "batch_first-lengths": dict(peepholes="diagonal", batch_first=True, lengths=[3, 5, 1]),
}


@pytest.mark.parametrize("case", list(LSTM_CASES))
def test_lstm_gradcheck(case):
    opts = dict(LSTM_CASES[case])
    lengths = opts.pop("lengths", None)
    m = frt.LSTM(3, 4, dtype=F64, seed=1, **opts)
    x, h0, c0 = _inputs(m, T=5, B=3, seed=2)
    params = list(m.parameters())

    def f(x, h0, c0, *_):
        y, (h, c) = m(x, (h0, c0), lengths=lengths)
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_lstm_gradcheck_without_state_and_streaming_state():
    m = frt.LSTM(2, 3, context=(2, 1), dtype=F64, seed=3)
    x, _, _ = _inputs(m, T=4, B=2, seed=4, state=False)
    assert torch.autograd.gradcheck(lambda x, *_: m(x)[0], (x, *m.parameters()), eps=1e-6,
                                    atol=1e-7)
    h0, c0 = torch.zeros(1, 2, 3, dtype=F64), torch.zeros(1, 2, 3, dtype=F64)
    x_past = torch.randn(2, 2, 2, dtype=F64, requires_grad=True)
    x_future = torch.randn(1, 2, 2, dtype=F64)

    def f(x, x_past, *_):
        y, (h, c, xp) = m(x, (h0, c0, x_past), x_future=x_future)
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, x_past, *m.parameters()), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("opts", [dict(), dict(state_feedback=True),
                                  dict(state_feedback=True, num_layers=2, bidirectional=True),
                                  dict(num_layers=2, batch_first=True, lengths=[4, 1, 3])],
                         ids=["plain", "feedback", "feedback-2layers-bidir", "batch_first-lengths"])
def test_rnn_gradcheck(opts):
    opts = dict(opts)
    lengths = opts.pop("lengths", None)
    m = frt.RNN(3, 4, dtype=F64, seed=5, **opts)
    x, h0, s0 = _inputs(m, T=4, B=3, seed=6)

    def f(x, h0, s0, *_):
        y, (h, s) = m(x, (h0, s0), lengths=lengths)
        return y, h, s

    assert torch.autograd.gradcheck(f, (x, h0, s0, *m.parameters()), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("L,bidir,P", [(1, False, 0), (2, True, 2), (2, False, 0)])
def test_lstm_matches_torch_lstm_packed_and_padded(L, bidir, P):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=L, bidirectional=bidir, proj_size=P, dtype=F64)
    m = frt.LSTM.from_torch(ref)
    assert m.peepholes is None and m.proj_size == P
    x, h0, c0 = _inputs(m, T=6, B=3, seed=7)
    lens = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lens, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = ref(packed, (h0, c0))
    out, (h, c) = m(packed, (h0, c0))
    assert torch.equal(out.batch_sizes, out_ref.batch_sizes)
    assert torch.equal(out.sorted_indices, out_ref.sorted_indices)
    torch.testing.assert_close(out.data, out_ref.data, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-10, atol=1e-12)
    y_ref, _ = pad_packed_sequence(out_ref)
    y_ref.pow(2).sum().backward()
    grads_ref = {n: p.grad.clone() for n, p in ref.named_parameters()}
    dx_ref = x.grad.clone()
    x.grad = None
    # the same through the padded interface with lengths=
    y, _ = m(x, (h0, c0), lengths=lens)
    y.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, dx_ref, rtol=1e-9, atol=1e-12)
    for l in range(L):
        for d in range(2 if bidir else 1):
            t = f"_l{l}" + ("_reverse" if d else "")
            s = ("" if l == 0 else f"_l{l}") + ("_reverse" if d else "")
            torch.testing.assert_close(getattr(m, "W_x" + s).grad, grads_ref["weight_ih" + t],
                                       rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(getattr(m, "b" + s).grad, grads_ref["bias_ih" + t],
                                       rtol=1e-9, atol=1e-12)


def test_rnn_matches_torch_rnn_unbatched_and_batched():
    torch.manual_seed(1)
    ref = torch.nn.RNN(3, 5, num_layers=2, dtype=F64, batch_first=True)
    m = frt.RNN.from_torch(ref)
    x = torch.randn(2, 6, 3, dtype=F64)
    h0 = torch.randn(2, 2, 5, dtype=F64)
    y_ref, h_ref = ref(x, h0)
    y, h = m(x, h0)
    assert isinstance(h, torch.Tensor)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    y1, h1 = m(x[1], h0[:, 1])                      # unbatched (T, I), h0 (L, H)
    torch.testing.assert_close(y1, y_ref[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h1, h_ref[:, 1], rtol=1e-10, atol=1e-12)
    assert isinstance(m.to_torch(), torch.nn.RNN)


def test_unbatched_lstm_matches_batched():
    m = frt.LSTM(3, 4, proj_size=2, dtype=F64, seed=0)
    x, h0, c0 = _inputs(m, T=5, B=2, seed=1, requires_grad=False)
    y, (h, c) = m(x, (h0, c0))
    y1, (h1, c1) = m(x[:, 0], (h0[:, 0], c0[:, 0]))
    torch.testing.assert_close(y1, y[:, 0])
    torch.testing.assert_close(h1, h[:, 0])
    torch.testing.assert_close(c1, c[:, 0])


def test_matches_numpy_layer_and_parameters_are_zero_copy():
    m = frt.LSTM(3, 4, peepholes="full", proj_size=2, context=(1, 1), num_layers=2,
                 bidirectional=True, dtype=F64, seed=9)
    names = [n for n, _ in m.named_parameters()]
    layer = m.fr_layer
    assert names == list(layer.params)
    for n, p in m.named_parameters():
        assert np.shares_memory(layer.params[n], p.detach().numpy()), n
    x, h0, c0 = _inputs(m, T=5, B=2, seed=3)
    y, (h, c) = m(x, (h0, c0))
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    y_np, st = layer.forward(x.detach().numpy(), fr.LSTMState(c0.detach().numpy(), h0.detach().numpy()))
    dx_np, _ = layer.backward(dy.numpy())
    np.testing.assert_array_equal(y.detach().numpy(), y_np)
    np.testing.assert_array_equal(x.grad.numpy(), dx_np)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.grad.numpy(), layer.grads[n], err_msg=n)
    # in-place updates of the Parameters are seen by the next forward (no stale copies)
    with torch.no_grad():
        m.b.add_(0.5)
    y2, _ = m(x, (h0, c0))
    assert not torch.allclose(y2, y)
    copy = m.to_fusedrnn()
    assert not np.shares_memory(copy.params["b"], m.b.detach().numpy())
    back = frt.LSTM.from_fusedrnn(copy)
    torch.testing.assert_close(back(x, (h0, c0))[0], y2, rtol=0, atol=0)


def _grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def test_two_forwards_before_backward_keep_their_own_tapes():
    m = frt.LSTM(3, 4, proj_size=2, num_layers=2, dtype=F64, seed=2)
    x1, h1, c1 = _inputs(m, T=5, B=2, seed=10)
    x2, h2, c2 = _inputs(m, T=7, B=3, seed=11)
    # reference: each alone
    m.zero_grad()
    m(x1, (h1, c1))[0].pow(2).sum().backward()
    g1, dx1 = _grads(m), x1.grad.clone()
    m.zero_grad()
    m(x2, (h2, c2))[0].sin().sum().backward()
    g2, dx2 = _grads(m), x2.grad.clone()
    # interleaved: forward 1, forward 2, backward 1, backward 2 (and the other order)
    for order in ((0, 1), (1, 0)):
        m.zero_grad()
        x1.grad = x2.grad = None
        out1 = m(x1, (h1, c1))[0].pow(2).sum()
        out2 = m(x2, (h2, c2))[0].sin().sum()
        losses = (out1, out2)
        losses[order[0]].backward()
        losses[order[1]].backward()
        torch.testing.assert_close(x1.grad, dx1, rtol=0, atol=0)
        torch.testing.assert_close(x2.grad, dx2, rtol=0, atol=0)
        for n, g in _grads(m).items():
            torch.testing.assert_close(g, g1[n] + g2[n], rtol=1e-12, atol=1e-14)


def test_backward_on_another_thread_and_parallel_forwards():
    m = frt.LSTM(3, 4, dtype=F64, seed=4)
    xs = [_inputs(m, T=6, B=2, seed=20 + i)[0] for i in range(4)]
    ref = []
    for x in xs:
        m.zero_grad()
        m(x)[0].sum().backward()
        ref.append(x.grad.clone())
        x.grad = None
    losses = [None] * 4

    def fwd(i):
        losses[i] = m(xs[i])[0].sum()

    threads = [threading.Thread(target=fwd, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.autograd.backward(losses)          # every tape, on this (another) thread
    for x, r in zip(xs, ref):
        torch.testing.assert_close(x.grad, r, rtol=0, atol=0)


def test_inplace_weight_change_between_forward_and_backward_is_detected():
    m = frt.LSTM(3, 4, dtype=F64, seed=4)
    x, _, _ = _inputs(m, T=4, B=2, state=False)
    loss = m(x)[0].sum()
    with torch.no_grad():
        m.W_x.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_grad_inference_and_retain_graph():
    m = frt.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=F64, seed=4)
    x, _, _ = _inputs(m, T=4, B=2, state=False)
    m.eval()
    with torch.no_grad():
        y0, _ = m(x)
    y1, _ = m(x)
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)  # eval: no dropout, either path
    loss = y1.sum()
    loss.backward(retain_graph=True)
    g = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * g)
    m.train()
    torch.manual_seed(3)
    ya, _ = m(x)
    torch.manual_seed(3)
    yb, _ = m(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)  # dropout follows torch's generator
    assert not torch.allclose(ya, y1)


def test_trains_in_a_torch_loop():
    torch.manual_seed(0)
    T, B, I, H = 12, 16, 2, 16
    model = torch.nn.ModuleDict({
        "rnn": frt.LSTM(I, H, peepholes="diagonal", proj_size=8, context=(0, 1), num_layers=2,
                        coupled_gates=True, dtype=torch.float32, seed=0),
        "head": torch.nn.Linear(8, 1),
    })
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x = torch.randn(T, B, I)
    target = torch.cumsum(x[..., :1] - x[..., 1:], dim=0) / 3   # a running sum
    losses = []
    for _ in range(60):
        opt.zero_grad()
        y, _ = model["rnn"](x)
        loss = torch.nn.functional.mse_loss(model["head"](y), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_refuses_other_devices_and_dtypes():
    m = frt.LSTM(3, 4, dtype=torch.float32, seed=0)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"input is on device 'meta'"):
        m(x.to("meta"))
    with pytest.raises(ValueError, match=r"h0 is on device 'meta'"):
        m(x, (torch.zeros(1, 2, 4, device="meta"), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match=r"c0 has dtype torch.float64"):
        m(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=F64)))
    with pytest.raises(ValueError, match=r"input has dtype torch.float16"):
        m(x.half())
    with pytest.raises(ValueError, match=r"input has dtype torch.float64"):
        m(x.double())
    with pytest.raises(ValueError, match=r"lengths is on device 'meta'"):
        m(x, lengths=torch.tensor([5, 3], device="meta"))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 4\)"):
        m(x, (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="x_future requires grad"):
        frt.LSTM(3, 4, context=(0, 1))(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)),
                                       x_future=torch.randn(1, 2, 3, requires_grad=True))
    m.to("meta")
    with pytest.raises(ValueError, match=r"parameter 'W_x' is on device 'meta'"):
        m(x)
    m16 = frt.RNN(3, 4).half()
    with pytest.raises(ValueError, match=r"parameter 'W_x' has dtype torch.float16"):
        m16(x.half())
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        frt.LSTM(3, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="state_feedback=True"):
        frt.RNN(3, 4, state_feedback=True)(x, torch.zeros(1, 2, 4))


def test_module_conversions_follow_dtype_and_state_dict():
    m = frt.LSTM(3, 4, num_layers=2, seed=0)
    assert m.W_x.dtype == torch.float32
    x = torch.randn(5, 2, 3)
    y32, _ = m(x)
    m.double()
    y64, _ = m(x.double())
    assert y64.dtype == F64
    torch.testing.assert_close(y64.float(), y32, rtol=1e-5, atol=1e-6)
    m2 = frt.LSTM(3, 4, num_layers=2, dtype=F64, seed=1)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x.double())[0], y64, rtol=0, atol=0)
    torch.manual_seed(5)
    a = frt.RNN(3, 4)
    torch.manual_seed(5)
    b = frt.RNN(3, 4)
    torch.testing.assert_close(a.W_x, b.W_x, rtol=0, atol=0)   # init follows torch.manual_seed
    assert "state_feedback" not in repr(a) and "W_x" in dict(a.named_parameters())


def test_streaming_chunks_equal_one_call_and_module_copies():
    import copy
    import io
    m = frt.LSTM(2, 3, context=(2, 1), proj_size=2, dtype=F64, seed=7)
    T, B = 9, 2
    x = torch.randn(T, B, 2, dtype=F64)
    with torch.no_grad():
        y_all, (h_all, c_all) = m(x)
        state = (torch.zeros(1, B, 2, dtype=F64), torch.zeros(1, B, 3, dtype=F64),
                 torch.zeros(2, B, 2, dtype=F64))
        ys = []
        for start in range(0, T, 4):                     # chunks of 4, 4, 1 frames
            chunk, ahead = x[start:start + 4], x[start + 4:start + 5]
            y, state = m(chunk, state, x_future=ahead if len(ahead) else None)
            ys.append(y)
    torch.testing.assert_close(torch.cat(ys), y_all, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state[0], h_all, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state[2], x[-2:], rtol=0, atol=0)
    for clone in (copy.deepcopy(m), _reload(m, io)):
        assert not np.shares_memory(clone.W_x.detach().numpy(), m.W_x.detach().numpy())
        torch.testing.assert_close(clone(x)[0], y_all, rtol=0, atol=0)


def _reload(m, io):
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)
